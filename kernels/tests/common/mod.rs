//! Small deterministic helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{Device, Tensor};

/// SplitMix64: tiny, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// A CPU f32 tensor of the given shape with entries uniform in `[-1, 1)`.
pub fn randn(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `|a - b| <= tol * max(1, |b|)` element-wise (absolute below 1, relative
/// above); `tol = 0` demands exact equality.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    for (i, (x, y)) in flat(a).iter().zip(flat(b).iter()).enumerate() {
        let ok = (x - y).abs() <= tol * y.abs().max(1.0);
        assert!(ok, "element {i}: {x} vs {y} (tol {tol})");
    }
}

/// Bit-for-bit equality.
pub fn assert_bitwise(a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    for (i, (x, y)) in flat(a).iter().zip(flat(b).iter()).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "element {i}: {x} vs {y}");
    }
}
