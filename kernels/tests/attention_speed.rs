//! Timing of `paged_attention` against `reference_v1` (the previous kernel:
//! one work item per (token, head), scalar dot, libm `exp`, no K/V reuse) on
//! SmolLM2-135M shapes (9 query heads, 3 kv heads, head_dim 64, block 16).
//!
//! `cargo test --release -p inferd-kernels --test attention_speed -- --ignored --nocapture`
//! (`ATTN_BENCH=decode` runs only the cases whose name contains `decode`;
//! `ATTN_NEW_ONLY=1` skips the old kernel, e.g. for profiling). Times are
//! the best of several runs.

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use common::{randn, Rng};
use inferd_kernels::paged_attention;
use rayon::prelude::*;

const H: usize = 9;
const KV: usize = 3;
const D: usize = 64;
const BS: usize = 16;

/// The previous kernel's dot product (8 strided partial sums, fixed tree).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The previous kernel, verbatim in arithmetic and threading, on raw slices.
fn reference_v1(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    bt: &[u32],
    mb: usize,
    cl: &[u32],
    qsl: &[u32],
) -> Vec<f32> {
    let num_tokens = *qsl.last().unwrap() as usize;
    let scale = 1.0 / (D as f32).sqrt();
    let items = num_tokens * H;
    let mut out = vec![0f32; items * D];
    let mut token_seq = Vec::with_capacity(num_tokens);
    for s in 0..cl.len() {
        token_seq.resize(qsl[s + 1] as usize, s);
    }
    let max_ctx = cl.iter().copied().max().unwrap_or(0) as usize;
    let per_chunk = items.div_ceil(rayon::current_num_threads() * 8).max(1);
    out.par_chunks_mut(per_chunk * D)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut scores = vec![0f32; max_ctx];
            for (i, out) in chunk.chunks_exact_mut(D).enumerate() {
                let item = c * per_chunk + i;
                let (tok, h) = (item / H, item % H);
                let s = token_seq[tok];
                let (q0, q1) = (qsl[s] as usize, qsl[s + 1] as usize);
                let n = cl[s] as usize - (q1 - q0) + (tok - q0) + 1;
                let kvh = h / (H / KV);
                let q = &q[item * D..(item + 1) * D];
                let table = &bt[s * mb..];
                let row = |t: usize| ((table[t / BS] as usize * BS + t % BS) * KV + kvh) * D;
                let scores = &mut scores[..n];
                let mut max = f32::NEG_INFINITY;
                for (t, sc) in scores.iter_mut().enumerate() {
                    *sc = dot(q, &kc[row(t)..row(t) + D]) * scale;
                    max = max.max(*sc);
                }
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                out.fill(0.0);
                for (t, &p) in scores.iter().enumerate() {
                    let w = p * inv;
                    for (o, v) in out.iter_mut().zip(&vc[row(t)..row(t) + D]) {
                        *o += w * v;
                    }
                }
            }
        });
    out
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Times old vs new on `seqs` = (context_len, q_len); returns (old ms, new ms).
fn bench(name: &str, seqs: &[(usize, usize)], reps: usize) -> (f64, f64) {
    if let Ok(only) = std::env::var("ATTN_BENCH") {
        if !name.contains(&only) {
            return (0.0, 0.0);
        }
    }
    let dev = &Device::Cpu;
    let mut rng = Rng::new(9);
    let per_seq = seqs.iter().map(|s| s.0.div_ceil(BS)).max().unwrap();
    let blocks = per_seq * seqs.len();
    let mut pool: Vec<u32> = (0..blocks as u32).collect();
    rng.shuffle(&mut pool);
    let tokens: usize = seqs.iter().map(|s| s.1).sum();
    let q = randn(&mut rng, &[tokens, H, D]);
    let kc = randn(&mut rng, &[blocks, BS, KV, D]);
    let vc = randn(&mut rng, &[blocks, BS, KV, D]);
    let cl: Vec<u32> = seqs.iter().map(|s| s.0 as u32).collect();
    let mut qsl = vec![0u32];
    for s in seqs {
        qsl.push(qsl.last().unwrap() + s.1 as u32);
    }
    let bt_t = Tensor::from_vec(pool.clone(), (seqs.len(), per_seq), dev).unwrap();
    let (cl_t, qsl_t) = (
        Tensor::new(cl.as_slice(), dev).unwrap(),
        Tensor::new(qsl.as_slice(), dev).unwrap(),
    );
    let (qv, kv, vv) = (vec_f32(&q), vec_f32(&kc), vec_f32(&vc));
    let scale = 1.0 / (D as f32).sqrt();
    let new = || paged_attention(&q, &kc, &vc, &bt_t, &cl_t, &qsl_t, scale).unwrap();
    let old = || reference_v1(&qv, &kv, &vv, &pool, per_seq, &cl, &qsl);
    if std::env::var("ATTN_NEW_ONLY").is_err() {
        let (a, b) = (old(), vec_f32(&new()));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
    // Best of `reps` (the machine is shared; the minimum is the stable figure).
    let time = |f: &dyn Fn()| {
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    let skip_old = std::env::var("ATTN_NEW_ONLY").is_ok();
    let t_old = if skip_old {
        f64::NAN
    } else {
        time(&|| drop(old()))
    };
    let t_new = time(&|| drop(new()));
    println!(
        "{name:<34} old {t_old:9.2} ms   new {t_new:8.2} ms   speedup {:5.2}x",
        t_old / t_new
    );
    (t_old, t_new)
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn attention_speed() {
    println!("threads: {}", rayon::current_num_threads());
    bench("prefill 2000 tokens, context 2000", &[(2000, 2000)], 5);
    bench("chunk 256 queries, context 2000", &[(2000, 256)], 10);
    bench("decode 16 seqs x 1, context 2000", &[(2000, 1); 16], 30);
}
