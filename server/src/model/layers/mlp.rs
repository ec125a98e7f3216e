//! The gated feed-forward block: `down(act(gate(x)) * up(x))`.

use candle_core::Tensor;

use super::Linear;
use crate::model::ModelError;

/// The gate's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            Activation::Silu => candle_nn::ops::silu(x)?,
        })
    }
}

pub struct GatedMlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

impl GatedMlp {
    /// `x: [tokens, hidden]` → `[tokens, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let gate = self.activation.apply(&self.gate.forward(x)?)?;
        let up = self.up.forward(x)?;
        self.down.forward(&(gate * up)?)
    }
}
