//! The text and bytes of single tokens, for logprobs (byte-level BPE tokens may be a part
//! of a multi-byte character, so OpenAI reports their raw `bytes` too).

use std::collections::HashMap;

use crate::backend::{TokenLogprob, TopLogprob};
use crate::engine::SampledToken;

/// GPT-2's byte → printable char table, inverted.
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8)))
        .collect()
}

/// Maps token ids to their text and bytes.
pub struct TokenText {
    tokenizer: std::sync::Arc<tokenizers::Tokenizer>,
    byte_level: HashMap<char, u8>,
}

impl TokenText {
    pub fn new(tokenizer: std::sync::Arc<tokenizers::Tokenizer>) -> Self {
        Self {
            tokenizer,
            byte_level: byte_level_decoder(),
        }
    }

    /// The raw bytes of one token: the byte-level BPE bytes when the vocabulary is
    /// byte-level, else the decoded text's bytes.
    pub fn bytes(&self, id: u32) -> Vec<u8> {
        if let Some(piece) = self.tokenizer.id_to_token(id) {
            let bytes: Option<Vec<u8>> = piece
                .chars()
                .map(|c| self.byte_level.get(&c).copied())
                .collect();
            if let Some(b) = bytes {
                return b;
            }
        }
        self.tokenizer
            .decode(&[id], false)
            .unwrap_or_default()
            .into_bytes()
    }

    fn text_and_bytes(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.bytes(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// The API's view of a sampled token's logprobs.
    pub fn logprob(&self, t: &SampledToken) -> Option<TokenLogprob> {
        let logprob = t.logprob?;
        let (token, bytes) = self.text_and_bytes(t.id);
        let top = t
            .top
            .iter()
            .map(|&(id, logprob)| {
                let (token, bytes) = self.text_and_bytes(id);
                TopLogprob {
                    token,
                    bytes,
                    logprob,
                }
            })
            .collect();
        Some(TokenLogprob {
            token,
            bytes,
            logprob,
            top,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_table_covers_every_byte_once() {
        let t = byte_level_decoder();
        assert_eq!(t.len(), 256);
        let mut bytes: Vec<u8> = t.values().copied().collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'A'], b'A');
    }
}
