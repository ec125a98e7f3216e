//! RMS normalization.

use candle_core::Tensor;

use crate::model::ModelError;

/// `x / rms(x) * weight`, over the last dimension.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// `weight: [hidden]` in the model dtype.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self {
            weight,
            eps: eps as f32,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }
}
