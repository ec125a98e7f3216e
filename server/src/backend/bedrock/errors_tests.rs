use super::*;

fn service(code: &str, status: u16) -> Failure {
    classify_service(Some(code), Some("the message"), Some(status), None)
}

#[test]
fn throttling_and_quota_are_overloaded_and_not_retried() {
    for code in ["ThrottlingException", "ServiceQuotaExceededException"] {
        let f = classify_service(Some(code), Some("slow down"), Some(429), Some("7"));
        assert_eq!(
            f.error,
            BackendError::Overloaded {
                retry_after_secs: 7
            }
        );
        assert!(!f.retryable, "{code}");
        let f = service(code, 429);
        assert_eq!(
            f.error,
            BackendError::Overloaded {
                retry_after_secs: 1
            }
        );
    }
}

#[test]
fn validation_is_a_400_with_bedrocks_message() {
    let f = classify_service(
        Some("ValidationException"),
        Some("messages: text content blocks must be non-empty"),
        Some(400),
        None,
    );
    assert_eq!(
        f.error,
        BackendError::InvalidRequest {
            message:
                "Bedrock rejected the request: messages: text content blocks must be non-empty"
                    .into(),
            param: None
        }
    );
    assert!(!f.retryable);
}

#[test]
fn deployment_problems_are_upstream_and_not_retried() {
    for (code, status) in [
        ("AccessDeniedException", 403),
        ("ResourceNotFoundException", 404),
        ("UnrecognizedClientException", 403),
        ("ExpiredTokenException", 403),
    ] {
        let f = service(code, status);
        assert_eq!(
            f.error,
            BackendError::Upstream(format!("Bedrock: {code}: the message"))
        );
        assert!(!f.retryable, "{code}");
    }
}

#[test]
fn transient_errors_are_retried() {
    for code in [
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
    ] {
        let f = service(code, 500);
        assert!(f.retryable, "{code}");
        assert!(matches!(f.error, BackendError::Upstream(_)), "{code}");
    }
    let f = service("ServiceUnavailableException", 503);
    assert!(f.retryable);
    assert!(matches!(f.error, BackendError::Unavailable(_)));
    let f = service("ModelErrorException", 424);
    assert!(!f.retryable);
}

#[test]
fn unknown_codes_fall_back_on_the_status() {
    let by_status = |s| classify_service(Some("SomethingNewException"), None, Some(s), None);
    assert!(by_status(502).retryable);
    assert!(matches!(by_status(502).error, BackendError::Upstream(_)));
    assert!(matches!(by_status(503).error, BackendError::Unavailable(_)));
    assert!(matches!(
        by_status(429).error,
        BackendError::Overloaded { .. }
    ));
    assert!(matches!(
        by_status(400).error,
        BackendError::InvalidRequest { .. }
    ));
    assert!(!by_status(418).retryable);
    let f = classify_service(None, None, Some(500), None);
    assert_eq!(f.kind, "HTTP 500");
    assert!(f.retryable);
}

#[test]
fn retry_after_is_whole_seconds_at_least_one() {
    assert_eq!(retry_after_secs(None), 1);
    assert_eq!(retry_after_secs(Some("3")), 3);
    assert_eq!(retry_after_secs(Some(" 2.2 ")), 3);
    assert_eq!(retry_after_secs(Some("0")), 1);
    assert_eq!(retry_after_secs(Some("Wed, 21 Oct 2015 07:28:00 GMT")), 1);
    assert_eq!(retry_after_secs(Some("-5")), 1);
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    for _ in 0..50 {
        let first = backoff(0);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        let second = backoff(1);
        assert!(second >= Duration::from_millis(200) && second <= Duration::from_millis(400));
        let late = backoff(30);
        assert!(late >= Duration::from_millis(1000) && late <= Duration::from_millis(2000));
    }
}
