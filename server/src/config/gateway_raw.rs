//! The on-disk shape of `[[model.backend]]` tables and their validation into
//! [`BackendSpec`]s (see [`super::gateway`] for the format).

use std::time::Duration;

use serde::Deserialize;

use super::gateway::*;
use super::raw::{invalid, ranged, Invalid};

/// One `[[model.backend]]` table, as written; `type` names the kind.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum RawBackend {
    Replicas(RawReplicas),
    Bedrock(RawBedrock),
}

/// A `type = "replicas"` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplicas {
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
}

/// A `type = "bedrock"` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBedrock {
    model_id: String,
    region: Option<String>,
    endpoint_url: Option<String>,
    unsupported_params: Option<String>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
}

/// Bounds (milliseconds) of `dns_refresh_ms`.
const DNS_REFRESH_MS: (u64, u64) = (100, 600_000);
/// Bounds (milliseconds) of `max_wait_ms`.
const MAX_WAIT_MS: (u64, u64) = (0, 3_600_000);
/// Bounds of `max_held`.
const MAX_HELD: (usize, usize) = (0, 1_000_000);
/// Bounds (milliseconds) of `keepalive_ms`.
const KEEPALIVE_MS: (u64, u64) = (100, 600_000);
/// Bounds (milliseconds) of `probe_interval_ms`.
const PROBE_INTERVAL_MS: (u64, u64) = (50, 600_000);
/// Bounds of `failure_threshold`.
const FAILURE_THRESHOLD: (u32, u32) = (1, 1000);
/// Bounds (milliseconds) of `open_ms`.
const OPEN_MS: (u64, u64) = (10, 3_600_000);
/// Bounds (milliseconds) of `connect_timeout_ms`.
const CONNECT_TIMEOUT_MS: (u64, u64) = (10, 600_000);
/// Bounds of `max_attempts` (both kinds).
const MAX_ATTEMPTS: (u32, u32) = (1, 16);
/// Bounds (milliseconds) of a Bedrock `timeout_ms`.
const BEDROCK_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);

/// A duration key in milliseconds within `range`; `default` when left out.
fn millis(
    key: &str,
    value: Option<u64>,
    default: Duration,
    range: (u64, u64),
) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(v) if v < range.0 || v > range.1 => Err(invalid(
            key,
            format!(
                "must be between {} and {} (milliseconds), got {v}",
                range.0, range.1
            ),
        )),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

/// A count key within `range`; `default` when left out.
fn count<T: Copy + PartialOrd + std::fmt::Display>(
    key: &str,
    value: Option<T>,
    default: T,
    range: (T, T),
) -> Result<T, Invalid> {
    Ok(ranged(key, value, range)?.unwrap_or(default))
}

/// A key that names one of two values; the first when left out.
fn either<T>(
    key: &str,
    value: Option<&str>,
    first: (&str, T),
    second: (&str, T),
) -> Result<T, Invalid> {
    match value {
        None => Ok(first.1),
        Some(v) if v == first.0 => Ok(first.1),
        Some(v) if v == second.0 => Ok(second.1),
        Some(other) => Err(invalid(
            key,
            format!("must be {:?} or {:?}, got {other:?}", first.0, second.0),
        )),
    }
}

/// `host:port` with a non-empty host and a port.
fn host_port(key: &str, text: &str) -> Result<(String, u16), Invalid> {
    let bad = || {
        invalid(
            key,
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

/// Validate one table; the key in an error is the table's own (`dns`, not `backend[0].dns`).
pub(super) fn validate(raw: RawBackend) -> Result<BackendSpec, Invalid> {
    match raw {
        RawBackend::Replicas(r) => replicas(r).map(BackendSpec::Replicas),
        RawBackend::Bedrock(b) => bedrock(b).map(BackendSpec::Bedrock),
    }
}

/// A `replicas` table: discovery, then the hold policy, then timings and the breaker.
fn replicas(raw: RawReplicas) -> Result<ReplicaSpec, Invalid> {
    let discovery = discovery(&raw)?;
    let when_none_ready = either(
        "when_none_ready",
        raw.when_none_ready.as_deref(),
        ("hold", WhenNoneReady::Hold),
        ("next", WhenNoneReady::Next),
    )?;
    if raw.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err(invalid("model", "must not be empty"));
    }
    Ok(ReplicaSpec {
        discovery,
        model: raw.model,
        when_none_ready,
        max_wait: millis(
            "max_wait_ms",
            raw.max_wait_ms,
            DEFAULT_MAX_WAIT,
            MAX_WAIT_MS,
        )?,
        max_held: count("max_held", raw.max_held, DEFAULT_MAX_HELD, MAX_HELD)?,
        keepalive: millis(
            "keepalive_ms",
            raw.keepalive_ms,
            DEFAULT_KEEPALIVE,
            KEEPALIVE_MS,
        )?,
        probe_interval: millis(
            "probe_interval_ms",
            raw.probe_interval_ms,
            DEFAULT_PROBE_INTERVAL,
            PROBE_INTERVAL_MS,
        )?,
        failure_threshold: count(
            "failure_threshold",
            raw.failure_threshold,
            DEFAULT_FAILURE_THRESHOLD,
            FAILURE_THRESHOLD,
        )?,
        open_for: millis("open_ms", raw.open_ms, DEFAULT_OPEN_FOR, OPEN_MS)?,
        connect_timeout: millis(
            "connect_timeout_ms",
            raw.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT,
            CONNECT_TIMEOUT_MS,
        )?,
        max_attempts: count(
            "max_attempts",
            raw.max_attempts,
            DEFAULT_REPLICA_ATTEMPTS,
            MAX_ATTEMPTS,
        )?,
    })
}

/// `dns` (a headless Service, re-resolved every `dns_refresh_ms`) or `urls`, not both.
fn discovery(raw: &RawReplicas) -> Result<Discovery, Invalid> {
    match (&raw.dns, &raw.urls) {
        (Some(_), Some(_)) => Err(invalid("urls", "`dns` and `urls` are mutually exclusive")),
        (None, None) => Err(invalid(
            "dns",
            "missing: give `dns` (a headless Service as host:port) or `urls` (a list of \
             host:port)",
        )),
        (Some(dns), None) => {
            let (host, port) = host_port("dns", dns)?;
            let refresh = millis(
                "dns_refresh_ms",
                raw.dns_refresh_ms,
                DEFAULT_DNS_REFRESH,
                DNS_REFRESH_MS,
            )?;
            Ok(Discovery::Dns {
                host,
                port,
                refresh,
            })
        }
        (None, Some(urls)) => static_addrs(urls, raw.dns_refresh_ms).map(Discovery::Static),
    }
}

/// `urls`: at least one `host:port` (an `http://` prefix and a trailing `/` allowed),
/// written back as `host:port` (`[v6]:port`).
fn static_addrs(urls: &[String], dns_refresh_ms: Option<u64>) -> Result<Vec<String>, Invalid> {
    if urls.is_empty() {
        return Err(invalid("urls", "must list at least one host:port"));
    }
    if dns_refresh_ms.is_some() {
        return Err(invalid("dns_refresh_ms", "only applies with `dns`"));
    }
    urls.iter()
        .map(|url| {
            let bare = url.strip_prefix("http://").unwrap_or(url);
            let (host, port) = host_port("urls", bare.trim_end_matches('/'))?;
            Ok(if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
        })
        .collect()
}

/// A `bedrock` table: the model, where to call it, and how.
fn bedrock(raw: RawBedrock) -> Result<BedrockSpec, Invalid> {
    if raw.model_id.trim().is_empty() || raw.model_id.contains(char::is_whitespace) {
        return Err(invalid(
            "model_id",
            format!(
                "must be a Bedrock model id, inference-profile id or ARN, got {:?}",
                raw.model_id
            ),
        ));
    }
    if let Some(region) = &raw.region {
        check_region(region)?;
    }
    if let Some(url) = &raw.endpoint_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                "endpoint_url",
                format!(
                    "must start with https:// (or http:// for a local test endpoint), got {url:?}"
                ),
            ));
        }
    }
    let unsupported_params = either(
        "unsupported_params",
        raw.unsupported_params.as_deref(),
        ("reject", UnsupportedParams::Reject),
        ("drop", UnsupportedParams::Drop),
    )?;
    Ok(BedrockSpec {
        model_id: raw.model_id,
        region: raw.region,
        endpoint_url: raw.endpoint_url,
        unsupported_params,
        max_attempts: count(
            "max_attempts",
            raw.max_attempts,
            DEFAULT_BEDROCK_ATTEMPTS,
            MAX_ATTEMPTS,
        )?,
        timeout: millis(
            "timeout_ms",
            raw.timeout_ms,
            DEFAULT_BEDROCK_TIMEOUT,
            BEDROCK_TIMEOUT_MS,
        )?,
    })
}

/// An AWS region name: lowercase letters, digits and `-`.
fn check_region(region: &str) -> Result<(), Invalid> {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "region",
            format!("must look like \"us-east-1\", got {region:?}"),
        ))
    }
}
