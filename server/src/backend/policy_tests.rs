//! The routing policy over backends that answer at once (the replica routes, with their
//! hold, are exercised end to end with real processes in `tests/tests/gateway.rs`).

use std::sync::Arc;

use futures::StreamExt;

use super::super::testing::{finished, hello_world, Script, ScriptedBackend};
use super::*;
use crate::backend::{FinishReason, Prompt, SamplingParams};

fn request() -> GenerateRequest {
    GenerateRequest {
        request_id: "r".into(),
        model: "m".into(),
        prompt: Prompt::Text("hi".into()),
        sampling: SamplingParams::default(),
        max_tokens_explicit: false,
        stop: Vec::new(),
        deadline: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        set_by_client: Default::default(),
        stream: false,
    }
}

fn card() -> ModelCard {
    ModelCard {
        id: "m".into(),
        owned_by: "inferd".into(),
        created: 0,
        max_model_len: 0,
    }
}

fn policy(routes: &[Arc<ScriptedBackend>]) -> (PolicyBackend, Arc<Metrics>) {
    let metrics = Metrics::new();
    let routes = routes
        .iter()
        .map(|b| Route::Direct(b.clone() as Arc<dyn Backend>))
        .collect();
    (PolicyBackend::new(card(), routes, metrics.clone()), metrics)
}

#[tokio::test]
async fn a_backend_that_cannot_serve_passes_the_request_on() {
    let down = Arc::new(ScriptedBackend::new(Script::Refuse(
        BackendError::Upstream("every replica failed".into()),
    )));
    let up = Arc::new(ScriptedBackend::new(Script::Events(hello_world())));
    let (policy, metrics) = policy(&[down.clone(), up.clone()]);
    let generation = policy
        .generate(request())
        .await
        .expect("served by the second");
    assert_eq!(down.requests().len(), 1);
    assert_eq!(up.requests().len(), 1);
    drop(generation);
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"inferd:gateway_fallbacks_total{model_name="m",to="local",reason="backend_failed"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_on_the_merits_are_not_sent_elsewhere() {
    for refusal in [
        BackendError::InvalidRequest {
            message: "bad".into(),
            param: Some("seed".into()),
        },
        BackendError::Overloaded {
            retry_after_secs: 2,
        },
        BackendError::ModelNotFound("m".into()),
    ] {
        let first = Arc::new(ScriptedBackend::new(Script::Refuse(refusal.clone())));
        let second = Arc::new(ScriptedBackend::new(Script::Events(hello_world())));
        let (policy, _) = policy(&[first, second.clone()]);
        let error = policy.generate(request()).await.err();
        assert_eq!(error, Some(refusal));
        assert!(second.requests().is_empty());
    }
}

#[tokio::test]
async fn the_last_backend_answers_for_all() {
    let down = || {
        Arc::new(ScriptedBackend::new(Script::Refuse(
            BackendError::Unavailable("down".into()),
        )))
    };
    let (policy, _) = policy(&[down(), down()]);
    assert_eq!(
        policy.generate(request()).await.err(),
        Some(BackendError::Unavailable("down".into()))
    );
    assert_eq!(policy.in_flight(), 0);
}

#[tokio::test]
async fn demand_counts_a_request_until_its_last_stream_ends() {
    let hanging = Arc::new(ScriptedBackend::new(Script::Hang(vec![Ok(finished(
        FinishReason::Stop,
        1,
        1,
        0,
    ))])));
    let (policy, metrics) = policy(&[hanging]);
    let mut generations = policy.generate_n(request(), 2).await.unwrap();
    assert_eq!(policy.in_flight(), 1, "one request, whatever its n");
    assert!(metrics
        .encode()
        .contains(r#"inferd:gateway_demand{model_name="m"} 1"#));
    let mut second = generations.pop().unwrap();
    drop(generations);
    assert!(second.events.next().await.is_some());
    assert_eq!(policy.in_flight(), 1, "a choice is still streaming");
    drop(second);
    assert_eq!(policy.in_flight(), 0);
    assert!(metrics
        .encode()
        .contains(r#"inferd:gateway_demand{model_name="m"} 0"#));
    assert_eq!(policy.admission_keepalive(), None, "no route holds");
}
