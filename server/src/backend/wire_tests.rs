use serde_json::json;

use super::*;
use crate::backend::{FinishReason, Usage};

/// The frames' JSON shape is the protocol: pin it.
#[test]
fn frames_have_the_documented_shape() {
    let admitted = WireFrame::Admitted {
        prompt_tokens: vec![3, 3],
    };
    assert_eq!(
        serde_json::to_value(&admitted).unwrap(),
        json!({"admitted": {"prompt_tokens": [3, 3]}})
    );
    let event = WireFrame::Event {
        index: 1,
        event: GenEvent::Finished {
            reason: FinishReason::Stop,
            usage: Usage::default(),
        },
    };
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"event": {"index": 1, "event": {"finished": {"reason": "stop",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}}}}})
    );
    let error = WireFrame::Error {
        index: 0,
        error: BackendError::DeadlineExceeded("late".into()),
    };
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"error": {"index": 0, "error": {"deadline_exceeded": "late"}}})
    );
    let refusal = WireRefusal {
        backend_error: BackendError::Overloaded {
            retry_after_secs: 2,
        },
    };
    assert_eq!(
        serde_json::to_value(&refusal).unwrap(),
        json!({"backend_error": {"overloaded": {"retry_after_secs": 2}}})
    );
}
