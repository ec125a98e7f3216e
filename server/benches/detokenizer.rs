//! Micro-benchmarks of incremental detokenization: 256 tokens pushed one by one through
//! [`IncrementalDetokenizer`] (as the engine does for every sequence), and the same text
//! through a [`StopMatcher`]. Uses SmolLM2's real tokenizer when `models/smollm2/…gguf` is
//! there (`make models`), else a byte-level BPE built here. Run with
//! `cargo bench -p inferd --bench detokenizer` (`-- --quick` for a fast pass).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inferd::backend::local::detokenizer::IncrementalDetokenizer;
use inferd::backend::local::stop::{StopMatcher, StopOutcome};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

const TOKENS: usize = 256;

const TEXT: &str = "The engine streams text as soon as it is final: a café in Zürich \
serves 3 kinds of crêpes, ☕ costs 4.50€, and 🦀 crabs write Rust. Multi-byte characters \
split across tokens must never come out half-way, and stop strings like ### must be held \
back until they cannot match any more. ";

/// SmolLM2's tokenizer from its GGUF, or a byte-level BPE over the 256 bytes with a few merges.
fn tokenizer() -> (Arc<Tokenizer>, &'static str) {
    let gguf = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if let Ok(mut f) = std::fs::File::open(&gguf) {
        let content =
            candle_core::quantized::gguf_file::Content::read(&mut f).expect("GGUF header");
        let tok = inferd::model::tokenizer::from_gguf(&content).expect("SmolLM2 tokenizer");
        return (tok.tokenizer, "smollm2");
    }
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut vocab: Vocab = alphabet.iter().map(|c| c.to_string()).zip(0..).collect();
    let merges = [
        ("t", "h"),
        ("th", "e"),
        ("Ġ", "th"),
        ("Ġ", "a"),
        ("i", "n"),
        ("e", "r"),
        ("Ġ", "s"),
    ];
    let merges: Vec<_> = merges.map(|(a, b)| (a.to_owned(), b.to_owned())).into();
    for (a, b) in &merges {
        vocab.insert(format!("{a}{b}"), vocab.len() as u32);
    }
    let mut tok = Tokenizer::new(BPE::new(vocab, merges));
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    (Arc::new(tok), "byte_bpe")
}

fn detokenizer(c: &mut Criterion) {
    let (tok, name) = tokenizer();
    let text = TEXT.repeat(8);
    let ids = tok.encode(text.as_str(), false).expect("encode").get_ids()[..TOKENS].to_vec();
    let pieces: Vec<String> = {
        let mut d = IncrementalDetokenizer::new(tok.clone(), true);
        ids.iter().map(|&id| d.push(id).expect("decode")).collect()
    };
    let mut group = c.benchmark_group(format!("detokenizer_{name}"));
    group.throughput(Throughput::Elements(TOKENS as u64));
    group.bench_function("push_256", |b| {
        b.iter(|| {
            let mut d = IncrementalDetokenizer::new(tok.clone(), true);
            let mut n = 0;
            for &id in &ids {
                n += d.push(black_box(id)).expect("decode").len();
            }
            n + d.finish().expect("decode").len()
        })
    });
    group.bench_function("stop_matcher_256", |b| {
        b.iter(|| {
            // Never found, but partly matched (held back) at "###" and "crabs write ".
            let stops = ["### Done", "\n\nUser:", "crabs write Go"];
            let mut m = StopMatcher::new(stops.map(String::from).to_vec());
            for p in &pieces {
                assert!(matches!(
                    black_box(m.push(black_box(p))),
                    StopOutcome::Continue(_)
                ));
            }
            m.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, detokenizer);
criterion_main!(benches);
