//! Failures of the Bedrock backend against the fake: error mapping, retries, time limits,
//! and streams that break after they started.

use super::*;

#[tokio::test]
async fn throttling_is_overloaded_and_not_retried() {
    for stream in MODES {
        let f = fixture().await;
        f.fake.push(Reply::Error {
            status: 429,
            error_type: "ThrottlingException".into(),
            message: "Too many requests, please wait before trying again.".into(),
        });
        let err = admission_error(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(
            err,
            BackendError::Overloaded {
                retry_after_secs: 1
            }
        );
        assert_eq!(f.requests().len(), 1, "stream={stream}");
        assert_eq!(f.backend.in_flight(), 0);
    }
}

#[tokio::test]
async fn a_validation_error_is_invalid_request_with_bedrocks_message() {
    for stream in MODES {
        let f = fixture().await;
        f.fake.push(Reply::Error {
            status: 400,
            error_type: "ValidationException".into(),
            message: "The model returned the following errors: temperature: range: 0..1".into(),
        });
        let err = admission_error(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(
            err,
            BackendError::InvalidRequest {
                message: "Bedrock rejected the request: The model returned the following errors: temperature: range: 0..1".into(),
                param: None
            }
        );
        assert_eq!(f.requests().len(), 1);
    }
}

fn server_error() -> Reply {
    Reply::Error {
        status: 500,
        error_type: "InternalServerException".into(),
        message: "Internal failure".into(),
    }
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_succeeds() {
    for stream in MODES {
        let f = fixture().await;
        f.fake.push(server_error());
        f.fake
            .push(Reply::Answer(Answer::text("Second time lucky.")));
        let events = run(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(text_of(&events), "Second time lucky.");
        let requests = f.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].body, requests[1].body, "the same request again");
    }
}

#[tokio::test]
async fn server_errors_on_every_attempt_are_upstream() {
    for stream in MODES {
        let f = fixture().await;
        for _ in 0..3 {
            f.fake.push(server_error());
        }
        f.fake.push(Reply::Answer(Answer::text("never reached")));
        let err = admission_error(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(
            err,
            BackendError::Upstream("Bedrock: InternalServerException: Internal failure".into())
        );
        assert_eq!(f.requests().len(), 3, "max_attempts = 3");
    }
}

#[tokio::test]
async fn service_unavailable_after_retries_is_unavailable_and_access_denied_is_upstream() {
    for stream in MODES {
        let f = fixture().await;
        for _ in 0..3 {
            f.fake.push(Reply::Error {
                status: 503,
                error_type: "ServiceUnavailableException".into(),
                message: "Bedrock is unable to process your request.".into(),
            });
        }
        let err = admission_error(&f, chat(vec![msg("user", "q")], stream)).await;
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
        assert_eq!(f.requests().len(), 3);

        f.fake.push(Reply::Error {
            status: 403,
            error_type: "AccessDeniedException".into(),
            message: "You don't have access to the model with the specified model ID.".into(),
        });
        let err = admission_error(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(
            err,
            BackendError::Upstream("Bedrock: AccessDeniedException: You don't have access to the model with the specified model ID.".into())
        );
        assert_eq!(f.requests().len(), 4, "not retried");
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    for stream in MODES {
        let f = fixture_with(spec(
            UnsupportedParams::Reject,
            2,
            Duration::from_millis(300),
        ))
        .await;
        let mut slow = Answer::text("too late");
        slow.delay = Duration::from_secs(3);
        f.fake.push(Reply::Answer(slow));
        f.fake.push(Reply::Answer(Answer::text("in time")));
        let events = run(&f, chat(vec![msg("user", "q")], stream)).await;
        assert_eq!(text_of(&events), "in time");
        assert_eq!(f.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_stream_cut_midway_yields_the_events_before_then_an_error() {
    let f = fixture().await;
    let answer = Answer::text("One two three four five six seven eight.");
    let types = Reply::stream_event_types(&answer);
    // messageStart + three text deltas.
    assert!(types.len() > 6, "{types:?}");
    f.fake.push(Reply::BreakAfter {
        answer,
        after_events: 4,
    });
    let generation = f
        .backend
        .generate(chat(vec![msg("user", "q")], true))
        .await
        .expect("admitted: the stream started");
    assert_eq!(f.backend.in_flight(), 1);
    let events = collect(generation).await;
    let (last, before) = events.split_last().expect("events");
    match last {
        Err(BackendError::Upstream(message)) => {
            assert!(message.starts_with("Bedrock stream"), "{message}");
            assert!(!message.contains(SECRET_ACCESS_KEY), "{message}");
        }
        other => panic!("expected an Upstream error item, got {other:?}"),
    }
    let before: Vec<GenEvent> = before.iter().cloned().map(|e| e.expect("ok")).collect();
    assert_eq!(text_of(&before), "One two thre", "three 4-char deltas");
    assert!(before
        .iter()
        .all(|e| !matches!(e, GenEvent::Finished { .. })));
    assert_eq!(
        f.requests().len(),
        1,
        "never retried after the stream started"
    );
    assert_eq!(f.backend.in_flight(), 0);
}

#[tokio::test]
async fn a_stream_exception_midway_yields_an_error_item() {
    let f = fixture().await;
    f.fake.push(Reply::StreamException {
        answer: Answer::text("One two three four five six."),
        after_events: 3,
        exception_type: "modelStreamErrorException".into(),
        message: "The model stream failed.".into(),
    });
    let generation = f
        .backend
        .generate(chat(vec![msg("user", "q")], true))
        .await
        .expect("admitted");
    let events = collect(generation).await;
    let (last, before) = events.split_last().expect("events");
    match last {
        Err(BackendError::Upstream(message)) => {
            assert!(message.contains("The model stream failed."), "{message}")
        }
        other => panic!("expected an Upstream error item, got {other:?}"),
    }
    let before: Vec<GenEvent> = before.iter().cloned().map(|e| e.expect("ok")).collect();
    assert_eq!(text_of(&before), "One two ");
    assert_eq!(f.requests().len(), 1);
}

#[tokio::test]
async fn the_request_deadline_bounds_the_call_and_is_not_retried_past() {
    for stream in MODES {
        let f = fixture().await;
        let mut slow = Answer::text("too late");
        slow.delay = Duration::from_secs(5);
        f.fake.push(Reply::Answer(slow));
        let mut request = chat(vec![msg("user", "q")], stream);
        request.deadline = Some(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = admission_error(&f, request).await;
        assert!(matches!(err, BackendError::DeadlineExceeded(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stream={stream}"
        );
        assert_eq!(f.requests().len(), 1);
    }
}
