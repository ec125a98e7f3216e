use super::*;

#[test]
fn percent_decoding_restores_the_model_id() {
    assert_eq!(
        percent_decode("anthropic.claude-3-haiku-20240307-v1%3A0"),
        "anthropic.claude-3-haiku-20240307-v1:0"
    );
    assert_eq!(percent_decode("a%2Fb%3a"), "a/b:");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
}

#[test]
fn stream_exceptions_map_to_http_errors_for_converse() {
    assert_eq!(
        exception_status("throttlingException"),
        (429, "ThrottlingException".to_string())
    );
    assert_eq!(
        exception_status("modelStreamErrorException"),
        (424, "ModelStreamErrorException".to_string())
    );
    assert_eq!(exception_status("internalServerException").0, 500);
}

#[test]
fn answer_constructors_fill_usage_and_stop_reason() {
    let a = Answer::text("one two three");
    assert_eq!((a.input_tokens, a.output_tokens), (10, 3));
    assert_eq!(a.stop_reason, "end_turn");
    let a = Answer::tool_calls(vec![("id".into(), "f".into(), json!({}))]);
    assert_eq!(a.stop_reason, "tool_use");
    assert!(matches!(&a.blocks[0], Block::ToolUse { name, .. } if name == "f"));
}

#[test]
fn headers_are_recorded_without_secrets() {
    let (_, v) = redact((
        "authorization".into(),
        "AWS4-HMAC-SHA256 Credential=A/1/r/s/aws4_request, SignedHeaders=host, Signature=deadbeef"
            .into(),
    ));
    assert!(!v.contains("deadbeef"));
    let (_, v) = redact(("x-amz-security-token".into(), "token".into()));
    assert_eq!(v, "<redacted>");
    let (_, v) = redact(("content-type".into(), "application/json".into()));
    assert_eq!(v, "application/json");
}
