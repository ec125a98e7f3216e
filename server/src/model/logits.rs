//! What a decoder answers for the logit rows of a step, and what the engine says it needs of
//! each ([`RowNeed`]). A host decoder answers every row in full; a device decoder keeps the
//! rows in device memory and sends back only what each need reads: the argmax id of a plain
//! greedy row, the best candidates of a top-k or top-p row ([`Candidates`]), the full row
//! otherwise. The engine samples the same distribution from either.

use inferd_kernels::reference::sampling::{inv_temperature, TopK};

/// The most candidates a [`RowNeed::Top`] asks for (the GPU's `top_k_lse` limit).
pub const MAX_CANDIDATES: usize = 256;

/// What the engine reads of one logit row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowNeed {
    /// Every logit (penalties, or a draw over the whole vocabulary).
    Full,
    /// The id of the largest logit (lowest id among equals): plain greedy.
    Argmax,
    /// The `k` best candidates (`1..=MAX_CANDIDATES`) with the row's log-sum-exps at
    /// temperature 1 and at `temperature`, unless they hold less than `mass` of the row's
    /// probability at `temperature` (a nucleus reaching past them): then the full row.
    Top {
        k: usize,
        temperature: f32,
        mass: f32,
    },
}

/// The best `(id, logit)` pairs of a row, best first (by value, NaN below `-inf` and
/// reported as `-inf`, equal values to the lower id), and its log-sum-exps as
/// `inferd_kernels::reference::sampling::top_k_lse` defines them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    /// Log-sum-exp at temperature 1 (`-inf`/`+inf`/NaN-free maximum when none is finite).
    pub lse: f32,
    /// Log-sum-exp at the need's temperature.
    pub lse_t: f32,
}

impl From<TopK> for Candidates {
    /// The candidates the kernels' CPU spec computes (what the GPU answers).
    fn from(t: TopK) -> Self {
        Self {
            ids: t.ids,
            logits: t.logits,
            lse: t.lse,
            lse_t: t.lse_t,
        }
    }
}

impl Candidates {
    /// The share of the row's probability at `temperature` these candidates hold: 1 when
    /// the row has no finite log-sum-exp (a `+inf` logit, or none finite: the sampler then
    /// takes the best candidate).
    pub fn mass(&self, temperature: f32) -> f64 {
        if !self.lse_t.is_finite() {
            return 1.0;
        }
        let (s, lse_t) = (
            f64::from(inv_temperature(temperature)),
            f64::from(self.lse_t),
        );
        let mass: f64 = self
            .logits
            .iter()
            .map(|&l| (f64::from(l) * s - lse_t).exp())
            .sum();
        mass.min(1.0)
    }

    /// Whether these candidates answer `need` without the full row.
    pub fn answer(&self, need: RowNeed) -> bool {
        match need {
            RowNeed::Full => false,
            RowNeed::Argmax => !self.ids.is_empty(),
            RowNeed::Top {
                k,
                temperature,
                mass,
            } => {
                self.ids.len() >= k.min(MAX_CANDIDATES)
                    && (mass <= 0.0 || self.mass(temperature) >= f64::from(mass))
            }
        }
    }
}

/// A decoder's answer for one requested row.
#[derive(Clone, Debug, PartialEq)]
pub enum RowAnswer {
    /// Row `i` of [`Logits::data`].
    Full(usize),
    Argmax(u32),
    Top(Candidates),
}

/// One requested row as the engine reads it.
#[derive(Debug)]
pub enum Row<'a> {
    /// The full row (the sampler uses it as scratch).
    Full(&'a mut [f32]),
    Argmax(u32),
    Top(&'a Candidates),
}

/// The answers for the rows a batch asked for ([`super::ForwardBatch::logit_rows`] order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logits {
    /// Full rows, row-major `[_, vocab]`.
    pub data: Vec<f32>,
    pub vocab: usize,
    /// One per requested row when the decoder answered some with less than the full row;
    /// `None`: requested row `i` is row `i` of `data`.
    pub answers: Option<Vec<RowAnswer>>,
}

impl Logits {
    /// Every requested row in full, `[rows, vocab]`.
    pub fn full(data: Vec<f32>, vocab: usize) -> Self {
        Self {
            data,
            vocab,
            answers: None,
        }
    }

    /// Per-row answers; `data` holds the rows answered [`RowAnswer::Full`].
    pub fn answered(data: Vec<f32>, vocab: usize, answers: Vec<RowAnswer>) -> Self {
        Self {
            data,
            vocab,
            answers: Some(answers),
        }
    }

    /// Full rows in [`Logits::data`].
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.vocab).unwrap_or(0)
    }

    /// Row `i` of [`Logits::data`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Requested row `i` as the engine reads it.
    pub fn answer(&mut self, i: usize) -> Row<'_> {
        let j = match self.answers.as_ref().map(|a| &a[i]) {
            None => i,
            Some(RowAnswer::Full(j)) => *j,
            Some(RowAnswer::Argmax(id)) => return Row::Argmax(*id),
            Some(RowAnswer::Top(c)) => return Row::Top(c),
        };
        Row::Full(&mut self.data[j * self.vocab..(j + 1) * self.vocab])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_kernels::reference::sampling::top_k_lse;

    fn cands(row: &[f32], k: usize, t: f32) -> Candidates {
        top_k_lse(row, k, t).into()
    }

    #[test]
    fn candidates_answer_a_nucleus_only_when_they_hold_it() {
        // Softmax of [3, 2, 1, 0] at t = 1: 0.644, 0.237, 0.087, 0.032.
        let row = [0.0f32, 3.0, 1.0, 2.0];
        let two = cands(&row, 2, 1.0);
        assert_eq!(two.ids, [1, 3]);
        assert!((two.mass(1.0) - 0.881).abs() < 1e-3, "{}", two.mass(1.0));
        let top = |k, mass| RowNeed::Top {
            k,
            temperature: 1.0,
            mass,
        };
        assert!(two.answer(top(2, 0.0)), "top-k 2 is exactly the two best");
        assert!(two.answer(top(2, 0.85)));
        assert!(
            !two.answer(top(2, 0.9)),
            "a 0.9 nucleus needs a third token"
        );
        assert!(!two.answer(top(3, 0.0)), "fewer candidates than asked");
        assert!(!two.answer(RowNeed::Full));
        assert!(two.answer(RowNeed::Argmax));
        // A hotter temperature spreads the mass: the same two hold less of it.
        let hot = cands(&row, 2, 4.0);
        assert!((hot.mass(4.0) - 0.622).abs() < 1e-3, "{}", hot.mass(4.0));
        // A +inf logit takes everything.
        let inf = cands(&[0.0, f32::INFINITY, 1.0], 1, 1.0);
        assert_eq!((inf.ids[0], inf.mass(1.0)), (1, 1.0));
    }

    #[test]
    fn rows_read_as_answered() {
        let mut full = Logits::full(vec![1.0, 2.0, 3.0, 4.0], 2);
        assert!(matches!(full.answer(1), Row::Full(r) if r == [3.0, 4.0]));
        let c = cands(&[0.5, 0.1], 1, 1.0);
        let answers = vec![
            RowAnswer::Argmax(7),
            RowAnswer::Full(0),
            RowAnswer::Top(c.clone()),
        ];
        let mut mixed = Logits::answered(vec![5.0, 6.0], 2, answers);
        assert!(matches!(mixed.answer(0), Row::Argmax(7)));
        assert!(matches!(mixed.answer(1), Row::Full(r) if r == [5.0, 6.0]));
        assert!(matches!(mixed.answer(2), Row::Top(t) if *t == c));
        assert_eq!(mixed.rows(), 1);
    }
}
