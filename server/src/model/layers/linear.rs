//! The one linear layer type: quantization lives here, not in twin model files.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::model::ModelError;

/// `y = x W^T` with `W` of shape `[out, in]`.
#[derive(Clone, Debug)]
pub enum Linear {
    /// Float weights in the model dtype, contiguous. On the CPU they go through
    /// `inferd_kernels::linear` (f32, batch-invariant, weight reuse across rows); on other
    /// devices through candle's matmul until `inferd-kernels` has a kernel there.
    Dense(Tensor),
    /// Quantized weights through candle's quantized matmul (row by row).
    Quantized(QMatMul),
}

impl Linear {
    /// From a GGUF tensor: float formats and `dequantize = true` become dense in `dtype`.
    pub fn from_qtensor(q: QTensor, dequantize: bool, dtype: DType) -> Result<Self, ModelError> {
        if dequantize || is_float(q.dtype()) {
            let w = q.dequantize(&q.device())?.to_dtype(dtype)?.contiguous()?;
            Ok(Linear::Dense(w))
        } else {
            Ok(Linear::Quantized(QMatMul::from_qtensor(q)?))
        }
    }

    /// From a float tensor `[out, in]` (safetensors), stored in `dtype`.
    pub fn from_tensor(w: Tensor, dtype: DType) -> Result<Self, ModelError> {
        Ok(Linear::Dense(w.to_dtype(dtype)?.contiguous()?))
    }

    /// `x: [tokens, in]` contiguous, in the model dtype → `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match self {
            Linear::Dense(w) if w.device().is_cpu() => Ok(inferd_kernels::linear(x, w)?),
            Linear::Dense(w) => Ok(x.matmul(&w.t()?)?),
            Linear::Quantized(q) => Ok(q.forward(x)?),
        }
    }
}

/// Whether a GGUF tensor type is a plain float format (kept dense, never quantized).
pub fn is_float(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}
