//! The on-disk shape of `models.toml` and its validation into [`ModelSpec`].

use std::path::Path;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::device::{DeviceSpec, GpuMemoryUtilization, Placement};
use super::gateway::BackendSpec;
use super::gateway_raw::RawBackend;
use super::{ConfigError, EngineLimits, KvCacheSize, ModelSource, ModelSpec, DEFAULT_REVISION};

/// Longest accepted model id.
const MAX_ID_LEN: usize = 256;
/// Upper bound of `max_model_len` (2^24 tokens), to catch typos.
const MAX_MODEL_LEN_LIMIT: usize = 1 << 24;
/// Bounds of `max_num_seqs`.
const MAX_NUM_SEQS_RANGE: (usize, usize) = (1, 1024);
/// Bounds of `max_num_batched_tokens`.
const MAX_NUM_BATCHED_TOKENS_RANGE: (usize, usize) = (16, 1 << 20);
/// Bounds of `block_size` (also a power of two).
const BLOCK_SIZE_RANGE: (usize, usize) = (1, 256);
/// Bounds of `max_waiting`.
const MAX_WAITING_RANGE: (usize, usize) = (1, 1_000_000);
/// Bounds of `request_timeout_secs` (one day at most).
const REQUEST_TIMEOUT_SECS_RANGE: (u64, u64) = (1, 86_400);

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) model: Vec<RawModel>,
}

/// One `[[model]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    id: String,
    path: Option<String>,
    hf: Option<String>,
    file: Option<String>,
    revision: Option<String>,
    #[serde(default)]
    dequantize: bool,
    max_model_len: Option<usize>,
    kv_cache_tokens: Option<usize>,
    kv_cache_bytes: Option<ByteSize>,
    max_num_seqs: Option<usize>,
    max_num_batched_tokens: Option<usize>,
    block_size: Option<usize>,
    max_waiting: Option<usize>,
    enable_prefix_caching: Option<bool>,
    request_timeout_secs: Option<u64>,
    device: Option<String>,
    gpu_memory_utilization: Option<f64>,
    enforce_eager: Option<bool>,
    /// `[[model.backend]]`: how `inferd gateway` serves this model.
    #[serde(default)]
    backend: Vec<RawBackend>,
}

/// A byte count written as an integer or as a string like `"512MiB"`.
#[derive(Debug, Clone, Copy)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte count: an integer or a string like \"512MiB\" or \"2GiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte count must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse `"1048576"`, `"512MiB"`, `"1 GiB"`, `"64KiB"`, `"2TiB"` or `"100B"`
/// into bytes. Units are powers of 1024 (case-insensitive); decimal units
/// (`MB`, `GB`) are rejected as ambiguous.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    if digits.is_empty() {
        return Err(format!(
            "invalid byte size {text:?}: expected an integer and an optional unit, e.g. \"512MiB\""
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        "tib" => 40,
        _ => {
            return Err(format!(
                "invalid byte size {text:?}: unknown unit {unit:?}; use B, KiB, MiB, GiB or TiB \
                 (powers of 1024), e.g. \"512MiB\""
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid byte size {text:?}: number too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid byte size {text:?}: more than 2^64 bytes"))
}

/// Parse the text strictly; on error, say which `[[model]]` entry it is in.
pub(super) fn parse_file(text: &str, path: &Path) -> Result<RawFile, ConfigError> {
    toml::from_str::<RawFile>(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        model: e.span().and_then(|s| entry_label_at(text, s.start)),
        message: e.to_string().trim_end().to_string(),
    })
}

/// The label (`"id"` or `#n`) of the `[[model]]` entry containing byte `offset`.
fn entry_label_at(text: &str, offset: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Loose {
        #[serde(default)]
        model: Vec<toml::Spanned<toml::Table>>,
    }
    let loose: Loose = toml::from_str(text).ok()?;
    let index = loose.model.iter().rposition(|t| t.span().start <= offset)?;
    let id = loose.model[index]
        .get_ref()
        .get("id")
        .and_then(|v| v.as_str());
    Some(label(id, index))
}

/// `"id"` when the id is usable in a message, else `#n` (1-based).
fn label(id: Option<&str>, index: usize) -> String {
    match id {
        Some(id) if !id.is_empty() => format!("{id:?}"),
        _ => format!("#{}", index + 1),
    }
}

/// `(key, message)` of the first invalid key of a table; the caller adds where the table is.
pub(super) type Invalid = (String, String);

/// An [`Invalid`] for `key`.
pub(super) fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    (key.to_owned(), message.into())
}

/// `value`, if given, checked against `min <= value <= max` with a message naming the limit.
pub(super) fn ranged<T: Copy + PartialOrd + std::fmt::Display>(
    key: &str,
    value: Option<T>,
    (min, max): (T, T),
) -> Result<Option<T>, Invalid> {
    match value {
        Some(v) if v < min || v > max => Err(invalid(
            key,
            format!("must be between {min} and {max}, got {v}"),
        )),
        _ => Ok(value),
    }
}

/// Validate one entry and turn it into a [`ModelSpec`]: its id, then where its weights
/// come from, then its backends, then its engine limits (the first invalid key wins).
pub(super) fn validate(
    mut raw: RawModel,
    index: usize,
    base_dir: &Path,
    path: &Path,
) -> Result<ModelSpec, ConfigError> {
    let id_ok = check_id(&raw.id);
    let model = label(id_ok.is_ok().then_some(raw.id.as_str()), index);
    let fail = |(key, message): Invalid| ConfigError::Invalid {
        path: path.to_path_buf(),
        model: model.clone(),
        key,
        message,
    };
    id_ok.map_err(|m| fail(invalid("id", m)))?;
    let source = source(&raw, base_dir).map_err(fail)?;
    let backends = backends(std::mem::take(&mut raw.backend)).map_err(fail)?;
    let limits = limits(&raw).map_err(fail)?;
    let placement = placement(&raw).map_err(fail)?;
    Ok(ModelSpec {
        id: raw.id,
        source,
        dequantize: raw.dequantize,
        limits,
        placement,
        backends,
    })
}

/// `path` or `hf`: where `inferd serve` reads the weights. Neither is allowed only for a
/// gateway-only entry (one with `[[model.backend]]` tables).
fn source(raw: &RawModel, base_dir: &Path) -> Result<Option<ModelSource>, Invalid> {
    match (&raw.path, &raw.hf) {
        (Some(_), Some(_)) => Err(invalid(
            "hf",
            "`path` and `hf` are mutually exclusive: give a local path or a Hub repo, not both",
        )),
        (None, None) if raw.backend.is_empty() => Err(invalid(
            "path",
            "missing: give `path` (a .gguf file or a safetensors directory) or `hf` (a \
             Hugging Face Hub repo) for `inferd serve`, or [[model.backend]] tables for \
             `inferd gateway`",
        )),
        (None, None) => Ok(None),
        (Some(local), None) => local_source(raw, local, base_dir).map(Some),
        (None, Some(repo)) => {
            hub_source(repo, raw.file.as_deref(), raw.revision.as_deref()).map(Some)
        }
    }
}

/// A local `path`, joined to the catalog's directory; `file` and `revision` are Hub-only.
fn local_source(raw: &RawModel, local: &str, base_dir: &Path) -> Result<ModelSource, Invalid> {
    for (key, given) in [
        ("file", raw.file.is_some()),
        ("revision", raw.revision.is_some()),
    ] {
        if given {
            return Err(invalid(
                key,
                format!("`{key}` only applies to `hf` sources"),
            ));
        }
    }
    if local.trim().is_empty() {
        return Err(invalid("path", "must not be empty"));
    }
    Ok(ModelSource::Path(base_dir.join(local)))
}

/// An `hf` repo, with an optional GGUF `file` and a `revision` (default `main`).
fn hub_source(
    repo: &str,
    file: Option<&str>,
    revision: Option<&str>,
) -> Result<ModelSource, Invalid> {
    check_repo(repo).map_err(|m| invalid("hf", m))?;
    if let Some(file) = file {
        check_file(file).map_err(|m| invalid("file", m))?;
    }
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    if revision.is_empty() || revision.contains(char::is_whitespace) {
        return Err(invalid(
            "revision",
            format!("must be a branch, tag or commit without spaces, got {revision:?}"),
        ));
    }
    Ok(ModelSource::Hub {
        repo: repo.to_owned(),
        file: file.map(str::to_owned),
        revision: revision.to_owned(),
    })
}

/// The `[[model.backend]]` tables, in order; keys of an invalid one are `backend[i].key`.
fn backends(tables: Vec<RawBackend>) -> Result<Vec<BackendSpec>, Invalid> {
    tables
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            super::gateway_raw::validate(table)
                .map_err(|(key, m)| (format!("backend[{i}].{key}"), m))
        })
        .collect()
}

/// The engine-sizing keys, each within its bounds (defaults for those left out), then the
/// rules between them: a step holds one token of every running sequence, and the KV cache
/// holds one full-length sequence.
fn limits(raw: &RawModel) -> Result<EngineLimits, Invalid> {
    let default = EngineLimits::default();
    let max_model_len = ranged("max_model_len", raw.max_model_len, (1, MAX_MODEL_LEN_LIMIT))?
        .or(default.max_model_len);
    let max_num_seqs = ranged("max_num_seqs", raw.max_num_seqs, MAX_NUM_SEQS_RANGE)?
        .unwrap_or(default.max_num_seqs);
    let block_size = block_size(raw.block_size)?.unwrap_or(default.block_size);
    let max_waiting =
        ranged("max_waiting", raw.max_waiting, MAX_WAITING_RANGE)?.unwrap_or(default.max_waiting);
    let request_timeout_secs = ranged(
        "request_timeout_secs",
        raw.request_timeout_secs,
        REQUEST_TIMEOUT_SECS_RANGE,
    )?
    .or(default.request_timeout_secs);
    let max_num_batched_tokens = ranged(
        "max_num_batched_tokens",
        raw.max_num_batched_tokens,
        MAX_NUM_BATCHED_TOKENS_RANGE,
    )?
    .unwrap_or(default.max_num_batched_tokens);
    if max_num_batched_tokens < max_num_seqs {
        return Err(invalid(
            "max_num_batched_tokens",
            format!(
                "must be at least max_num_seqs ({max_num_seqs}) so every running sequence can \
                 decode in one step, got {max_num_batched_tokens}"
            ),
        ));
    }
    let min_kv_tokens = max_model_len.unwrap_or(0).max(block_size);
    Ok(EngineLimits {
        max_model_len,
        kv_cache: kv_cache(raw.kv_cache_tokens, raw.kv_cache_bytes, min_kv_tokens)?,
        max_num_seqs,
        max_num_batched_tokens,
        block_size,
        max_waiting,
        enable_prefix_caching: raw
            .enable_prefix_caching
            .unwrap_or(default.enable_prefix_caching),
        request_timeout_secs,
    })
}

/// `device` (default `auto`), `gpu_memory_utilization` (default 0.9) and `enforce_eager`
/// (default false).
fn placement(raw: &RawModel) -> Result<Placement, Invalid> {
    let device = match &raw.device {
        Some(text) => text
            .parse::<DeviceSpec>()
            .map_err(|m| invalid("device", m))?,
        None => DeviceSpec::default(),
    };
    let gpu_memory_utilization = match raw.gpu_memory_utilization {
        Some(v) => {
            GpuMemoryUtilization::new(v).map_err(|m| invalid("gpu_memory_utilization", m))?
        }
        None => GpuMemoryUtilization::default(),
    };
    Ok(Placement {
        device,
        gpu_memory_utilization,
        enforce_eager: raw.enforce_eager.unwrap_or(false),
    })
}

/// `block_size`, if given: within [`BLOCK_SIZE_RANGE`] and a power of two.
fn block_size(value: Option<usize>) -> Result<Option<usize>, Invalid> {
    match ranged("block_size", value, BLOCK_SIZE_RANGE)? {
        Some(v) if !v.is_power_of_two() => Err(invalid(
            "block_size",
            format!("must be a power of two (1, 2, 4, ... 256), got {v}"),
        )),
        v => Ok(v),
    }
}

/// `kv_cache_tokens` (at least `min_tokens`) or `kv_cache_bytes` (not 0), not both.
fn kv_cache(
    tokens: Option<usize>,
    bytes: Option<ByteSize>,
    min_tokens: usize,
) -> Result<Option<KvCacheSize>, Invalid> {
    match (tokens, bytes) {
        (Some(_), Some(_)) => Err(invalid(
            "kv_cache_bytes",
            "`kv_cache_tokens` and `kv_cache_bytes` are mutually exclusive: give one",
        )),
        (Some(tokens), None) if tokens < min_tokens => Err(invalid(
            "kv_cache_tokens",
            format!(
                "must be at least {min_tokens} (block_size, and max_model_len so that one \
                 full-length sequence fits), got {tokens}"
            ),
        )),
        (Some(tokens), None) => Ok(Some(KvCacheSize::Tokens(tokens))),
        (None, Some(ByteSize(0))) => Err(invalid("kv_cache_bytes", "must not be 0")),
        (None, Some(ByteSize(bytes))) => Ok(Some(KvCacheSize::Bytes(bytes))),
        (None, None) => Ok(None),
    }
}

/// Ids: non-empty, at most [`MAX_ID_LEN`] bytes, `[A-Za-z0-9._:/-]+`.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "must be at most {MAX_ID_LEN} bytes, got {}",
            id.len()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/-".contains(*c)))
    {
        Some(c) => Err(format!(
            "{id:?} contains {c:?}; allowed: ASCII letters, digits and . _ : / -"
        )),
        None => Ok(()),
    }
}

/// Hub repo ids: `name` or `org/name`, each part `[A-Za-z0-9._-]+`.
fn check_repo(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let part_ok = |p: &&str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if parts.len() > 2 || !parts.iter().all(part_ok) {
        return Err(format!(
            "{repo:?} is not a Hub repo id; expected \"org/name\" (letters, digits, . _ -)"
        ));
    }
    Ok(())
}

/// A GGUF file inside a repo: relative, no `..`, ends in `.gguf`.
fn check_file(file: &str) -> Result<(), String> {
    if file.is_empty()
        || file.starts_with('/')
        || file.split('/').any(|p| p == ".." || p.is_empty())
    {
        return Err(format!(
            "{file:?} must be a relative path inside the repo, without \"..\""
        ));
    }
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(format!(
            "{file:?} is not a .gguf file; leave `file` out for a safetensors repo"
        ));
    }
    Ok(())
}
