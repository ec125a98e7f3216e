//! One step's flat batch as a device decoder uploads it: token ids, positions, slot mapping,
//! padded block tables, context lengths, query starts, the rows that want logits and their
//! sampling temperatures (f32 bits), packed into one `u32` buffer so that a step costs one host-to-device copy. Device-generic (no
//! CUDA type), so the packing is tested on the CPU.

use std::ops::Range;

use super::{ForwardBatch, ModelError, RowNeed};

/// Batch sizes whose decode steps run as captured CUDA graphs, for an engine of up to
/// `max_seqs` sequences: powers of two to 8, then steps of 8 to 64, of 32 to 256, and
/// `max_seqs` itself (a step is padded to the smallest that holds it).
pub fn decode_buckets(max_seqs: usize) -> Vec<usize> {
    let steps = [1, 2, 4]
        .into_iter()
        .chain((8..=64).step_by(8))
        .chain((96..=256).step_by(32));
    let mut b: Vec<usize> = steps.filter(|&b| b < max_seqs).collect();
    b.push(max_seqs.clamp(1, 256));
    b.dedup();
    b
}

/// The smallest of `buckets` (ascending) holding `n` sequences.
pub fn bucket_for(buckets: &[usize], n: usize) -> Option<usize> {
    buckets.iter().copied().find(|&b| b >= n)
}

/// A section of [`StepMeta::data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    TokenIds,
    Positions,
    Slots,
    /// `[num_seqs, width]`, each row padded with zeros.
    BlockTables,
    ContextLens,
    /// `[num_seqs + 1]` cumulative query lengths.
    QueryStart,
    /// Flat-batch rows of the last token of every sequence that wants logits.
    LogitRows,
    /// The bits of each logit row's f32 temperature (its [`RowNeed::Top`] temperature, 1
    /// for other rows): what `top_k_lse` reads.
    Temperatures,
}

const SECTIONS: usize = 8;

/// The packed buffer and the facts the launches need; reused from step to step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepMeta {
    pub data: Vec<u32>,
    pub num_tokens: usize,
    pub num_seqs: usize,
    /// Entries per block-table row (the longest table, at least 1).
    pub width: usize,
    pub num_rows: usize,
    /// The longest context after this step.
    pub max_context: usize,
    /// Every sequence has exactly one new token (the decode kernels apply).
    pub decode_only: bool,
    starts: [usize; SECTIONS + 1],
}

impl StepMeta {
    /// Packs `batch`, refusing token ids at or past `vocab` (the embedding gather would read
    /// past its table) and positions at or past `max_positions` (the rotary table's length:
    /// the kernel would leave such a token unrotated).
    pub fn pack(
        &mut self,
        batch: &ForwardBatch,
        max_positions: usize,
        vocab: usize,
    ) -> Result<(), ModelError> {
        if let Some(&t) = batch.token_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Batch(format!(
                "token id {t} is past the model's vocabulary of {vocab}"
            )));
        }
        if let Some(&p) = batch
            .positions
            .iter()
            .find(|&&p| p as usize >= max_positions)
        {
            return Err(ModelError::Batch(format!(
                "position {p} is past the model's {max_positions} positions"
            )));
        }
        let n = batch.seqs.len();
        let width = batch.table_width();
        let rows = batch.logit_rows();
        let d = &mut self.data;
        d.clear();
        let mut starts = [0usize; SECTIONS + 1];
        starts[0] = 0;
        d.extend_from_slice(&batch.token_ids);
        starts[1] = d.len();
        d.extend_from_slice(&batch.positions);
        starts[2] = d.len();
        d.extend_from_slice(&batch.slot_mapping);
        starts[3] = d.len();
        for s in &batch.seqs {
            d.extend_from_slice(&s.block_table);
            d.extend(std::iter::repeat_n(0, width - s.block_table.len()));
        }
        starts[4] = d.len();
        d.extend(batch.seqs.iter().map(|s| s.context_len as u32));
        starts[5] = d.len();
        d.push(0);
        let mut acc = 0u32;
        for s in &batch.seqs {
            acc += s.query_len as u32;
            d.push(acc);
        }
        starts[6] = d.len();
        d.extend_from_slice(&rows);
        starts[7] = d.len();
        d.extend((0..rows.len()).map(|r| match batch.need(r) {
            RowNeed::Top { temperature, .. } => temperature.to_bits(),
            _ => 1.0f32.to_bits(),
        }));
        starts[8] = d.len();
        self.starts = starts;
        self.num_tokens = batch.num_tokens();
        self.num_seqs = n;
        self.width = width;
        self.num_rows = rows.len();
        self.max_context = batch.seqs.iter().map(|s| s.context_len).max().unwrap_or(0);
        self.decode_only = batch.seqs.iter().all(|s| s.query_len == 1);
        Ok(())
    }

    /// Packs a decode-only `batch` (every sequence one new token that wants logits, at most
    /// `bucket` sequences, contexts of at most `max_context` tokens, block tables of at most
    /// `width` entries) padded to exactly
    /// `bucket` sequences and `width` entries per table, so that every section sits at an
    /// offset fixed by `(bucket, width)`: the layout a captured CUDA graph reads. Padding
    /// sequences have token 0 at position 0, slot `u32::MAX` (no cache write), an all-zero
    /// table, context 0 (attention writes zeros) and their own row as logit row, at
    /// temperature 1. `num_rows` is `bucket`; the batch's rows are the first ones. Answers
    /// `false` (and packs nothing) for a batch that does not fit.
    pub fn pack_padded(
        &mut self,
        batch: &ForwardBatch,
        max_positions: usize,
        vocab: usize,
        bucket: usize,
        max_context: usize,
        width: usize,
    ) -> Result<bool, ModelError> {
        let n = batch.seqs.len();
        let fits = n <= bucket
            && batch.seqs.iter().all(|s| {
                s.query_len == 1
                    && s.wants_logits
                    && s.context_len <= max_context
                    && s.block_table.len() <= width
            });
        if !fits || n == 0 {
            return Ok(false);
        }
        self.pack(batch, max_positions, vocab)?;
        let pad = bucket - n;
        let d = &mut self.data;
        d.clear();
        let mut starts = [0usize; SECTIONS + 1];
        d.extend_from_slice(&batch.token_ids);
        d.extend(std::iter::repeat_n(0, pad));
        starts[1] = d.len();
        d.extend_from_slice(&batch.positions);
        d.extend(std::iter::repeat_n(0, pad));
        starts[2] = d.len();
        d.extend_from_slice(&batch.slot_mapping);
        d.extend(std::iter::repeat_n(u32::MAX, pad));
        starts[3] = d.len();
        for s in &batch.seqs {
            d.extend_from_slice(&s.block_table);
            d.extend(std::iter::repeat_n(0, width - s.block_table.len()));
        }
        d.extend(std::iter::repeat_n(0, pad * width));
        starts[4] = d.len();
        d.extend(batch.seqs.iter().map(|s| s.context_len as u32));
        d.extend(std::iter::repeat_n(0, pad));
        starts[5] = d.len();
        d.extend(0..=n as u32);
        d.extend(std::iter::repeat_n(n as u32, pad));
        starts[6] = d.len();
        d.extend(0..bucket as u32);
        starts[7] = d.len();
        d.extend((0..bucket).map(|r| match batch.need(r) {
            RowNeed::Top { temperature, .. } if r < n => temperature.to_bits(),
            _ => 1.0f32.to_bits(),
        }));
        starts[8] = d.len();
        self.starts = starts;
        (self.num_tokens, self.num_seqs, self.num_rows) = (bucket, bucket, bucket);
        self.width = width;
        Ok(true)
    }

    /// Where `section` lies in [`StepMeta::data`].
    pub fn range(&self, section: Section) -> Range<usize> {
        let i = section as usize;
        self.starts[i]..self.starts[i + 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_seqs() -> ForwardBatch {
        let mut b = ForwardBatch::default();
        // A prefill chunk of 3 tokens at positions 4.. over blocks [7, 2] (block size 4),
        // then one decode token at position 5 of a sequence over [9, 3].
        b.push_seq(&[10, 11, 12], 4, &[7, 2], 4, true);
        b.push_seq(&[13], 5, &[9, 3], 4, false);
        b
    }

    #[test]
    fn every_section_holds_what_the_kernels_read() {
        let mut m = StepMeta::default();
        m.pack(&two_seqs(), 64, 20).unwrap();
        let s = |sec| m.data[m.range(sec)].to_vec();
        assert_eq!(s(Section::TokenIds), [10, 11, 12, 13]);
        assert_eq!(s(Section::Positions), [4, 5, 6, 5]);
        assert_eq!(s(Section::Slots), [2 * 4, 2 * 4 + 1, 2 * 4 + 2, 3 * 4 + 1]);
        assert_eq!(s(Section::BlockTables), [7, 2, 9, 3]);
        assert_eq!(s(Section::ContextLens), [7, 6]);
        assert_eq!(s(Section::QueryStart), [0, 3, 4]);
        assert_eq!(s(Section::LogitRows), [2]);
        assert_eq!(s(Section::Temperatures), [1.0f32.to_bits()]);
        assert_eq!(
            (m.num_tokens, m.num_seqs, m.width, m.num_rows),
            (4, 2, 2, 1)
        );
        assert_eq!(m.max_context, 7);
        assert!(!m.decode_only);
    }

    #[test]
    fn ragged_tables_are_padded_and_a_reused_buffer_forgets_the_last_step() {
        let mut m = StepMeta::default();
        m.pack(&two_seqs(), 64, 20).unwrap();
        let mut b = ForwardBatch::default();
        b.push_seq(&[1], 8, &[5, 6, 4], 4, true);
        b.push_seq(&[2], 0, &[1], 4, true);
        m.pack(&b, 64, 20).unwrap();
        assert_eq!(m.data[m.range(Section::BlockTables)], [5, 6, 4, 1, 0, 0]);
        assert_eq!(m.data[m.range(Section::LogitRows)], [0, 1]);
        assert_eq!(m.range(Section::Temperatures).end, m.data.len());
        assert!(m.decode_only);
        assert_eq!(m.width, 3);
    }

    #[test]
    fn a_position_past_the_rotary_table_is_refused() {
        let mut b = ForwardBatch::default();
        b.push_seq(&[1, 2], 63, &[0; 17], 4, true);
        let err = StepMeta::default().pack(&b, 64, 20).unwrap_err();
        assert!(err.to_string().contains("position 64"), "{err}");
        let mut b = ForwardBatch::default();
        b.push_seq(&[1, 20], 0, &[0], 4, true);
        let err = StepMeta::default().pack(&b, 64, 20).unwrap_err();
        assert!(err.to_string().contains("token id 20"), "{err}");
    }

    #[test]
    fn decode_steps_pad_to_the_smallest_bucket() {
        assert_eq!(decode_buckets(1), [1]);
        assert_eq!(decode_buckets(6), [1, 2, 4, 6]);
        assert_eq!(decode_buckets(64), [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]);
        let big = decode_buckets(1000);
        assert_eq!(&big[big.len() - 3..], [192, 224, 256]);
        let b = decode_buckets(100);
        assert_eq!(&b[b.len() - 2..], [96, 100]);
        assert_eq!(bucket_for(&b, 1), Some(1));
        assert_eq!(bucket_for(&b, 3), Some(4));
        assert_eq!(bucket_for(&b, 97), Some(100));
        assert_eq!(bucket_for(&b, 101), None, "larger steps run eagerly");
    }

    #[test]
    fn a_padded_decode_step_sits_at_offsets_fixed_by_its_bucket() {
        let mut b = ForwardBatch::default();
        b.push_seq(&[7], 5, &[3, 1], 4, true);
        b.push_seq(&[8], 2, &[6], 4, true);
        b.needs = vec![
            RowNeed::Argmax,
            RowNeed::Top {
                k: 5,
                temperature: 0.5,
                mass: 0.0,
            },
        ];
        let mut m = StepMeta::default();
        assert!(m.pack_padded(&b, 64, 20, 4, 12, 3).unwrap());
        let s = |m: &StepMeta, sec| m.data[m.range(sec)].to_vec();
        assert_eq!(s(&m, Section::TokenIds), [7, 8, 0, 0]);
        assert_eq!(s(&m, Section::Positions), [5, 2, 0, 0]);
        assert_eq!(s(&m, Section::Slots), [5, 26, u32::MAX, u32::MAX]);
        assert_eq!(
            s(&m, Section::BlockTables),
            [3, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(s(&m, Section::ContextLens), [6, 3, 0, 0]);
        assert_eq!(s(&m, Section::QueryStart), [0, 1, 2, 2, 2]);
        assert_eq!(s(&m, Section::LogitRows), [0, 1, 2, 3]);
        let temps: Vec<f32> = s(&m, Section::Temperatures)
            .into_iter()
            .map(f32::from_bits)
            .collect();
        assert_eq!(temps, [1.0, 0.5, 1.0, 1.0]);
        assert_eq!(
            (m.num_tokens, m.num_seqs, m.num_rows, m.width),
            (4, 4, 4, 3)
        );
        assert!(m.decode_only);
        assert_eq!(m.max_context, 6);
        // One sequence fewer: every section starts where it did.
        let starts: Vec<_> = (0..SECTIONS).map(|i| m.starts[i]).collect();
        let mut one = ForwardBatch::default();
        one.push_seq(&[9], 0, &[2], 4, true);
        assert!(m.pack_padded(&one, 64, 20, 4, 12, 3).unwrap());
        assert_eq!(
            (0..SECTIONS).map(|i| m.starts[i]).collect::<Vec<_>>(),
            starts
        );
        assert_eq!(m.data.len(), m.starts[SECTIONS]);
        // What does not fit a bucket's graph: too many sequences, a prefill, a row that
        // wants no logits, a table wider than the graph's, a context longer than its.
        assert!(!m.pack_padded(&b, 64, 20, 1, 12, 3).unwrap());
        let mut prefill = ForwardBatch::default();
        prefill.push_seq(&[1, 2], 0, &[0], 4, true);
        assert!(!m.pack_padded(&prefill, 64, 20, 4, 12, 3).unwrap());
        let mut quiet = ForwardBatch::default();
        quiet.push_seq(&[1], 0, &[0], 4, false);
        assert!(!m.pack_padded(&quiet, 64, 20, 4, 12, 3).unwrap());
        assert!(!m.pack_padded(&b, 64, 20, 4, 12, 1).unwrap());
        assert!(
            !m.pack_padded(&b, 64, 20, 4, 5, 3).unwrap(),
            "a context past the graphs'"
        );
        // Bad input is refused as by `pack`.
        let mut bad = ForwardBatch::default();
        bad.push_seq(&[25], 0, &[0], 4, true);
        assert!(m.pack_padded(&bad, 64, 20, 4, 12, 3).is_err());
    }

    #[test]
    fn each_logit_row_carries_its_sampling_temperature() {
        let mut b = ForwardBatch::default();
        b.push_seq(&[1, 2], 0, &[0], 4, true);
        b.push_seq(&[3], 0, &[1], 4, false);
        b.push_seq(&[4], 0, &[2], 4, true);
        b.push_seq(&[5], 0, &[3], 4, true);
        let top = RowNeed::Top {
            k: 40,
            temperature: 0.7,
            mass: 0.0,
        };
        b.needs = vec![RowNeed::Argmax, top]; // the third row says nothing: full
        let mut m = StepMeta::default();
        m.pack(&b, 64, 20).unwrap();
        assert_eq!(m.data[m.range(Section::LogitRows)], [1, 3, 4]);
        let temps: Vec<f32> = m.data[m.range(Section::Temperatures)]
            .iter()
            .map(|&b| f32::from_bits(b))
            .collect();
        assert_eq!(temps, [1.0, 0.7, 1.0]);
    }
}
