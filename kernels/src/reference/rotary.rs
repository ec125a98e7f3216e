//! Rotary position embeddings (`kernels/cuda/rotary.cu`): the cos/sin table the GPU decoder
//! uploads once, and its application to q and k in place.
//!
//! The table is the server's `model::layers::rope::Rope::new` math, in f32: frequency `i` of
//! `rotary_dim / 2` is `inv_i = 1 / theta^(2i / rotary_dim)`, the angle at position `p` is
//! `p * inv_i` (one f32 product, as the server's `[max_pos, 1] x [1, half]` matmul computes
//! it), and the table holds `cos`/`sin` of it. The server stores its table in the model
//! dtype; the GPU keeps it in f32. The server refuses `rope_scaling` today (the HF loader);
//! [`RopeScaling`] holds the HF transformers formulas (`linear` and `llama3`) so that the
//! server can take this builder when it accepts them.

/// Which elements form a rotated pair (the server's `RopeStyle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryStyle {
    /// `(2i, 2i + 1)`: GGUF llama weights (llama.cpp permutes q/k); candle's `rope_i`.
    Interleaved,
    /// `(i, i + rotary_dim / 2)`: HF safetensors weights (GPT-NeoX style); candle's `rope`.
    Halves,
}

/// How the base frequencies are rescaled for a longer context (HF `rope_scaling`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// `inv_freq / factor` (HF `"linear"`, i.e. positions divided by `factor`).
    Linear {
        factor: f32,
    },
    /// HF `_compute_llama3_parameters` (Llama 3.1+): low frequencies (wavelength above
    /// `original_max_position / low_freq_factor`) divided by `factor`, high frequencies
    /// (wavelength below `original_max_position / high_freq_factor`) kept, a smooth blend
    /// between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: usize,
    },
}

/// The `rotary_dim / 2` inverse frequencies, scaled.
///
/// # Panics
/// If `rotary_dim` is zero or odd.
pub fn inv_freqs(rotary_dim: usize, theta: f32, scaling: RopeScaling) -> Vec<f32> {
    assert!(
        rotary_dim > 0 && rotary_dim.is_multiple_of(2),
        "rotary_dim must be even"
    );
    let base = (0..rotary_dim)
        .step_by(2)
        .map(|i| 1f32 / theta.powf(i as f32 / rotary_dim as f32));
    match scaling {
        RopeScaling::None => base.collect(),
        RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let old = original_max_position as f32;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            base.map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
        }
    }
}

/// The f32 cos/sin table of positions `0..max_pos`, each `[max_pos, rotary_dim / 2]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryTable {
    pub rotary_dim: usize,
    pub max_pos: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// Builds the table (see the module doc for the math).
pub fn rotary_table(
    rotary_dim: usize,
    theta: f32,
    max_pos: usize,
    scaling: RopeScaling,
) -> RotaryTable {
    let inv = inv_freqs(rotary_dim, theta, scaling);
    let half = rotary_dim / 2;
    let (mut cos, mut sin) = (
        Vec::with_capacity(max_pos * half),
        Vec::with_capacity(max_pos * half),
    );
    for p in 0..max_pos {
        for &f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    RotaryTable {
        rotary_dim,
        max_pos,
        cos,
        sin,
    }
}

/// Rotates `x [tokens, heads, head_dim]` in place, token `t` at `positions[t]`: the first
/// `table.rotary_dim` elements of every head, pairs per `style`, as
/// `(a, b) -> (a cos - b sin, a sin + b cos)` (each product and sum rounded in f32, no FMA);
/// elements past `rotary_dim` are left alone. A token whose position is beyond the table is
/// left alone too (the kernel never reads past its table; the GPU decoder refuses such
/// positions on the host, as the server's `Rope::at` does).
///
/// # Panics
/// If `x` is not `[positions.len(), heads, head_dim]` or `rotary_dim > head_dim`.
pub fn rotary(
    style: RotaryStyle,
    table: &RotaryTable,
    positions: &[u32],
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
) {
    assert_eq!(x.len(), positions.len() * heads * head_dim, "rotary: x");
    assert!(
        table.rotary_dim <= head_dim,
        "rotary: rotary_dim > head_dim"
    );
    let half = table.rotary_dim / 2;
    if half == 0 {
        return;
    }
    for (row, &p) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        let p = p as usize;
        if p >= table.max_pos {
            continue;
        }
        let (cos, sin) = (
            &table.cos[p * half..][..half],
            &table.sin[p * half..][..half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (i0, i1) = pair(style, i, half);
                let (a, b) = (head[i0], head[i1]);
                head[i0] = a * cos[i] - b * sin[i];
                head[i1] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/// The indices of rotated pair `i` of `half` pairs.
pub fn pair(style: RotaryStyle, i: usize, half: usize) -> (usize, usize) {
    match style {
        RotaryStyle::Interleaved => (2 * i, 2 * i + 1),
        RotaryStyle::Halves => (i, i + half),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, salt: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + salt) * 0.731).sin()).collect()
    }

    #[test]
    fn the_table_is_rope_rs_math() {
        let t = rotary_table(64, 10_000.0, 9, RopeScaling::None);
        assert_eq!((t.cos.len(), t.sin.len()), (9 * 32, 9 * 32));
        // Position 0: no rotation. Frequency 0 is 1 rad per position.
        assert!(t.cos[..32].iter().all(|&c| c == 1.0) && t.sin[..32].iter().all(|&s| s == 0.0));
        assert_eq!(t.cos[5 * 32], 5f32.cos());
        // Frequency i: theta^(-2i/d), angle p * inv (an f32 product).
        let inv = 1f32 / 10_000f32.powf(10.0 / 64.0);
        assert_eq!(t.sin[7 * 32 + 5], (7.0 * inv).sin());
    }

    #[test]
    fn rotation_preserves_norms_and_is_a_rotation_by_position() {
        let (heads, d) = (3, 16);
        let table = rotary_table(d, 10_000.0, 64, RopeScaling::None);
        for style in [RotaryStyle::Interleaved, RotaryStyle::Halves] {
            let positions = [0u32, 1, 17, 63];
            let x0: Vec<f32> = (0..4).flat_map(|t| row(heads * d, t as f32)).collect();
            let mut x = x0.clone();
            rotary(style, &table, &positions, &mut x, heads, d);
            // Position 0 is the identity.
            assert_eq!(x[..heads * d], x0[..heads * d]);
            let inv = inv_freqs(d, 10_000.0, RopeScaling::None);
            for (t, &p) in positions.iter().enumerate() {
                for h in 0..heads {
                    let at = (t * heads + h) * d;
                    for (i, f) in inv.iter().enumerate() {
                        let (i0, i1) = pair(style, i, d / 2);
                        let (a, b) = (x0[at + i0], x0[at + i1]);
                        let (y0, y1) = (x[at + i0], x[at + i1]);
                        // Each pair keeps its norm and turns by p * inv_i.
                        let (n0, n1) = (a.hypot(b), y0.hypot(y1));
                        assert!((n0 - n1).abs() < 1e-5, "{style:?} t{t} h{h} i{i}");
                        let ang = p as f32 * f;
                        let (ry0, ry1) =
                            (a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos());
                        assert!((y0 - ry0).abs() < 1e-5 && (y1 - ry1).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn styles_pair_different_elements() {
        let table = rotary_table(4, 10_000.0, 4, RopeScaling::None);
        let (c, s) = (1f32.cos(), 1f32.sin());
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rotary(RotaryStyle::Interleaved, &table, &[1], &mut x, 1, 4);
        assert_eq!(x[0], 1.0 * c - 2.0 * s);
        assert_eq!(x[1], 1.0 * s + 2.0 * c);
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rotary(RotaryStyle::Halves, &table, &[1], &mut x, 1, 4);
        assert_eq!(x[0], 1.0 * c - 3.0 * s);
        assert_eq!(x[2], 1.0 * s + 3.0 * c);
    }

    #[test]
    fn partial_rotary_and_out_of_table_positions_leave_the_rest_alone() {
        let table = rotary_table(8, 10_000.0, 4, RopeScaling::None);
        let x0 = row(2 * 16, 0.0);
        let mut x = x0.clone();
        rotary(RotaryStyle::Halves, &table, &[3, 4], &mut x, 1, 16);
        assert_ne!(x[..8], x0[..8]);
        assert_eq!(x[8..], x0[8..]); // dims 8.. of token 0, all of token 1 (position 4)
    }

    #[test]
    fn scaling() {
        let none = inv_freqs(128, 500_000.0, RopeScaling::None);
        let lin = inv_freqs(128, 500_000.0, RopeScaling::Linear { factor: 4.0 });
        assert!(none.iter().zip(&lin).all(|(a, b)| *b == a / 4.0));
        let l3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        };
        let l3 = inv_freqs(128, 500_000.0, l3);
        // Short wavelengths (< 8192 / 4) keep their frequency, long ones (> 8192) are / 8,
        // the band between is blended and lies between the two.
        for (&f, &g) in none.iter().zip(&l3) {
            let w = 2.0 * std::f32::consts::PI / f;
            if w < 2048.0 {
                assert_eq!(g, f);
            } else if w > 8192.0 {
                assert_eq!(g, f / 8.0);
            } else {
                assert!(g <= f && g >= f / 8.0, "{w}: {g} vs {f}");
            }
        }
        assert_eq!(l3[0], none[0]);
        assert_eq!(l3[63], none[63] / 8.0);
    }
}
