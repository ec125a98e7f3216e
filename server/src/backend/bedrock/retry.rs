//! Our own retry loop around the initial Bedrock call (the SDK's retries are disabled, so
//! the attempt count, the per-attempt timeout and what is retried are all ours and the
//! request's deadline bounds the whole loop). Only the call before any event reached
//! the caller is retried.

use std::future::Future;
use std::time::{Duration, Instant};

use super::errors::{backoff, timeout_failure, Failure};
use crate::backend::BackendError;

/// How one request's initial call is attempted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    /// Limit of one attempt until its response.
    pub attempt_timeout: Duration,
    /// The request's deadline (instant, whole budget), if it has one.
    pub deadline: Option<(Instant, Duration)>,
}

fn deadline_exceeded(budget: Duration) -> BackendError {
    BackendError::DeadlineExceeded(format!(
        "The request did not finish within its deadline of {} ms.",
        budget.as_millis()
    ))
}

/// Runs `attempt` until it succeeds, fails for good, or the attempts are spent. Returns
/// the value and the number of attempts made; on failure, the last attempt's error.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    request_id: &str,
    model_id: &str,
    mut attempt: F,
) -> Result<(T, u32), (BackendError, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 0;
    loop {
        n += 1;
        let mut limit = policy.attempt_timeout;
        if let Some((at, budget)) = policy.deadline {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((deadline_exceeded(budget), n - 1));
            }
            limit = limit.min(left);
        }
        let failure = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return Ok((value, n)),
            Ok(Err(failure)) => failure,
            Err(_) if limit < policy.attempt_timeout => {
                let budget = policy.deadline.map(|(_, b)| b).unwrap_or(limit);
                return Err((deadline_exceeded(budget), n));
            }
            Err(_) => timeout_failure(policy.attempt_timeout),
        };
        if !failure.retryable || n >= max {
            return Err((failure.error, n));
        }
        let pause = backoff(n - 1);
        if let Some((at, _)) = policy.deadline {
            if Instant::now() + pause >= at {
                return Err((failure.error, n));
            }
        }
        tracing::warn!(
            request_id,
            model_id,
            attempt = n,
            max_attempts = max,
            error_kind = %failure.kind,
            error = %failure.error,
            pause_ms = pause.as_millis() as u64,
            "Bedrock call failed; retrying"
        );
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
