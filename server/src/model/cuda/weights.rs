//! The GPU decoder's weights: read through the loader's [`TensorSource`] on the CPU (GGUF
//! dequantized there), rounded to the model dtype and uploaded once. q, k and v stay three
//! matrices (the cache and attention kernels read contiguous k and v rows); gate and up are
//! fused into one `[2 * inter, hidden]` matrix (one GEMM, then `silu_mul_fused`).

use candle_core::{DType, Tensor};
use inferd_kernels::cuda::cudarc::driver::CudaSlice;
use inferd_kernels::cuda::{CudaError, Dtype, Gpu};

use crate::model::arch::{layer_name, DecoderSpec, WeightNames};
use crate::model::loader::source::TensorSource;
use crate::model::ModelError;

pub(super) struct Layer {
    pub attn_norm: CudaSlice<u16>,
    pub q: CudaSlice<u16>,
    pub k: CudaSlice<u16>,
    pub v: CudaSlice<u16>,
    pub o: CudaSlice<u16>,
    pub mlp_norm: CudaSlice<u16>,
    pub gate_up: CudaSlice<u16>,
    pub down: CudaSlice<u16>,
}

pub(super) struct Weights {
    /// `[vocab, hidden]`.
    pub embed: CudaSlice<u16>,
    pub layers: Vec<Layer>,
    pub final_norm: CudaSlice<u16>,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<CudaSlice<u16>>,
}

/// The storage dtype of `dtype` on the GPU.
pub(super) fn gpu_dtype(dtype: DType) -> Result<Dtype, String> {
    match dtype {
        DType::BF16 => Ok(Dtype::Bf16),
        DType::F16 => Ok(Dtype::F16),
        other => Err(format!("dtype {} on a GPU (bf16 or f16)", other.as_str())),
    }
}

/// `t` rounded to `dtype`, as the bits the kernels read.
fn bits(t: &Tensor, dtype: Dtype) -> Result<Vec<u16>, ModelError> {
    let flat = t.flatten_all()?;
    Ok(match dtype {
        Dtype::Bf16 => flat
            .to_dtype(DType::BF16)?
            .to_vec1::<half::bf16>()?
            .into_iter()
            .map(half::bf16::to_bits)
            .collect(),
        Dtype::F16 => flat
            .to_dtype(DType::F16)?
            .to_vec1::<half::f16>()?
            .into_iter()
            .map(half::f16::to_bits)
            .collect(),
    })
}

fn upload(gpu: &Gpu, t: &Tensor, dtype: Dtype) -> Result<CudaSlice<u16>, ModelError> {
    let host = bits(t, dtype)?;
    Ok(gpu.stream().clone_htod(&host).map_err(CudaError::from)?)
}

impl Weights {
    /// Reads every weight `names` lists and uploads it.
    pub fn load(
        gpu: &Gpu,
        dtype: Dtype,
        spec: &DecoderSpec,
        names: &WeightNames,
        src: &mut dyn TensorSource,
    ) -> Result<Self, ModelError> {
        let s = &spec.shape;
        let (h, inter) = (s.hidden_size, spec.intermediate_size);
        let (q_out, kv_out) = (s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim);
        let up = |src: &mut dyn TensorSource, name: &str, dims: &[usize]| {
            let t = src.float(name, dims)?;
            upload(gpu, &t, dtype)
        };
        let embed = up(src, names.embed, &[s.vocab_size, h])?;
        let lm_head = if spec.tie_word_embeddings {
            None
        } else {
            Some(up(src, names.lm_head, &[s.vocab_size, h])?)
        };
        let mut layers = Vec::with_capacity(s.num_layers);
        for i in 0..s.num_layers {
            let name = |template: &str| layer_name(template, i);
            let gate = src.float(&name(names.gate), &[inter, h])?;
            let upm = src.float(&name(names.up), &[inter, h])?;
            let gate_up = upload(gpu, &Tensor::cat(&[&gate, &upm], 0)?, dtype)?;
            drop((gate, upm));
            layers.push(Layer {
                attn_norm: up(src, &name(names.attn_norm), &[h])?,
                q: up(src, &name(names.q), &[q_out, h])?,
                k: up(src, &name(names.k), &[kv_out, h])?,
                v: up(src, &name(names.v), &[kv_out, h])?,
                o: up(src, &name(names.o), &[h, q_out])?,
                mlp_norm: up(src, &name(names.mlp_norm), &[h])?,
                gate_up,
                down: up(src, &name(names.down), &[h, inter])?,
            });
        }
        let final_norm = up(src, names.final_norm, &[h])?;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }
}
