//! The model catalog: `models.toml`, parsed into typed, validated [`ModelSpec`]s.
//!
//! Loading is split in two so that a catalog can be checked on a machine that
//! does not hold the weights (`inferd check-config`):
//!
//! - [`load_catalog`] / [`parse_catalog`] are pure: they read and parse the TOML,
//!   reject unknown keys (`deny_unknown_fields` everywhere), check every number
//!   against its limit and resolve relative paths against the directory of
//!   `models.toml`, but never look at the weights themselves.
//! - [`resolve`] touches the filesystem (local `path` sources) or the network
//!   (Hugging Face Hub `hf` sources, see [`hub`]) and returns the files the
//!   loader should open.
//!
//! The format, with every key (see the shipped `models.toml` for a commented
//! example):
//!
//! ```toml
//! [[model]]
//! id = "smollm2-135m-instruct"     # name clients send; unique; [A-Za-z0-9._:/-]+
//! path = "models/x.gguf"           # a .gguf file or a safetensors directory, or:
//! # hf = "org/repo"                # Hub repo; `file` = a GGUF in it, else safetensors
//! # file = "model.Q4_1.gguf"
//! # revision = "main"
//! dequantize = false               # dequantize quantized weights to f32 at load
//! max_model_len = 2048             # default: the model's own context length
//! kv_cache_tokens = 32768          # or kv_cache_bytes = "512MiB"; default: engine's choice
//! max_num_seqs = 32                # 1..=1024
//! max_num_batched_tokens = 2048    # >= 16, >= max_num_seqs; longer prompts are chunked
//! block_size = 16                  # power of two, 1..=256
//! max_waiting = 256                # bounded admission queue; beyond it: 429
//! enable_prefix_caching = true     # share KV blocks of identical prompt prefixes
//! request_timeout_secs = 120       # default deadline (the x-inferd-deadline-ms header wins)
//! device = "auto"                  # "cpu", "cuda", "cuda:N"; auto: a GPU when there is one
//! gpu_memory_utilization = 0.9     # on a GPU: share of its memory inferd may fill
//! enforce_eager = false            # on a GPU: no CUDA graphs of decode steps
//! ```

pub mod device;
pub mod gateway;
mod gateway_raw;
#[cfg(test)]
mod gateway_tests;
pub mod hub;
mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

pub use device::{DeviceSpec, GpuMemoryUtilization, Placement};
pub use hub::{HubError, HubSettings};
pub use raw::parse_byte_size;

/// Default for `max_num_seqs`: requests decoded together in one engine step.
pub const DEFAULT_MAX_NUM_SEQS: usize = 32;
/// Default for `max_num_batched_tokens`: tokens (prompt + decode) in one step.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 2048;
/// Default for `block_size`: tokens per KV-cache block.
pub const DEFAULT_BLOCK_SIZE: usize = 16;
/// Default for `max_waiting`: requests admitted but not yet running.
pub const DEFAULT_MAX_WAITING: usize = 256;
/// Default Hub revision.
pub const DEFAULT_REVISION: &str = "main";

/// A validated `models.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The models, in file order; ids are unique.
    pub models: Vec<ModelSpec>,
    /// The file the catalog was read from (used in messages).
    pub source_path: PathBuf,
}

impl Catalog {
    /// The model with this id, if any.
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }
}

/// One `[[model]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name clients send in `"model"`.
    pub id: String,
    /// Where the weights come from (`inferd serve`); `None` for a gateway-only entry.
    pub source: Option<ModelSource>,
    /// Dequantize quantized weights to f32 at load time.
    pub dequantize: bool,
    /// Engine sizing for this model.
    pub limits: EngineLimits,
    /// `device` and `gpu_memory_utilization`: where `inferd serve` runs it.
    pub placement: Placement,
    /// `[[model.backend]]`: how `inferd gateway` serves it, in order of preference.
    pub backends: Vec<gateway::BackendSpec>,
}

/// Where a model's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local `.gguf` file or safetensors directory; relative paths in
    /// `models.toml` are already joined to the catalog's directory.
    Path(PathBuf),
    /// A Hugging Face Hub repo: a GGUF `file` in it, or (without `file`) a
    /// safetensors repo.
    Hub {
        /// `org/name`.
        repo: String,
        /// A GGUF file in the repo; `None` for a safetensors repo.
        file: Option<String>,
        /// Branch, tag or commit; default `main`.
        revision: String,
    },
}

/// Engine sizing of one model. `None` means "let the loader / engine decide".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Longest sequence (prompt + completion); `None`: the model's own context length.
    pub max_model_len: Option<usize>,
    /// KV-cache capacity; `None`: the engine chooses.
    pub kv_cache: Option<KvCacheSize>,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens processed in one engine step.
    pub max_num_batched_tokens: usize,
    /// Tokens per KV-cache block.
    pub block_size: usize,
    /// Most requests waiting for admission; beyond it requests get 429.
    pub max_waiting: usize,
    /// Share KV blocks of identical prompt prefixes between requests.
    pub enable_prefix_caching: bool,
    /// Deadline of a request that sends no `x-inferd-deadline-ms` header; `None`: none.
    pub request_timeout_secs: Option<u64>,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_model_len: None,
            kv_cache: None,
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS,
            block_size: DEFAULT_BLOCK_SIZE,
            max_waiting: DEFAULT_MAX_WAITING,
            enable_prefix_caching: true,
            request_timeout_secs: None,
        }
    }
}

/// KV-cache capacity, as given in `models.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// `kv_cache_tokens`: room for this many tokens (all layers).
    Tokens(usize),
    /// `kv_cache_bytes`: this much memory; the engine converts it to blocks.
    Bytes(u64),
}

/// The files the model loader should open, found by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedModel {
    /// A GGUF file (weights, tokenizer and chat template inside).
    Gguf(PathBuf),
    /// A directory with `config.json`, `tokenizer.json` and the safetensors
    /// weights (`model.safetensors` or the shards of
    /// `model.safetensors.index.json`); maybe `tokenizer_config.json` and
    /// `generation_config.json`.
    SafetensorsDir(PathBuf),
}

impl ResolvedModel {
    /// The GGUF file or the safetensors directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(p) | Self::SafetensorsDir(p) => p,
        }
    }
}

/// Everything that can be wrong with a catalog or its models.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `models.toml` could not be read.
    #[error("cannot read model catalog {}: {source}", path.display())]
    Read {
        /// The catalog file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type. `message`
    /// is toml's report (line, column, the offending key and a snippet).
    #[error("{}: {}{message}", path.display(), model.as_ref().map(|m| format!("model {m}: ")).unwrap_or_default())]
    Syntax {
        /// The catalog file.
        path: PathBuf,
        /// The `[[model]]` entry the error is in: its quoted id, or `#n`.
        model: Option<String>,
        /// What is wrong, with position.
        message: String,
    },
    /// A well-typed value that breaks a rule (range, exclusivity, format).
    #[error("{}: model {model}: invalid `{key}`: {message}", path.display())]
    Invalid {
        /// The catalog file.
        path: PathBuf,
        /// The entry: its quoted id, or `#n` (1-based) when the id is the problem.
        model: String,
        /// The offending key.
        key: String,
        /// What is wrong, naming the limit.
        message: String,
    },
    /// The catalog has no `[[model]]` entry.
    #[error("{}: no models: add at least one [[model]] table", path.display())]
    NoModels {
        /// The catalog file.
        path: PathBuf,
    },
    /// Two entries share an id.
    #[error("{}: duplicate model id {id:?} (entries #{first} and #{second})", path.display())]
    DuplicateId {
        /// The catalog file.
        path: PathBuf,
        /// The repeated id.
        id: String,
        /// 1-based index of the first entry with it.
        first: usize,
        /// 1-based index of the second entry with it.
        second: usize,
    },
    /// A local `path` source is missing or is not a usable model.
    #[error("model {model:?}: {}: {message}", path.display())]
    ModelFiles {
        /// The model id.
        model: String,
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A Hub file could not be fetched (boxed: it is the largest variant).
    #[error(transparent)]
    Hub(Box<HubError>),
}

/// Read, parse and validate a catalog file. Touches nothing but that file:
/// model paths are not checked and nothing is downloaded (see [`resolve`]).
/// Relative model paths are resolved against the catalog's directory, made
/// absolute against the current directory.
pub fn load_catalog(path: &Path) -> Result<Catalog, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_catalog(&text, &base_dir, path.to_path_buf())
}

/// Parse and validate catalog text. `base_dir` is joined to relative `path`s;
/// `source_path` names the catalog in errors and in [`Catalog::source_path`].
pub fn parse_catalog(
    text: &str,
    base_dir: &Path,
    source_path: PathBuf,
) -> Result<Catalog, ConfigError> {
    let file = raw::parse_file(text, &source_path)?;
    if file.model.is_empty() {
        return Err(ConfigError::NoModels { path: source_path });
    }
    let mut models: Vec<ModelSpec> = Vec::with_capacity(file.model.len());
    for (index, entry) in file.model.into_iter().enumerate() {
        let spec = raw::validate(entry, index, base_dir, &source_path)?;
        if let Some(first) = models.iter().position(|m| m.id == spec.id) {
            return Err(ConfigError::DuplicateId {
                path: source_path,
                id: spec.id,
                first: first + 1,
                second: index + 1,
            });
        }
        models.push(spec);
    }
    Ok(Catalog {
        models,
        source_path,
    })
}

/// Find the files of a model: check a local `path`, or fetch a Hub source
/// into the Hugging Face cache (settings from the environment, see
/// [`HubSettings::from_env`]). Files already in the cache are not fetched again.
pub fn resolve(spec: &ModelSpec) -> Result<ResolvedModel, ConfigError> {
    resolve_with(spec, &HubSettings::from_env())
}

/// [`resolve`] with explicit Hub settings.
pub fn resolve_with(spec: &ModelSpec, hub: &HubSettings) -> Result<ResolvedModel, ConfigError> {
    match &spec.source {
        Some(ModelSource::Path(path)) => resolve_local(&spec.id, path),
        Some(ModelSource::Hub {
            repo,
            file,
            revision,
        }) => hub::resolve_hub(&spec.id, repo, file.as_deref(), revision, hub),
        None => Err(ConfigError::ModelFiles {
            model: spec.id.clone(),
            path: PathBuf::new(),
            message: "has no `path` or `hf`: only `inferd gateway` can serve it".into(),
        }),
    }
}

/// Check a local `path` source: a GGUF file (by magic bytes) or a directory
/// with `config.json`, `tokenizer.json` and safetensors weights.
fn resolve_local(model: &str, path: &Path) -> Result<ResolvedModel, ConfigError> {
    let fail = |message: String| ConfigError::ModelFiles {
        model: model.to_string(),
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("does not exist".into()),
        _ => fail(format!("cannot access: {e}")),
    })?;
    if meta.is_file() {
        use std::io::Read;
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| fail(format!("cannot read a GGUF header: {e}")))?;
        if &magic != b"GGUF" {
            return Err(fail(format!(
                "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\"); \
                 a safetensors model must be given as its directory"
            )));
        }
        return Ok(ResolvedModel::Gguf(path.to_path_buf()));
    }
    for required in ["config.json", "tokenizer.json"] {
        if !path.join(required).is_file() {
            return Err(fail(format!(
                "directory has no {required} (a safetensors model directory needs \
                 config.json, tokenizer.json and *.safetensors)"
            )));
        }
    }
    let has_weights = path.join("model.safetensors.index.json").is_file()
        || std::fs::read_dir(path)
            .map_err(|e| fail(format!("cannot list: {e}")))?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    if !has_weights {
        return Err(fail("directory has no *.safetensors weights".into()));
    }
    Ok(ResolvedModel::SafetensorsDir(path.to_path_buf()))
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "path {}", p.display()),
            Self::Hub {
                repo,
                file: Some(file),
                revision,
            } => write!(f, "hub {repo}@{revision} GGUF {file}"),
            Self::Hub {
                repo,
                file: None,
                revision,
            } => write!(f, "hub {repo}@{revision} safetensors"),
        }
    }
}

impl fmt::Display for KvCacheSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Tokens(n) => write!(f, "{n} tokens"),
            Self::Bytes(b) if b >= 1 << 30 && b % (1 << 30) == 0 => write!(f, "{} GiB", b >> 30),
            Self::Bytes(b) if b >= 1 << 20 && b % (1 << 20) == 0 => write!(f, "{} MiB", b >> 20),
            Self::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

impl fmt::Display for Catalog {
    /// A human-readable summary, one block per model (for `check-config`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.models.len();
        let plural = if n == 1 { "" } else { "s" };
        writeln!(f, "{}: {n} model{plural}", self.source_path.display())?;
        for m in &self.models {
            let l = &m.limits;
            let len = l
                .max_model_len
                .map_or("(model's own)".to_string(), |v| v.to_string());
            let kv = l
                .kv_cache
                .map_or("(engine default)".to_string(), |v| v.to_string());
            writeln!(f, "- {}", m.id)?;
            match &m.source {
                Some(source) => writeln!(f, "    source: {source}")?,
                None => writeln!(f, "    source: (none: gateway only)")?,
            }
            for (i, backend) in m.backends.iter().enumerate() {
                writeln!(f, "    backend[{i}]: {backend:?}")?;
            }
            writeln!(f, "    dequantize: {}", m.dequantize)?;
            writeln!(f, "    max_model_len: {len}")?;
            writeln!(f, "    kv_cache: {kv}")?;
            writeln!(f, "    max_num_seqs: {}", l.max_num_seqs)?;
            writeln!(
                f,
                "    max_num_batched_tokens: {}",
                l.max_num_batched_tokens
            )?;
            writeln!(f, "    block_size: {}", l.block_size)?;
            writeln!(f, "    max_waiting: {}", l.max_waiting)?;
            writeln!(f, "    enable_prefix_caching: {}", l.enable_prefix_caching)?;
            if let Some(t) = l.request_timeout_secs {
                writeln!(f, "    request_timeout_secs: {t}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
