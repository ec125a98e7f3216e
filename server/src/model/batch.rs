//! The flat, ragged batch one engine step hands to the model.

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
    /// Every row that wants logits will be sampled greedily with no logprobs (its argmax is
    /// all the engine reads): a GPU decoder may answer [`Logits::argmax`] instead of copying
    /// the rows to the host. A host decoder ignores it and answers full rows.
    pub argmax_only: bool,
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

/// Logits of the rows a batch asked for, row-major `[rows, vocab]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub vocab: usize,
    /// The argmax of every requested row (lowest id among equals), when the decoder answered
    /// an [`ForwardBatch::argmax_only`] batch so; `data` is then empty.
    pub argmax: Option<Vec<u32>>,
}

impl Logits {
    /// Full rows `[rows, vocab]`.
    pub fn full(data: Vec<f32>, vocab: usize) -> Self {
        Self {
            data,
            vocab,
            argmax: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.vocab).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}
