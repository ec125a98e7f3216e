//! Loading a model from a GGUF file or an HF safetensors directory, with its own tokenizer
//! and chat template. Each format reads its config into an architecture's
//! [`DecoderSpec`](super::arch::DecoderSpec) and its tensors through a
//! [`source::TensorSource`]; the layers are built once, in `decoder.rs`.

mod gguf;
pub mod hf;
pub mod source;

use std::path::Path;

use candle_core::{DType, Device};

use super::arch::{DecoderSpec, WeightNames};
use super::chat_template::ChatTemplate;
use super::decoder::Decoder;
use super::tokenizer::ModelTokenizer;
use super::{Model, ModelError};

pub use hf::HfConfig;

/// A model ready to serve: weights, tokenizer and chat template.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Dequantize quantized GGUF weights to dense `dtype` (fast batched CPU GEMM).
    pub dequantize: bool,
    pub device: Device,
    /// Dtype of dense weights, activations and the KV cache the model expects: a float
    /// type, and f32 on the CPU (the CPU kernels compute in f32).
    pub dtype: DType,
}

/// A model of type `M` built by a [`Build`], with its tokenizer and chat template.
pub struct Loaded<M> {
    pub model: M,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// Builds a model from what a file format yields: the wiring, the weight names and the
/// tensors (the CPU [`Decoder`], or the GPU decoder uploading them).
pub type Build<'a, M> = &'a mut dyn FnMut(
    &DecoderSpec,
    &WeightNames,
    &mut dyn source::TensorSource,
) -> Result<M, ModelError>;

/// Loads a `.gguf` file or a safetensors directory as the CPU decoder.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    check_dtype(path, opts)?;
    let l = load_with(path, opts, &mut |spec, names, src| {
        Decoder::load(spec, names, src)
    })?;
    Ok(LoadedModel {
        model: Model::CausalLm(Box::new(l.model)),
        tokenizer: l.tokenizer,
        chat_template: l.chat_template,
    })
}

/// Loads a `.gguf` file or a safetensors directory, reading tensors on `opts.device` in
/// `opts.dtype`, and builds the model with `build`.
pub fn load_with<M>(
    path: &Path,
    opts: &LoadOptions,
    build: Build<'_, M>,
) -> Result<Loaded<M>, ModelError> {
    if path.is_dir() {
        hf::load(path, opts, build)
    } else {
        gguf::load(path, opts, build)
    }
}

fn check_dtype(path: &Path, opts: &LoadOptions) -> Result<(), ModelError> {
    let supported = match opts.dtype {
        DType::F32 => true,
        DType::F16 | DType::BF16 => !opts.device.is_cpu(),
        _ => false,
    };
    if supported {
        return Ok(());
    }
    Err(ModelError::Unsupported {
        path: path.display().to_string(),
        reason: format!(
            "dtype {} on {:?} (the CPU computes in f32; other devices take f32, f16 or bf16)",
            opts.dtype.as_str(),
            opts.device.location()
        ),
    })
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
