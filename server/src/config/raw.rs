//! The on-disk shape of `models.toml` and its validation into [`ModelSpec`].

use std::path::Path;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

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
    /// `[[model.backend]]`: how `inferd gateway` serves this model.
    #[serde(default)]
    backend: Vec<super::gateway_raw::RawBackend>,
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

/// Check `min <= value <= max`, with a message naming the limit.
fn in_range(value: usize, (min, max): (usize, usize)) -> Result<(), String> {
    if value < min || value > max {
        Err(format!("must be between {min} and {max}, got {value}"))
    } else {
        Ok(())
    }
}

/// Validate one entry and turn it into a [`ModelSpec`].
pub(super) fn validate(
    raw: RawModel,
    index: usize,
    base_dir: &Path,
    path: &Path,
) -> Result<ModelSpec, ConfigError> {
    let id_ok = check_id(&raw.id);
    let model = label(id_ok.is_ok().then_some(raw.id.as_str()), index);
    let fail = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        model: model.clone(),
        key: key.to_string(),
        message,
    };
    id_ok.map_err(|m| fail("id", m))?;

    let source =
        match (raw.path, raw.hf) {
            (Some(_), Some(_)) => return Err(fail(
                "hf",
                "`path` and `hf` are mutually exclusive: give a local path or a Hub repo, not both"
                    .into(),
            )),
            (None, None) if raw.backend.is_empty() => {
                return Err(fail(
                    "path",
                    "missing: give `path` (a .gguf file or a safetensors directory) or `hf` (a \
                 Hugging Face Hub repo) for `inferd serve`, or [[model.backend]] tables for \
                 `inferd gateway`"
                        .into(),
                ))
            }
            (None, None) => None,
            (Some(p), None) => {
                for (key, given) in [
                    ("file", raw.file.is_some()),
                    ("revision", raw.revision.is_some()),
                ] {
                    if given {
                        return Err(fail(key, format!("`{key}` only applies to `hf` sources")));
                    }
                }
                if p.trim().is_empty() {
                    return Err(fail("path", "must not be empty".into()));
                }
                Some(ModelSource::Path(base_dir.join(p)))
            }
            (None, Some(repo)) => {
                check_repo(&repo).map_err(|m| fail("hf", m))?;
                if let Some(file) = &raw.file {
                    check_file(file).map_err(|m| fail("file", m))?;
                }
                let revision = raw.revision.unwrap_or_else(|| DEFAULT_REVISION.to_string());
                if revision.is_empty() || revision.contains(char::is_whitespace) {
                    return Err(fail(
                        "revision",
                        format!("must be a branch, tag or commit without spaces, got {revision:?}"),
                    ));
                }
                Some(ModelSource::Hub {
                    repo,
                    file: raw.file,
                    revision,
                })
            }
        };
    let mut backends = Vec::with_capacity(raw.backend.len());
    for (i, entry) in raw.backend.into_iter().enumerate() {
        let spec = super::gateway_raw::validate(entry)
            .map_err(|(key, message)| fail(&format!("backend[{i}].{key}"), message))?;
        backends.push(spec);
    }

    let mut limits = EngineLimits::default();
    if let Some(v) = raw.max_model_len {
        in_range(v, (1, MAX_MODEL_LEN_LIMIT)).map_err(|m| fail("max_model_len", m))?;
        limits.max_model_len = Some(v);
    }
    if let Some(v) = raw.max_num_seqs {
        in_range(v, MAX_NUM_SEQS_RANGE).map_err(|m| fail("max_num_seqs", m))?;
        limits.max_num_seqs = v;
    }
    if let Some(v) = raw.block_size {
        in_range(v, BLOCK_SIZE_RANGE)
            .and_then(|()| match v.is_power_of_two() {
                true => Ok(()),
                false => Err(format!(
                    "must be a power of two (1, 2, 4, ... 256), got {v}"
                )),
            })
            .map_err(|m| fail("block_size", m))?;
        limits.block_size = v;
    }
    if let Some(v) = raw.max_waiting {
        in_range(v, MAX_WAITING_RANGE).map_err(|m| fail("max_waiting", m))?;
        limits.max_waiting = v;
    }
    if let Some(v) = raw.enable_prefix_caching {
        limits.enable_prefix_caching = v;
    }
    if let Some(v) = raw.request_timeout_secs {
        if !(1..=86_400).contains(&v) {
            return Err(fail(
                "request_timeout_secs",
                format!("must be between 1 and 86400, got {v}"),
            ));
        }
        limits.request_timeout_secs = Some(v);
    }
    if let Some(v) = raw.max_num_batched_tokens {
        in_range(v, MAX_NUM_BATCHED_TOKENS_RANGE).map_err(|m| fail("max_num_batched_tokens", m))?;
        limits.max_num_batched_tokens = v;
    }
    let batched = limits.max_num_batched_tokens;
    if batched < limits.max_num_seqs {
        return Err(fail(
            "max_num_batched_tokens",
            format!(
                "must be at least max_num_seqs ({}) so every running sequence can decode in \
                 one step, got {batched}",
                limits.max_num_seqs
            ),
        ));
    }
    limits.kv_cache = match (raw.kv_cache_tokens, raw.kv_cache_bytes) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "kv_cache_bytes",
                "`kv_cache_tokens` and `kv_cache_bytes` are mutually exclusive: give one".into(),
            ))
        }
        (Some(tokens), None) => {
            let min = limits.max_model_len.unwrap_or(0).max(limits.block_size);
            if tokens < min {
                return Err(fail(
                    "kv_cache_tokens",
                    format!(
                        "must be at least {min} (block_size, and max_model_len so that one \
                         full-length sequence fits), got {tokens}"
                    ),
                ));
            }
            Some(KvCacheSize::Tokens(tokens))
        }
        (None, Some(ByteSize(0))) => return Err(fail("kv_cache_bytes", "must not be 0".into())),
        (None, Some(ByteSize(bytes))) => Some(KvCacheSize::Bytes(bytes)),
        (None, None) => None,
    };

    Ok(ModelSpec {
        id: raw.id,
        source,
        dequantize: raw.dequantize,
        limits,
        backends,
    })
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
