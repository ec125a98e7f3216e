//! Architectures as data: where each weight lives in each file format (a weight-name
//! table) and how the shared layers are wired (a [`DecoderSpec`]). `decoder.rs` builds and
//! runs every decoder-only architecture from these; adding one is a new file here plus a
//! line in [`ARCHITECTURES`], and a new wiring feature (biases, q/k norms, fused
//! projections, another activation) is a field here and a branch in `decoder.rs`.

pub mod llama;

use candle_core::DType;
pub use inferd_kernels::reference::rotary::RopeScaling;

use super::layers::{Activation, RopeStyle};
use super::ModelShape;

/// Tensor names of one file format; `{i}` stands for the layer index.
#[derive(Clone, Copy, Debug)]
pub struct WeightNames {
    pub embed: &'static str,
    pub final_norm: &'static str,
    /// The output projection; absent in files whose embeddings are tied.
    pub lm_head: &'static str,
    pub attn_norm: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub o: &'static str,
    pub mlp_norm: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

/// The name of layer `i`'s tensor from a `{i}` template.
pub fn layer_name(template: &str, i: usize) -> String {
    template.replace("{i}", &i.to_string())
}

/// How one architecture is stored in one file format.
#[derive(Clone, Copy, Debug)]
pub struct FormatTable {
    pub names: WeightNames,
    /// The q/k pairing the stored weights expect (llama.cpp permutes llama's q/k).
    pub rope_style: RopeStyle,
}

/// One supported architecture.
#[derive(Debug)]
pub struct Architecture {
    /// Its name in errors and logs.
    pub name: &'static str,
    /// `general.architecture` values of GGUF files.
    pub gguf_names: &'static [&'static str],
    /// `model_type` values of HF `config.json` files.
    pub hf_model_types: &'static [&'static str],
    pub gguf: FormatTable,
    pub hf: FormatTable,
    pub activation: Activation,
}

/// Every architecture the loader accepts.
pub const ARCHITECTURES: &[&Architecture] = &[&llama::LLAMA];

/// The architecture a GGUF `general.architecture` names.
pub fn by_gguf_name(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.gguf_names.contains(&name))
}

/// The architecture an HF `model_type` names.
pub fn by_hf_model_type(model_type: &str) -> Option<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.hf_model_types.contains(&model_type))
}

/// The GGUF architecture names the loader accepts, for error messages.
pub fn gguf_names() -> String {
    let names: Vec<&str> = ARCHITECTURES
        .iter()
        .flat_map(|a| a.gguf_names.iter().copied())
        .collect();
    names.join(", ")
}

/// The wiring of one loaded decoder-only model: shape, hyper-parameters and numerics.
#[derive(Clone, Debug)]
pub struct DecoderSpec {
    pub shape: ModelShape,
    pub intermediate_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    /// HF `rope_scaling` (`linear`, `llama3`), or none.
    pub rope_scaling: RopeScaling,
    pub rope_style: RopeStyle,
    pub activation: Activation,
    /// The output projection is the embedding table.
    pub tie_word_embeddings: bool,
    /// Dtype of dense weights and activations.
    pub dtype: DType,
}
