//! Renders a model's Jinja chat template the way Hugging Face `transformers` does
//! (`apply_chat_template`): `trim_blocks` and `lstrip_blocks` on, trailing newline dropped,
//! `raise_exception`, `strftime_now`, a Python-`json.dumps`-style `tojson`, and Python string,
//! dict and list methods (`.strip()`, `.items()`, ...).
//!
//! The template is compiled once, at construction; rendering never re-parses it.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

const TEMPLATE_NAME: &str = "chat";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The template does not compile.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(msg)`: the request is not one the model accepts
    /// (callers answer 400 with this message).
    #[error("{0}")]
    Raised(String),
    /// Rendering failed for another reason.
    #[error("chat template render error: {0}")]
    Render(String),
}

/// Carried as the source of the minijinja error that `raise_exception` returns, so that
/// `render` can tell a deliberate exception from any other failure.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not compile is a [`TemplateError::Syntax`].
    pub fn new(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages` (anything serializing to a list of `{role, content, ...}` maps).
    /// The context also holds `add_generation_prompt`, `bos_token`, `eos_token` (left
    /// undefined when unknown, as in `transformers`) and `tools = none`.
    pub fn render<M: serde::Serialize>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None::<&()>, add_generation_prompt)
    }

    /// Like [`ChatTemplate::render`], with `tools` (a list of tool definitions) in the
    /// context; `None` renders as `tools = none`.
    pub fn render_with_tools<M: serde::Serialize, T: serde::Serialize>(
        &self,
        messages: &M,
        tools: Option<&T>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        let mut ctx = vec![
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            (
                "tools",
                tools.map_or(Value::from(()), Value::from_serialize),
            ),
            ("documents", Value::from(())),
        ];
        if let Some(bos) = &self.bos_token {
            ctx.push(("bos_token", Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            ctx.push(("eos_token", Value::from(eos.as_str())));
        }
        let ctx: Value = ctx.into_iter().collect();
        template.render(ctx).map_err(|e| match raised(&e) {
            Some(msg) => TemplateError::Raised(msg),
            None => TemplateError::Render(describe(&e)),
        })
    }
}

/// The message of a `raise_exception` anywhere in the error's source chain.
fn raised(err: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<RaisedException>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

/// An error with its source chain and the template line it points at.
fn describe(err: &Error) -> String {
    let mut out = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        let _ = write!(out, ": {e}");
        cur = e.source();
    }
    out
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(
        Error::new(ErrorKind::InvalidOperation, "raise_exception called")
            .with_source(RaisedException(msg)),
    )
}

fn strftime_now(format: String) -> Result<Value, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid strftime format {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}

/// Options of Python's `json.dumps` that `transformers`' `tojson` passes through.
struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// `tojson` as `transformers` defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, so no HTML escaping (unlike Jinja's own `tojson`)
/// and Python's separators (`", "` and `": "`). A positional argument is the indent.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => Some(" ".repeat(usize::try_from(v)?)),
        },
    };
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            let msg = "tojson separators must be a pair (item, key)";
            return Err(Error::new(ErrorKind::InvalidOperation, msg));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let opts = JsonOptions {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(value, &opts, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let json = serde_json::to_string(value).map_err(|e| {
                Error::new(ErrorKind::InvalidOperation, "cannot serialize number").with_source(e)
            })?;
            out.push_str(&json);
        }
        ValueKind::String => write_json_str(value.as_str().unwrap_or_default(), opts, out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            let mut items = Vec::with_capacity(keys.len());
            for key in keys {
                let item = value.get_item(&key)?;
                items.push((key, item));
            }
            write_items(('{', '}'), items.len(), opts, depth, out, |i, out| {
                let (key, item) = &items[i];
                match key.as_str() {
                    Some(s) => write_json_str(s, opts, out),
                    None => write_json_str(&key.to_string(), opts, out),
                }
                out.push_str(&opts.key_sep);
                write_json(item, opts, depth + 1, out)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_items(('[', ']'), items.len(), opts, depth, out, |i, out| {
                write_json(&items[i], opts, depth + 1, out)
            })?;
        }
        _ => {
            let msg = format!("cannot serialize {} to JSON", value.kind());
            return Err(Error::new(ErrorKind::InvalidOperation, msg));
        }
    }
    Ok(())
}

fn write_items(
    (open, close): (char, char),
    len: usize,
    opts: &JsonOptions,
    depth: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        if let Some(indent) = &opts.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        item(i, out)?;
    }
    if let Some(indent) = &opts.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_str(s: &str, opts: &JsonOptions, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smollm2_template() -> ChatTemplate {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("INFERD_SMOLLM2_GGUF") {
            candidates.push(std::path::PathBuf::from(p));
        }
        let manifest = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        );
        candidates.push(manifest.join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            panic!("SmolLM2 GGUF not found (tried {candidates:?}); run `make models`");
        };
        let mut file = std::fs::File::open(path).expect("open SmolLM2 GGUF");
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
        let source = content.metadata["tokenizer.chat_template"]
            .to_string()
            .unwrap();
        let (bos, eos) = (Some("<|im_start|>".into()), Some("<|im_end|>".into()));
        ChatTemplate::new(source.clone(), bos, eos).expect("SmolLM2 template compiles")
    }

    #[test]
    fn smollm2_system_and_user() {
        let messages = json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi there"},
        ]);
        let out = smollm2_template().render(&messages, true).unwrap();
        let expected = "<|im_start|>system\nYou are terse.<|im_end|>\n\
                        <|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn smollm2_inserts_default_system_prompt() {
        // SmolLM2's template begins with `{% if loop.first and messages[0]['role'] !=
        // 'system' %}` and then emits its built-in system turn, so a conversation without a
        // system message gets "You are a helpful AI assistant named SmolLM, trained by
        // Hugging Face" (no trailing period) before the first user turn. Without
        // add_generation_prompt, no assistant header follows.
        let messages = json!([{"role": "user", "content": "Hi"}]);
        let out = smollm2_template().render(&messages, false).unwrap();
        let expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
                        trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn raise_exception_is_raised() {
        let t = ChatTemplate::new("{{ raise_exception('x') }}".into(), None, None).unwrap();
        assert_eq!(
            t.render(&json!([]), false),
            Err(TemplateError::Raised("x".into()))
        );
        let nested = "{% for m in messages %}{% if m.role == 'tool' %}\
                      {{ raise_exception('no tools: ' ~ m.content) }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(nested.into(), None, None).unwrap();
        let msgs = json!([{"role": "tool", "content": "42"}]);
        assert_eq!(
            t.render(&msgs, false),
            Err(TemplateError::Raised("no tools: 42".into()))
        );
    }

    #[test]
    fn strftime_now_renders_the_year() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}".into(), None, None).unwrap();
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(t.render(&json!([]), false).unwrap(), year);
        let bad = ChatTemplate::new("{{ strftime_now('%Q') }}".into(), None, None).unwrap();
        assert!(matches!(
            bad.render(&json!([]), false),
            Err(TemplateError::Render(_))
        ));
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let src = "{{ messages[0] | tojson }}|{{ messages[0].content | tojson(indent=2) }}|\
                   {{ messages | tojson(separators=(',', ':'), sort_keys=true) }}|\
                   {{ 'é<&>' | tojson(ensure_ascii=true) }}|{{ [] | tojson(indent=4) }}";
        let t = ChatTemplate::new(src.into(), None, None).unwrap();
        let msgs = json!([{"content": {"a": [1, 2.5], "s": "<b>\"x\"\n"}, "role": "user"}]);
        let out = t.render(&msgs, false).unwrap();
        let expected =
            "{\"content\": {\"a\": [1, 2.5], \"s\": \"<b>\\\"x\\\"\\n\"}, \"role\": \"user\"}|\
            {\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"s\": \"<b>\\\"x\\\"\\n\"\n}|\
            [{\"content\":{\"a\":[1,2.5],\"s\":\"<b>\\\"x\\\"\\n\"},\"role\":\"user\"}]|\
            \"\\u00e9<&>\"|[]";
        assert_eq!(out, expected);
        let bad = ChatTemplate::new("{{ 1 | tojson(bogus=1) }}".into(), None, None).unwrap();
        assert!(matches!(
            bad.render(&json!([]), false),
            Err(TemplateError::Render(_))
        ));
    }

    #[test]
    fn python_methods_and_hf_whitespace() {
        let src = "{% for m in messages %}\n  {% if m.content.strip().startswith('a') %}\n\
                   {{ m.content.strip().split(',') | join('+') }}\n  {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src.into(), None, None).unwrap();
        let out = t.render(&json!([{"content": "  a,b,c "}, {"content": "x"}]), false);
        assert_eq!(out.unwrap(), "a+b+c\n");
    }

    #[test]
    fn context_has_tokens_and_tools() {
        let src = "{{ bos_token }}{{ tools is none }}{{ eos_token }}{{ add_generation_prompt }}";
        let t = ChatTemplate::new(src.into(), Some("<s>".into()), Some("</s>".into())).unwrap();
        // Booleans print the Python way, as in Jinja2.
        assert_eq!(t.render(&json!([]), true).unwrap(), "<s>True</s>True");
        let t = ChatTemplate::new(src.into(), None, None).unwrap();
        assert_eq!(t.render(&json!([]), false).unwrap(), "TrueFalse");
        let src = "{{ tools | length }}";
        let t = ChatTemplate::new(src.into(), None, None).unwrap();
        let out = t.render_with_tools(&json!([]), Some(&json!([{"a": 1}])), false);
        assert_eq!(out.unwrap(), "1");
    }

    #[test]
    fn syntax_error_at_construction() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m }".into(), None, None);
        assert!(matches!(err, Err(TemplateError::Syntax(_))), "{err:?}");
    }
}
