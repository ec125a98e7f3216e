//! Continuous batching over the real model and a real socket: requests sent together give,
//! token for token, what each gives alone (batch invariance).

use futures::future::join_all;
use inferd_tests::{chat_body, content_of, post_ok, start_default_server, usage, Server, CHAT};
use serde_json::json;

const TOPICS: [&str; 16] = [
    "the moon",
    "bread",
    "rivers",
    "chess",
    "volcanoes",
    "music",
    "bees",
    "glass",
    "winter",
    "trains",
    "coffee",
    "maps",
    "owls",
    "paper",
    "rain",
    "bridges",
];

async fn greedy_chat(server: &Server, topic: &str) -> (String, u64) {
    let body = chat_body(
        server,
        &format!("Write one sentence about {topic}."),
        json!({"temperature": 0, "max_tokens": 24}),
    );
    let v = post_ok(server, CHAT, &body).await;
    (content_of(&v, 0), usage(&v, "completion_tokens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_requests_match_each_request_alone() {
    let server = start_default_server().await;
    let mut alone = Vec::new();
    for t in TOPICS {
        alone.push(greedy_chat(&server, t).await);
    }
    let together = join_all(TOPICS.iter().map(|t| greedy_chat(&server, t))).await;
    for (i, t) in TOPICS.iter().enumerate() {
        assert!(!alone[i].0.is_empty(), "{t}: empty output");
        assert_eq!(
            together[i], alone[i],
            "{t}: batched output differs from alone"
        );
    }
    let distinct: std::collections::HashSet<_> = alone.iter().map(|a| &a.0).collect();
    assert!(distinct.len() > 8, "prompts should give different outputs");
}
