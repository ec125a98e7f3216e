use super::*;

/// The credentials of the AWS SigV4 test suite (`aws-sig-v4-test-suite`).
const SUITE: Expected<'static> = Expected {
    access_key_id: "AKIDEXAMPLE",
    secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    region: "us-east-1",
    service: "service",
};

fn suite_headers(signature: &str) -> Vec<(String, String)> {
    vec![
        ("host".into(), "example.amazonaws.com".into()),
        ("x-amz-date".into(), "20150830T123600Z".into()),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
            ),
        ),
    ]
}

const GET_VANILLA: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
const POST_VANILLA: &str = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";

#[test]
fn accepts_the_aws_test_suite_vectors() {
    assert_eq!(
        verify("GET", "/", &suite_headers(GET_VANILLA), b"", &SUITE),
        Ok(())
    );
    assert_eq!(
        verify("POST", "/", &suite_headers(POST_VANILLA), b"", &SUITE),
        Ok(())
    );
}

#[test]
fn rejects_any_change_to_the_signed_request() {
    let mismatch = Err(AuthFailure::BadSignature(MISMATCH.into()));
    // Another method, path, body or header value than the ones signed.
    assert_eq!(
        verify("POST", "/", &suite_headers(GET_VANILLA), b"", &SUITE),
        mismatch
    );
    assert_eq!(
        verify("GET", "/x", &suite_headers(GET_VANILLA), b"", &SUITE),
        mismatch
    );
    assert_eq!(
        verify("GET", "/", &suite_headers(GET_VANILLA), b"{}", &SUITE),
        mismatch
    );
    let mut headers = suite_headers(GET_VANILLA);
    headers[0].1 = "other.amazonaws.com".into();
    assert_eq!(verify("GET", "/", &headers, b"", &SUITE), mismatch);
    // One hex digit of the signature changed.
    let flipped = format!("4{}", &GET_VANILLA[1..]);
    assert_eq!(
        verify("GET", "/", &suite_headers(&flipped), b"", &SUITE),
        mismatch
    );
    // The right request, checked against another secret.
    let other_secret = Expected {
        secret_access_key: "not-the-secret",
        ..SUITE
    };
    assert_eq!(
        verify("GET", "/", &suite_headers(GET_VANILLA), b"", &other_secret),
        mismatch
    );
}

#[test]
fn names_the_failure_as_aws_does() {
    let unknown = Expected {
        access_key_id: "AKIDOTHER",
        ..SUITE
    };
    let err = verify("GET", "/", &suite_headers(GET_VANILLA), b"", &unknown).unwrap_err();
    assert_eq!(err, AuthFailure::UnknownAccessKey);
    assert_eq!(err.error_type(), "UnrecognizedClientException");

    let other_region = Expected {
        region: "eu-west-1",
        ..SUITE
    };
    let err = verify("GET", "/", &suite_headers(GET_VANILLA), b"", &other_region).unwrap_err();
    assert_eq!(err.error_type(), "InvalidSignatureException");
    assert!(err.message().contains("region"), "{}", err.message());

    let other_service = Expected {
        service: "bedrock",
        ..SUITE
    };
    let err = verify("GET", "/", &suite_headers(GET_VANILLA), b"", &other_service).unwrap_err();
    assert_eq!(err.error_type(), "InvalidSignatureException");

    let mut headers = suite_headers(GET_VANILLA);
    headers.retain(|(n, _)| n != "authorization");
    let err = verify("GET", "/", &headers, b"", &SUITE).unwrap_err();
    assert_eq!(err, AuthFailure::Missing);
    assert_eq!(err.error_type(), "MissingAuthenticationTokenException");

    let mut headers = suite_headers(GET_VANILLA);
    headers.retain(|(n, _)| n != "host");
    let err = verify("GET", "/", &headers, b"", &SUITE).unwrap_err();
    assert!(err.message().contains("'host'"), "{}", err.message());

    let mut headers = suite_headers(GET_VANILLA);
    headers[2].1 = "Basic dXNlcjpwYXNz".into();
    let err = verify("GET", "/", &headers, b"", &SUITE).unwrap_err();
    assert_eq!(err.error_type(), "IncompleteSignatureException");
}

/// What the SDK does: sign an already percent-encoded path (`:` → `%3A`) with aws-sigv4's
/// defaults for non-S3 services (double encoding); the fake must accept it.
#[test]
fn accepts_an_aws_sigv4_signature_over_an_encoded_path() {
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    let body = br#"{"messages":[]}"#;
    let time = parse_amz_date("20240307T101112Z").expect("valid date");
    let identity = Credentials::new(
        SUITE.access_key_id,
        SUITE.secret_access_key,
        None,
        None,
        "t",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(SUITE.region)
        .name(SUITE.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let host = "127.0.0.1:4000";
    let request = SignableRequest::new(
        "POST",
        format!("http://{host}{path}"),
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let signed = sign(request, &params).expect("sign");
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("host".to_string(), host.to_string()),
        ("user-agent".to_string(), "not signed".to_string()),
    ];
    for (name, value) in signed.output().headers() {
        headers.push((name.to_string(), value.to_string()));
    }
    assert_eq!(verify("POST", path, &headers, body, &SUITE), Ok(()));
    // The same path decoded is another canonical request.
    let decoded = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";
    assert!(verify("POST", decoded, &headers, body, &SUITE).is_err());
}

#[test]
fn parses_amz_dates() {
    let t = parse_amz_date("20150830T123600Z").expect("valid");
    assert_eq!(
        t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
        Some(1_440_938_160)
    );
    let t = parse_amz_date("20000301T000000Z").expect("valid");
    assert_eq!(
        t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
        Some(951_868_800)
    );
    for bad in [
        "20150830T123600",
        "2015-08-30T12:36:00Z",
        "20151330T123600Z",
        "2015083XT123600Z",
    ] {
        assert!(parse_amz_date(bad).is_none(), "{bad}");
    }
}

#[test]
fn redacts_the_signature_only() {
    let header = "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcdef";
    let redacted = redact_authorization(header);
    assert!(!redacted.contains("abcdef"));
    assert!(redacted.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature="));
    assert_eq!(redact_authorization("Basic xyz"), "<redacted>");
}

#[test]
fn constant_time_eq_compares_bytes() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
}
