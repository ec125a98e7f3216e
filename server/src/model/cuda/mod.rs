//! The GPU decoder (feature `cuda`): the same decoder-only wiring as `model::decoder`, with
//! weights, activations and the paged KV cache in device memory and every op a kernel of
//! `inferd_kernels::cuda` or a cuBLASLt GEMM on the GPU's one stream.
//!
//! A step: one upload of the packed batch ([`StepMeta`]), the embedding gather, per layer
//! `h = rms_norm(x)`, q/k/v GEMMs, rotary, `reshape_and_cache`, paged attention (the decode
//! kernel when every sequence has one new token, the varlen prefill kernel otherwise),
//! `x += o · attn` (the GEMM accumulates into the residual), `h = rms_norm(x)`, the fused
//! gate/up GEMM, `silu_mul`, `x += down · act`; then the rows that want logits are gathered,
//! normalized and projected to f32 logits, which are copied back.
//!
//! The logit rows stay on the device; what crosses to the host is what each row's
//! `RowNeed` reads (`answer`): argmax ids, top-k/top-p candidates, or full rows.
//! Decode steps that a batch-size bucket holds run as captured CUDA graphs (`graphs`) over
//! the padded layout of `StepMeta::pack_padded`; prefill and mixed steps run eagerly.

mod answer;
mod graphs;
mod kv;
mod scratch;
mod weights;

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use inferd_kernels::cuda::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use inferd_kernels::cuda::cudarc::driver::CudaSlice;
use inferd_kernels::cuda::ops::activation::ActivationKernels;
use inferd_kernels::cuda::ops::attention::{AttentionKernels, PagedKv};
use inferd_kernels::cuda::ops::cache::CacheKernels;
use inferd_kernels::cuda::ops::embedding::EmbeddingKernels;
use inferd_kernels::cuda::ops::norm::NormKernels;
use inferd_kernels::cuda::ops::rotary::{RotaryKernels, RotaryShape};
use inferd_kernels::cuda::ops::sampling::SamplingKernels;
use inferd_kernels::cuda::{Blas, CudaError, Dtype, Gpu};
use inferd_kernels::reference::rotary::{rotary_table, RotaryStyle};

use graphs::DecodeGraphs;
pub use kv::CudaKvCache;
use scratch::Scratch;
use weights::Weights;

use super::arch::{DecoderSpec, WeightNames};
use super::layers::RopeStyle;
use super::loader::source::TensorSource;
use super::step_meta::{Section, StepMeta};
use super::{CausalLm, ForwardBatch, KvCache, Logits, ModelError, ModelShape};

/// The kernels of one model's dtype and head geometry, resolved once at load.
struct Kernels {
    norm: NormKernels,
    rotary: RotaryKernels,
    act: ActivationKernels,
    embed: EmbeddingKernels,
    cache: CacheKernels,
    sampling: SamplingKernels,
}

pub struct CudaDecoder {
    gpu: Arc<Gpu>,
    blas: Blas,
    dtype: Dtype,
    kernels: Kernels,
    /// Per block size; built by [`CudaDecoder::new_cache`] (the refusal of a block size the
    /// kernels do not implement happens there, at start-up).
    attention: RefCell<Option<AttentionKernels>>,
    shape: ModelShape,
    intermediate: usize,
    eps: f32,
    scale: f32,
    style: RotaryStyle,
    weights: Weights,
    /// f32 `[max_pos, head_dim / 2]` each.
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    max_pos: usize,
    scratch: RefCell<Scratch>,
    meta: RefCell<StepMeta>,
    /// `(max_seqs, max_context)` of [`CudaDecoder::reserve`].
    reserved: Cell<Option<(usize, usize)>>,
    graphs: RefCell<DecodeGraphs>,
}

fn cuda(e: CudaError) -> ModelError {
    ModelError::Cuda(e)
}

impl CudaDecoder {
    /// Uploads the weights `names` lists from `src` (read on the CPU) to `gpu`.
    pub fn load(
        gpu: Arc<Gpu>,
        model_dtype: candle_core::DType,
        spec: &DecoderSpec,
        names: &WeightNames,
        src: &mut dyn TensorSource,
        path: &str,
    ) -> Result<Self, ModelError> {
        let unsupported = |reason: String| ModelError::Unsupported {
            path: path.to_string(),
            reason,
        };
        let dtype = weights::gpu_dtype(model_dtype).map_err(unsupported)?;
        let s = &spec.shape;
        // Refuse what the attention kernels do not implement before reading any weight.
        AttentionKernels::new(&gpu, dtype, s.num_heads, s.num_kv_heads, s.head_dim, 16)
            .map_err(|e| unsupported(format!("on a GPU: {e}")))?;
        gpu.context().bind_to_thread().map_err(CudaError::from)?;
        let blas = Blas::new(&gpu).map_err(cuda)?;
        let kernels = Kernels {
            norm: NormKernels::new(&gpu, dtype).map_err(cuda)?,
            rotary: RotaryKernels::new(&gpu, dtype).map_err(cuda)?,
            act: ActivationKernels::new(&gpu, dtype).map_err(cuda)?,
            embed: EmbeddingKernels::new(&gpu, dtype).map_err(cuda)?,
            cache: CacheKernels::new(&gpu, dtype).map_err(cuda)?,
            sampling: SamplingKernels::new(&gpu).map_err(cuda)?,
        };
        let weights = Weights::load(&gpu, dtype, spec, names, src)?;
        let max_pos = s.max_position_embeddings;
        let table = rotary_table(s.head_dim, spec.rope_theta, max_pos, spec.rope_scaling);
        let stream = gpu.stream();
        let cos = stream.clone_htod(&table.cos).map_err(CudaError::from)?;
        let sin = stream.clone_htod(&table.sin).map_err(CudaError::from)?;
        let scratch = Scratch::new(&gpu).map_err(cuda)?;
        Ok(Self {
            blas,
            dtype,
            kernels,
            attention: RefCell::new(None),
            shape: s.clone(),
            intermediate: spec.intermediate_size,
            eps: spec.rms_norm_eps as f32,
            scale: 1.0 / (s.head_dim as f32).sqrt(),
            style: match spec.rope_style {
                RopeStyle::Interleaved => RotaryStyle::Interleaved,
                RopeStyle::Halves => RotaryStyle::Halves,
            },
            weights,
            cos,
            sin,
            max_pos,
            scratch: RefCell::new(scratch),
            meta: RefCell::new(StepMeta::default()),
            reserved: Cell::new(None),
            graphs: RefCell::new(DecodeGraphs::off("no KV cache yet")),
            gpu,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Allocates the per-step buffers for steps of up to `max_tokens` tokens and `max_seqs`
    /// sequences of contexts up to `max_context`, so that the memory left for the KV cache
    /// is measured after them (and no step allocates).
    pub fn reserve(
        &self,
        max_tokens: usize,
        max_seqs: usize,
        max_context: usize,
    ) -> Result<(), ModelError> {
        let attn_scratch = self.attention_len(max_seqs, max_context);
        // A padded decode step has up to `max_seqs` tokens.
        let max_tokens = max_tokens.max(max_seqs);
        // Block tables at their widest: one block per token (block size 1).
        let meta = 3 * max_tokens + max_seqs * max_context + 4 * max_seqs + 1;
        self.scratch
            .borrow_mut()
            .ensure(
                &self.gpu,
                &self.dims(),
                max_tokens,
                max_seqs,
                meta,
                attn_scratch,
            )
            .map_err(cuda)?;
        self.reserved.set(Some((max_seqs, max_context)));
        Ok(())
    }

    fn attention_len(&self, seqs: usize, max_context: usize) -> usize {
        let s = &self.shape;
        seqs * s.num_heads * AttentionKernels::decode_partitions(max_context) * (s.head_dim + 2)
    }

    fn dims(&self) -> scratch::Dims {
        let s = &self.shape;
        scratch::Dims {
            hidden: s.hidden_size,
            q: s.num_heads * s.head_dim,
            kv: s.num_kv_heads * s.head_dim,
            inter: self.intermediate,
            vocab: s.vocab_size,
        }
    }

    /// A zeroed paged KV cache on this decoder's GPU, after checking that the attention
    /// kernels take `block_size`. Decode steps run as CUDA graphs on it unless `eager` (or
    /// [`CudaDecoder::reserve`] was not called: the graphs' sizes come from it).
    pub fn new_cache(
        &self,
        num_blocks: usize,
        block_size: usize,
        eager: bool,
    ) -> Result<KvCache, ModelError> {
        let s = &self.shape;
        let attn = AttentionKernels::new(
            &self.gpu,
            self.dtype,
            s.num_heads,
            s.num_kv_heads,
            s.head_dim,
            block_size,
        )
        .map_err(cuda)?;
        *self.attention.borrow_mut() = Some(attn);
        *self.graphs.borrow_mut() = match (eager, self.reserved.get()) {
            (true, _) => DecodeGraphs::off("enforce_eager"),
            (false, None) => DecodeGraphs::off("no step reservation"),
            (false, Some((seqs, context))) => DecodeGraphs::new(seqs, context, block_size),
        };
        Ok(KvCache::Cuda(CudaKvCache::new(
            &self.gpu, s, num_blocks, block_size,
        )?))
    }
}

impl CausalLm for CudaDecoder {
    fn shape(&self) -> &ModelShape {
        &self.shape
    }

    fn forward(&self, batch: &ForwardBatch, cache: &KvCache) -> Result<Logits, ModelError> {
        let vocab = self.shape.vocab_size;
        let t = batch.num_tokens();
        if t == 0 {
            return Ok(Logits::full(vec![], vocab));
        }
        let KvCache::Cuda(kv) = cache else {
            return Err(ModelError::Batch(
                "the KV cache is on the host, this decoder runs on a GPU".into(),
            ));
        };
        let attention = self.attention.borrow();
        let Some(attention) = attention.as_ref() else {
            return Err(ModelError::Batch(
                "the GPU decoder has no KV cache (new_cache was not called)".into(),
            ));
        };
        let gpu = &*self.gpu;
        gpu.context().bind_to_thread().map_err(CudaError::from)?;
        let mut graphs = self.graphs.borrow_mut();
        let mut meta = self.meta.borrow_mut();
        // A decode step that a bucket holds is packed at the bucket's fixed layout.
        let bucket = graphs.bucket(batch.seqs.len());
        let padded = match bucket {
            Some(b) => {
                let (context, width) = (graphs.max_context, graphs.width);
                meta.pack_padded(batch, self.max_pos, vocab, b, context, width)?
            }
            None => false,
        };
        if !padded {
            meta.pack(batch, self.max_pos, vocab)?;
        }
        let meta = &*meta;
        let attn_context = if padded {
            graphs.max_context
        } else {
            meta.max_context
        };
        let attn_len = if meta.decode_only {
            self.attention_len(meta.num_seqs, attn_context)
        } else {
            0
        };
        let mut scratch = self.scratch.borrow_mut();
        let sc = &mut *scratch;
        let moved = sc
            .ensure(
                gpu,
                &self.dims(),
                meta.num_tokens,
                meta.num_rows,
                meta.data.len(),
                attn_len,
            )
            .map_err(cuda)?;
        if moved {
            graphs.clear();
        }
        let stream = gpu.stream();
        stream
            .memcpy_htod(&meta.data, &mut sc.meta)
            .map_err(CudaError::from)?;
        let step = Step {
            kv,
            attention,
            meta,
            attn_context,
        };
        match bucket.filter(|_| padded) {
            Some(b) => match graphs.get(b, kv.id) {
                Some(graph) => graph.launch().map_err(CudaError::from)?,
                None => {
                    // Run it (the step's answer, and its GEMM plans), then record it.
                    self.launch(sc, &step)?;
                    self.capture(&mut graphs, b, sc, &step);
                }
            },
            None => self.launch(sc, &step)?,
        }
        let rows = batch.logit_rows().len();
        if rows == 0 {
            stream.synchronize().map_err(CudaError::from)?;
            return Ok(Logits::full(vec![], vocab));
        }
        let logits = answer::answer(
            gpu,
            &self.kernels.sampling,
            batch,
            rows,
            vocab,
            meta.range(Section::Temperatures),
            sc,
        )?;
        stream.synchronize().map_err(CudaError::from)?;
        Ok(logits)
    }
}

/// What one step's launches read besides the step buffers.
struct Step<'a> {
    kv: &'a CudaKvCache,
    attention: &'a AttentionKernels,
    meta: &'a StepMeta,
    /// The context decode attention is sized for (its split-K partitions).
    attn_context: usize,
}

impl CudaDecoder {
    /// Records `step`'s launches as the graph of `bucket`; a failed capture turns graphs off
    /// (the step itself already ran).
    fn capture(&self, graphs: &mut DecodeGraphs, bucket: usize, sc: &mut Scratch, step: &Step) {
        let stream = self.gpu.stream();
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        if let Err(e) = stream.begin_capture(mode) {
            return graphs.disable(format!("begin capture: {e}"));
        }
        let recorded = self.launch(sc, step);
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        match (recorded, graph) {
            (Ok(()), Ok(Some(g))) => {
                graphs.insert(bucket, step.kv.id, g);
                tracing::debug!(
                    bucket,
                    graphs = graphs.captured(),
                    "captured a decode graph"
                );
            }
            (Err(e), _) => graphs.disable(format!("recording a step of {bucket}: {e}")),
            (_, Err(e)) => graphs.disable(format!("instantiating a graph of {bucket}: {e}")),
            (_, Ok(None)) => graphs.disable(format!("an empty graph for {bucket}")),
        }
    }

    /// Enqueues a step's forward pass on the stream, from the uploaded meta to the f32
    /// logits of its `meta.num_rows` rows in `sc.logits`: nothing that allocates, copies to
    /// the host or synchronizes (it is what a graph records).
    fn launch(&self, sc: &mut Scratch, step: &Step) -> Result<(), ModelError> {
        let (kv, attention, meta) = (step.kv, step.attention, step.meta);
        let gpu = &*self.gpu;
        let vocab = self.shape.vocab_size;
        let (t, n, r) = (meta.num_tokens, meta.num_seqs, meta.num_rows);
        let m = |sec: Section| sc.meta.slice(meta.range(sec));
        let d = self.dims();
        let (h, dt, k) = (d.hidden, self.dtype, &self.kernels);
        let w = &self.weights;
        k.embed
            .embedding(
                gpu,
                vocab,
                h,
                t,
                &w.embed.slice(..),
                &m(Section::TokenIds),
                &mut sc.x.slice_mut(..),
            )
            .map_err(cuda)?;
        let rot = RotaryShape {
            num_tokens: t,
            num_heads: self.shape.num_heads,
            num_kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
            rotary_dim: self.shape.head_dim,
            max_pos: self.max_pos,
            style: self.style,
        };
        let mut layers = kv.layers.borrow_mut();
        for (layer, (kc, vc)) in w.layers.iter().zip(layers.iter_mut()) {
            k.norm
                .rms_norm(
                    gpu,
                    t,
                    h,
                    self.eps,
                    &sc.x.slice(..),
                    &layer.attn_norm.slice(..),
                    &mut sc.h.slice_mut(..),
                )
                .map_err(cuda)?;
            self.blas
                .linear(gpu, dt, (t, d.q, h), &sc.h, &layer.q, &mut sc.q, false)
                .map_err(cuda)?;
            self.blas
                .linear(gpu, dt, (t, d.kv, h), &sc.h, &layer.k, &mut sc.k, false)
                .map_err(cuda)?;
            self.blas
                .linear(gpu, dt, (t, d.kv, h), &sc.h, &layer.v, &mut sc.v, false)
                .map_err(cuda)?;
            k.rotary
                .apply(
                    gpu,
                    rot,
                    &m(Section::Positions),
                    &self.cos.slice(..),
                    &self.sin.slice(..),
                    &mut sc.q.slice_mut(..),
                    &mut sc.k.slice_mut(..),
                )
                .map_err(cuda)?;
            k.cache
                .reshape_and_cache(
                    gpu,
                    kv.shape,
                    t,
                    &sc.k.slice(..),
                    &sc.v.slice(..),
                    kc,
                    vc,
                    &m(Section::Slots),
                )
                .map_err(cuda)?;
            let paged = PagedKv {
                k_cache: kc.slice(..),
                v_cache: vc.slice(..),
                num_blocks: kv.shape.num_blocks,
                block_tables: m(Section::BlockTables),
                max_blocks_per_seq: meta.width,
                context_lens: m(Section::ContextLens),
                num_seqs: n,
            };
            if meta.decode_only {
                attention
                    .decode(
                        gpu,
                        &paged,
                        step.attn_context,
                        &sc.q.slice(..),
                        self.scale,
                        &mut sc.attn_scratch.slice_mut(..),
                        &mut sc.attn.slice_mut(..),
                    )
                    .map_err(cuda)?;
            } else {
                attention
                    .prefill(
                        gpu,
                        &paged,
                        t,
                        &sc.q.slice(..),
                        &m(Section::QueryStart),
                        self.scale,
                        &mut sc.attn.slice_mut(..),
                    )
                    .map_err(cuda)?;
            }
            self.blas
                .linear(gpu, dt, (t, h, d.q), &sc.attn, &layer.o, &mut sc.x, true)
                .map_err(cuda)?;
            k.norm
                .rms_norm(
                    gpu,
                    t,
                    h,
                    self.eps,
                    &sc.x.slice(..),
                    &layer.mlp_norm.slice(..),
                    &mut sc.h.slice_mut(..),
                )
                .map_err(cuda)?;
            self.blas
                .linear(
                    gpu,
                    dt,
                    (t, 2 * d.inter, h),
                    &sc.h,
                    &layer.gate_up,
                    &mut sc.gate_up,
                    false,
                )
                .map_err(cuda)?;
            k.act
                .silu_mul_fused(
                    gpu,
                    t,
                    d.inter,
                    &sc.gate_up.slice(..),
                    &mut sc.act.slice_mut(..),
                )
                .map_err(cuda)?;
            self.blas
                .linear(
                    gpu,
                    dt,
                    (t, h, d.inter),
                    &sc.act,
                    &layer.down,
                    &mut sc.x,
                    true,
                )
                .map_err(cuda)?;
        }
        if r == 0 {
            return Ok(());
        }
        // The rows that want logits: a gather over the flat batch (the embedding kernel with
        // the hidden states as its table), the final norm, the f32 output projection.
        k.embed
            .embedding(
                gpu,
                t,
                h,
                r,
                &sc.x.slice(..t * h),
                &m(Section::LogitRows),
                &mut sc.h.slice_mut(..),
            )
            .map_err(cuda)?;
        k.norm
            .rms_norm(
                gpu,
                r,
                h,
                self.eps,
                &sc.h.slice(..),
                &w.final_norm.slice(..),
                &mut sc.last.slice_mut(..),
            )
            .map_err(cuda)?;
        let head = w.lm_head.as_ref().unwrap_or(&w.embed);
        self.blas
            .linear_f32(gpu, dt, (r, vocab, h), &sc.last, head, &mut sc.logits)
            .map_err(cuda)?;
        Ok(())
    }
}
