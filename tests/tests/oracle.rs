//! Correctness oracle: inferd's batched paged forward against candle-transformers'
//! reference `quantized_llama`, run one sequence at a time on the same GGUF, with the
//! weights kept quantized on both sides.
//!
//! candle's quantized matmul quantizes each activation row to 8 bits before the dot
//! products. A last-bit difference in attention (our paged kernel vs the reference's
//! matmul + softmax) can flip the rounding of one activation, which moves the logits by up
//! to a logit or two: the size of the 8-bit step, not of the original difference. So in
//! this configuration the contract is: the first-step logits agree within that
//! quantization noise (`NOISE`), and greedy tokens agree at every step until the first step
//! where the reference itself is within the noise (top-1 vs top-2 margin below `NOISE`);
//! there the two runs may legitimately part. The exact token-for-token check of all 8
//! prompts lives in `oracle_f32.rs`, where the only difference left is float summation
//! order.

use inferd_tests::oracle::{load_ours, max_abs_diff, ours_batched, reference_run, PROMPTS};
use inferd_tests::smollm2_gguf;

const STEPS: usize = 32;
/// Largest logit difference that re-quantizing one activation row to 8 bits may cause.
const NOISE: f32 = 2.5;

#[test]
fn batched_paged_forward_matches_reference_quantized_llama() {
    let path = smollm2_gguf();
    let ours = load_ours(&path, false);
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| ours.tokenizer.encode(p).expect("encode"))
        .collect();
    let got = ours_batched(&*ours.model, &prompts, STEPS);
    let mut identical_runs = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        let r = reference_run(&path, prompt, STEPS);
        let diff = max_abs_diff(&got[i].0, &r.first_logits);
        eprintln!("prompt {i}: first-step max |Δlogit| = {diff:.2e}");
        assert!(
            diff < NOISE,
            "prompt {i}: first-step logits differ by {diff}"
        );
        let agree = got[i]
            .1
            .iter()
            .zip(&r.tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if agree == STEPS {
            identical_runs += 1;
        } else {
            assert!(
                r.margins[agree] < NOISE,
                "prompt {i} ({:?}): token {agree} differs although the reference chose it by a margin of {}",
                PROMPTS[i],
                r.margins[agree]
            );
        }
    }
    assert!(
        identical_runs >= 4,
        "only {identical_runs} of 8 prompts agreed for all {STEPS} tokens"
    );
}
