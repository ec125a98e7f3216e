//! HF safetensors loading: a small random-weight llama that the test writes itself
//! (f32, f16 and bf16), run through inferd's batched paged forward and through
//! candle-transformers' `llama` as the reference.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as reference;
use inferd_tests::oracle::{load_ours, max_abs_diff, ours_batched};
use inferd_tests::TempDir;

const HIDDEN: usize = 64;
const INTER: usize = 160;
const VOCAB: usize = 300;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "vocab_size": VOCAB,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "tie_word_embeddings": false,
        "bos_token_id": 256,
        "eos_token_id": 257
    })
}

fn random_weights(dtype: DType) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let head_dim = HIDDEN / HEADS;
    let mut w = HashMap::new();
    let put = |w: &mut HashMap<String, Tensor>, name: String, shape: &[usize], std: f64| {
        let t = Tensor::randn(0f32, std as f32, shape, &dev).unwrap();
        w.insert(name, t.to_dtype(dtype).unwrap());
    };
    put(
        &mut w,
        "model.embed_tokens.weight".into(),
        &[VOCAB, HIDDEN],
        1.0,
    );
    put(&mut w, "lm_head.weight".into(), &[VOCAB, HIDDEN], 0.2);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(
            &mut w,
            format!("{p}.self_attn.q_proj.weight"),
            &[HEADS * head_dim, HIDDEN],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.self_attn.k_proj.weight"),
            &[KV_HEADS * head_dim, HIDDEN],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.self_attn.v_proj.weight"),
            &[KV_HEADS * head_dim, HIDDEN],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.self_attn.o_proj.weight"),
            &[HIDDEN, HEADS * head_dim],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.mlp.gate_proj.weight"),
            &[INTER, HIDDEN],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.mlp.up_proj.weight"),
            &[INTER, HIDDEN],
            0.2,
        );
        put(
            &mut w,
            format!("{p}.mlp.down_proj.weight"),
            &[HIDDEN, INTER],
            0.2,
        );
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let t = (Tensor::randn(0f32, 0.1, HIDDEN, &dev).unwrap() + 1.0).unwrap();
            w.insert(format!("{p}.{n}.weight"), t.to_dtype(dtype).unwrap());
        }
    }
    let t = (Tensor::randn(0f32, 0.1, HIDDEN, &Device::Cpu).unwrap() + 1.0).unwrap();
    w.insert("model.norm.weight".into(), t.to_dtype(dtype).unwrap());
    w
}

/// A byte-level BPE tokenizer with no merges: every byte is a token, plus <s> and </s>.
fn write_tokenizer(dir: &Path) {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut vocab = tokenizers::models::bpe::Vocab::new();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    for (i, c) in alphabet.iter().enumerate() {
        vocab.insert(c.to_string(), i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(vec![
        tokenizers::AddedToken::from("<s>", true),
        tokenizers::AddedToken::from("</s>", true),
    ])
    .unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let cfg = serde_json::json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "add_bos_token": false,
        "chat_template": "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

fn reference_greedy(dir: &Path, prompt: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    let dev = Device::Cpu;
    let cfg: reference::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let files = vec![dir.join("model.safetensors")];
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev).unwrap()
    };
    let model = reference::Llama::load(vb, &cfg).unwrap();
    let mut cache = reference::Cache::new(true, DType::F32, &cfg, &dev).unwrap();
    let mut input = Tensor::new(prompt, &dev).unwrap().unsqueeze(0).unwrap();
    let mut pos = 0;
    let mut first = vec![];
    let mut out = vec![];
    for step in 0..steps {
        let logits: Vec<f32> = model
            .forward(&input, pos, &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        if step == 0 {
            first = logits.clone();
        }
        pos += input.dim(1).unwrap();
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        out.push(next);
        input = Tensor::new(&[next], &dev).unwrap().unsqueeze(0).unwrap();
    }
    (first, out)
}

#[test]
fn random_llama_in_safetensors_matches_candle_transformers_llama() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let dir = TempDir::new("safetensors");
        std::fs::write(dir.0.join("config.json"), config_json().to_string()).unwrap();
        write_tokenizer(&dir.0);
        candle_core::safetensors::save(&random_weights(dtype), dir.0.join("model.safetensors"))
            .unwrap();

        let ours = load_ours(&dir.0, false);
        let prompts: Vec<Vec<u32>> = vec![
            ours.tokenizer.encode("hello paged world").unwrap(),
            ours.tokenizer
                .encode("a longer prompt that spans more than one block of sixteen")
                .unwrap(),
            vec![5, 9, 200],
        ];
        let got = ours_batched(&*ours.model, &prompts, 12);
        for (i, p) in prompts.iter().enumerate() {
            let (ref_logits, ref_tokens) = reference_greedy(&dir.0, p, 12);
            let diff = max_abs_diff(&got[i].0, &ref_logits);
            assert!(diff < 1e-3, "{dtype:?} prompt {i}: logits differ by {diff}");
            assert_eq!(
                got[i].1, ref_tokens,
                "{dtype:?} prompt {i}: greedy tokens differ"
            );
        }
        // The model's own chat template came from tokenizer_config.json.
        let t = ours.chat_template.as_ref().expect("chat template");
        let msgs = serde_json::json!([{"role": "user", "content": "hi"}]);
        assert_eq!(t.render(&msgs, true).unwrap(), "<s>user: hi\nassistant:");
    }
}
