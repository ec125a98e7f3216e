//! Micro-benchmarks of the sampler over SmolLM2's 49,152-token vocabulary: one `sample`
//! call per iteration, on a sampler that has drawn once after a 512-token prompt (the
//! logits and the sampler are rebuilt outside the timed part: sampling overwrites the
//! logits, and the penalty state must not grow with the iteration count). Run with `cargo bench -p inferd --bench sampler` (`-- --quick`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferd::engine::sampler::Sampler;
use inferd::engine::types::SamplingParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCAB: usize = 49_152;

/// Logits shaped like a language model's: mostly N(0, 2), a few tokens well ahead (at
/// temperature 0.8 the top token has ~half the probability, the top 4 ~70%).
fn logits() -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut v: Vec<f32> = (0..VOCAB)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 2.0) as f32
        })
        .collect();
    for (i, boost) in [(17, 11.5), (4242, 10.5), (31337, 10.0), (40000, 9.0)] {
        v[i] += boost;
    }
    v
}

fn sampler(c: &mut Criterion) {
    let base = logits();
    let params = |f: fn(&mut SamplingParams)| {
        let mut p = SamplingParams {
            temperature: 0.8,
            seed: Some(1),
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    };
    let cases = [
        ("greedy", params(|p| p.temperature = 0.0)),
        ("temperature", params(|_| {})),
        ("top_p_0.9", params(|p| p.top_p = 0.9)),
        ("top_k_50", params(|p| p.top_k = Some(50))),
        ("min_p_0.05", params(|p| p.min_p = 0.05)),
        (
            "penalties",
            params(|p| {
                p.presence_penalty = 0.5;
                p.frequency_penalty = 0.5;
                p.repetition_penalty = 1.1;
            }),
        ),
    ];
    let prompt: Vec<u32> = (0..512u32).map(|i| i * 97 % VOCAB as u32).collect();
    let mut group = c.benchmark_group("sampler_49k");
    group.throughput(Throughput::Elements(VOCAB as u64));
    for (name, p) in cases {
        // One untimed draw first, so the sampler's scratch buffers exist, as in a running
        // sequence.
        let setup = || {
            let mut s = Sampler::new(&p, &prompt, 0);
            s.sample(&mut base.clone());
            (s, base.clone())
        };
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                setup,
                |(s, l)| s.sample(black_box(l)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, sampler);
criterion_main!(benches);
