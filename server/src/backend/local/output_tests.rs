//! The output side of the local backend, table by table: engine token events in, protocol
//! events out (text, held-back logprobs, stop strings, finish reasons, usage, errors).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::detokenizer::{test_tokenizer, IncrementalDetokenizer};
use super::output::{Item, Output};
use super::stop::StopMatcher;
use super::token_text::TokenText;
use crate::backend::{BackendError, FinishReason, GenEvent, Usage};
use crate::engine::{self, EngineError, SampledToken, TokenEvent};

const PROMPT_TOKENS: usize = 7;

struct Case {
    out: Output,
    tx: mpsc::Sender<TokenEvent>,
    tokenizer: Arc<tokenizers::Tokenizer>,
}

fn case(stops: &[&str], logprobs: bool) -> Case {
    let tokenizer = test_tokenizer();
    let (tx, rx) = mpsc::channel(64);
    let out = Output::new(
        rx,
        IncrementalDetokenizer::new(tokenizer.clone(), true),
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect()),
        logprobs.then(|| Arc::new(TokenText::new(tokenizer.clone()))),
        PROMPT_TOKENS,
    );
    Case { out, tx, tokenizer }
}

impl Case {
    fn ids(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec()
    }

    /// Feeds one token per id (logprob -1/(i+1)) until the choice ends, as its stream
    /// does; returns what each produced.
    fn tokens(&mut self, ids: &[u32]) -> Vec<Option<Vec<Item>>> {
        let mut produced = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let items = self.out.on_event(TokenEvent::Token(SampledToken {
                id,
                logprob: Some(-1.0 / (i + 1) as f32),
                top: vec![],
            }));
            let last = items.as_ref().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| matches!(i, Ok(GenEvent::Finished { .. }) | Err(_)))
            });
            produced.push(items);
            if last {
                break;
            }
        }
        produced
    }

    fn finish(&mut self, reason: engine::FinishReason, completion_tokens: usize) -> Vec<Item> {
        self.out
            .on_event(TokenEvent::Finished {
                reason,
                completion_tokens,
            })
            .expect("Finished always answers")
    }
}

/// `(text, number of logprobs)` of a delta.
type DeltaSummary = (String, usize);

/// Each delta's summary, and the finish (reason, usage) if any.
fn summary(items: &[Item]) -> (Vec<DeltaSummary>, Option<(FinishReason, Usage)>) {
    let mut deltas = Vec::new();
    let mut finish = None;
    for item in items {
        match item.as_ref().expect("no error") {
            GenEvent::Delta { text, logprobs } => deltas.push((text.clone(), logprobs.len())),
            GenEvent::Finished { reason, usage } => finish = Some((*reason, *usage)),
            GenEvent::ToolCall(_) => panic!("no tool calls from the local engine"),
        }
    }
    (deltas, finish)
}

fn all(produced: Vec<Option<Vec<Item>>>) -> Vec<Item> {
    produced.into_iter().flatten().flatten().collect()
}

fn usage(completion_tokens: usize, cached_tokens: usize) -> Usage {
    Usage {
        prompt_tokens: PROMPT_TOKENS,
        completion_tokens,
        cached_tokens,
    }
}

#[test]
fn text_streams_and_length_finishes_with_usage() {
    let mut c = case(&[], false);
    assert!(c
        .out
        .on_event(TokenEvent::Admitted { cached_tokens: 3 })
        .is_none());
    let ids = c.ids("hello world");
    let mut items = all(c.tokens(&ids));
    items.extend(c.finish(engine::FinishReason::Length, ids.len()));
    let (deltas, finish) = summary(&items);
    let text: String = deltas.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(text, "hello world");
    assert!(deltas.iter().all(|(t, n)| !t.is_empty() && *n == 0));
    assert_eq!(finish, Some((FinishReason::Length, usage(ids.len(), 3))));
}

#[test]
fn engine_eos_is_stop() {
    let mut c = case(&[], false);
    let ids = c.ids("hi");
    c.tokens(&ids);
    let (_, finish) = summary(&c.finish(engine::FinishReason::Stop, ids.len()));
    assert_eq!(finish, Some((FinishReason::Stop, usage(ids.len(), 0))));
}

#[test]
fn a_stop_string_across_tokens_ends_the_choice_and_aborts_the_sequence() {
    let mut c = case(&["wor"], true);
    let ids = c.ids("hello world");
    let produced = c.tokens(&ids);
    // The token completing "wor" answers with the last text and Finished.
    let stopped_at = produced
        .iter()
        .position(|p| p.as_ref().is_some_and(|items| summary(items).1.is_some()));
    let stopped_at = stopped_at.expect("the stop string is found");
    let items = all(produced);
    let (deltas, finish) = summary(&items);
    let text: String = deltas.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(text, "hello ");
    // Every token up to the stop has its logprob in exactly one delta.
    assert_eq!(deltas.iter().map(|(_, n)| n).sum::<usize>(), stopped_at + 1);
    assert_eq!(finish, Some((FinishReason::Stop, usage(stopped_at + 1, 0))));
    assert!(c.tx.is_closed(), "the engine sees the choice as gone");
}

#[test]
fn logprobs_of_held_back_text_travel_with_it() {
    let mut c = case(&["##!"], true);
    let ids = c.ids("a##b");
    let produced = c.tokens(&ids);
    let per_token: Vec<_> = produced
        .iter()
        .map(|p| p.as_ref().map(|items| summary(items).0))
        .collect();
    assert_eq!(ids.len(), 4, "one token per character");
    // "a" goes out with its logprob; both "#" are held (a stop string may start there);
    // "b" releases them with all three pending logprobs.
    assert_eq!(per_token[0], Some(vec![("a".into(), 1)]));
    assert_eq!(per_token[1], None);
    assert_eq!(per_token[2], None);
    assert_eq!(per_token[3], Some(vec![("##b".into(), 3)]));
}

#[test]
fn held_text_and_its_logprobs_are_released_at_the_end() {
    let mut c = case(&["xyz"], true);
    let ids = c.ids("axy");
    let produced = c.tokens(&ids);
    assert!(produced[1].is_none() && produced[2].is_none());
    let (deltas, finish) = summary(&c.finish(engine::FinishReason::Length, 3));
    assert_eq!(deltas, vec![("xy".into(), 2)]);
    assert_eq!(finish, Some((FinishReason::Length, usage(3, 0))));
}

#[test]
fn half_a_character_carries_only_its_logprob() {
    let mut c = case(&[], true);
    let ids = c.ids("\u{1f980}");
    assert_eq!(ids.len(), 4, "the crab is four byte tokens");
    let (deltas, _) = summary(&all(c.tokens(&ids)));
    assert_eq!(
        deltas,
        vec![
            ("".into(), 1),
            ("".into(), 1),
            ("".into(), 1),
            ("\u{1f980}".into(), 1)
        ]
    );
}

#[test]
fn without_logprobs_half_characters_say_nothing() {
    let mut c = case(&[], false);
    let ids = c.ids("\u{1f980}");
    let produced = c.tokens(&ids);
    assert!(produced[..3].iter().all(Option::is_none));
    assert_eq!(summary(&all(produced)).0, vec![("\u{1f980}".into(), 0)]);
}

#[test]
fn engine_errors_map_to_backend_errors() {
    let mut c = case(&[], false);
    let items = c
        .out
        .on_event(TokenEvent::Error(EngineError::DeadlineExceeded(
            Duration::from_millis(1500),
        )))
        .unwrap();
    assert_eq!(
        items[0].as_ref().err(),
        Some(&BackendError::DeadlineExceeded(
            "The request did not finish within its deadline of 1500 ms.".into()
        ))
    );
    let mut c = case(&[], false);
    let items = c
        .out
        .on_event(TokenEvent::Error(EngineError::Internal("boom".into())))
        .unwrap();
    assert_eq!(
        items[0].as_ref().err(),
        Some(&BackendError::Internal("boom".into()))
    );
}

#[tokio::test]
async fn the_stream_ends_after_finished_and_fails_if_the_engine_drops_the_request() {
    let c = case(&[], false);
    let ids = c.ids("hi");
    for &id in &ids {
        c.tx.try_send(TokenEvent::Token(SampledToken {
            id,
            ..Default::default()
        }))
        .unwrap();
    }
    c.tx.try_send(TokenEvent::Finished {
        reason: engine::FinishReason::Length,
        completion_tokens: ids.len(),
    })
    .unwrap();
    // Anything after Finished is never read.
    c.tx.try_send(TokenEvent::Admitted { cached_tokens: 0 })
        .unwrap();
    let items: Vec<Item> = c.out.into_stream().collect().await;
    let (deltas, finish) = summary(&items);
    assert_eq!(
        deltas.iter().map(|(t, _)| t.as_str()).collect::<String>(),
        "hi"
    );
    assert_eq!(finish.unwrap().0, FinishReason::Length);

    let c = case(&[], false);
    drop(c.tx);
    let items: Vec<Item> = c.out.into_stream().collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().err(),
        Some(&BackendError::Internal(
            "the engine dropped the request".into()
        ))
    );
}
