//! RMS normalization (`kernels/cuda/norm.cu`), the math of the CPU model's `RmsNorm`
//! (candle's `rms_norm`): `out = x / sqrt(mean(x^2) + eps) * weight` over each row, here in
//! f32 throughout (the CPU model rounds the divisor and each product to its dtype).

/// `out[r] = x[r] * (1 / sqrt(mean(x[r]^2) + eps)) * weight` for every row `r` of
/// `x [rows, hidden]`, `hidden = weight.len()`.
///
/// # Panics
/// If `x.len()` is not a multiple of `weight.len()` or `out.len() != x.len()`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let hidden = weight.len();
    assert!(
        hidden > 0 && x.len().is_multiple_of(hidden),
        "rms_norm: x is not [rows, hidden]"
    );
    assert_eq!(out.len(), x.len(), "rms_norm: out");
    for (xr, or) in x.chunks_exact(hidden).zip(out.chunks_exact_mut(hidden)) {
        let inv = inv_rms(xr, eps);
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// The fused residual add of a pre-norm block: `residual += x`, then
/// `out = rms_norm(residual)` (of the sum, which is written back to `residual`).
///
/// The kernel rounds the sum to its dtype before normalizing it (as the CPU model's
/// `residual + x` in the model dtype does); a caller comparing with it rounds `residual`
/// after this call and normalizes the rounded sum.
///
/// # Panics
/// As [`rms_norm`], and if `residual.len() != x.len()`.
pub fn add_rms_norm(residual: &mut [f32], x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(residual.len(), x.len(), "add_rms_norm: residual");
    for (r, &v) in residual.iter_mut().zip(x) {
        *r += v;
    }
    rms_norm(residual, weight, eps, out);
}

/// `1 / sqrt(mean(row^2) + eps)`, the sum of squares accumulated in f32.
pub fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_a_hand_derived_row() {
        // mean(9, 16) = 12.5, eps 0: rms = sqrt(12.5).
        let mut out = [0f32; 2];
        rms_norm(&[3.0, -4.0], &[2.0, 0.5], 0.0, &mut out);
        let r = 12.5f32.sqrt();
        assert!((out[0] - 3.0 / r * 2.0).abs() < 1e-6, "{out:?}");
        assert!((out[1] - -4.0 / r * 0.5).abs() < 1e-6, "{out:?}");
        let x = [3.0f32, -4.0, 0.0, 0.0, 1.0, 1.0];
        // Rows are normalized independently; zeros stay zeros.
        let mut out = [0f32; 6];
        rms_norm(&x, &[1.0, 1.0, 1.0], 1e-6, &mut out);
        assert_eq!((out[2], out[3]), (0.0, 0.0));
        assert_eq!(out[4], out[5]);
        let mut zero = [1f32; 3];
        rms_norm(&[0.0; 3], &[1.0; 3], 1e-6, &mut zero);
        assert_eq!(zero, [0.0; 3]);
        let rms1 = (25.0f32 / 3.0 + 1e-6).sqrt();
        assert!((out[0] - 3.0 / rms1).abs() < 1e-6);
        let rms2 = (2.0f32 / 3.0 + 1e-6).sqrt();
        assert!((out[5] - 1.0 / rms2).abs() < 1e-6);
        // The result has unit mean square (weight 1, eps 0).
        let row: Vec<f32> = (0..576).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut out = vec![0f32; 576];
        rms_norm(&row, &vec![1.0; 576], 0.0, &mut out);
        let ms: f32 = out.iter().map(|v| v * v).sum::<f32>() / 576.0;
        assert!((ms - 1.0).abs() < 1e-5, "{ms}");
    }

    #[test]
    fn add_rms_norm_writes_the_sum_back_and_normalizes_it() {
        let mut residual = vec![1.0f32, 2.0, -1.0, 0.5];
        let x = [0.5f32, -2.0, 3.0, 0.25];
        let w = [1.0f32, 2.0];
        let mut out = [0f32; 4];
        add_rms_norm(&mut residual, &x, &w, 1e-5, &mut out);
        assert_eq!(residual, [1.5, 0.0, 2.0, 0.75]);
        let mut want = [0f32; 4];
        rms_norm(&residual, &w, 1e-5, &mut want);
        assert_eq!(out, want);
    }
}
