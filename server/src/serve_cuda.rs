//! `inferd serve` of a model placed on a GPU (feature `cuda`): open the GPU, load the weights
//! through the CPU readers into the GPU decoder, reserve the per-step buffers, size the KV
//! cache from the memory left (`gpu_memory_utilization`, or `kv_cache_bytes` when given),
//! allocate it, start the engine.

use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device};
use inferd_kernels::cuda::Gpu;

use crate::backend::local::LocalBackend;
use crate::config::{self, ModelSpec, ResolvedModel};
use crate::device::GpuInfo;
use crate::engine::{kv_budget_from_gpu, EngineConfig, KvDefault};
use crate::model::cuda::CudaDecoder;
use crate::model::loader::{self, LoadOptions, Loaded};
use crate::model::CausalLm;
use crate::serve::{launch, model_facts};
use crate::telemetry::metrics::Metrics;

/// The dtype of weights, activations and the KV cache on a GPU (GGUF is dequantized to it).
const GPU_DTYPE: DType = DType::BF16;

pub(crate) fn start_on_gpu(
    spec: &ModelSpec,
    info: &GpuInfo,
    metrics: &Metrics,
) -> anyhow::Result<LocalBackend> {
    let ctx = || format!("model {:?} on {info}", spec.id);
    let path = match config::resolve(spec).with_context(|| format!("model {:?}", spec.id))? {
        ResolvedModel::Gguf(p) | ResolvedModel::SafetensorsDir(p) => p,
    };
    let started = std::time::Instant::now();
    let gpu = Arc::new(Gpu::open(info.ordinal).with_context(ctx)?);
    // Tensors are read on the CPU straight in the GPU dtype (a bf16 safetensors file is
    // copied, not converted; GGUF is dequantized, then rounded) and uploaded one by one.
    let opts = LoadOptions {
        dequantize: true,
        device: Device::Cpu,
        dtype: GPU_DTYPE,
    };
    let shown = path.display().to_string();
    let loaded = loader::load_with(&path, &opts, &mut |s, names, src| {
        CudaDecoder::load(gpu.clone(), GPU_DTYPE, s, names, src, &shown)
    })
    .with_context(|| format!("loading model {:?} onto {info}", spec.id))?;
    let shape = loaded.model.shape().clone();
    let facts = model_facts(&shape, GPU_DTYPE, &loaded.tokenizer);
    // The scheduler's limits do not depend on the KV size: resolve them first, reserve the
    // step buffers they need, then give the KV cache what the GPU has left.
    let limits = EngineConfig::resolve(&spec.limits, facts.clone()).with_context(ctx)?;
    loaded
        .model
        .reserve(
            limits.scheduler.max_num_batched_tokens,
            limits.scheduler.max_num_seqs,
            limits.max_model_len,
        )
        .with_context(ctx)?;
    let (free, total) = gpu.mem_info().with_context(ctx)?;
    let utilization = spec.placement.gpu_memory_utilization.get();
    let budget = kv_budget_from_gpu(total, free, utilization, 0).with_context(ctx)?;
    let cfg = EngineConfig::resolve_with(&spec.limits, facts, KvDefault::GpuBudget(budget))
        .with_context(ctx)?;
    let cache = loaded
        .model
        .new_cache(
            cfg.num_blocks(),
            cfg.block_size(),
            spec.placement.enforce_eager,
        )
        .with_context(ctx)?;
    tracing::info!(
        model = %spec.id,
        gpu = %info,
        kv_budget_mib = budget >> 20,
        free_mib_after_weights = free >> 20,
        "GPU memory"
    );
    let loaded = Loaded {
        model: Box::new(loaded.model) as Box<dyn CausalLm>,
        tokenizer: loaded.tokenizer,
        chat_template: loaded.chat_template,
    };
    launch(spec, &path, started, loaded, cache, cfg, metrics)
}
