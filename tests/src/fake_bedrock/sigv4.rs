//! SigV4 verification of a received request, as a real AWS front end does it: read the
//! `Authorization` header, rebuild the canonical request from what arrived on the wire (the
//! path as sent, the query, the values of the headers the client says it signed, a hash of
//! the body actually received), sign it again with the secret we know, and compare.
//!
//! The re-signing uses aws-sigv4 itself, given only the headers the client listed, so that
//! the canonical form (double-encoded path for non-S3 services, header normalisation) is
//! the one the SDK produced; any byte changed in transit, a wrong secret, region or service
//! yields a different signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

/// Who the fake believes in.
pub(super) struct Expected<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Why a request was refused; every variant is a 403 as AWS sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AuthFailure {
    /// No `Authorization` header at all.
    Missing,
    /// A header that is not a well-formed SigV4 authorization.
    Incomplete(String),
    /// An access key id the fake does not know.
    UnknownAccessKey,
    /// Well-formed, known key, but the signature (or its scope) does not match.
    BadSignature(String),
}

impl AuthFailure {
    /// The `x-amzn-ErrorType` AWS uses for this failure.
    pub(super) fn error_type(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "MissingAuthenticationTokenException",
            AuthFailure::Incomplete(_) => "IncompleteSignatureException",
            AuthFailure::UnknownAccessKey => "UnrecognizedClientException",
            AuthFailure::BadSignature(_) => "InvalidSignatureException",
        }
    }

    /// The message AWS returns (never includes secrets or signatures).
    pub(super) fn message(&self) -> String {
        match self {
            AuthFailure::Missing => "Missing Authentication Token".into(),
            AuthFailure::Incomplete(why) => why.clone(),
            AuthFailure::UnknownAccessKey => {
                "The security token included in the request is invalid.".into()
            }
            AuthFailure::BadSignature(why) => why.clone(),
        }
    }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Authorization<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

pub(super) fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthFailure> {
    let incomplete = |why: &str| AuthFailure::Incomplete(why.to_string());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("Authorization header must use AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((key, val)) = part.trim().split_once('=') else {
            return Err(incomplete("Authorization header has a part without '='"));
        };
        match key {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed = Some(val),
            "Signature" => signature = Some(val),
            _ => return Err(incomplete("Authorization header has an unknown part")),
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Authorization lacks Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("Authorization lacks SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Authorization lacks Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must be AKID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(incomplete("Credential scope must end with aws4_request"));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Checks the SigV4 signature of a request. `headers` are (lowercase name, value) in the
/// order received; `path_and_query` is the request target exactly as received.
pub(super) fn verify(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    expected: &Expected<'_>,
) -> Result<(), AuthFailure> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let auth = header("authorization").ok_or(AuthFailure::Missing)?;
    let auth = parse_authorization(auth)?;
    if auth.access_key_id != expected.access_key_id {
        return Err(AuthFailure::UnknownAccessKey);
    }
    let amz_date = header("x-amz-date").ok_or_else(|| {
        AuthFailure::Incomplete(
            "Authorization header requires existence of a 'X-Amz-Date' header.".into(),
        )
    })?;
    let time = parse_amz_date(amz_date).ok_or_else(|| {
        AuthFailure::Incomplete(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(AuthFailure::BadSignature(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date.".into(),
        ));
    }
    if auth.region != expected.region {
        return Err(AuthFailure::BadSignature(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            auth.region
        )));
    }
    if auth.service != expected.service {
        return Err(AuthFailure::BadSignature(format!(
            "Credential should be scoped to correct service: '{}'.",
            expected.service
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthFailure::BadSignature(
            "'Host' must be a signed header.".into(),
        ));
    }
    // Only the headers the client claims to have signed take part, with every value each
    // one arrived with.
    let mut signed_values: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        let before = signed_values.len();
        signed_values.extend(
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        if signed_values.len() == before {
            return Err(AuthFailure::BadSignature(format!(
                "Signed header '{name}' is missing from the request."
            )));
        }
    }
    let expected_signature = resign(method, path_and_query, signed_values, body, time, expected)?;
    if constant_time_eq(expected_signature.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(AuthFailure::BadSignature(MISMATCH.into()))
    }
}

fn resign(
    method: &str,
    path_and_query: &str,
    headers: Vec<(&str, &str)>,
    body: &[u8],
    time: SystemTime,
    expected: &Expected<'_>,
) -> Result<String, AuthFailure> {
    let bad = |e: &dyn std::fmt::Display| {
        AuthFailure::BadSignature(format!("cannot canonicalise the request: {e}"))
    };
    // `host` is always among `headers` (checked above), so this authority is never signed;
    // aws-sigv4 only needs a URI that has one.
    let uri = format!("http://fake-bedrock.invalid{path_and_query}");
    let request = SignableRequest::new(method, uri, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| bad(&e))?;
    let mut settings = SigningSettings::default();
    // Sign exactly the listed headers: none of them may be dropped by the default exclusions.
    settings.excluded_headers = None;
    let identity = Credentials::new(
        expected.access_key_id,
        expected.secret_access_key,
        None,
        None,
        "fake-bedrock",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(expected.region)
        .name(expected.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| bad(&e))?
        .into();
    let output = sign(request, &params).map_err(|e| bad(&e))?;
    Ok(output.signature().to_string())
}

/// Equality whose running time does not depend on where the inputs differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYYMMDDTHHMMSSZ` (the `x-amz-date` format) as a time.
pub(super) fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = value.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `value` of an `Authorization` header with its signature hidden, for recording.
pub(super) fn redact_authorization(value: &str) -> String {
    match value.find("Signature=") {
        Some(at) => format!("{}Signature=<redacted>", &value[..at]),
        None => "<redacted>".into(),
    }
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
