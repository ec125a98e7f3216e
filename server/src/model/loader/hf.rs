//! HF model directories: `config.json` to a [`DecoderSpec`], `*.safetensors` tensors
//! through [`TensorSource`], `tokenizer.json` and the chat template of
//! `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::source::TensorSource;
use super::{io_err, Build, LoadOptions, Loaded};
use crate::model::arch::{self, Architecture, DecoderSpec, RopeScaling};
use crate::model::chat_template::ChatTemplate;
use crate::model::layers::Linear;
use crate::model::tokenizer;
use crate::model::{ModelError, ModelShape};

/// The fields of an HF `config.json` the loader reads; keys that would change the
/// numerics are read too, so that a value the decoder does not implement is refused.
#[derive(Debug, Deserialize)]
pub struct HfConfig {
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
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
}

impl HfConfig {
    /// The architecture and wiring this config describes, or why it is not supported.
    pub fn spec(&self, dtype: DType) -> Result<(&'static Architecture, DecoderSpec), String> {
        let model_type = self.model_type.as_deref().unwrap_or("llama");
        let Some(arch) = arch::by_hf_model_type(model_type) else {
            return Err(format!("model_type `{model_type}`"));
        };
        let rope_scaling = rope_scaling(self.rope_scaling.as_ref())?;
        if let Some(window) = self.sliding_window {
            if window < self.max_position_embeddings {
                return Err(format!(
                    "sliding_window = {window} is shorter than max_position_embeddings = {}; \
                     sliding-window attention is not supported yet",
                    self.max_position_embeddings
                ));
            }
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(format!("hidden_act `{act}` (supported: silu)"));
        }
        for (key, set) in [
            ("attention_bias", self.attention_bias),
            ("mlp_bias", self.mlp_bias),
        ] {
            if set == Some(true) {
                return Err(format!("{key} = true is not supported yet"));
            }
        }
        let spec = DecoderSpec {
            shape: ModelShape {
                num_layers: self.num_hidden_layers,
                num_heads: self.num_attention_heads,
                num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
                head_dim: self
                    .head_dim
                    .unwrap_or(self.hidden_size / self.num_attention_heads),
                hidden_size: self.hidden_size,
                vocab_size: self.vocab_size,
                max_position_embeddings: self.max_position_embeddings,
            },
            intermediate_size: self.intermediate_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            rope_style: arch.hf.rope_style,
            activation: arch.activation,
            tie_word_embeddings: self.tie_word_embeddings,
            dtype,
        };
        Ok((arch, spec))
    }
}

/// HF `rope_scaling`: absent, null or `default` is none; `linear` and `llama3` (Llama 3.1+)
/// as transformers computes them; any other type is refused, naming it.
fn rope_scaling(v: Option<&serde_json::Value>) -> Result<RopeScaling, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64, String> {
        v.get(key)
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("rope_scaling `{kind}` needs a positive number `{key}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")? as f32,
        }),
        "llama3" => {
            let (low, high) = (num("low_freq_factor")?, num("high_freq_factor")?);
            if high <= low {
                return Err(format!(
                    "rope_scaling `llama3` needs high_freq_factor ({high}) > low_freq_factor ({low})"
                ));
            }
            Ok(RopeScaling::Llama3 {
                factor: num("factor")? as f32,
                low_freq_factor: low as f32,
                high_freq_factor: high as f32,
                original_max_position: num("original_max_position_embeddings")? as usize,
            })
        }
        other => Err(format!(
            "rope_scaling type `{other}` (supported: linear, llama3)"
        )),
    }
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

/// The memory-mapped `*.safetensors` of a directory, read in the model dtype.
struct Safetensors {
    vb: candle_nn::VarBuilder<'static>,
    device: Device,
    dtype: DType,
}

impl TensorSource for Safetensors {
    fn device(&self) -> &Device {
        &self.device
    }

    fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    fn float(&mut self, name: &str, dims: &[usize]) -> Result<Tensor, ModelError> {
        Ok(self.vb.get(dims, name)?.contiguous()?)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        Linear::from_tensor(self.vb.get((out, inp), name)?, self.dtype)
    }
}

/// Loads an HF safetensors directory.
pub(super) fn load<M>(
    dir: &Path,
    opts: &LoadOptions,
    build: Build<'_, M>,
) -> Result<Loaded<M>, ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let cfg: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
        path: cfg_path.display().to_string(),
        key: "config.json".into(),
        reason: e.to_string(),
    })?;
    let (arch, spec) = cfg
        .spec(opts.dtype)
        .map_err(|reason| ModelError::Unsupported {
            path: dir.display().to_string(),
            reason,
        })?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; inferd does not modify them while
    // loading, and the tensors are copied into owned storage as they are read.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, opts.dtype, &opts.device)?
    };
    let mut src = Safetensors {
        vb,
        device: opts.device.clone(),
        dtype: opts.dtype,
    };
    let model = build(&spec, &arch.hf.names, &mut src)?;
    let tok = tokenizer::from_tokenizer_json(dir)?;
    let template = match tokenizer::chat_template_from_tokenizer_config(dir)? {
        Some(src) => Some(ChatTemplate::new(
            src,
            tok.bos_token.clone(),
            tok.eos_token.clone(),
        )?),
        None => None,
    };
    Ok(Loaded {
        model,
        tokenizer: tok,
        chat_template: template,
    })
}
