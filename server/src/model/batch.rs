//! The flat, ragged batch one engine step hands to the model.

use super::logits::RowNeed;

/// One sequence's slice of a [`ForwardBatch`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeqInBatch {
    /// Number of new tokens of this sequence in this step (its rows are contiguous).
    pub query_len: usize,
    /// Tokens of this sequence in the cache after this step (computed before + new).
    pub context_len: usize,
    /// Physical KV blocks of this sequence, in logical order.
    pub block_table: Vec<u32>,
    /// Whether the logits of this sequence's last new token are needed (sampling).
    pub wants_logits: bool,
}

/// Token ids, positions and KV addressing of one step, for all sequences at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardBatch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// Where each new token's K/V goes: `block * block_size + offset`.
    pub slot_mapping: Vec<u32>,
    pub seqs: Vec<SeqInBatch>,
    /// What the engine reads of each logit row ([`ForwardBatch::logit_rows`] order); empty
    /// means every row in full. A device decoder may answer less than a full row where a
    /// need allows ([`super::logits`]); a host decoder ignores this and answers full rows.
    pub needs: Vec<RowNeed>,
}

impl ForwardBatch {
    /// Appends one sequence's new tokens. `start_pos` is the position of `tokens[0]`.
    pub fn push_seq(
        &mut self,
        tokens: &[u32],
        start_pos: usize,
        block_table: &[u32],
        block_size: usize,
        wants_logits: bool,
    ) {
        for (i, &t) in tokens.iter().enumerate() {
            let pos = start_pos + i;
            self.token_ids.push(t);
            self.positions.push(pos as u32);
            let block = block_table[pos / block_size];
            self.slot_mapping
                .push(block * block_size as u32 + (pos % block_size) as u32);
        }
        self.seqs.push(SeqInBatch {
            query_len: tokens.len(),
            context_len: start_pos + tokens.len(),
            block_table: block_table.to_vec(),
            wants_logits,
        });
    }

    /// Entries of the widest block table, at least 1: the row width of the padded
    /// `[seqs, width]` tables the attention kernels read.
    pub fn table_width(&self) -> usize {
        self.seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// What the engine reads of logit row `row` (full when [`ForwardBatch::needs`] says
    /// nothing of it).
    pub fn need(&self, row: usize) -> RowNeed {
        self.needs.get(row).copied().unwrap_or(RowNeed::Full)
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Row index (in the flat batch) of the last token of every sequence that wants logits.
    pub fn logit_rows(&self) -> Vec<u32> {
        let mut rows = Vec::new();
        let mut start = 0usize;
        for s in &self.seqs {
            if s.wants_logits && s.query_len > 0 {
                rows.push((start + s.query_len - 1) as u32);
            }
            start += s.query_len;
        }
        rows
    }
}
