//! Drives inferd's batched paged forward directly (no engine, no HTTP) so it can be
//! compared with candle-transformers' reference `quantized_llama`.

use std::fs::File;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use inferd::model::chat_template::ChatTemplate;
use inferd::model::loader::{self, LoadOptions};
use inferd::model::tokenizer::ModelTokenizer;
use inferd::model::{CausalLm, ForwardBatch, KvCache, Model};

/// Fixed prompts of different lengths and kinds.
pub const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "The quick brown fox",
    "def fibonacci(n):",
    "List three prime numbers:",
    "Once upon a time, in a land far away, there lived a",
    "1, 2, 3, 4, 5,",
    "Translate to French: Good morning, how are you?",
];

/// A causal LM loaded by inferd onto the CPU in f32, with its tokenizer and chat template.
pub struct Ours {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: ModelTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

pub fn load_ours(path: &Path, dequantize: bool) -> Ours {
    let loaded = loader::load(
        path,
        &LoadOptions {
            dequantize,
            device: Device::Cpu,
            dtype: DType::F32,
        },
    )
    .expect("load model");
    let Model::CausalLm(model) = loaded.model;
    Ours {
        model,
        tokenizer: loaded.tokenizer,
        chat_template: loaded.chat_template,
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy-decodes all prompts together through inferd's batched paged forward.
/// Returns, per prompt, the first-step logits and the generated tokens.
pub fn ours_batched(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    steps: usize,
) -> Vec<(Vec<f32>, Vec<u32>)> {
    let block_size = 16;
    let per_seq = (prompts.iter().map(Vec::len).max().unwrap_or(0) + steps).div_ceil(block_size);
    let cache = KvCache::new(
        model.shape(),
        per_seq * prompts.len(),
        block_size,
        &Device::Cpu,
        DType::F32,
    )
    .expect("kv cache");
    // Scatter blocks: sequence i gets blocks i, i + n, i + 2n, ... (non-contiguous on purpose).
    let n = prompts.len() as u32;
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|i| (0..per_seq as u32).map(|j| i + j * n).collect())
        .collect();
    let mut out: Vec<(Vec<f32>, Vec<u32>)> = vec![(vec![], vec![]); prompts.len()];
    let mut tokens: Vec<Vec<u32>> = prompts.to_vec();
    let mut computed = vec![0usize; prompts.len()];
    for step in 0..steps {
        let mut batch = ForwardBatch::default();
        for (i, t) in tokens.iter().enumerate() {
            batch.push_seq(&t[computed[i]..], computed[i], &tables[i], block_size, true);
        }
        let logits = model.forward(&batch, &cache).expect("forward");
        for i in 0..prompts.len() {
            computed[i] = tokens[i].len();
            let row = logits.row(i);
            if step == 0 {
                out[i].0 = row.to_vec();
            }
            let next = argmax(row);
            out[i].1.push(next);
            tokens[i].push(next);
        }
    }
    out
}

/// Greedy-decodes one prompt with candle-transformers' `quantized_llama`.
pub fn reference(path: &Path, prompt: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    let r = reference_run(path, prompt, steps);
    (r.first_logits, r.tokens)
}

/// What the reference did for one prompt.
pub struct ReferenceRun {
    pub first_logits: Vec<f32>,
    pub tokens: Vec<u32>,
    /// Per step: how far the chosen logit is above the runner-up.
    pub margins: Vec<f32>,
}

/// Top-1 minus top-2 logit.
pub fn margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in row {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Greedy-decodes one prompt with candle-transformers' `quantized_llama`, keeping margins.
pub fn reference_run(path: &Path, prompt: &[u32], steps: usize) -> ReferenceRun {
    let mut file = File::open(path).expect("open gguf");
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
    let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("reference");
    let dev = Device::Cpu;
    let input = Tensor::new(prompt, &dev).unwrap().unsqueeze(0).unwrap();
    let mut logits = model.forward(&input, 0).expect("forward");
    let mut first = None;
    let mut margins = Vec::with_capacity(steps);
    let mut out = Vec::with_capacity(steps);
    for pos in prompt.len()..prompt.len() + steps {
        let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
        if first.is_none() {
            first = Some(row.clone());
        }
        let next = argmax(&row);
        margins.push(margin(&row));
        out.push(next);
        let input = Tensor::new(&[next], &dev).unwrap().unsqueeze(0).unwrap();
        logits = model.forward(&input, pos).expect("forward");
    }
    ReferenceRun {
        first_logits: first.unwrap_or_default(),
        tokens: out,
        margins,
    }
}

/// Largest absolute difference between two logit rows.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
