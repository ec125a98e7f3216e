//! Unit tests of the parts the public API cannot force: the polynomial `exp`
//! and the portable kernel on a CPU that also has AVX2.

use candle_core::{Device, Tensor};

use super::scalar;
use crate::attention::{meta::validate, PagedAttention};
use crate::Isa;

/// Worst relative error of `f` against `f32::exp` over `[-87, 88]` (uniform)
/// and `[-1, 1]` (dense), with the special values checked exactly.
fn check_exp(f: impl Fn(&[f32; 8]) -> [f32; 8]) -> f64 {
    let n = 1 << 21;
    let mut worst = 0f64;
    for i in (0..=n).step_by(8) {
        for (lo, span) in [(-87.0f32, 175.0f32), (-1.0, 2.0)] {
            let xs = std::array::from_fn(|l| lo + span * ((i + l) as f32 / n as f32).min(1.0));
            for (x, got) in xs.iter().zip(f(&xs)) {
                let want = x.exp() as f64;
                worst = worst.max((got as f64 - want).abs() / want);
            }
        }
    }
    let special = f(&[
        0.0,
        -0.0,
        f32::NEG_INFINITY,
        -100.0,
        -87.5,
        -1e-30,
        1e-30,
        1.0,
    ]);
    assert_eq!(special[..6], [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(special[6..], [1.0, 1f32.exp()]);
    worst
}

#[test]
fn exp_is_accurate() {
    let worst = check_exp(|xs| xs.map(scalar::exp));
    eprintln!("max relative error {worst:e}");
    assert!(worst < 2e-7, "max relative error {worst:e}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn exp8_is_accurate() {
    use std::arch::x86_64::*;
    if super::avx2::Avx2::new().is_none() {
        return;
    }
    let worst = check_exp(|xs| {
        let mut out = [0f32; 8];
        // SAFETY: AVX2 + FMA were detected above; both arrays hold 8 floats.
        unsafe {
            let y = super::avx2::exp8(_mm256_loadu_ps(xs.as_ptr()));
            _mm256_storeu_ps(out.as_mut_ptr(), y);
        }
        out
    });
    eprintln!("max relative error {worst:e}");
    assert!(worst < 2e-7, "max relative error {worst:e}");
}

/// Deterministic uniform `[-1, 1)` data.
fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Case {
    h: usize,
    d: usize,
    n: usize,
    q: Vec<f32>,
    kc: Tensor,
    vc: Tensor,
    table: Vec<u32>,
}

impl Case {
    fn new(h: usize, kv: usize, d: usize, bs: usize, n: usize) -> Case {
        let blocks = n.div_ceil(bs) + 2;
        // A shuffled block table: logical block i lives in physical block
        // (i * 7 + 3) mod blocks (7 is coprime with the block counts used).
        let table = (0..blocks).map(|i| ((i * 7 + 3) % blocks) as u32).collect();
        let cache = |seed| {
            Tensor::from_vec(
                data(seed, blocks * bs * kv * d),
                (blocks, bs, kv, d),
                &Device::Cpu,
            )
        };
        Case {
            h,
            d,
            n,
            q: data(1, n * h * d),
            kc: cache(2).unwrap(),
            vc: cache(3).unwrap(),
            table,
        }
    }

    /// Rows `a..b` of the sequence as one step (context `b`), run with `isa`.
    fn step(&self, isa: Isa, a: usize, b: usize) -> Vec<f32> {
        let row = self.h * self.d;
        let q = Tensor::from_vec(
            self.q[a * row..b * row].to_vec(),
            (b - a, self.h, self.d),
            &Device::Cpu,
        );
        let bt = Tensor::from_vec(self.table.clone(), (1, self.table.len()), &Device::Cpu);
        let cl = Tensor::new(&[b as u32], &Device::Cpu).unwrap();
        let qsl = Tensor::new(&[0, (b - a) as u32], &Device::Cpu).unwrap();
        let (q, bt) = (q.unwrap(), bt.unwrap());
        let meta = validate(&q, &self.kc, &self.vc, &bt, &cl, &qsl).unwrap();
        let scale = 1.0 / (self.d as f32).sqrt();
        let op = PagedAttention { meta, scale, isa };
        let out = q.apply_op3_no_bwd(&self.kc, &self.vc, &op).unwrap();
        out.flatten_all().unwrap().to_vec1().unwrap()
    }
}

fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: element {i}: {x} vs {y}");
    }
}

/// Prefill == chunked prefill == decode == any thread count, bitwise.
fn invariants(isa: Isa, c: &Case) {
    let full = c.step(isa, 0, c.n);
    let row = c.h * c.d;
    for chunk in [7, 100] {
        for a in (0..c.n).step_by(chunk) {
            let b = c.n.min(a + chunk);
            assert_same(&c.step(isa, a, b), &full[a * row..b * row], "chunked");
        }
    }
    for p in 0..c.n {
        assert_same(
            &c.step(isa, p, p + 1),
            &full[p * row..(p + 1) * row],
            "decode",
        );
    }
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_same(&pool.install(|| c.step(isa, 0, c.n)), &full, "threads");
    }
}

#[test]
fn scalar_kernel_invariants() {
    invariants(Isa::Scalar, &Case::new(9, 3, 64, 16, 150));
    invariants(Isa::Scalar, &Case::new(4, 2, 12, 4, 40));
}

#[test]
fn simd_kernel_invariants_odd_block() {
    if Isa::Avx2Fma.is_supported() {
        invariants(Isa::Avx2Fma, &Case::new(6, 2, 16, 5, 60));
    }
}

#[test]
fn scalar_and_simd_agree_closely() {
    let c = Case::new(9, 3, 64, 16, 150);
    let s = c.step(Isa::Scalar, 0, c.n);
    let v = c.step(Isa::detect(), 0, c.n);
    for (x, y) in s.iter().zip(&v) {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{x} vs {y}");
    }
}
