//! Fetching `hf = "org/repo"` models from the Hugging Face Hub into the
//! standard Hugging Face cache, with `hf-hub`'s blocking API.
//!
//! Environment (read by [`HubSettings::from_env`]):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HF_ENDPOINT` | Hub base URL (a mirror, or a test server) | `https://huggingface.co` |
//! | `HF_HUB_CACHE` | cache directory | `$HF_HOME/hub` |
//! | `HF_HOME` | Hugging Face home (cache in `hub/`, token file `token`) | `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
//! | `HF_TOKEN` | access token, sent as `Authorization: Bearer …` | `HUGGING_FACE_HUB_TOKEN`, else the file `$HF_TOKEN_PATH` or `$HF_HOME/token` |
//! | `HF_HUB_OFFLINE` | `1`/`true`: never touch the network, use the cache only | off |
//!
//! Proxies: `ALL_PROXY`, `HTTPS_PROXY` or `HTTP_PROXY` (or lower case) route
//! all Hub traffic; `NO_PROXY` is not honoured by `ureq` 2 under `hf-hub`.
//! Resolving is blocking I/O: call it off the async runtime.
//!
//! (`hf-hub` 0.4.3's own `ApiBuilder::from_env` reads only `HF_HOME` and
//! `HF_ENDPOINT` and the token file, never `HF_TOKEN`, and panics without a
//! home directory, so everything is set explicitly here.)
//!
//! Files are looked up in the cache first (`refs/<revision>` → snapshot), so a
//! model fetched once is resolved again without any request. Optional files
//! that the Hub reported missing are remembered the way `huggingface_hub`
//! does, as empty markers under `.no_exist/<commit>/`.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};

use super::{ConfigError, ResolvedModel};

/// The default Hub endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Why a Hub file could not be fetched ([`ConfigError::Hub`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {model:?}: cannot fetch {file:?} from Hub repo {repo:?} at revision {revision:?} via {endpoint}: {message}")]
pub struct HubError {
    /// The model id.
    pub model: String,
    /// The Hub repo.
    pub repo: String,
    /// The file in the repo.
    pub file: String,
    /// The revision asked for.
    pub revision: String,
    /// The Hub endpoint used (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The HTTP status, when the Hub answered with an error.
    pub status: Option<u16>,
    /// What went wrong, with a hint.
    pub message: String,
}

/// Where and how to talk to the Hub.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL, without a trailing `/`.
    pub endpoint: String,
    /// The hub cache directory (holds `models--org--name/`).
    pub cache_dir: PathBuf,
    /// Access token, if any.
    pub token: Option<String>,
    /// Use the cache only.
    pub offline: bool,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

/// A non-empty, trimmed environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl HubSettings {
    /// Settings from the environment (see the module docs for the variables).
    pub fn from_env() -> Self {
        let hf_home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache_dir = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(file)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        let endpoint = env("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token,
            offline,
        }
    }
}

/// Fetch a Hub model: the GGUF `file`, or a safetensors repo's config,
/// tokenizer and weights. Returns paths inside
/// `<cache>/models--org--name/snapshots/<commit>/`.
pub(super) fn resolve_hub(
    model: &str,
    repo: &str,
    file: Option<&str>,
    revision: &str,
    settings: &HubSettings,
) -> Result<ResolvedModel, ConfigError> {
    let hub = HubRepo::new(model, repo, revision, settings);
    if let Some(file) = file {
        return hub.fetch(file).map(ResolvedModel::Gguf);
    }
    let config = hub.fetch("config.json")?;
    let snapshot = config
        .parent()
        .expect("a cached file lies in a snapshot directory")
        .to_path_buf();
    let mut files = vec![hub.fetch("tokenizer.json")?];
    if let Some(single) = hub.fetch_optional("model.safetensors")? {
        files.push(single);
    } else {
        const INDEX: &str = "model.safetensors.index.json";
        let Some(index) = hub.fetch_optional(INDEX)? else {
            return Err(hub.error(
                "model.safetensors",
                None,
                format!(
                    "the repo has neither model.safetensors nor {INDEX}{}",
                    hub.offline_hint()
                ),
            ));
        };
        for shard in shard_names(&index).map_err(|m| hub.error(INDEX, None, m))? {
            files.push(hub.fetch(&shard)?);
        }
        files.push(index);
    }
    for optional in ["tokenizer_config.json", "generation_config.json"] {
        files.extend(hub.fetch_optional(optional)?);
    }
    if let Some(stray) = files.iter().find(|f| !f.starts_with(&snapshot)) {
        return Err(hub.error(
            &stray.file_name().unwrap_or_default().to_string_lossy(),
            None,
            format!(
                "the repo moved to a new commit while its files were fetched ({} is not in {}); \
                 retry, or pin `revision` to a commit",
                stray.display(),
                snapshot.display()
            ),
        ));
    }
    Ok(ResolvedModel::SafetensorsDir(snapshot))
}

/// The unique shard file names of a `model.safetensors.index.json`, sorted.
fn shard_names(index: &Path) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| format!("cannot read: {e}"))?;
    let index: Index =
        serde_json::from_str(&text).map_err(|e| format!("not a safetensors index: {e}"))?;
    let mut shards: Vec<String> = index.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err("weight_map is empty".into());
    }
    if let Some(bad) = shards
        .iter()
        .find(|s| s.starts_with('/') || s.split('/').any(|p| p.is_empty() || p == ".."))
    {
        return Err(format!(
            "shard name {bad:?} is not a relative path in the repo"
        ));
    }
    Ok(shards)
}

/// One repo at one revision: the cache view and the download client.
struct HubRepo<'a> {
    model: &'a str,
    repo: &'a str,
    revision: &'a str,
    settings: &'a HubSettings,
    cache: CacheRepo,
    /// `<cache>/models--org--name`.
    dir: PathBuf,
    api: ApiRepo,
}

impl<'a> HubRepo<'a> {
    fn new(model: &'a str, repo: &'a str, revision: &'a str, settings: &'a HubSettings) -> Self {
        let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
        let cache = Cache::new(settings.cache_dir.clone());
        let api = ApiBuilder::from_cache(cache.clone())
            .with_endpoint(settings.endpoint.clone())
            .with_token(settings.token.clone())
            .with_progress(false)
            .with_retries(2)
            .with_user_agent("inferd", env!("CARGO_PKG_VERSION"))
            .build()
            .expect("the ureq-only hf-hub client builds without error")
            .repo(hf_repo.clone());
        Self {
            model,
            repo,
            revision,
            settings,
            dir: settings.cache_dir.join(hf_repo.folder_name()),
            cache: cache.repo(hf_repo),
            api,
        }
    }

    /// A required file: from the cache, else downloaded.
    fn fetch(&self, file: &str) -> Result<PathBuf, ConfigError> {
        if let Some(path) = self.cache.get(file) {
            return Ok(path);
        }
        if self.settings.offline {
            return Err(self.error(
                file,
                None,
                format!("not in the cache{}", self.offline_hint()),
            ));
        }
        tracing::info!(
            model = self.model,
            repo = self.repo,
            revision = self.revision,
            file,
            "downloading from the Hub"
        );
        self.api.download(file).map_err(|e| self.api_error(file, e))
    }

    /// An optional file: `None` when the Hub says 404 (remembered in
    /// `.no_exist/`), or when offline and not cached.
    fn fetch_optional(&self, file: &str) -> Result<Option<PathBuf>, ConfigError> {
        if let Some(path) = self.cache.get(file) {
            return Ok(Some(path));
        }
        let marker = self.no_exist_marker(file);
        if self.settings.offline || marker.as_ref().is_some_and(|m| m.exists()) {
            return Ok(None);
        }
        match self.api.download(file) {
            Ok(path) => Ok(Some(path)),
            Err(e) => match self.api_error(file, e) {
                ConfigError::Hub(e) if e.status == Some(404) => {
                    // Re-read: the commit is known once any file was fetched.
                    if let Some(marker) = self.no_exist_marker(file) {
                        let _ = std::fs::create_dir_all(marker.parent().unwrap_or(&self.dir))
                            .and_then(|()| std::fs::write(&marker, b""));
                    }
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    /// `.no_exist/<commit>/<file>` for the cached commit of this revision.
    fn no_exist_marker(&self, file: &str) -> Option<PathBuf> {
        let commit = std::fs::read_to_string(self.dir.join("refs").join(self.revision)).ok()?;
        let commit = commit.trim();
        (!commit.is_empty()).then(|| self.dir.join(".no_exist").join(commit).join(file))
    }

    fn offline_hint(&self) -> &'static str {
        if self.settings.offline {
            " (HF_HUB_OFFLINE is set: only the cache was searched)"
        } else {
            ""
        }
    }

    fn error(&self, file: &str, status: Option<u16>, message: String) -> ConfigError {
        ConfigError::Hub(Box::new(HubError {
            model: self.model.to_string(),
            repo: self.repo.to_string(),
            file: file.to_string(),
            revision: self.revision.to_string(),
            endpoint: self.settings.endpoint.clone(),
            status,
            message,
        }))
    }

    /// Turn an `hf-hub` error into a [`ConfigError::Hub`] with the HTTP
    /// status (when there is one) and a hint.
    fn api_error(&self, file: &str, err: ApiError) -> ConfigError {
        let (status, message) = describe(err);
        let hint = match status {
            Some(401 | 403) => {
                "; the repo may be private or gated: accept its terms on the Hub and set HF_TOKEN"
            }
            Some(404) => {
                "; no such file at this revision (or no such repo; a private repo also needs \
                 HF_TOKEN)"
            }
            _ => "",
        };
        self.error(file, status, format!("{message}{hint}"))
    }
}

/// The HTTP status (if the Hub answered with one) and a message.
fn describe(err: ApiError) -> (Option<u16>, String) {
    match err {
        ApiError::RequestError(boxed) => {
            let text = boxed.to_string();
            match (*boxed).into_response() {
                Some(resp) => (
                    Some(resp.status()),
                    format!("HTTP {} {}", resp.status(), resp.status_text()),
                ),
                None => (None, text),
            }
        }
        ApiError::TooManyRetries(inner) => {
            let (status, message) = describe(*inner);
            (status, format!("gave up after retries: {message}"))
        }
        ApiError::MissingHeader(h) => (
            None,
            format!(
                "the response lacks the `{h}` header: HF_ENDPOINT does not look like a \
                 Hugging Face Hub"
            ),
        ),
        other => (None, other.to_string()),
    }
}
