//! The shared layer set every architecture is wired from. Devices differ below this line
//! (inside each layer and `inferd-kernels`), architectures above it (`arch/`, `decoder.rs`).

pub mod attention;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod rope;

pub use attention::{Attention, PagedBatch};
pub use linear::Linear;
pub use mlp::{Activation, GatedMlp};
pub use norm::RmsNorm;
pub use rope::{Rope, RopeAt, RopeStyle};
