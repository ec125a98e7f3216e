//! GGUF files: metadata to a [`DecoderSpec`], tensors through [`TensorSource`], and the
//! tokenizer and chat template the file carries.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};

use super::source::TensorSource;
use super::{io_err, Build, LoadOptions, Loaded};
use crate::model::arch::{self, Architecture, DecoderSpec, RopeScaling};
use crate::model::chat_template::ChatTemplate;
use crate::model::layers::linear::is_float;
use crate::model::layers::Linear;
use crate::model::tokenizer;
use crate::model::{ModelError, ModelShape};

struct Gguf<'a> {
    path: &'a Path,
    content: gguf_file::Content,
    file: File,
    device: Device,
    dequantize: bool,
    dtype: DType,
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

    fn unsupported(&self, reason: String) -> ModelError {
        ModelError::Unsupported {
            path: self.path.display().to_string(),
            reason,
        }
    }

    fn string(&self, key: &str) -> Result<String, ModelError> {
        self.md(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.meta_err(key, e.to_string()))
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

    /// The wiring of architecture `arch` (GGUF name `name`, the metadata key prefix).
    fn spec(&self, arch: &Architecture, name: &str) -> Result<DecoderSpec, ModelError> {
        let key = |k: &str| format!("{name}.{k}");
        let names = &arch.gguf.names;
        let num_heads = self.usize(&key("attention.head_count"))?;
        let hidden = self.usize(&key("embedding_length"))?;
        let head_dim = match self.usize(&key("attention.key_length")) {
            Ok(d) => d,
            Err(_) => hidden / num_heads,
        };
        let max_pos = self.usize(&key("context_length"))?;
        self.refuse_unsupported(name, max_pos)?;
        let vocab_size = match self.content.tensor_infos.get(names.embed) {
            Some(info) => info.shape.dims().first().copied().unwrap_or(0),
            None => return Err(self.weight_err(names.embed, "missing".into())),
        };
        Ok(DecoderSpec {
            shape: ModelShape {
                num_layers: self.usize(&key("block_count"))?,
                num_heads,
                num_kv_heads: self.usize(&key("attention.head_count_kv"))?,
                head_dim,
                hidden_size: hidden,
                vocab_size,
                max_position_embeddings: max_pos,
            },
            intermediate_size: self.usize(&key("feed_forward_length"))?,
            rms_norm_eps: self.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)? as f64,
            rope_theta: self.f32_or(&key("rope.freq_base"), 10_000.0)?,
            rope_scaling: RopeScaling::None,
            rope_style: arch.gguf.rope_style,
            activation: arch.activation,
            tie_word_embeddings: !self.contains(names.lm_head),
            dtype: self.dtype,
        })
    }

    /// Metadata and tensors that change the numerics in ways the decoder does not
    /// implement: a sliding attention window shorter than the context, RoPE scaling.
    fn refuse_unsupported(&self, name: &str, max_pos: usize) -> Result<(), ModelError> {
        let window_key = format!("{name}.attention.sliding_window");
        if self.content.metadata.contains_key(&window_key) {
            let window = self.usize(&window_key)?;
            if window < max_pos {
                return Err(self.unsupported(format!(
                    "`{window_key}` = {window} is shorter than the {max_pos}-token context; \
                     sliding-window attention is not supported yet"
                )));
            }
        }
        let scaling_key = format!("{name}.rope.scaling.type");
        if self.content.metadata.contains_key(&scaling_key) {
            let kind = self.string(&scaling_key)?;
            if kind != "none" {
                return Err(self.unsupported(format!(
                    "`{scaling_key}` = {kind}: RoPE scaling is not supported yet"
                )));
            }
        }
        if self.contains("rope_freqs.weight") {
            return Err(self.unsupported(
                "tensor `rope_freqs.weight` (llama 3 RoPE scaling) is not supported yet".into(),
            ));
        }
        Ok(())
    }

    fn weight_err(&self, name: &str, reason: String) -> ModelError {
        ModelError::Weight {
            path: self.path.display().to_string(),
            name: name.to_string(),
            reason,
        }
    }

    fn qtensor(&mut self, name: &str, dims: &[usize]) -> Result<QTensor, ModelError> {
        if let Some(info) = self.content.tensor_infos.get(name) {
            if info.shape.dims() != dims {
                return Err(self.weight_err(
                    name,
                    format!("shape {:?}, expected {dims:?}", info.shape.dims()),
                ));
            }
        }
        Ok(self.content.tensor(&mut self.file, name, &self.device)?)
    }

    fn template(
        &self,
        tok: &tokenizer::ModelTokenizer,
    ) -> Result<Option<ChatTemplate>, ModelError> {
        let key = "tokenizer.chat_template";
        if !self.content.metadata.contains_key(key) {
            return Ok(None);
        }
        let src = self.string(key)?;
        Ok(Some(ChatTemplate::new(
            src,
            tok.bos_token.clone(),
            tok.eos_token.clone(),
        )?))
    }
}

impl TensorSource for Gguf<'_> {
    fn device(&self) -> &Device {
        &self.device
    }

    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn float(&mut self, name: &str, dims: &[usize]) -> Result<Tensor, ModelError> {
        let q = self.qtensor(name, dims)?;
        Ok(q.dequantize(&self.device)?
            .to_dtype(self.dtype)?
            .contiguous()?)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        let q = self.qtensor(name, &[out, inp])?;
        Linear::from_qtensor(q, self.dequantize, self.dtype)
    }

    fn tied_linear(&mut self, name: &str, embed: &Tensor) -> Result<Linear, ModelError> {
        let quantized = self
            .content
            .tensor_infos
            .get(name)
            .is_some_and(|info| !is_float(info.ggml_dtype));
        if quantized && !self.dequantize {
            let q = self.qtensor(name, embed.dims())?;
            Linear::from_qtensor(q, false, self.dtype)
        } else {
            Ok(Linear::Dense(embed.clone()))
        }
    }
}

/// Loads a `.gguf` file.
pub(super) fn load<M>(
    path: &Path,
    opts: &LoadOptions,
    build: Build<'_, M>,
) -> Result<Loaded<M>, ModelError> {
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
        dequantize: opts.dequantize,
        dtype: opts.dtype,
    };
    let name = g.string("general.architecture")?;
    let arch = arch::by_gguf_name(&name).ok_or_else(|| {
        g.unsupported(format!(
            "architecture `{name}` (supported: {})",
            arch::gguf_names()
        ))
    })?;
    let spec = g.spec(arch, &name)?;
    let tok = tokenizer::from_gguf(&g.content)?;
    let template = g.template(&tok)?;
    let model = build(&spec, &arch.gguf.names, &mut g)?;
    Ok(Loaded {
        model,
        tokenizer: tok,
        chat_template: template,
    })
}
