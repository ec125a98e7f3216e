//! The limits one engine runs under: the catalog's `EngineLimits` resolved against the
//! loaded model (its context length, the bytes of KV one token takes).

use super::scheduler::SchedulerConfig;
use crate::config::{EngineLimits, KvCacheSize};

/// KV cache when `models.toml` sets none: 1 GiB, and never less than one full context.
pub const DEFAULT_KV_BYTES: u64 = 1 << 30;

/// Limits the engine runs under.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// What the scheduler packs into a step, and the KV blocks it hands out.
    pub scheduler: SchedulerConfig,
    /// Longest sequence (prompt + completion).
    pub max_model_len: usize,
    /// Requests admitted but not yet running; beyond it `submit` reports `Overloaded`.
    pub max_waiting: usize,
    pub eos_token_ids: Vec<u32>,
}

/// Why a model's limits cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SizingError {
    #[error("max_model_len = {max_model_len} exceeds the model's {positions} positions")]
    ContextTooLong {
        max_model_len: usize,
        positions: usize,
    },
    #[error(
        "the KV cache holds {tokens} tokens, fewer than max_model_len = {max_model_len}; raise \
         kv_cache_tokens/kv_cache_bytes"
    )]
    CacheTooSmall { tokens: usize, max_model_len: usize },
    #[error(
        "the GPU leaves {budget} bytes for the KV cache ({tokens} tokens), fewer than \
         max_model_len = {max_model_len} tokens; raise gpu_memory_utilization, lower \
         max_model_len, or free GPU memory"
    )]
    GpuCacheTooSmall {
        budget: u64,
        tokens: usize,
        max_model_len: usize,
    },
    #[error(
        "gpu_memory_utilization = {utilization} allows {allowed} bytes of this GPU's {total}, \
         but {used} are already in use (weights, buffers, other processes) and the step needs \
         {reserve} more: raise gpu_memory_utilization or free GPU memory"
    )]
    GpuMemoryExhausted {
        utilization: f64,
        total: u64,
        allowed: u64,
        used: u64,
        reserve: u64,
    },
}

/// The KV cache's size when `models.toml` gives neither `kv_cache_tokens` nor
/// `kv_cache_bytes` (an explicit size always wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDefault {
    /// The CPU: this many bytes, raised to one full context if that is more.
    Bytes(u64),
    /// A GPU: exactly the budget [`kv_budget_from_gpu`] computed; too small for one full
    /// context is an error naming `gpu_memory_utilization`.
    GpuBudget(u64),
}

/// Bytes the KV cache may take on a GPU of `total` bytes with `free` bytes free *after* the
/// weights, static buffers and workspaces are allocated: `total * utilization - (total -
/// free) - reserve`, where `reserve` is the peak per-step scratch the decoder still needs
/// (as in vLLM, `utilization` caps everything inferd and others hold on the GPU).
pub fn kv_budget_from_gpu(
    total: u64,
    free: u64,
    utilization: f64,
    reserve: u64,
) -> Result<u64, SizingError> {
    let allowed = (total as f64 * utilization) as u64;
    let used = total.saturating_sub(free);
    allowed
        .checked_sub(used)
        .and_then(|left| left.checked_sub(reserve))
        .filter(|&b| b > 0)
        .ok_or(SizingError::GpuMemoryExhausted {
            utilization,
            total,
            allowed,
            used,
            reserve,
        })
}

/// What the engine needs to know of the model to size itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    /// The longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Bytes of K and V one token occupies across all layers, in the cache's dtype.
    pub kv_bytes_per_token: usize,
    pub eos_token_ids: Vec<u32>,
}

impl EngineConfig {
    /// Resolves the catalog's limits for a model: `max_model_len` defaults to the model's
    /// context, the KV cache to [`DEFAULT_KV_BYTES`] (at least one full context).
    pub fn resolve(limits: &EngineLimits, model: ModelFacts) -> Result<Self, SizingError> {
        Self::resolve_with(limits, model, KvDefault::Bytes(DEFAULT_KV_BYTES))
    }

    /// [`Self::resolve`] with the KV cache's default size given by the device.
    pub fn resolve_with(
        limits: &EngineLimits,
        model: ModelFacts,
        kv_default: KvDefault,
    ) -> Result<Self, SizingError> {
        let positions = model.max_position_embeddings;
        let max_model_len = limits.max_model_len.unwrap_or(positions);
        if max_model_len > positions {
            return Err(SizingError::ContextTooLong {
                max_model_len,
                positions,
            });
        }
        let bs = limits.block_size;
        let per_token = model.kv_bytes_per_token as u64;
        let tokens = match limits.kv_cache {
            Some(KvCacheSize::Tokens(t)) => t,
            Some(KvCacheSize::Bytes(b)) => (b / per_token) as usize,
            None => match kv_default {
                KvDefault::Bytes(b) => ((b / per_token) as usize).max(max_model_len),
                KvDefault::GpuBudget(budget) => {
                    let tokens = (budget / per_token) as usize;
                    if tokens / bs * bs < max_model_len {
                        return Err(SizingError::GpuCacheTooSmall {
                            budget,
                            tokens: tokens / bs * bs,
                            max_model_len,
                        });
                    }
                    tokens
                }
            },
        };
        let num_blocks = tokens / bs;
        if num_blocks * bs < max_model_len {
            return Err(SizingError::CacheTooSmall {
                tokens: num_blocks * bs,
                max_model_len,
            });
        }
        Ok(EngineConfig {
            scheduler: SchedulerConfig {
                max_num_seqs: limits.max_num_seqs,
                max_num_batched_tokens: limits.max_num_batched_tokens,
                block_size: bs,
                num_blocks,
                enable_prefix_caching: limits.enable_prefix_caching,
            },
            max_model_len,
            max_waiting: limits.max_waiting,
            eos_token_ids: model.eos_token_ids,
        })
    }

    pub fn block_size(&self) -> usize {
        self.scheduler.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.scheduler.num_blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(positions: usize) -> ModelFacts {
        ModelFacts {
            max_position_embeddings: positions,
            kv_bytes_per_token: 1024,
            eos_token_ids: vec![2],
        }
    }

    #[test]
    fn defaults_come_from_the_model() {
        let cfg = EngineConfig::resolve(&EngineLimits::default(), facts(2048)).unwrap();
        assert_eq!(cfg.max_model_len, 2048);
        // 1 GiB of 1 KiB tokens, in blocks of 16.
        assert_eq!(cfg.num_blocks(), (1 << 20) / 16);
        assert_eq!(cfg.eos_token_ids, vec![2]);
        let l = EngineLimits::default();
        assert_eq!(cfg.scheduler.max_num_seqs, l.max_num_seqs);
        assert_eq!(cfg.max_waiting, l.max_waiting);
    }

    #[test]
    fn the_cache_holds_at_least_one_context() {
        let huge = ModelFacts {
            kv_bytes_per_token: 1 << 30,
            ..facts(4096)
        };
        let cfg = EngineConfig::resolve(&EngineLimits::default(), huge).unwrap();
        assert_eq!(cfg.num_blocks() * cfg.block_size(), 4096);
    }

    #[test]
    fn impossible_limits_are_refused() {
        let long = EngineLimits {
            max_model_len: Some(4096),
            ..Default::default()
        };
        assert_eq!(
            EngineConfig::resolve(&long, facts(2048)),
            Err(SizingError::ContextTooLong {
                max_model_len: 4096,
                positions: 2048
            })
        );
        let small = EngineLimits {
            kv_cache: Some(KvCacheSize::Tokens(1000)),
            ..Default::default()
        };
        assert_eq!(
            EngineConfig::resolve(&small, facts(2048)),
            Err(SizingError::CacheTooSmall {
                tokens: 992,
                max_model_len: 2048
            })
        );
        let bytes = EngineLimits {
            kv_cache: Some(KvCacheSize::Bytes(4096 * 1024)),
            ..Default::default()
        };
        assert_eq!(
            EngineConfig::resolve(&bytes, facts(2048))
                .unwrap()
                .num_blocks(),
            256
        );
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_gpu_budget_is_what_utilization_leaves_after_what_is_used() {
        // An H200-sized GPU: 140 GiB, 16 GiB of weights loaded (124 GiB free), 0.9, 1 GiB of
        // step scratch: 126 - 16 - 1 = 109 GiB.
        let total = 140 * GIB;
        let b = kv_budget_from_gpu(total, 124 * GIB, 0.9, GIB).unwrap();
        assert_eq!(b, (total as f64 * 0.9) as u64 - 16 * GIB - GIB);
        // Another process holding 30 GiB counts against the share as well.
        let shared = kv_budget_from_gpu(total, 94 * GIB, 0.9, GIB).unwrap();
        assert_eq!(b - shared, 30 * GIB);
        // Utilization 1.0 on an idle GPU: everything but the reserve.
        assert_eq!(
            kv_budget_from_gpu(total, total, 1.0, GIB).unwrap(),
            139 * GIB
        );
    }

    #[test]
    fn a_gpu_without_room_is_an_error_naming_the_key() {
        // 80 GiB card, 70 GiB already used, 0.8 allows 64 GiB.
        let e = kv_budget_from_gpu(80 * GIB, 10 * GIB, 0.8, 0).unwrap_err();
        assert!(matches!(e, SizingError::GpuMemoryExhausted { .. }), "{e:?}");
        assert!(
            e.to_string().contains("raise gpu_memory_utilization"),
            "{e}"
        );
        // Exactly used up (nothing left for the cache) is also refused.
        assert!(kv_budget_from_gpu(100, 50, 0.5, 0).is_err());
        // The reserve alone can exhaust it.
        assert!(kv_budget_from_gpu(80 * GIB, 80 * GIB, 0.5, 40 * GIB).is_err());
    }

    #[test]
    fn the_gpu_default_takes_the_budget_and_explicit_sizes_win() {
        let budget = 10 * GIB;
        let cfg = EngineConfig::resolve_with(
            &EngineLimits::default(),
            facts(2048),
            KvDefault::GpuBudget(budget),
        )
        .unwrap();
        // All of it, not the CPU's 1 GiB default: 10 Mi tokens of 1 KiB in blocks of 16.
        assert_eq!(cfg.num_blocks(), (10 << 20) / 16);
        let explicit = EngineLimits {
            kv_cache: Some(KvCacheSize::Tokens(4096)),
            ..Default::default()
        };
        let cfg = EngineConfig::resolve_with(&explicit, facts(2048), KvDefault::GpuBudget(budget))
            .unwrap();
        assert_eq!(cfg.num_blocks() * cfg.block_size(), 4096);
        // A budget below one full context is refused (the CPU default would round up).
        let e = EngineConfig::resolve_with(
            &EngineLimits::default(),
            facts(2048),
            KvDefault::GpuBudget(1024 * 1000),
        )
        .unwrap_err();
        assert_eq!(
            e,
            SizingError::GpuCacheTooSmall {
                budget: 1024 * 1000,
                tokens: 992,
                max_model_len: 2048
            }
        );
        assert!(e.to_string().contains("gpu_memory_utilization"), "{e}");
    }
}
