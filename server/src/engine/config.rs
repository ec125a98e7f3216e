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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
            None => ((DEFAULT_KV_BYTES / per_token) as usize).max(max_model_len),
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
}
