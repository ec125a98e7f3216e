//! The one linear layer type: quantization lives here, not in twin model files.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use super::ModelError;

/// `y = x W^T` with `W` of shape `[out, in]`.
#[derive(Clone, Debug)]
pub enum Linear {
    /// f32 weights through `inferd_kernels::linear` (batch-invariant, weight reuse across rows).
    Dense(Tensor),
    /// Quantized weights through candle's quantized matmul (row by row).
    Quantized(QMatMul),
}

impl Linear {
    /// From a GGUF tensor: float formats and `dequantize = true` become dense f32.
    pub fn from_qtensor(q: QTensor, dequantize: bool) -> Result<Self, ModelError> {
        let float = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if dequantize || float {
            let w = q
                .dequantize(&q.device())?
                .to_dtype(DType::F32)?
                .contiguous()?;
            Ok(Linear::Dense(w))
        } else {
            Ok(Linear::Quantized(QMatMul::from_qtensor(q)?))
        }
    }

    /// From a float tensor `[out, in]` (safetensors).
    pub fn from_tensor(w: Tensor) -> Result<Self, ModelError> {
        Ok(Linear::Dense(w.to_dtype(DType::F32)?.contiguous()?))
    }

    /// `x: [tokens, in]` f32 contiguous → `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match self {
            Linear::Dense(w) => Ok(inferd_kernels::linear(x, w)?),
            Linear::Quantized(q) => Ok(q.forward(x)?),
        }
    }
}
