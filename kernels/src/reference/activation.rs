//! The gated MLP's activation (`kernels/cuda/activation.cu`): `silu(gate) * up`, the
//! server's `GatedMlp` between its gate/up and down projections (there `gate` and `up` are
//! separate linears; the GPU decoder may fuse them into one `[rows, 2 * inter]` product,
//! gate half first, which [`silu_mul_fused`] reads).

/// `x * sigmoid(x) = x / (1 + e^-x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `out[i] = silu(gate[i]) * up[i]`.
///
/// # Panics
/// If the three lengths differ.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: up");
    assert_eq!(gate.len(), out.len(), "silu_mul: out");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// [`silu_mul`] of `gate_up [rows, 2 * inter]` (row `r`: gate then up) into
/// `out [rows, inter]`.
///
/// # Panics
/// If `gate_up.len() != 2 * out.len()` or `out.len()` is not a multiple of `inter`.
pub fn silu_mul_fused(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    assert!(
        inter > 0 && out.len().is_multiple_of(inter),
        "silu_mul_fused: out"
    );
    assert_eq!(gate_up.len(), 2 * out.len(), "silu_mul_fused: gate_up");
    for (gu, o) in gate_up
        .chunks_exact(2 * inter)
        .zip(out.chunks_exact_mut(inter))
    {
        let (g, u) = gu.split_at(inter);
        silu_mul(g, u, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_values() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((silu(-2.0) - -0.238_405_84).abs() < 1e-6);
        assert_eq!(silu(-100.0), -0.0);
        assert_eq!(silu(100.0), 100.0);
    }

    #[test]
    fn fused_halves_are_gate_then_up() {
        let gate_up = [1.0f32, -2.0, 3.0, 4.0, 0.5, 0.0, 2.0, -1.0];
        let mut out = [0f32; 4];
        silu_mul_fused(&gate_up, 2, &mut out);
        let mut want = [0f32; 4];
        silu_mul(&[1.0, -2.0, 0.5, 0.0], &[3.0, 4.0, 2.0, -1.0], &mut want);
        assert_eq!(out, want);
        assert_eq!(out[0], silu(1.0) * 3.0);
    }
}
