//! Incremental detokenization that never emits half a UTF-8 character.

use std::sync::Arc;

/// A tokenizer failure while decoding.
#[derive(Debug, thiserror::Error)]
pub enum DetokenizeError {
    /// `tokenizers` could not decode the ids.
    #[error("detokenization failed: {0}")]
    Decode(#[source] tokenizers::Error),
}

/// Pending tokens after which text still ending in U+FFFD is released anyway (all but the
/// last 3 tokens): a UTF-8 character has at most 4 bytes, so older U+FFFD come from invalid
/// bytes or are literal, and waiting longer would only grow the decode window.
const MAX_PENDING_TOKENS: usize = 8;

/// Turns a stream of token ids into a stream of text, one sequence at a time, with the
/// "prefix offset / read offset" algorithm of vLLM and TGI: each step decodes `ids[prefix..]`
/// and `ids[prefix..read]` and emits the difference once it does not end in U+FFFD (an
/// incomplete UTF-8 sequence from byte-level BPE or byte fallback). The previous emission's
/// tokens are decoded as context (leading spaces, merges); older ones are dropped, so a step
/// costs O(1) in the output length.
#[derive(Debug)]
pub struct IncrementalDetokenizer {
    tokenizer: Arc<tokenizers::Tokenizer>,
    skip_special_tokens: bool,
    /// The decode window: `ids[..read]` were emitted, `ids[read..]` are pending.
    ids: Vec<u32>,
    read: usize,
}

impl IncrementalDetokenizer {
    /// A detokenizer for one sequence; `skip_special_tokens` drops special tokens' text.
    pub fn new(tokenizer: Arc<tokenizers::Tokenizer>, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            read: 0,
        }
    }

    /// Adds one token and returns the text that became final (possibly empty). Never
    /// returns an incomplete character. On error the token is not consumed.
    pub fn push(&mut self, token: u32) -> Result<String, DetokenizeError> {
        self.ids.push(token);
        self.step(false).inspect_err(|_| _ = self.ids.pop())
    }

    /// Returns whatever is still held back at the end of the sequence. A trailing
    /// incomplete character is not dropped: it comes out as U+FFFD, exactly as a full
    /// `decode` of all the ids would show it, so the concatenation of every `push` and
    /// `finish` equals that full decode (for decoders that work token by token).
    pub fn finish(&mut self) -> Result<String, DetokenizeError> {
        let text = self.step(true)?;
        self.ids.clear();
        self.read = 0;
        Ok(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, DetokenizeError> {
        if ids.is_empty() {
            return Ok(String::new()); // not every decoder is happy with no tokens
        }
        self.tokenizer
            .decode(ids, self.skip_special_tokens)
            .map_err(DetokenizeError::Decode)
    }

    fn step(&mut self, finish: bool) -> Result<String, DetokenizeError> {
        if self.read == self.ids.len() {
            return Ok(String::new());
        }
        let prefix = self.decode(&self.ids[..self.read])?;
        let mut end = self.ids.len();
        let mut full = self.decode(&self.ids)?;
        if !finish && (full.len() <= prefix.len() || full.ends_with('\u{FFFD}')) {
            if end - self.read < MAX_PENDING_TOKENS {
                return Ok(String::new());
            }
            // Invalid bytes or a literal U+FFFD: release all but the last 3 tokens, the
            // most that can still hold the start of a character (at least 1 byte each).
            end -= 3;
            full = self.decode(&self.ids[..end])?;
        }
        let new = match full.strip_prefix(prefix.as_str()) {
            Some(new) => new.to_owned(),
            // A decoder rewrote earlier text: emit what follows the common prefix.
            None => full[common_prefix_len(&prefix, &full)..].to_owned(),
        };
        // The tokens just emitted become the next step's context; older ones are dropped.
        self.ids.drain(..self.read);
        self.read = end - self.read;
        Ok(new)
    }
}

/// Byte length of the longest common prefix of `a` and `b` that ends on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|&((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// Tests' tokenizer: byte-level BPE over the 256 byte symbols, a few merges and a special
/// `<eos>`.
#[cfg(test)]
pub(crate) fn test_tokenizer() -> Arc<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;

    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut vocab: Vocab = alphabet.iter().map(|c| c.to_string()).zip(0..).collect();
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w")];
    let merges: Vec<_> = merges.map(|(a, b)| (a.to_owned(), b.to_owned())).into();
    for (a, b) in &merges {
        vocab.insert(format!("{a}{b}"), vocab.len() as u32);
    }
    let mut tok = tokenizers::Tokenizer::new(BPE::new(vocab, merges));
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens([AddedToken::from("<eos>", true)])
        .unwrap();
    Arc::new(tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    /// Pushes every id (the window must stay bounded); returns the pushes' outputs and
    /// `finish`'s.
    fn stream(tok: &Arc<Tokenizer>, ids: &[u32], skip: bool) -> (Vec<String>, String) {
        let mut d = IncrementalDetokenizer::new(tok.clone(), skip);
        let pushed = ids.iter().map(|&id| d.push(id).unwrap()).collect();
        assert!(d.ids.len() <= 2 * MAX_PENDING_TOKENS);
        (pushed, d.finish().unwrap())
    }

    #[test]
    fn multibyte_chars_are_emitted_whole() {
        let tok = test_tokenizer();
        let text = "hello world: caf\u{e9} 5\u{20ac} \u{1f980}\u{1f980}! \u{4e2d}\u{6587}";
        let mut ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert!(ids.len() > text.chars().count() + 5); // many multi-token chars
        ids.insert(3, tok.token_to_id("<eos>").unwrap());
        for skip in [true, false] {
            let (pushed, rest) = stream(&tok, &ids, skip);
            assert!(pushed.iter().all(|p| !p.contains('\u{FFFD}')), "{pushed:?}");
            let all = pushed.concat() + &rest;
            assert_eq!(all, tok.decode(&ids, skip).unwrap());
            assert_eq!(all.replace("<eos>", ""), text);
        }
        // An emoji over 4 tokens comes out once, whole, on its last byte.
        let ids = tok.encode("a\u{1f980}b", false).unwrap().get_ids().to_vec();
        let (pushed, rest) = stream(&tok, &ids, true);
        assert_eq!(pushed, ["a", "", "", "", "\u{1f980}", "b"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn truncated_and_invalid_bytes() {
        let tok = test_tokenizer();
        let crab = tok.encode("\u{1f980}", false).unwrap().get_ids().to_vec();
        // Cut inside a character: `finish` shows it as the full decode does.
        let (pushed, rest) = stream(&tok, &crab[..2], true);
        assert_eq!(pushed.concat() + "|" + &rest, "|\u{FFFD}");
        // Invalid bytes (0xFF) are released after MAX_PENDING_TOKENS tokens, here while a
        // character is half-way through: it still comes out whole.
        let mut ids = vec![tok.token_to_id("\u{ff}").unwrap(); 6]; // the symbol of 0xFF
        ids.extend(&crab);
        let (pushed, rest) = stream(&tok, &ids, true);
        assert!(!pushed[..MAX_PENDING_TOKENS].concat().is_empty());
        assert_eq!(pushed.concat() + &rest, tok.decode(&ids, true).unwrap());
        assert!(pushed.concat().ends_with('\u{1f980}'));
    }
}
