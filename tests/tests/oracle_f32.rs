//! The serving configuration (`dequantize = true`: f32 weights through inferd's own
//! batch-invariant linear kernel) against the reference `quantized_llama` with every
//! weight dequantized to f32 too (`CANDLE_DEQUANTIZE_ALL`). The only difference left is
//! float summation order, so greedy tokens must agree.

use inferd_tests::oracle::{load_ours, max_abs_diff, ours_batched, reference, PROMPTS};
use inferd_tests::smollm2_gguf;

const STEPS: usize = 32;

#[test]
fn dequantized_batched_forward_matches_dequantized_reference() {
    // The only test in this binary: candle reads this variable once per thread.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let path = smollm2_gguf();
    let ours = load_ours(&path, true);
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| ours.tokenizer.encode(p).expect("encode"))
        .collect();
    let got = ours_batched(&*ours.model, &prompts, STEPS);
    for (i, prompt) in prompts.iter().enumerate() {
        let (ref_logits, ref_tokens) = reference(&path, prompt, STEPS);
        let diff = max_abs_diff(&got[i].0, &ref_logits);
        let scale = ref_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!("prompt {i}: first-step max |Δlogit| = {diff:.2e} (max |logit| {scale:.1})");
        assert!(
            diff < 1e-3 * scale.max(1.0),
            "prompt {i}: logits differ by {diff}"
        );
        assert_eq!(got[i].1, ref_tokens, "prompt {i} ({:?})", PROMPTS[i]);
    }
}
