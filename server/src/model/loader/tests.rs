use std::path::PathBuf;

use candle_core::{DType, Device};

use super::{load, HfConfig, LoadOptions};
use crate::model::arch::{self, layer_name, RopeScaling, WeightNames};
use crate::model::ModelError;

fn config(extra: serde_json::Value) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 160,
        "vocab_size": 300,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 32768
    });
    for (k, v) in extra.as_object().expect("an object") {
        cfg[k] = v.clone();
    }
    cfg
}

fn spec_err(extra: serde_json::Value) -> Option<String> {
    let cfg: HfConfig = serde_json::from_value(config(extra)).expect("config");
    cfg.spec(DType::F32).err()
}

/// A directory holding only `config.json` (removed on drop): loading must stop before
/// looking for weights.
struct ConfigDir(PathBuf);

impl ConfigDir {
    fn new(tag: &str, cfg: serde_json::Value) -> Self {
        let dir = std::env::temp_dir().join(format!("inferd-loader-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config.json");
        Self(dir)
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cpu(dtype: DType) -> LoadOptions {
    LoadOptions {
        dequantize: false,
        device: Device::Cpu,
        dtype,
    }
}

fn unsupported_reason(r: Result<super::LoadedModel, ModelError>) -> String {
    match r {
        Err(ModelError::Unsupported { reason, .. }) => reason,
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got a model"),
    }
}

#[test]
fn a_sliding_window_shorter_than_the_context_is_refused_before_the_weights() {
    let dir = ConfigDir::new(
        "window",
        config(serde_json::json!({"sliding_window": 4096})),
    );
    let reason = unsupported_reason(load(&dir.0, &cpu(DType::F32)));
    assert!(reason.contains("sliding_window = 4096"), "{reason}");
    assert!(
        reason.contains("max_position_embeddings = 32768"),
        "{reason}"
    );
}

#[test]
fn a_sliding_window_covering_the_context_or_null_is_accepted() {
    assert_eq!(spec_err(serde_json::json!({"sliding_window": null})), None);
    assert_eq!(spec_err(serde_json::json!({"sliding_window": 32768})), None);
    // Past the config, the load goes on to the weights.
    let dir = ConfigDir::new(
        "no-window",
        config(serde_json::json!({"sliding_window": null})),
    );
    assert_eq!(
        unsupported_reason(load(&dir.0, &cpu(DType::F32))),
        "no *.safetensors files"
    );
}

#[test]
fn unknown_architectures_and_unsupported_keys_are_named() {
    let cases = [
        (
            serde_json::json!({"model_type": "qwen2"}),
            "model_type `qwen2`",
        ),
        (
            serde_json::json!({"rope_scaling": {"type": "yarn", "factor": 2.0}}),
            "rope_scaling type `yarn`",
        ),
        (
            serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
            "low_freq_factor",
        ),
        (
            serde_json::json!({"hidden_act": "gelu"}),
            "hidden_act `gelu`",
        ),
        (
            serde_json::json!({"attention_bias": true}),
            "attention_bias",
        ),
        (serde_json::json!({"mlp_bias": true}), "mlp_bias"),
    ];
    for (extra, named) in cases {
        let err = spec_err(extra.clone()).unwrap_or_else(|| panic!("{extra} was accepted"));
        assert!(err.contains(named), "{extra}: {err}");
    }
    for ok in [
        serde_json::json!({"model_type": "llama"}),
        serde_json::json!({"rope_scaling": null, "hidden_act": "silu", "attention_bias": false}),
        serde_json::json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
    ] {
        assert_eq!(spec_err(ok.clone()), None, "{ok}");
    }
}

#[test]
fn the_spec_carries_the_config() {
    let cfg: HfConfig = serde_json::from_value(config(serde_json::json!({
        "tie_word_embeddings": true,
        "rope_theta": 500000.0
    })))
    .expect("config");
    let (arch, spec) = cfg.spec(DType::F32).expect("supported");
    assert_eq!(arch.name, "llama");
    assert_eq!(spec.shape.head_dim, 16);
    assert_eq!(spec.shape.num_kv_heads, 2);
    assert_eq!(spec.rope_theta, 500000.0);
    assert!(spec.tie_word_embeddings);
    assert_eq!(spec.rope_style, arch.hf.rope_style);
}

#[test]
fn llama3_rope_scaling_reaches_the_spec() {
    let cfg: HfConfig = serde_json::from_value(config(serde_json::json!({
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    })))
    .expect("config");
    let (_, spec) = cfg.spec(DType::F32).expect("supported");
    assert_eq!(
        spec.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192
        }
    );
    let (_, plain) = serde_json::from_value::<HfConfig>(config(serde_json::json!({})))
        .expect("config")
        .spec(DType::F32)
        .expect("supported");
    assert_eq!(plain.rope_scaling, RopeScaling::None);
}

#[test]
fn a_half_precision_cpu_model_is_refused() {
    let dir = ConfigDir::new("dtype", config(serde_json::json!({})));
    let reason = unsupported_reason(load(&dir.0, &cpu(DType::BF16)));
    assert!(reason.contains("dtype bf16"), "{reason}");
}

#[test]
fn kv_bytes_per_token_follow_the_cache_dtype() {
    let cfg: HfConfig = serde_json::from_value(config(serde_json::json!({}))).expect("config");
    let (_, spec) = cfg.spec(DType::F32).expect("supported");
    // 2 (K and V) x 2 layers x 2 kv heads x 16 dims.
    assert_eq!(spec.shape.kv_bytes_per_token(DType::F32), 128 * 4);
    assert_eq!(spec.shape.kv_bytes_per_token(DType::BF16), 128 * 2);
}

#[test]
fn gguf_architectures_are_looked_up_by_name() {
    assert_eq!(arch::by_gguf_name("llama").map(|a| a.name), Some("llama"));
    assert!(arch::by_gguf_name("qwen2").is_none());
    assert_eq!(arch::gguf_names(), "llama");
    assert_eq!(
        arch::by_hf_model_type("mistral").map(|a| a.name),
        Some("llama")
    );
}

fn per_layer(n: &WeightNames) -> [&'static str; 9] {
    [
        n.attn_norm,
        n.q,
        n.k,
        n.v,
        n.o,
        n.mlp_norm,
        n.gate,
        n.up,
        n.down,
    ]
}

#[test]
fn weight_tables_template_every_per_layer_name() {
    for a in arch::ARCHITECTURES {
        for table in [&a.gguf, &a.hf] {
            let n = &table.names;
            for t in per_layer(n) {
                assert!(t.contains("{i}"), "{}: {t}", a.name);
            }
            for t in [n.embed, n.final_norm, n.lm_head] {
                assert!(!t.contains("{i}"), "{}: {t}", a.name);
            }
        }
    }
    assert_eq!(
        layer_name(arch::llama::LLAMA.gguf.names.q, 3),
        "blk.3.attn_q.weight"
    );
}
