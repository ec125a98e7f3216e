//! Backend `TokenLogprob`s in OpenAI's two wire formats: chat's `{"content": [...]}` and
//! the completions API's parallel arrays, whose `text_offset` [`TextOffsets`] computes.

use super::types::{
    ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs, TopLogprobMap,
};
use crate::backend::TokenLogprob;

/// JSON has no `-inf`; OpenAI and vLLM report impossible tokens as -9999.0.
const MIN_LOGPROB: f32 = -9999.0;

fn finite(logprob: f32) -> f32 {
    if logprob >= MIN_LOGPROB {
        logprob
    } else {
        // Also NaN.
        MIN_LOGPROB
    }
}

/// Chat entries for these tokens.
pub(crate) fn chat(logprobs: &[TokenLogprob]) -> ChatLogprobs {
    let content = logprobs
        .iter()
        .map(|token| ChatTokenLogprob {
            token: token.token.clone(),
            logprob: finite(token.logprob),
            bytes: token.bytes.clone(),
            top_logprobs: token
                .top
                .iter()
                .map(|top| ChatTopLogprob {
                    token: top.token.clone(),
                    logprob: finite(top.logprob),
                    bytes: top.bytes.clone(),
                })
                .collect(),
        })
        .collect();
    ChatLogprobs { content }
}

/// Completions entries for these tokens; `text_offset[i]` is where token `i` starts.
pub(crate) fn completion(logprobs: &[TokenLogprob], text_offset: &[usize]) -> CompletionLogprobs {
    CompletionLogprobs {
        tokens: logprobs.iter().map(|t| t.token.clone()).collect(),
        token_logprobs: logprobs.iter().map(|t| finite(t.logprob)).collect(),
        top_logprobs: logprobs.iter().map(top_map).collect(),
        text_offset: text_offset.to_vec(),
    }
}

/// `{token: logprob}` of the alternatives. Distinct tokens can share a text (e.g. partial
/// UTF-8 bytes); a JSON object cannot, so the first (most likely) one is kept.
fn top_map(token: &TokenLogprob) -> TopLogprobMap {
    let mut entries: Vec<(String, f32)> = Vec::with_capacity(token.top.len());
    for top in &token.top {
        if !entries.iter().any(|(seen, _)| *seen == top.token) {
            entries.push((top.token.clone(), finite(top.logprob)));
        }
    }
    TopLogprobMap(entries)
}

/// Where each token of one choice starts in its text, in characters (Unicode scalar
/// values, as Python clients index strings).
///
/// Deltas do not map tokens to text exactly: a token's text may be held back (a possible
/// stop string) and released by a later delta, or never released (a stop string). So a
/// cursor advances by each token's own text, kept within the delta that reports it:
/// never before the delta's start nor past its end.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextOffsets {
    /// Characters of text emitted so far.
    emitted: usize,
    /// Where the next token is believed to start.
    cursor: usize,
}

impl TextOffsets {
    /// The offsets of the tokens of one delta; advances past its text.
    pub(crate) fn advance(&mut self, text: &str, logprobs: &[TokenLogprob]) -> Vec<usize> {
        let start = self.emitted;
        let end = start + text.chars().count();
        let offsets = logprobs
            .iter()
            .map(|token| {
                let offset = self.cursor.clamp(start, end);
                self.cursor = offset + token.token.chars().count();
                offset
            })
            .collect();
        self.emitted = end;
        offsets
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::testing::token_logprob as token;

    #[test]
    fn chat_shape_and_infinities() {
        let got = chat(&[token(
            "Hi",
            -0.5,
            &[("Hi", -0.5), ("Yo", f32::NEG_INFINITY)],
        )]);
        assert_eq!(
            serde_json::to_value(got).unwrap(),
            json!({"content": [{
                "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -9999.0, "bytes": [89, 111]}
                ]
            }]})
        );
    }

    #[test]
    fn completion_shape_keeps_rank_order_and_first_duplicate() {
        let tokens = [
            token("a", -0.25, &[("z", -0.25), ("a", -1.5), ("z", -3.0)]),
            token("b", f32::NAN, &[]),
        ];
        let got = completion(&tokens, &[0, 1]);
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            r#"{"tokens":["a","b"],"token_logprobs":[-0.25,-9999.0],"top_logprobs":[{"z":-0.25,"a":-1.5},{}],"text_offset":[0,1]}"#
        );
    }

    #[test]
    fn text_offsets_follow_tokens_across_held_back_text() {
        let mut offsets = TextOffsets::default();
        // Two tokens in one delta, counted in characters.
        let got = offsets.advance("é b", &[token("é", 0.0, &[]), token(" b", 0.0, &[])]);
        assert_eq!(got, [0, 1]);
        // A token held back (maybe a stop string), released with the next one.
        assert_eq!(offsets.advance("", &[token(" x", 0.0, &[])]), [3]);
        assert_eq!(offsets.advance(" xy", &[token("y", 0.0, &[])]), [5]);
        // Token texts longer than the delta's text never run past it.
        let got = offsets.advance("q", &[token("<odd>", 0.0, &[]), token("r", 0.0, &[])]);
        assert_eq!(got, [6, 7]);
        // A token whose text a stop string swallowed starts at the end of the text.
        assert_eq!(offsets.advance("", &[token("STOP", 0.0, &[])]), [7]);
    }
}
