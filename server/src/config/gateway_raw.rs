//! The on-disk shape of `[[model.backend]]` tables and their validation into
//! [`BackendSpec`]s (see [`super::gateway`] for the format).

use std::time::Duration;

use serde::Deserialize;

use super::gateway::*;

/// One `[[model.backend]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawBackend {
    Replicas {
        dns: Option<String>,
        urls: Option<Vec<String>>,
        model: Option<String>,
        when_none_ready: Option<String>,
        max_wait_ms: Option<u64>,
        max_held: Option<usize>,
        keepalive_ms: Option<u64>,
        dns_refresh_ms: Option<u64>,
        probe_interval_ms: Option<u64>,
        failure_threshold: Option<u32>,
        open_ms: Option<u64>,
        connect_timeout_ms: Option<u64>,
        max_attempts: Option<u32>,
    },
    Bedrock {
        model_id: String,
        region: Option<String>,
        endpoint_url: Option<String>,
        unsupported_params: Option<String>,
        max_attempts: Option<u32>,
        timeout_ms: Option<u64>,
    },
}

/// `(key, message)` of the first invalid field.
type Invalid = (String, String);

fn millis(
    key: &str,
    value: Option<u64>,
    default: Duration,
    range: (u64, u64),
) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(v) if v < range.0 || v > range.1 => Err((
            key.to_owned(),
            format!(
                "must be between {} and {} (milliseconds), got {v}",
                range.0, range.1
            ),
        )),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

fn count<T: Copy + PartialOrd + std::fmt::Display>(
    key: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, Invalid> {
    match value {
        None => Ok(default),
        Some(v) if v < min || v > max => Err((
            key.to_owned(),
            format!("must be between {min} and {max}, got {v}"),
        )),
        Some(v) => Ok(v),
    }
}

/// `host:port` with a non-empty host and a port.
fn host_port(key: &str, text: &str) -> Result<(String, u16), Invalid> {
    let bad = || {
        (
            key.to_owned(),
            format!("expected host:port (e.g. \"inferd-engine.inferd.svc:8080\"), got {text:?}"),
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

pub(super) fn validate(raw: RawBackend) -> Result<BackendSpec, Invalid> {
    match raw {
        RawBackend::Replicas {
            dns,
            urls,
            model,
            when_none_ready,
            max_wait_ms,
            max_held,
            keepalive_ms,
            dns_refresh_ms,
            probe_interval_ms,
            failure_threshold,
            open_ms,
            connect_timeout_ms,
            max_attempts,
        } => {
            let discovery = match (dns, urls) {
                (Some(_), Some(_)) => {
                    return Err((
                        "urls".into(),
                        "`dns` and `urls` are mutually exclusive".into(),
                    ))
                }
                (None, None) => {
                    return Err((
                        "dns".into(),
                        "missing: give `dns` (a headless Service as host:port) or `urls` \
                         (a list of host:port)"
                            .into(),
                    ))
                }
                (Some(dns), None) => {
                    let (host, port) = host_port("dns", &dns)?;
                    let refresh = millis(
                        "dns_refresh_ms",
                        dns_refresh_ms,
                        DEFAULT_DNS_REFRESH,
                        (100, 600_000),
                    )?;
                    Discovery::Dns {
                        host,
                        port,
                        refresh,
                    }
                }
                (None, Some(urls)) => {
                    if urls.is_empty() {
                        return Err(("urls".into(), "must list at least one host:port".into()));
                    }
                    if dns_refresh_ms.is_some() {
                        return Err(("dns_refresh_ms".into(), "only applies with `dns`".into()));
                    }
                    let mut addrs = Vec::with_capacity(urls.len());
                    for url in &urls {
                        let bare = url.strip_prefix("http://").unwrap_or(url);
                        let (host, port) = host_port("urls", bare.trim_end_matches('/'))?;
                        addrs.push(if host.contains(':') {
                            format!("[{host}]:{port}")
                        } else {
                            format!("{host}:{port}")
                        });
                    }
                    Discovery::Static(addrs)
                }
            };
            let when_none_ready = match when_none_ready.as_deref() {
                None | Some("hold") => WhenNoneReady::Hold,
                Some("next") => WhenNoneReady::Next,
                Some(other) => {
                    return Err((
                        "when_none_ready".into(),
                        format!("must be \"hold\" or \"next\", got {other:?}"),
                    ))
                }
            };
            if model.as_ref().is_some_and(|m| m.trim().is_empty()) {
                return Err(("model".into(), "must not be empty".into()));
            }
            Ok(BackendSpec::Replicas(ReplicaSpec {
                discovery,
                model,
                when_none_ready,
                max_wait: millis("max_wait_ms", max_wait_ms, DEFAULT_MAX_WAIT, (0, 3_600_000))?,
                max_held: count("max_held", max_held, DEFAULT_MAX_HELD, 0, 1_000_000)?,
                keepalive: millis(
                    "keepalive_ms",
                    keepalive_ms,
                    DEFAULT_KEEPALIVE,
                    (100, 600_000),
                )?,
                probe_interval: millis(
                    "probe_interval_ms",
                    probe_interval_ms,
                    DEFAULT_PROBE_INTERVAL,
                    (50, 600_000),
                )?,
                failure_threshold: count(
                    "failure_threshold",
                    failure_threshold,
                    DEFAULT_FAILURE_THRESHOLD,
                    1,
                    1000,
                )?,
                open_for: millis("open_ms", open_ms, DEFAULT_OPEN_FOR, (10, 3_600_000))?,
                connect_timeout: millis(
                    "connect_timeout_ms",
                    connect_timeout_ms,
                    DEFAULT_CONNECT_TIMEOUT,
                    (10, 600_000),
                )?,
                max_attempts: count(
                    "max_attempts",
                    max_attempts,
                    DEFAULT_REPLICA_ATTEMPTS,
                    1,
                    16,
                )?,
            }))
        }
        RawBackend::Bedrock {
            model_id,
            region,
            endpoint_url,
            unsupported_params,
            max_attempts,
            timeout_ms,
        } => {
            if model_id.trim().is_empty() || model_id.contains(char::is_whitespace) {
                return Err((
                    "model_id".into(),
                    format!(
                        "must be a Bedrock model id, inference-profile id or ARN, got {model_id:?}"
                    ),
                ));
            }
            if let Some(region) = &region {
                let ok = !region.is_empty()
                    && region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err((
                        "region".into(),
                        format!("must look like \"us-east-1\", got {region:?}"),
                    ));
                }
            }
            if let Some(url) = &endpoint_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err((
                        "endpoint_url".into(),
                        format!("must start with https:// (or http:// for a local test endpoint), got {url:?}"),
                    ));
                }
            }
            let unsupported_params = match unsupported_params.as_deref() {
                None | Some("reject") => UnsupportedParams::Reject,
                Some("drop") => UnsupportedParams::Drop,
                Some(other) => {
                    return Err((
                        "unsupported_params".into(),
                        format!("must be \"reject\" or \"drop\", got {other:?}"),
                    ))
                }
            };
            Ok(BackendSpec::Bedrock(BedrockSpec {
                model_id,
                region,
                endpoint_url,
                unsupported_params,
                max_attempts: count(
                    "max_attempts",
                    max_attempts,
                    DEFAULT_BEDROCK_ATTEMPTS,
                    1,
                    16,
                )?,
                timeout: millis(
                    "timeout_ms",
                    timeout_ms,
                    DEFAULT_BEDROCK_TIMEOUT,
                    (100, 3_600_000),
                )?,
            }))
        }
    }
}
