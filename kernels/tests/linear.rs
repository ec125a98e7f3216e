mod common;

use std::time::Instant;

use candle_core::{DType, Tensor};
use common::{assert_bitwise, assert_close, randn, Rng};
use inferd_kernels::{linear, linear_slow, linear_with, Isa, KernelError};

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2Fma]
        .into_iter()
        .filter(|i| i.is_supported())
        .collect()
}

#[test]
fn fast_matches_slow() {
    let mut rng = Rng::new(1);
    for &k in &[64, 576, 1536, 7] {
        for &n in &[1, 5, 576, 1000] {
            let w = randn(&mut rng, &[n, k]);
            for &m in &[1, 2, 3, 5, 16, 33, 100] {
                let x = randn(&mut rng, &[m, k]);
                let slow = linear_slow(&x, &w).unwrap();
                for isa in isas() {
                    let fast = linear_with(&x, &w, isa).unwrap();
                    assert_close(&fast, &slow, 1e-4);
                }
                assert_bitwise(
                    &linear(&x, &w).unwrap(),
                    &linear_with(&x, &w, Isa::detect()).unwrap(),
                );
            }
        }
    }
}

#[test]
fn degenerate_shapes() {
    let mut rng = Rng::new(2);
    for (m, n, k) in [(0, 5, 8), (3, 0, 8), (4, 3, 0), (1, 1, 1), (6, 25, 9)] {
        let x = randn(&mut rng, &[m, k]);
        let w = randn(&mut rng, &[n, k]);
        let slow = linear_slow(&x, &w).unwrap();
        for isa in isas() {
            assert_close(&linear_with(&x, &w, isa).unwrap(), &slow, 1e-4);
        }
    }
}

fn check_batch_invariance(isa: Isa) {
    let mut rng = Rng::new(3);
    for (n, k) in [(1000, 576), (37, 1536), (5, 7), (200, 131)] {
        let w = randn(&mut rng, &[n, k]);
        let x = randn(&mut rng, &[37, k]);
        let batch = linear_with(&x, &w, isa).unwrap();
        for i in 0..37 {
            let alone = linear_with(&x.narrow(0, i, 1).unwrap(), &w, isa).unwrap();
            assert_bitwise(&alone, &batch.narrow(0, i, 1).unwrap());
        }
        // Sub-batches of every size at every offset (covers every tile shape).
        for m in [2, 3, 4, 5, 7, 16] {
            for i in (0..37 - m).step_by(5) {
                let sub = linear_with(&x.narrow(0, i, m).unwrap(), &w, isa).unwrap();
                assert_bitwise(&sub, &batch.narrow(0, i, m).unwrap());
            }
        }
    }
}

#[test]
fn batch_invariance_scalar() {
    check_batch_invariance(Isa::Scalar);
}

#[test]
fn batch_invariance_avx2() {
    if !Isa::Avx2Fma.is_supported() {
        eprintln!("skipping: AVX2/FMA not supported");
        return;
    }
    check_batch_invariance(Isa::Avx2Fma);
}

#[test]
fn invalid_arguments_are_typed_errors() {
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, &[3, 8]);
    let w = randn(&mut rng, &[4, 8]);
    let e = linear(&x, &randn(&mut rng, &[4, 9]));
    assert!(
        matches!(e, Err(KernelError::Shape { name: "w", .. })),
        "{e:?}"
    );
    let e = linear(&x.to_dtype(DType::BF16).unwrap(), &w);
    assert!(
        matches!(e, Err(KernelError::DType { name: "x", .. })),
        "{e:?}"
    );
    let e = linear(&x.t().unwrap(), &randn(&mut rng, &[4, 3]));
    assert!(
        matches!(e, Err(KernelError::NotContiguous { name: "x", .. })),
        "{e:?}"
    );
    let e = linear(&x.unsqueeze(0).unwrap(), &w);
    assert!(
        matches!(e, Err(KernelError::Shape { name: "x", .. })),
        "{e:?}"
    );
    // A non-zero start offset is fine.
    let rows = linear(&x.narrow(0, 1, 2).unwrap(), &w).unwrap();
    assert_bitwise(&rows, &linear(&x, &w).unwrap().narrow(0, 1, 2).unwrap());
}

/// Best average over batches of 10 calls (robust to a noisy machine).
fn ns_per_call(f: &dyn Fn() -> Tensor) -> f64 {
    for _ in 0..5 {
        f();
    }
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < 0.4 {
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / 10.0);
    }
    best
}

/// `cargo test --release -p inferd-kernels --test linear -- --ignored --nocapture`
#[test]
#[ignore]
fn linear_speed() {
    let mut rng = Rng::new(5);
    let (n, k) = (1536, 576);
    // 24 weights (~85 MiB) cycled so that they cannot stay in cache ("cold").
    let ws: Vec<Tensor> = (0..24).map(|_| randn(&mut rng, &[n, k])).collect();
    let next = std::cell::Cell::new(0);
    let cold = |f: &dyn Fn(&Tensor) -> Tensor| {
        ns_per_call(&|| {
            next.set((next.get() + 1) % ws.len());
            f(&ws[next.get()])
        })
    };
    println!(
        "isa {:?}, rayon threads {}, n={n} k={k}, ns per call",
        Isa::detect(),
        rayon::current_num_threads()
    );
    println!("   m   linear(hot)  linear(cold)  slow(hot)  slow(cold)  scalar(hot)");
    for m in [1, 2, 3, 4, 8, 16, 64] {
        let x = randn(&mut rng, &[m, k]);
        let w = &ws[0];
        let hot = ns_per_call(&|| linear(&x, w).unwrap());
        let hot_slow = ns_per_call(&|| linear_slow(&x, w).unwrap());
        let hot_scalar = ns_per_call(&|| linear_with(&x, w, Isa::Scalar).unwrap());
        let cold_fast = cold(&|w| linear(&x, w).unwrap());
        let cold_slow = cold(&|w| linear_slow(&x, w).unwrap());
        println!(
            "{m:4} {hot:12.0} {cold_fast:13.0} {hot_slow:10.0} {cold_slow:11.0} {hot_scalar:12.0}"
        );
    }
}

/// Batch invariance at serving shapes, on every ISA and with 1 and 2 threads:
/// every row of a big batch equals that row alone, and random sub-batches
/// equal the matching slice of the big batch.
#[test]
fn batch_invariance_serving_shapes_and_threads() {
    let mut rng = Rng::new(6);
    for (n, k) in [(1536, 576), (576, 1536)] {
        let w = randn(&mut rng, &[n, k]);
        let x = randn(&mut rng, &[2000, k]);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for isa in isas() {
                    let alone: Vec<Tensor> = (0..2000)
                        .map(|i| linear_with(&x.narrow(0, i, 1).unwrap(), &w, isa).unwrap())
                        .collect();
                    for m in [1, 2, 3, 4, 5, 15, 16, 17, 64, 200, 2000] {
                        let big = linear_with(&x.narrow(0, 0, m).unwrap(), &w, isa).unwrap();
                        for (i, row) in alone.iter().enumerate().take(m) {
                            assert_bitwise(row, &big.narrow(0, i, 1).unwrap());
                        }
                        for _ in 0..3 {
                            let len = 1 + rng.below(m);
                            let at = rng.below(2000 - len + 1);
                            let sub = linear_with(&x.narrow(0, at, len).unwrap(), &w, isa).unwrap();
                            for i in 0..len {
                                assert_bitwise(&alone[at + i], &sub.narrow(0, i, 1).unwrap());
                            }
                        }
                    }
                }
            });
        }
    }
}

/// `cargo test --release -p inferd-kernels --test linear -- --ignored --nocapture linear_gflops`
#[test]
#[ignore]
fn linear_gflops() {
    let mut rng = Rng::new(7);
    println!(
        "isa {:?}, rayon threads {} (hot weights)",
        Isa::detect(),
        rayon::current_num_threads()
    );
    println!("    k     n     m   linear ms  GFLOP/s    slow ms  GFLOP/s");
    for (k, n) in [(576, 1536), (1536, 576), (576, 576)] {
        let w = randn(&mut rng, &[n, k]);
        for m in [1, 16, 256, 2000] {
            let x = randn(&mut rng, &[m, k]);
            let fast = ns_per_call(&|| linear(&x, &w).unwrap()) / 1e6;
            let slow = ns_per_call(&|| linear_slow(&x, &w).unwrap()) / 1e6;
            let gf = |ms: f64| 2.0 * (m * n * k) as f64 / ms / 1e6;
            println!(
                "{k:5} {n:5} {m:5} {fast:11.3} {:8.1} {slow:10.3} {:8.1}",
                gf(fast),
                gf(slow)
            );
        }
    }
}
