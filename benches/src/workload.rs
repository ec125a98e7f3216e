//! What is sent: conversations of one or more turns, generated from a seed (random, agent)
//! or read from a JSONL file. Nothing is downloaded: prompts are built from a word list
//! shipped with the crate.
//!
//! Lengths are in tokens without a tokenizer: the list holds 1,024 common English words that
//! are each a single token (with their leading space) in SmolLM2's 49k BPE vocabulary; other
//! tokenizers may split a few of them. A prompt of N words is therefore ~N tokens; the chat
//! template adds a few more. The true counts always come from the server's `usage`.

use std::path::Path;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::cli::{Endpoint, RunArgs, WorkloadKind};

/// 1,024 words, one token each in SmolLM2's vocabulary (`benches/data/words.txt`).
pub const WORD_LIST: &str = include_str!("../data/words.txt");

pub fn words() -> Vec<&'static str> {
    WORD_LIST.split_whitespace().collect()
}

/// A unit of work for one client: its turns run one after another, each turn sees the
/// replies to the earlier ones (a single-turn conversation is one plain request).
#[derive(Debug, Clone, PartialEq)]
pub enum Conversation {
    Dialog {
        /// Shared by every conversation of the agent workload (prefix caching shows).
        system: Option<String>,
        /// User message of each turn.
        turns: Vec<String>,
        /// `max_tokens` of each turn.
        max_tokens: usize,
    },
    /// A request body from a JSONL file (model and streaming fields are set by the bench).
    Raw {
        endpoint: Endpoint,
        body: Map<String, Value>,
    },
}

/// Per-request settings shared by every request of a run.
#[derive(Debug, Clone)]
pub struct RequestOpts {
    pub endpoint: Endpoint,
    pub model: String,
    pub ignore_eos: bool,
    pub temperature: f64,
}

/// One HTTP request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub endpoint: Endpoint,
    pub body: Value,
    /// Prompt length in tokens estimated by the bench (used when usage is missing).
    pub prompt_tokens_est: u64,
}

impl Conversation {
    pub fn num_turns(&self) -> usize {
        match self {
            Conversation::Dialog { turns, .. } => turns.len(),
            Conversation::Raw { .. } => 1,
        }
    }

    /// The request of turn `turn`, given the assistant replies to the turns before it.
    pub fn request(&self, turn: usize, replies: &[String], o: &RequestOpts) -> Prepared {
        let (endpoint, mut body) = match self {
            Conversation::Raw { endpoint, body } => (*endpoint, body.clone()),
            Conversation::Dialog {
                system,
                turns,
                max_tokens,
            } => {
                let mut body = Map::new();
                let est;
                match o.endpoint {
                    Endpoint::Chat => {
                        let mut msgs = vec![];
                        if let Some(s) = system {
                            msgs.push(json!({"role": "system", "content": s}));
                        }
                        for (k, user) in turns[..=turn].iter().enumerate() {
                            msgs.push(json!({"role": "user", "content": user}));
                            if k < turn {
                                let reply = replies.get(k).map_or("", String::as_str);
                                msgs.push(json!({"role": "assistant", "content": reply}));
                            }
                        }
                        est = msgs
                            .iter()
                            .map(|m| approx_tokens(m["content"].as_str().unwrap_or("")) + 4)
                            .sum();
                        body.insert("messages".into(), Value::Array(msgs));
                    }
                    Endpoint::Completions => {
                        let prompt = transcript(system.as_deref(), &turns[..=turn], replies);
                        est = approx_tokens(&prompt);
                        body.insert("prompt".into(), prompt.into());
                    }
                }
                body.insert("max_tokens".into(), (*max_tokens).into());
                body.insert("__est".into(), est.into());
                (o.endpoint, body)
            }
        };
        let est = body
            .remove("__est")
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| {
                let text = body
                    .get("messages")
                    .or_else(|| body.get("prompt"))
                    .map(Value::to_string);
                approx_tokens(&text.unwrap_or_default())
            });
        body.insert("model".into(), o.model.clone().into());
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
        if matches!(self, Conversation::Dialog { .. }) {
            body.insert("temperature".into(), o.temperature.into());
            if o.ignore_eos {
                body.insert("ignore_eos".into(), true.into());
            }
        }
        Prepared {
            endpoint,
            body: Value::Object(body),
            prompt_tokens_est: est,
        }
    }
}

/// A conversation flattened for `/completions`.
fn transcript(system: Option<&str>, turns: &[String], replies: &[String]) -> String {
    if system.is_none() && turns.len() == 1 {
        return turns[0].clone(); // a plain prompt, as vLLM's random dataset sends it
    }
    let mut s = system.map(|s| format!("{s}\n\n")).unwrap_or_default();
    for (k, user) in turns.iter().enumerate() {
        s.push_str(&format!("User: {user}\nAssistant:"));
        if k + 1 < turns.len() {
            s.push_str(&format!(" {}\n", replies.get(k).map_or("", String::as_str)));
        }
    }
    s
}

/// Tokens of `text` as a byte-level BPE with whole common words would count them: one per
/// run of letters or digits, one per other non-space character.
pub fn approx_tokens(text: &str) -> u64 {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            n += u64::from(!in_word);
            in_word = true;
        } else {
            in_word = false;
            n += u64::from(!c.is_whitespace());
        }
    }
    n
}

/// `n` random words (~`n` tokens), space-separated.
pub fn random_words(rng: &mut StdRng, words: &[&str], n: usize) -> String {
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(words[rng.random_range(0..words.len())]);
    }
    s
}

/// A length drawn uniformly from `[len*(1-r), len*(1+r)]`, at least 1.
fn draw_len(rng: &mut StdRng, len: usize, r: f64) -> usize {
    let lo = ((len as f64) * (1.0 - r)).round().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + r)).round().max(lo as f64) as usize;
    rng.random_range(lo..=hi)
}

/// The agent workload's system prompt: instructions plus JSON tool definitions, about
/// `tokens` tokens, the same for every conversation and every run.
pub fn agent_system_prompt(tokens: usize) -> String {
    let words = words();
    let mut rng = StdRng::seed_from_u64(0x0051_57E3);
    let mut s = String::from(
        "You are a careful software agent. Think step by step, call one tool at a time by \
         replying with a JSON object {\"tool\": NAME, \"arguments\": {...}}, read its result, \
         and answer the user when you are done.\n\n# Tools\n",
    );
    let mut i = 0;
    while (approx_tokens(&s) as usize) < tokens {
        let name = format!(
            "{}_{}",
            words[rng.random_range(0..64)],
            words[rng.random_range(64..512)]
        );
        let tool = json!({
            "type": "function",
            "function": {
                "name": format!("{name}_{i}"),
                "description": random_words(&mut rng, &words, 24),
                "parameters": {"type": "object", "properties": {
                    "query": {"type": "string", "description": random_words(&mut rng, &words, 8)},
                    "limit": {"type": "integer", "description": random_words(&mut rng, &words, 6)},
                }, "required": ["query"]},
            }
        });
        s.push_str(&tool.to_string());
        s.push('\n');
        i += 1;
    }
    s
}

/// The conversations of one level: `num_requests` turns in all, generated from `seed`
/// (JSONL: the file's lines in order, cycled).
pub fn generate(
    args: &RunArgs,
    seed: u64,
    num_requests: usize,
) -> anyhow::Result<Vec<Conversation>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let words = words();
    let (r, out) = (args.range_ratio, args.output_len);
    let mut convs = vec![];
    match args.workload {
        WorkloadKind::Random => {
            for _ in 0..num_requests {
                let n = draw_len(&mut rng, args.input_len, r);
                convs.push(Conversation::Dialog {
                    system: None,
                    turns: vec![random_words(&mut rng, &words, n)],
                    max_tokens: draw_len(&mut rng, out, r),
                });
            }
        }
        WorkloadKind::Agent => {
            let system = agent_system_prompt(args.agent_system_len);
            let mut left = num_requests;
            while left > 0 {
                let k = args.agent_turns.min(left);
                left -= k;
                let turns = (0..k)
                    .map(|t| {
                        let n = draw_len(&mut rng, args.input_len, r);
                        let text = random_words(&mut rng, &words, n);
                        match t {
                            0 => format!("Task: {text}"),
                            _ => format!("Result of your tool call {t}: {text}"),
                        }
                    })
                    .collect();
                convs.push(Conversation::Dialog {
                    system: Some(system.clone()),
                    turns,
                    max_tokens: out,
                });
            }
        }
        WorkloadKind::Jsonl => {
            let path = args.jsonl.as_deref().context("--jsonl FILE")?;
            let lines = read_jsonl(path)?;
            convs.extend(lines.into_iter().cycle().take(num_requests));
        }
    }
    Ok(convs)
}

/// Reads a JSONL file of request bodies: objects with "messages" (chat) or "prompt".
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Conversation>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let Value::Object(body) = v else {
            bail!("{}:{}: expected a JSON object", path.display(), i + 1)
        };
        let endpoint = match (body.contains_key("messages"), body.contains_key("prompt")) {
            (true, false) => Endpoint::Chat,
            (false, true) => Endpoint::Completions,
            _ => bail!(
                "{}:{}: needs exactly one of \"messages\" and \"prompt\"",
                path.display(),
                i + 1
            ),
        };
        out.push(Conversation::Raw { endpoint, body });
    }
    if out.is_empty() {
        bail!("{}: no requests", path.display());
    }
    Ok(out)
}

/// The seed of level `index`: every level gets fresh prompts (so one level's prompts are not
/// served from the prefix cache filled by the previous one), every target the same ones.
pub fn level_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["inferd-bench"];
        argv.extend_from_slice(extra);
        crate::cli::Cli::parse_from(argv).run
    }

    fn opts(endpoint: Endpoint) -> RequestOpts {
        RequestOpts {
            endpoint,
            model: "m".into(),
            ignore_eos: true,
            temperature: 0.0,
        }
    }

    #[test]
    fn word_list_is_1024_distinct_words() {
        let w = words();
        assert_eq!(w.len(), 1024);
        assert!(w.iter().all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
        let set: std::collections::HashSet<_> = w.iter().collect();
        assert_eq!(set.len(), 1024);
    }

    #[test]
    fn random_is_seeded_and_sized() {
        let a = args(&[
            "--input-len",
            "100",
            "--range-ratio",
            "0.5",
            "--output-len",
            "10",
        ]);
        let one = generate(&a, 7, 20).unwrap();
        assert_eq!(one, generate(&a, 7, 20).unwrap());
        assert_ne!(one, generate(&a, 8, 20).unwrap());
        for c in &one {
            let Conversation::Dialog {
                turns, max_tokens, ..
            } = c
            else {
                panic!()
            };
            let n = approx_tokens(&turns[0]);
            assert!((50..=150).contains(&n), "{n}");
            assert!((5..=15).contains(max_tokens));
        }
        let p = one[0].request(0, &[], &opts(Endpoint::Completions));
        assert_eq!(p.body["stream"], true);
        assert_eq!(p.body["ignore_eos"], true);
        assert!(p.body["prompt"].is_string());
    }

    #[test]
    fn agent_turns_grow_and_share_the_system_prompt() {
        let a = args(&[
            "--workload",
            "agent",
            "--agent-turns",
            "3",
            "--agent-system-len",
            "500",
        ]);
        let convs = generate(&a, 1, 7).unwrap();
        assert_eq!(
            convs
                .iter()
                .map(Conversation::num_turns)
                .collect::<Vec<_>>(),
            [3, 3, 1]
        );
        let sys = agent_system_prompt(500);
        assert!((500..700).contains(&(approx_tokens(&sys) as usize)));
        let o = opts(Endpoint::Chat);
        let replies = vec!["first reply".to_string(), "second reply".to_string()];
        let r = convs[0].request(2, &replies, &o);
        let msgs = r.body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 6); // system, (user, assistant) x 2, user
        assert_eq!(msgs[0]["content"], sys.as_str());
        assert_eq!(msgs[4]["content"], "second reply");
        let first = convs[1].request(0, &[], &o);
        assert_eq!(first.body["messages"][0], msgs[0]);
        assert!(r.prompt_tokens_est > first.prompt_tokens_est);
    }

    #[test]
    fn jsonl_lines_cycle() {
        let dir = std::env::temp_dir().join(format!("inferd-bench-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("w.jsonl");
        std::fs::write(
            &f,
            "{\"prompt\": \"hi\", \"max_tokens\": 3}\n\n{\"messages\": []}\n",
        )
        .unwrap();
        let a = args(&["--workload", "jsonl", "--jsonl", f.to_str().unwrap()]);
        let convs = generate(&a, 0, 3).unwrap();
        let r = convs[2].request(0, &[], &opts(Endpoint::Chat));
        assert_eq!(r.endpoint, Endpoint::Completions);
        assert_eq!(
            (r.body["prompt"].as_str(), r.body["max_tokens"].as_u64()),
            (Some("hi"), Some(3))
        );
        std::fs::write(&f, "{\"nothing\": 1}\n").unwrap();
        assert!(read_jsonl(&f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
