//! AWS Bedrock as a `Backend` of the gateway, through the Converse API (docs/architecture.md
//! §7): `stream: false` → `Converse`, `stream: true` → `ConverseStream`.
//!
//! Admission (the future `generate` returns) completes only once Bedrock has answered
//! (Converse: the whole answer; ConverseStream: the initial response), so every error
//! before the first byte becomes the HTTP status. The SDK's own retries are off: our
//! loop (`retry`) retries transient failures of that initial call only.

mod document;
mod errors;
mod request;
mod response;
mod retry;
mod stream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_bedrockruntime::config::StalledStreamProtectionConfig;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::Client;
use futures::future::BoxFuture;
use futures::stream::{self as fstream, StreamExt};

pub use aws_config::SdkConfig;

use super::{
    Backend, BackendError, GenEvent, GenStream, GenerateRequest, Generation, ModelCard,
    SERVED_BY_BEDROCK,
};
use crate::config::gateway::{BedrockSpec, UnsupportedParams};
use crate::telemetry::metrics::Metrics;
use errors::{classify_sdk, stream_failure};
use request::{translate, ConverseParts};
use retry::{with_retries, RetryPolicy};

/// Serves one model of the gateway from Bedrock.
pub struct BedrockBackend {
    served_model: String,
    spec: BedrockSpec,
    client: Client,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    created: u64,
}

/// An SDK config with fixed keys (no provider chain), for tests and setups that hand keys
/// over explicitly. `endpoint_url`: `None` for the region's public endpoint.
pub fn static_sdk_config(
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    endpoint_url: Option<&str>,
) -> SdkConfig {
    let credentials = aws_sdk_bedrockruntime::config::Credentials::new(
        access_key_id,
        secret_access_key,
        None,
        None,
        "inferd-static",
    );
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(
            aws_sdk_bedrockruntime::config::SharedCredentialsProvider::new(credentials),
        );
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    builder.build()
}

impl BedrockBackend {
    /// Production: credentials and region from the SDK's default chain (env, web identity
    /// / IRSA, ECS/instance metadata); `spec.region` / `spec.endpoint_url` override.
    pub async fn new(served_model: &str, spec: &BedrockSpec, metrics: Arc<Metrics>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &spec.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(served_model, spec, &sdk, metrics)
    }

    /// Tests / custom setups: an explicit SDK config (credentials, endpoint); the region
    /// and endpoint of `spec` still override when set.
    pub fn from_sdk_config(
        served_model: &str,
        spec: &BedrockSpec,
        sdk: &SdkConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Our own retry loop and time limits (see `retry`, `stream::Limits`) replace the
        // SDK's: its stalled-stream protection would cut a model that pauses for 5 s.
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(region) = &spec.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(url) = &spec.endpoint_url {
            config = config.endpoint_url(url);
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            served_model: served_model.to_owned(),
            spec: spec.clone(),
            client: Client::from_conf(config.build()),
            metrics,
            in_flight: Arc::new(AtomicUsize::new(0)),
            created,
        }
    }

    fn policy(&self, deadline: Option<(Instant, Duration)>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.spec.max_attempts,
            attempt_timeout: self.spec.timeout,
            deadline,
        }
    }

    /// Never silent: one warning per request listing what was dropped, one count each.
    fn report_dropped(&self, request_id: &str, dropped: &[&'static str]) {
        if dropped.is_empty() {
            return;
        }
        tracing::warn!(
            request_id,
            model = %self.served_model,
            dropped = %dropped.join(", "),
            "request fields Bedrock cannot honour were dropped (unsupported_params = \"drop\")"
        );
        for param in dropped {
            self.metrics
                .gateway()
                .inc_bedrock_dropped_param(&self.served_model, param);
        }
    }

    async fn admit(&self, request: GenerateRequest) -> Result<Generation, BackendError> {
        let started = Instant::now();
        let translated = translate(&request, self.spec.unsupported_params, &self.served_model)?;
        self.report_dropped(&request.request_id, &translated.dropped);
        let deadline = request.deadline.map(|d| (started + d, d));
        let events = if request.stream {
            self.converse_stream(&request.request_id, &translated.parts, deadline)
                .await?
        } else {
            self.converse(&request.request_id, &translated.parts, started, deadline)
                .await?
        };
        Ok(Generation {
            prompt_tokens: 0,
            events: guarded(events, InFlight::enter(&self.in_flight)),
            served_by: SERVED_BY_BEDROCK.into(),
        })
    }

    async fn converse(
        &self,
        request_id: &str,
        parts: &ConverseParts,
        started: Instant,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<GenStream, BackendError> {
        let model_id = self.spec.model_id.as_str();
        let result = with_retries(self.policy(deadline), request_id, model_id, || {
            let call = self
                .client
                .converse()
                .model_id(model_id)
                .set_system((!parts.system.is_empty()).then(|| parts.system.clone()))
                .set_messages(Some(parts.messages.clone()))
                .set_inference_config(parts.inference.clone())
                .set_tool_config(parts.tool_config.clone());
            async move { call.send().await.map_err(|e| classify_sdk(&e)) }
        })
        .await;
        let (out, attempts) =
            result.map_err(|(e, attempts)| log_failure(request_id, model_id, attempts, e))?;
        let events = response::converse_events(out.output(), out.stop_reason(), out.usage());
        let usage = response::usage(out.usage());
        tracing::info!(
            request_id,
            model_id,
            aws_request_id = out.request_id().unwrap_or(""),
            attempts,
            streaming = false,
            stop_reason = out.stop_reason().as_str(),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cached_tokens = usage.cached_tokens,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Bedrock call finished"
        );
        Ok(Box::pin(fstream::iter(events.into_iter().map(Ok))))
    }

    async fn converse_stream(
        &self,
        request_id: &str,
        parts: &ConverseParts,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<GenStream, BackendError> {
        let model_id = self.spec.model_id.as_str();
        let started = Instant::now();
        let result = with_retries(self.policy(deadline), request_id, model_id, || {
            let call = self
                .client
                .converse_stream()
                .model_id(model_id)
                .set_system((!parts.system.is_empty()).then(|| parts.system.clone()))
                .set_messages(Some(parts.messages.clone()))
                .set_inference_config(parts.inference.clone())
                .set_tool_config(parts.tool_config.clone());
            async move { call.send().await.map_err(|e| classify_sdk(&e)) }
        })
        .await;
        let (out, attempts) =
            result.map_err(|(e, attempts)| log_failure(request_id, model_id, attempts, e))?;
        let aws_request_id = out.request_id().unwrap_or("").to_owned();
        let source = fstream::unfold(out.stream, |mut receiver| async move {
            match receiver.recv().await {
                Ok(Some(event)) => Some((Ok(event), receiver)),
                Ok(None) => None,
                Err(e) => Some((Err(stream_failure(&e)), receiver)),
            }
        })
        .boxed();
        let (request_id, model_id) = (request_id.to_owned(), model_id.to_owned());
        let on_end: stream::OnEnd = Box::new(move |assembler, error| {
            let usage = assembler.usage().unwrap_or_default();
            let stop_reason = assembler.stop_reason().map(|s| s.as_str()).unwrap_or("");
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match error {
                None => tracing::info!(
                    request_id,
                    model_id,
                    aws_request_id,
                    attempts,
                    streaming = true,
                    stop_reason,
                    prompt_tokens = usage.prompt_tokens,
                    completion_tokens = usage.completion_tokens,
                    cached_tokens = usage.cached_tokens,
                    elapsed_ms,
                    "Bedrock call finished"
                ),
                Some(error) => tracing::warn!(
                    request_id,
                    model_id,
                    aws_request_id,
                    attempts,
                    streaming = true,
                    %error,
                    elapsed_ms,
                    "Bedrock stream ended early"
                ),
            }
        });
        let limits = stream::Limits {
            idle: Some(self.spec.timeout),
            deadline,
        };
        Ok(stream::gen_stream(source, limits, on_end))
    }
}

fn log_failure(
    request_id: &str,
    model_id: &str,
    attempts: u32,
    error: BackendError,
) -> BackendError {
    tracing::warn!(request_id, model_id, attempts, %error, "Bedrock call failed");
    error
}

/// Counts one admitted generation until its event stream ends or is dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `events`, releasing `guard` when they end (or when the stream is dropped).
fn guarded(events: GenStream, guard: InFlight) -> GenStream {
    let mut guard = Some(guard);
    Box::pin(events.chain(fstream::poll_fn(move |_| {
        guard.take();
        Poll::<Option<Result<GenEvent, BackendError>>>::Ready(None)
    })))
}

impl Backend for BedrockBackend {
    fn models(&self) -> Vec<ModelCard> {
        vec![ModelCard {
            id: self.served_model.clone(),
            owned_by: "bedrock".into(),
            created: self.created,
            max_model_len: 0,
        }]
    }

    /// Bedrock has no `n`: with `Reject` it is a 400; with `Drop` the `n` samples are `n`
    /// independent calls (all honoured, at `n` times the cost).
    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>> {
        Box::pin(async move {
            if n <= 1 {
                return Ok(vec![self.admit(request).await?]);
            }
            if self.spec.unsupported_params == UnsupportedParams::Reject {
                return Err(BackendError::InvalidRequest {
                    message: format!(
                        "n > 1 is not supported by the Bedrock backend of model {}",
                        self.served_model
                    ),
                    param: Some("n".into()),
                });
            }
            tracing::warn!(
                request_id = %request.request_id,
                model = %self.served_model,
                n,
                "n > 1 on Bedrock: making {n} independent calls ({n}× the cost)"
            );
            futures::future::try_join_all((0..n).map(|_| self.admit(request.clone()))).await
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}
