//! Where the decoder builder reads weights from: one trait over the file formats, so an
//! architecture's layers are built once from its weight-name table.

use candle_core::{Device, Tensor};

use crate::model::layers::Linear;
use crate::model::ModelError;

/// Named tensors of one model file (or directory), read onto the load device in the
/// model dtype, each checked against the shape the architecture expects.
pub trait TensorSource {
    fn device(&self) -> &Device;

    /// Whether a tensor of that name is stored.
    fn contains(&self, name: &str) -> bool;

    /// A float tensor (embedding table, norm weight), contiguous.
    fn float(&mut self, name: &str, dims: &[usize]) -> Result<Tensor, ModelError>;

    /// A projection weight `[out, in]`: dense, or quantized where the file stores it so
    /// and the load options keep it so.
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear, ModelError>;

    /// The output projection tied to the embedding table `embed`, which was read as
    /// `name`. Dense over the same storage unless the format keeps it quantized.
    fn tied_linear(&mut self, _name: &str, embed: &Tensor) -> Result<Linear, ModelError> {
        Ok(Linear::Dense(embed.clone()))
    }
}
