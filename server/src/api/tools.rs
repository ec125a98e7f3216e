//! OpenAI tool calling on the wire: `tools`, `tool_choice`, assistant `tool_calls` and
//! `tool` messages in, `tool_calls` out. Validation names the exact field; whether a
//! backend can call tools at all is the backend's decision (the local engine refuses for
//! now, Bedrock maps them to `toolConfig`).

use serde_json::Value;

use super::error::ApiError;
use super::types::{FunctionOut, ToolCallOut};
use crate::backend::{ToolCall, ToolCallDelta, ToolChoice, ToolSpec};

/// Most tools one request may declare (OpenAI's limit).
pub(crate) const MAX_TOOLS: usize = 128;

/// `tools` → backend tool specs. `null` and `[]` mean none.
pub(crate) fn tools(wire: Option<&Value>) -> Result<Vec<ToolSpec>, ApiError> {
    let list = match wire {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::invalid("tools", "tools must be an array")),
    };
    if list.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "tools may hold at most {MAX_TOOLS} entries, got {}",
                list.len()
            ),
        ));
    }
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        if kind != Some("function") {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("tools[{i}].type must be \"function\""),
            ));
        }
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("tools[{i}].function"),
                    format!("tools[{i}].function is required and must be an object"),
                )
            })?;
        let name = function_name(function, &format!("tools[{i}].function.name"))?;
        if specs.iter().any(|s| s.name == name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!("tools[{i}].function.name `{name}` is declared twice"),
            ));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.description"),
                    format!("tools[{i}].function.description must be a string"),
                ))
            }
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.parameters"),
                    format!("tools[{i}].function.parameters must be a JSON Schema object"),
                ))
            }
        };
        specs.push(ToolSpec {
            name,
            description,
            parameters,
        });
    }
    Ok(specs)
}

/// `tool_choice` → backend choice, checked against the declared tools.
pub(crate) fn tool_choice(
    wire: Option<&Value>,
    tools: &[ToolSpec],
) -> Result<ToolChoice, ApiError> {
    let choice = match wire {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice must be \"auto\", \"none\", \"required\" or \
                         {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got \"{other}\""
                    ),
                ))
            }
        },
        Some(object @ Value::Object(_)) => {
            if object.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    "tool_choice.type must be \"function\"",
                ));
            }
            let function = object.get("function").unwrap_or(&Value::Null);
            ToolChoice::Function(function_name(function, "tool_choice.function.name")?)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "tool_choice must be a string or an object",
            ))
        }
    };
    match &choice {
        ToolChoice::Required | ToolChoice::Function(_) if tools.is_empty() => {
            Err(ApiError::invalid(
                "tool_choice",
                "tool_choice requires tools: declare at least one tool",
            ))
        }
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(ApiError::invalid(
                "tool_choice.function.name",
                format!("tool_choice names `{name}`, which is not among the declared tools"),
            ))
        }
        _ => Ok(choice),
    }
}

/// An assistant message's `tool_calls` → backend calls.
pub(crate) fn message_tool_calls(
    i: usize,
    wire: Option<&Value>,
) -> Result<Vec<ToolCall>, ApiError> {
    let list = match wire {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("messages[{i}].tool_calls"),
                format!("messages[{i}].tool_calls must be an array"),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(j, call)| {
            let field = |name: &str| format!("messages[{i}].tool_calls[{j}].{name}");
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(field("id"), format!("{} is required", field("id")))
                })?;
            let function = call.get("function").unwrap_or(&Value::Null);
            let name = function_name(function, &field("function.name"))?;
            let arguments = match function.get("arguments") {
                Some(Value::String(a)) => a.clone(),
                _ => {
                    let param = field("function.arguments");
                    return Err(ApiError::invalid(
                        param.clone(),
                        format!("{param} is required and must be a string of JSON"),
                    ));
                }
            };
            Ok(ToolCall {
                id: id.to_owned(),
                name,
                arguments,
            })
        })
        .collect()
}

fn function_name(function: &Value, param: &str) -> Result<String, ApiError> {
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{param} is required: 1 to 64 characters of a-z, A-Z, 0-9, `_` or `-`"),
        ))
    }
}

/// Reassembles streamed tool-call fragments into whole calls (non-streaming responses).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ToolCallAssembler {
    calls: Vec<ToolCallOut>,
}

impl ToolCallAssembler {
    pub(crate) fn push(&mut self, delta: ToolCallDelta) {
        while self.calls.len() <= delta.index {
            self.calls.push(ToolCallOut {
                id: String::new(),
                kind: "function",
                function: FunctionOut {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        let call = &mut self.calls[delta.index];
        if let Some(id) = delta.id {
            call.id = id;
        }
        if let Some(name) = delta.name {
            call.function.name = name;
        }
        call.function.arguments.push_str(&delta.arguments);
    }

    pub(crate) fn finish(self) -> Vec<ToolCallOut> {
        self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_parse_with_default_parameters() {
        let wire = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "d",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "now"}}
        ]);
        let specs = tools(Some(&wire)).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].description.as_deref(), Some("d"));
        assert_eq!(
            specs[1].parameters,
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn bad_tools_name_the_field() {
        let cases = [
            (json!({}), "tools"),
            (json!([{"type": "retrieval"}]), "tools[0].type"),
            (json!([{"type": "function"}]), "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f"}},
                       {"type": "function", "function": {"name": "f"}}]),
                "tools[1].function.name",
            ),
        ];
        for (wire, param) in cases {
            let error = tools(Some(&wire)).unwrap_err();
            assert_eq!(
                error.envelope().error.param.as_deref(),
                Some(param),
                "{wire}"
            );
        }
    }

    #[test]
    fn tool_choice_forms() {
        let specs = tools(Some(
            &json!([{"type": "function", "function": {"name": "f"}}]),
        ))
        .unwrap();
        assert_eq!(tool_choice(None, &specs).unwrap(), ToolChoice::Auto);
        assert_eq!(
            tool_choice(Some(&json!("none")), &specs).unwrap(),
            ToolChoice::None
        );
        assert_eq!(
            tool_choice(Some(&json!("required")), &specs).unwrap(),
            ToolChoice::Required
        );
        let named = json!({"type": "function", "function": {"name": "f"}});
        assert_eq!(
            tool_choice(Some(&named), &specs).unwrap(),
            ToolChoice::Function("f".into())
        );
        let unknown = json!({"type": "function", "function": {"name": "g"}});
        assert!(tool_choice(Some(&unknown), &specs).is_err());
        assert!(tool_choice(Some(&json!("required")), &[]).is_err());
        assert!(tool_choice(Some(&json!("sometimes")), &specs).is_err());
    }

    #[test]
    fn assistant_tool_calls_parse() {
        let wire = json!([{"id": "call_1", "type": "function",
                           "function": {"name": "f", "arguments": "{\"a\":1}"}}]);
        let calls = message_tool_calls(2, Some(&wire)).unwrap();
        assert_eq!(
            calls,
            vec![ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into()
            }]
        );
        let missing_id = json!([{"function": {"name": "f", "arguments": "{}"}}]);
        let error = message_tool_calls(2, Some(&missing_id)).unwrap_err();
        assert_eq!(
            error.envelope().error.param.as_deref(),
            Some("messages[2].tool_calls[0].id")
        );
    }

    #[test]
    fn assembler_joins_fragments_by_index() {
        let mut assembler = ToolCallAssembler::default();
        let delta = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.to_owned(),
        };
        assembler.push(delta(0, Some("a"), Some("f"), "{\"x\""));
        assembler.push(delta(1, Some("b"), Some("g"), ""));
        assembler.push(delta(0, None, None, ":1}"));
        assembler.push(delta(1, None, None, "{}"));
        let calls = assembler.finish();
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[0].function.arguments, "{\"x\":1}");
        assert_eq!(calls[1].function.name, "g");
        assert_eq!(calls[1].function.arguments, "{}");
    }
}
