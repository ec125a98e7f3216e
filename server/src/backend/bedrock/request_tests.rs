use super::*;
use crate::backend::{SamplingParams, SetByClient, ToolCall, ToolSpec};
use aws_smithy_types::Document;
use serde_json::json;

fn req(messages: Vec<ChatMessage>) -> GenerateRequest {
    GenerateRequest {
        request_id: "req-1".into(),
        model: "m".into(),
        prompt: Prompt::Chat(messages),
        sampling: SamplingParams::default(),
        max_tokens_explicit: false,
        stop: vec![],
        deadline: None,
        tools: vec![],
        tool_choice: ToolChoice::Auto,
        set_by_client: SetByClient::default(),
        stream: false,
    }
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

fn assistant_calls(content: &str, calls: &[(&str, &str, &str)]) -> ChatMessage {
    ChatMessage {
        role: "assistant".into(),
        content: content.into(),
        tool_calls: calls
            .iter()
            .map(|(id, name, args)| ToolCall {
                id: (*id).into(),
                name: (*name).into(),
                arguments: (*args).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn tool_msg(id: Option<&str>, content: &str) -> ChatMessage {
    ChatMessage {
        role: "tool".into(),
        content: content.into(),
        tool_call_id: id.map(str::to_owned),
        ..Default::default()
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: Some("Weather of a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

fn translate_ok(r: &GenerateRequest) -> ConverseParts {
    translate(r, UnsupportedParams::Reject, "served")
        .expect("translates")
        .parts
}

fn message(role: ConversationRole, content: Vec<ContentBlock>) -> Message {
    Message::builder()
        .role(role)
        .set_content(Some(content))
        .build()
        .expect("message")
}

fn text(t: &str) -> ContentBlock {
    ContentBlock::Text(t.into())
}

fn tool_use_block(id: &str, name: &str, input: serde_json::Value) -> ContentBlock {
    ContentBlock::ToolUse(
        ToolUseBlock::builder()
            .tool_use_id(id)
            .name(name)
            .input(to_document(&input))
            .build()
            .expect("tool use"),
    )
}

fn tool_result_block(id: &str, output: &str) -> ContentBlock {
    ContentBlock::ToolResult(
        ToolResultBlock::builder()
            .tool_use_id(id)
            .content(ToolResultContentBlock::Text(output.into()))
            .build()
            .expect("tool result"),
    )
}

fn param_of(err: BackendError) -> (String, Option<String>) {
    match err {
        BackendError::InvalidRequest { message, param } => (message, param),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn system_and_developer_messages_become_system_blocks_in_order() {
    let r = req(vec![
        msg("system", "You are terse."),
        msg("user", "Hi"),
        msg("developer", "Answer in French."),
        msg("system", "   "),
        msg("assistant", "Salut"),
        msg("system", ""),
        msg("user", "Again"),
    ]);
    let parts = translate_ok(&r);
    assert_eq!(
        parts.system,
        vec![
            SystemContentBlock::Text("You are terse.".into()),
            SystemContentBlock::Text("Answer in French.".into())
        ]
    );
    assert_eq!(
        parts.messages,
        vec![
            message(ConversationRole::User, vec![text("Hi")]),
            message(ConversationRole::Assistant, vec![text("Salut")]),
            message(ConversationRole::User, vec![text("Again")]),
        ]
    );
}

#[test]
fn consecutive_same_role_messages_merge_and_blank_text_is_skipped() {
    let r = req(vec![
        msg("user", "one"),
        msg("user", "two"),
        msg("assistant", "three"),
        msg("user", "  \n "),
        msg("assistant", "four"),
        msg("user", ""),
        msg("user", "five"),
    ]);
    let parts = translate_ok(&r);
    assert_eq!(
        parts.messages,
        vec![
            message(ConversationRole::User, vec![text("one"), text("two")]),
            message(
                ConversationRole::Assistant,
                vec![text("three"), text("four")]
            ),
            message(ConversationRole::User, vec![text("five")]),
        ]
    );
    for m in &parts.messages {
        assert!(!m.content.is_empty());
        for b in &m.content {
            if let ContentBlock::Text(t) = b {
                assert!(!t.trim().is_empty(), "blank text block {t:?}");
            }
        }
    }
}

#[test]
fn tool_calls_and_results_map_to_tool_use_and_tool_result_in_a_user_turn() {
    let mut r = req(vec![
        msg("user", "Weather in Paris and Rome?"),
        assistant_calls(
            "",
            &[
                ("call_1", "get_weather", r#"{"city":"Paris"}"#),
                ("call_2", "get_weather", ""),
            ],
        ),
        tool_msg(Some("call_1"), "18C"),
        tool_msg(Some("call_2"), ""),
        msg("user", "Thanks; which is warmer?"),
    ]);
    r.tools = vec![weather_tool()];
    let parts = translate_ok(&r);
    assert_eq!(
        parts.messages,
        vec![
            message(
                ConversationRole::User,
                vec![text("Weather in Paris and Rome?")]
            ),
            message(
                ConversationRole::Assistant,
                vec![
                    tool_use_block("call_1", "get_weather", json!({"city": "Paris"})),
                    tool_use_block("call_2", "get_weather", json!({})),
                ]
            ),
            message(
                ConversationRole::User,
                vec![
                    tool_result_block("call_1", "18C"),
                    tool_result_block("call_2", EMPTY_TOOL_OUTPUT),
                    text("Thanks; which is warmer?"),
                ]
            ),
        ]
    );
    assert!(parts.tool_config.is_some());
}

#[test]
fn assistant_text_and_tool_calls_share_one_message() {
    let mut r = req(vec![
        msg("user", "q"),
        assistant_calls(
            "Let me check.",
            &[("c1", "get_weather", r#"{"city":"Oslo"}"#)],
        ),
        tool_msg(Some("c1"), "-3C"),
    ]);
    r.tools = vec![weather_tool()];
    let parts = translate_ok(&r);
    assert_eq!(
        parts.messages[1],
        message(
            ConversationRole::Assistant,
            vec![
                text("Let me check."),
                tool_use_block("c1", "get_weather", json!({"city": "Oslo"}))
            ]
        )
    );
    assert_eq!(
        parts.messages[2],
        message(ConversationRole::User, vec![tool_result_block("c1", "-3C")])
    );
}

#[test]
fn invalid_tool_call_arguments_name_the_field() {
    let mut r = req(vec![
        msg("user", "q"),
        assistant_calls("", &[("c1", "f", "{}"), ("c2", "f", "{not json")]),
    ]);
    r.tools = vec![weather_tool()];
    let (message, param) = param_of(translate(&r, UnsupportedParams::Reject, "s").unwrap_err());
    assert_eq!(
        param.as_deref(),
        Some("messages[1].tool_calls[1].function.arguments")
    );
    assert!(message.contains("not valid JSON"), "{message}");
}

#[test]
fn tool_message_without_tool_call_id_is_rejected() {
    let r = req(vec![
        msg("user", "q"),
        assistant_calls("", &[("c1", "f", "{}")]),
        tool_msg(None, "out"),
    ]);
    let (_, param) = param_of(translate(&r, UnsupportedParams::Reject, "s").unwrap_err());
    assert_eq!(param.as_deref(), Some("messages[2].tool_call_id"));
}

#[test]
fn conversation_must_start_with_a_user_turn() {
    let r = req(vec![
        msg("system", "s"),
        msg("assistant", "hello"),
        msg("user", "hi"),
    ]);
    let (message, param) = param_of(translate(&r, UnsupportedParams::Reject, "s").unwrap_err());
    assert_eq!(param.as_deref(), Some("messages"));
    assert!(message.contains("start with a user message"), "{message}");

    let only_system = req(vec![msg("system", "s"), msg("user", "  ")]);
    let (_, param) = param_of(translate(&only_system, UnsupportedParams::Reject, "s").unwrap_err());
    assert_eq!(param.as_deref(), Some("messages"));
}

#[test]
fn text_and_token_prompts_are_rejected() {
    for prompt in [Prompt::Text("hi".into()), Prompt::Tokens(vec![1, 2])] {
        let mut r = req(vec![]);
        r.prompt = prompt;
        let (message, param) = param_of(translate(&r, UnsupportedParams::Drop, "s").unwrap_err());
        assert_eq!(param.as_deref(), Some("prompt"));
        assert!(message.contains("/v1/chat/completions"), "{message}");
    }
}

#[test]
fn tools_become_tool_specs_and_tool_choice_maps() {
    let mut r = req(vec![msg("user", "q")]);
    r.tools = vec![
        weather_tool(),
        ToolSpec {
            name: "noop".into(),
            description: None,
            parameters: json!({"type": "object"}),
        },
    ];
    let config = translate_ok(&r).tool_config.expect("tool config");
    assert_eq!(config.tools.len(), 2);
    let Tool::ToolSpec(spec) = &config.tools[0] else {
        panic!("not a tool spec")
    };
    assert_eq!(spec.name, "get_weather");
    assert_eq!(spec.description.as_deref(), Some("Weather of a city"));
    assert_eq!(
        spec.input_schema,
        Some(ToolInputSchema::Json(to_document(
            &weather_tool().parameters
        )))
    );
    let Tool::ToolSpec(noop) = &config.tools[1] else {
        panic!("not a tool spec")
    };
    assert_eq!(noop.description, None);
    assert!(matches!(config.tool_choice, Some(BrToolChoice::Auto(_))));

    r.tool_choice = ToolChoice::Required;
    let config = translate_ok(&r).tool_config.expect("tool config");
    assert!(matches!(config.tool_choice, Some(BrToolChoice::Any(_))));

    r.tool_choice = ToolChoice::Function("noop".into());
    let config = translate_ok(&r).tool_config.expect("tool config");
    match config.tool_choice {
        Some(BrToolChoice::Tool(t)) => assert_eq!(t.name, "noop"),
        other => panic!("expected a specific tool, got {other:?}"),
    }

    r.tool_choice = ToolChoice::Function("missing".into());
    let (_, param) = param_of(translate(&r, UnsupportedParams::Reject, "s").unwrap_err());
    assert_eq!(param.as_deref(), Some("tool_choice"));

    r.tool_choice = ToolChoice::None;
    assert_eq!(translate_ok(&r).tool_config, None);
}

#[test]
fn without_tool_config_tool_history_is_rendered_as_text() {
    let mut r = req(vec![
        msg("user", "q"),
        assistant_calls("", &[("c1", "get_weather", r#"{"city":"Oslo"}"#)]),
        tool_msg(Some("c1"), "-3C"),
        msg("user", "summarize"),
    ]);
    r.tools = vec![weather_tool()];
    r.tool_choice = ToolChoice::None;
    for r in [r.clone(), {
        let mut no_tools = r.clone();
        no_tools.tools.clear();
        no_tools.tool_choice = ToolChoice::Auto;
        no_tools
    }] {
        let parts = translate_ok(&r);
        assert_eq!(parts.tool_config, None);
        assert_eq!(
            parts.messages,
            vec![
                message(ConversationRole::User, vec![text("q")]),
                message(
                    ConversationRole::Assistant,
                    vec![text(r#"[tool call c1: get_weather({"city":"Oslo"})]"#)]
                ),
                message(
                    ConversationRole::User,
                    vec![text("[tool result c1: -3C]"), text("summarize")]
                ),
            ]
        );
    }
}

#[test]
fn inference_config_carries_only_what_the_client_set() {
    let mut r = req(vec![msg("user", "q")]);
    r.sampling.max_tokens = 99;
    r.sampling.temperature = 0.3;
    r.sampling.top_p = 0.8;
    assert_eq!(translate_ok(&r).inference, None, "defaults are not sent");

    r.max_tokens_explicit = true;
    let cfg = translate_ok(&r).inference.expect("config");
    assert_eq!(cfg.max_tokens, Some(99));
    assert_eq!(
        (cfg.temperature, cfg.top_p, cfg.stop_sequences),
        (None, None, None)
    );

    r.max_tokens_explicit = false;
    r.set_by_client.temperature = true;
    let cfg = translate_ok(&r).inference.expect("config");
    assert_eq!(
        (cfg.max_tokens, cfg.temperature, cfg.top_p),
        (None, Some(0.3), None)
    );

    r.set_by_client.temperature = false;
    r.set_by_client.top_p = true;
    r.stop = vec!["END".into(), "\n\n".into()];
    let cfg = translate_ok(&r).inference.expect("config");
    assert_eq!((cfg.temperature, cfg.top_p), (None, Some(0.8)));
    assert_eq!(
        cfg.stop_sequences,
        Some(vec!["END".to_string(), "\n\n".to_string()])
    );
}

fn with_all_unsupported() -> GenerateRequest {
    let mut r = req(vec![msg("user", "q")]);
    r.sampling.logprobs = Some(2);
    r.sampling.seed = Some(7);
    r.sampling.presence_penalty = 0.5;
    r.sampling.frequency_penalty = 0.5;
    r.sampling.repetition_penalty = 1.2;
    r.sampling.top_k = Some(40);
    r.sampling.min_p = 0.1;
    r.sampling.ignore_eos = true;
    r.set_by_client = SetByClient {
        temperature: false,
        top_p: false,
        top_k: true,
        min_p: true,
        seed: true,
        presence_penalty: true,
        frequency_penalty: true,
        repetition_penalty: true,
        ignore_eos: true,
    };
    r
}

#[test]
fn unsupported_params_are_rejected_naming_the_first_or_dropped_listing_all() {
    let r = with_all_unsupported();
    let (message, param) =
        param_of(translate(&r, UnsupportedParams::Reject, "claude").unwrap_err());
    assert_eq!(param.as_deref(), Some("logprobs"));
    assert!(
        message.contains("Bedrock backend of model `claude`"),
        "{message}"
    );

    let t = translate(&r, UnsupportedParams::Drop, "claude").expect("dropped");
    assert_eq!(
        t.dropped,
        vec![
            "logprobs",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "top_k",
            "min_p",
            "ignore_eos"
        ]
    );
    assert_eq!(t.parts.inference, None, "nothing of them reaches Bedrock");

    let mut seed_only = req(vec![msg("user", "q")]);
    seed_only.sampling.seed = Some(1);
    seed_only.set_by_client.seed = true;
    let (_, param) =
        param_of(translate(&seed_only, UnsupportedParams::Reject, "claude").unwrap_err());
    assert_eq!(param.as_deref(), Some("seed"));
}

#[test]
fn neutral_values_and_unset_fields_are_not_unsupported() {
    let mut r = req(vec![msg("user", "q")]);
    // The client sent the neutral defaults explicitly (many SDKs do).
    r.set_by_client.presence_penalty = true;
    r.set_by_client.frequency_penalty = true;
    r.set_by_client.repetition_penalty = true;
    r.set_by_client.min_p = true;
    r.set_by_client.ignore_eos = true;
    assert!(unsupported_params(&r).is_empty());
    // Non-neutral values that came from defaults, not from the client.
    r = req(vec![msg("user", "q")]);
    r.sampling.repetition_penalty = 1.1;
    r.sampling.top_k = Some(20);
    assert!(unsupported_params(&r).is_empty());
    assert!(translate(&r, UnsupportedParams::Reject, "s").is_ok());
}

#[test]
fn documents_round_trip_json() {
    let v = json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": {}}});
    assert_eq!(super::super::document::to_json(&to_document(&v)), v);
    assert_eq!(
        to_document(&json!(-3)),
        Document::Number(aws_smithy_types::Number::NegInt(-3))
    );
}
