//! Loading a model from a GGUF file or an HF safetensors directory into one `Llama`,
//! with its own tokenizer and chat template.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::chat_template::ChatTemplate;
use super::linear::Linear;
use super::llama::{Llama, LlamaLayer, LlamaParts, RopeStyle};
use super::tokenizer::{self, ModelTokenizer};
use super::{ModelError, ModelShape};

/// A model ready to serve: weights, tokenizer and chat template.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Dequantize quantized GGUF weights to f32 (fast batched CPU GEMM).
    pub dequantize: bool,
    pub device: Device,
}

/// Loads a `.gguf` file or a safetensors directory.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    if path.is_dir() {
        load_safetensors_dir(path, opts)
    } else {
        load_gguf(path, opts)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

struct Gguf<'a> {
    path: &'a Path,
    content: gguf_file::Content,
    file: File,
    device: Device,
}

impl Gguf<'_> {
    fn md(&self, key: &str) -> Result<&gguf_file::Value, ModelError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.meta_err(key, "missing"))
    }

    fn meta_err(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Metadata {
            path: self.path.display().to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.md(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| self.meta_err(key, e.to_string()))
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32, ModelError> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(v) => v.to_f32().map_err(|e| self.meta_err(key, e.to_string())),
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<candle_core::quantized::QTensor, ModelError> {
        Ok(self.content.tensor(&mut self.file, name, &self.device)?)
    }

    fn linear(&mut self, name: &str, dequantize: bool) -> Result<Linear, ModelError> {
        let q = self.qtensor(name)?;
        Linear::from_qtensor(q, dequantize)
    }

    fn f32(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let q = self.qtensor(name)?;
        Ok(q.dequantize(&self.device)?.to_dtype(DType::F32)?)
    }
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| ModelError::Unsupported {
        path: path.display().to_string(),
        reason: format!("not a readable GGUF file: {e}"),
    })?;
    let mut g = Gguf {
        path,
        content,
        file,
        device: opts.device.clone(),
    };
    let arch = g
        .md("general.architecture")?
        .to_string()
        .map_err(|e| g.meta_err("general.architecture", e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(ModelError::Unsupported {
            path: path.display().to_string(),
            reason: format!("architecture `{arch}` (supported: llama)"),
        });
    }
    let num_heads = g.usize("llama.attention.head_count")?;
    let hidden = g.usize("llama.embedding_length")?;
    let shape_head_dim = match g.usize("llama.attention.key_length") {
        Ok(d) => d,
        Err(_) => hidden / num_heads,
    };
    let num_layers = g.usize("llama.block_count")?;
    let max_pos = g.usize("llama.context_length")?;
    let num_kv_heads = g.usize("llama.attention.head_count_kv")?;
    let eps = g.f32_or("llama.attention.layer_norm_rms_epsilon", 1e-5)? as f64;
    let theta = g.f32_or("llama.rope.freq_base", 10_000.0)?;

    let tok = tokenizer::from_gguf(&g.content)?;
    let template = match g.content.metadata.get("tokenizer.chat_template") {
        Some(v) => {
            let src = v
                .to_string()
                .map_err(|e| g.meta_err("tokenizer.chat_template", e.to_string()))?;
            Some(ChatTemplate::new(
                src.clone(),
                tok.bos_token.clone(),
                tok.eos_token.clone(),
            )?)
        }
        None => None,
    };

    let embed_q = g.qtensor("token_embd.weight")?;
    let embed = embed_q.dequantize(&g.device)?.to_dtype(DType::F32)?;
    let vocab = embed.dim(0)?;
    let lm_head = if g.content.tensor_infos.contains_key("output.weight") {
        g.linear("output.weight", opts.dequantize)?
    } else if opts.dequantize {
        Linear::Dense(embed.clone())
    } else {
        Linear::from_qtensor(embed_q, false)?
    };
    let mut layers = Vec::with_capacity(num_layers);
    for i in 0..num_layers {
        let p = format!("blk.{i}");
        let dq = opts.dequantize;
        layers.push(LlamaLayer {
            attn_norm: g.f32(&format!("{p}.attn_norm.weight"))?,
            wq: g.linear(&format!("{p}.attn_q.weight"), dq)?,
            wk: g.linear(&format!("{p}.attn_k.weight"), dq)?,
            wv: g.linear(&format!("{p}.attn_v.weight"), dq)?,
            wo: g.linear(&format!("{p}.attn_output.weight"), dq)?,
            ffn_norm: g.f32(&format!("{p}.ffn_norm.weight"))?,
            w_gate: g.linear(&format!("{p}.ffn_gate.weight"), dq)?,
            w_up: g.linear(&format!("{p}.ffn_up.weight"), dq)?,
            w_down: g.linear(&format!("{p}.ffn_down.weight"), dq)?,
        });
    }
    let final_norm = g.f32("output_norm.weight")?;
    let shape = ModelShape {
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim: shape_head_dim,
        hidden_size: hidden,
        vocab_size: vocab,
        max_position_embeddings: max_pos,
    };
    let model = Llama::new(LlamaParts {
        shape,
        rms_norm_eps: eps,
        rope_theta: theta,
        rope_style: RopeStyle::Interleaved,
        embed,
        layers,
        final_norm,
        lm_head,
        device: opts.device.clone(),
    })?;
    Ok(LoadedModel {
        model,
        tokenizer: tok,
        chat_template: template,
    })
}

/// The fields of an HF `config.json` the llama loader reads.
#[derive(Debug, Deserialize)]
pub struct HfLlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub num_hidden_layers: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f32>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Unsupported {
            path: dir.display().to_string(),
            reason: "no *.safetensors files".into(),
        });
    }
    Ok(files)
}

fn load_safetensors_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let cfg: HfLlamaConfig = serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
        path: cfg_path.display().to_string(),
        key: "config.json".into(),
        reason: e.to_string(),
    })?;
    let unsupported = |reason: String| ModelError::Unsupported {
        path: dir.display().to_string(),
        reason,
    };
    match cfg.model_type.as_deref() {
        None | Some("llama") | Some("mistral") => {}
        Some(other) => return Err(unsupported(format!("model_type `{other}`"))),
    }
    if cfg.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported("rope_scaling is not supported yet".into()));
    }
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; inferd does not modify them while
    // loading, and the tensors are copied into owned f32 storage below.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &opts.device)?
    };
    let head_dim = cfg
        .head_dim
        .unwrap_or(cfg.hidden_size / cfg.num_attention_heads);
    let kv_heads = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let lin = |name: &str, out: usize, inp: usize| -> Result<Linear, ModelError> {
        Linear::from_tensor(vb.get((out, inp), name)?)
    };
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        layers.push(LlamaLayer {
            attn_norm: vb.get(h, &format!("{p}.input_layernorm.weight"))?,
            wq: lin(
                &format!("{p}.self_attn.q_proj.weight"),
                cfg.num_attention_heads * head_dim,
                h,
            )?,
            wk: lin(
                &format!("{p}.self_attn.k_proj.weight"),
                kv_heads * head_dim,
                h,
            )?,
            wv: lin(
                &format!("{p}.self_attn.v_proj.weight"),
                kv_heads * head_dim,
                h,
            )?,
            wo: lin(
                &format!("{p}.self_attn.o_proj.weight"),
                h,
                cfg.num_attention_heads * head_dim,
            )?,
            ffn_norm: vb.get(h, &format!("{p}.post_attention_layernorm.weight"))?,
            w_gate: lin(&format!("{p}.mlp.gate_proj.weight"), i, h)?,
            w_up: lin(&format!("{p}.mlp.up_proj.weight"), i, h)?,
            w_down: lin(&format!("{p}.mlp.down_proj.weight"), h, i)?,
        });
    }
    let embed = vb
        .get((cfg.vocab_size, h), "model.embed_tokens.weight")?
        .contiguous()?;
    let lm_head = if cfg.tie_word_embeddings {
        Linear::Dense(embed.clone())
    } else {
        lin("lm_head.weight", cfg.vocab_size, h)?
    };
    let shape = ModelShape {
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        num_kv_heads: kv_heads,
        head_dim,
        hidden_size: h,
        vocab_size: cfg.vocab_size,
        max_position_embeddings: cfg.max_position_embeddings,
    };
    let model = Llama::new(LlamaParts {
        shape,
        rms_norm_eps: cfg.rms_norm_eps,
        rope_theta: cfg.rope_theta.unwrap_or(10_000.0),
        rope_style: RopeStyle::Halves,
        embed,
        layers,
        final_norm: vb.get(h, "model.norm.weight")?,
        lm_head,
        device: opts.device.clone(),
    })?;
    let tok = tokenizer::from_tokenizer_json(dir)?;
    let template = match tokenizer::chat_template_from_tokenizer_config(dir)? {
        Some(src) => Some(ChatTemplate::new(
            src,
            tok.bos_token.clone(),
            tok.eos_token.clone(),
        )?),
        None => None,
    };
    Ok(LoadedModel {
        model,
        tokenizer: tok,
        chat_template: template,
    })
}
