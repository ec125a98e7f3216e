//! Token embedding (`kernels/cuda/embedding.cu`): rows of `table [vocab, hidden]` gathered
//! by token id. An id outside the vocabulary yields a zero row (the kernel never reads out
//! of bounds; the engine validates ids before they reach the model).

/// `out[t] = table[ids[t]]`, zeros where `ids[t] >= vocab` (`vocab = table.len() / hidden`).
///
/// # Panics
/// If `table` is not `[vocab, hidden]` or `out` is not `[ids.len(), hidden]`.
pub fn embedding(table: &[f32], hidden: usize, ids: &[u32], out: &mut [f32]) {
    assert!(
        hidden > 0 && table.len().is_multiple_of(hidden),
        "embedding: table"
    );
    assert_eq!(out.len(), ids.len() * hidden, "embedding: out");
    let vocab = table.len() / hidden;
    for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
        match (id as usize) < vocab {
            true => row.copy_from_slice(&table[id as usize * hidden..][..hidden]),
            false => row.fill(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_and_zeroes_unknown_ids() {
        let table: Vec<f32> = (0..12).map(|i| i as f32).collect(); // [4, 3]
        let mut out = [7f32; 12];
        embedding(&table, 3, &[2, 0, 4, u32::MAX], &mut out);
        assert_eq!(
            out,
            [6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
