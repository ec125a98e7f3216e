//! The engine in-process with the real model: continuous batching admits a request that
//! arrives while another is decoding, without waiting for it to finish.

use std::time::Instant;

use candle_core::{DType, Device};
use inferd::engine::scheduler::SchedulerConfig;
use inferd::engine::{self, EngineConfig, GenerationRequest, SamplingParams, TokenEvent};
use inferd::model::KvCache;
use inferd_tests::oracle::load_ours;
use inferd_tests::smollm2_gguf;
use tokio::sync::mpsc;

fn request(
    id: &str,
    prompt: Vec<u32>,
    max_tokens: usize,
) -> (GenerationRequest, mpsc::Receiver<TokenEvent>) {
    let (tx, rx) = mpsc::channel(max_tokens + 2);
    let sampling = SamplingParams {
        temperature: 0.0,
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    (
        GenerationRequest {
            request_id: id.into(),
            prompt_tokens: prompt,
            sampling,
            events: vec![tx],
            arrival: Instant::now(),
            deadline: None,
        },
        rx,
    )
}

#[tokio::test]
async fn request_arriving_mid_decode_joins_the_running_batch() {
    let loaded = load_ours(&smollm2_gguf(), true);
    let eos = loaded.tokenizer.eos_token_ids.clone();
    let prompt = loaded
        .tokenizer
        .encode("Count slowly from one to one hundred:")
        .unwrap();
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 8,
            max_num_batched_tokens: 512,
            block_size: 16,
            num_blocks: 64,
            enable_prefix_caching: true,
        },
        max_model_len: 512,
        max_waiting: 8,
        eos_token_ids: eos,
    };
    let cache = KvCache::new(
        loaded.model.shape(),
        cfg.num_blocks(),
        cfg.block_size(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let metrics = inferd::telemetry::metrics::Metrics::new();
    let handle = engine::spawn(loaded.model, cache, cfg, metrics.model("m")).unwrap();

    const A_TOKENS: usize = 96;
    let (a, mut a_rx) = request("a", prompt.clone(), A_TOKENS);
    handle.submit(a).unwrap();
    assert!(matches!(
        a_rx.recv().await,
        Some(TokenEvent::Admitted { .. })
    ));
    for _ in 0..5 {
        assert!(matches!(a_rx.recv().await, Some(TokenEvent::Token(_))));
    }
    // A is decoding now. B arrives.
    let (b, mut b_rx) = request("b", prompt, 4);
    handle.submit(b).unwrap();
    assert!(matches!(
        b_rx.recv().await,
        Some(TokenEvent::Admitted { .. })
    ));
    assert!(matches!(b_rx.recv().await, Some(TokenEvent::Token(_))));
    // Everything A produced so far is already in its channel.
    let mut a_seen = 5;
    let mut a_finished = false;
    while let Ok(ev) = a_rx.try_recv() {
        match ev {
            TokenEvent::Token(_) => a_seen += 1,
            TokenEvent::Finished { .. } => a_finished = true,
            TokenEvent::Admitted { .. } => {}
            TokenEvent::Error(e) => panic!("{e}"),
        }
    }
    assert!(
        !a_finished,
        "B had to wait for A to finish: no continuous batching"
    );
    assert!(
        a_seen < A_TOKENS / 2,
        "B's first token came only after A produced {a_seen} tokens"
    );
    // Both still complete with exact counts.
    let mut b_count = 1;
    loop {
        match b_rx.recv().await.expect("b event") {
            TokenEvent::Token(_) => b_count += 1,
            TokenEvent::Finished {
                completion_tokens,
                reason,
            } => {
                assert_eq!(completion_tokens, 4);
                assert_eq!(reason, engine::FinishReason::Length);
                break;
            }
            TokenEvent::Admitted { .. } => panic!("admitted twice"),
            TokenEvent::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(b_count, 4);
    loop {
        match a_rx.recv().await.expect("a event") {
            TokenEvent::Token(_) => a_seen += 1,
            TokenEvent::Finished {
                completion_tokens, ..
            } => {
                assert_eq!(completion_tokens, A_TOKENS);
                break;
            }
            TokenEvent::Admitted { .. } => panic!("admitted twice"),
            TokenEvent::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(a_seen, A_TOKENS);
}
