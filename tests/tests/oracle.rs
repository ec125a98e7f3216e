//! Correctness oracle: inferd's batched paged forward against candle-transformers'
//! reference `quantized_llama`, run one sequence at a time on the same GGUF.
//!
//! Weights stay quantized on both sides (same quantized matmul per row), so the outputs
//! must agree token for token; the first-step logits agree up to float reassociation in
//! attention.

use inferd_tests::oracle::{load_ours, max_abs_diff, ours_batched, reference, PROMPTS};
use inferd_tests::smollm2_gguf;

const STEPS: usize = 32;

#[test]
fn batched_paged_forward_matches_reference_quantized_llama() {
    let path = smollm2_gguf();
    let ours = load_ours(&path, false);
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| ours.tokenizer.encode(p).expect("encode"))
        .collect();
    let got = ours_batched(&ours.model, &prompts, STEPS);
    for (i, prompt) in prompts.iter().enumerate() {
        let (ref_logits, ref_tokens) = reference(&path, prompt, STEPS);
        let diff = max_abs_diff(&got[i].0, &ref_logits);
        let scale = ref_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!("prompt {i}: first-step max |Δlogit| = {diff:.2e} (max |logit| {scale:.1})");
        assert!(diff < 1e-3 * scale.max(1.0), "prompt {i}: logits differ by {diff}");
        assert_eq!(
            got[i].1, ref_tokens,
            "prompt {i} ({:?}): greedy tokens differ from the reference",
            PROMPTS[i]
        );
    }
}
