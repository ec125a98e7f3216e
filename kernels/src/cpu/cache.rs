//! CPU body of [`crate::reshape_and_cache`].

/// Copies row `t` of `src` (`[slots.len(), row]`) to row `slots[t]` of `dst`
/// (`[num_slots, row]`), `t` ascending, so with duplicate slots the last
/// token wins. A slot past the end of `dst` is an error; rows before it have
/// been written.
pub(crate) fn scatter_rows(
    dst: &mut [f32],
    src: &[f32],
    slots: &[u32],
    row: usize,
) -> candle_core::Result<()> {
    for (t, &slot) in slots.iter().enumerate() {
        let start = slot as usize * row;
        if start + row > dst.len() {
            candle_core::bail!("reshape_and_cache: slot {slot} out of range");
        }
        dst[start..start + row].copy_from_slice(&src[t * row..(t + 1) * row]);
    }
    Ok(())
}
