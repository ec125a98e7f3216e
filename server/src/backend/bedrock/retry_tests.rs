use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::backend::bedrock::errors::classify_service;

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        attempt_timeout: Duration::from_secs(5),
        deadline: None,
    }
}

fn server_error() -> Failure {
    classify_service(
        Some("InternalServerException"),
        Some("oops"),
        Some(500),
        None,
    )
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let calls = AtomicU32::new(0);
    let got = with_retries(policy(3), "r", "m", || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(server_error())
            } else {
                Ok("answer")
            }
        }
    })
    .await;
    assert_eq!(got, Ok(("answer", 2)));
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_error_is_returned() {
    let calls = AtomicU32::new(0);
    let got: Result<((), u32), _> = with_retries(policy(3), "r", "m", || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(server_error()) }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        got,
        Err((
            BackendError::Upstream("Bedrock: InternalServerException: oops".into()),
            3
        ))
    );
}

#[tokio::test]
async fn final_failures_are_not_retried() {
    let calls = AtomicU32::new(0);
    let got: Result<((), u32), _> = with_retries(policy(5), "r", "m", || {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            Err(classify_service(
                Some("ThrottlingException"),
                None,
                Some(429),
                None,
            ))
        }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        got,
        Err((
            BackendError::Overloaded {
                retry_after_secs: 1
            },
            1
        ))
    );
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_is_retried() {
    let calls = AtomicU32::new(0);
    let p = RetryPolicy {
        max_attempts: 2,
        attempt_timeout: Duration::from_millis(50),
        deadline: None,
    };
    let got = with_retries(p, "r", "m", || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok(n)
        }
    })
    .await;
    assert_eq!(got, Ok((1, 2)));
}

#[tokio::test]
async fn the_request_deadline_bounds_the_attempts() {
    let budget = Duration::from_millis(80);
    let p = RetryPolicy {
        max_attempts: 10,
        attempt_timeout: Duration::from_secs(5),
        deadline: Some((Instant::now() + budget, budget)),
    };
    let started = Instant::now();
    let got: Result<((), u32), _> = with_retries(p, "r", "m", || async {
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    assert!(
        matches!(got, Err((BackendError::DeadlineExceeded(_), 1))),
        "{got:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
