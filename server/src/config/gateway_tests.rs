//! `[[model.backend]]` parsing: defaults, every key, and errors that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::gateway::*;
use super::{parse_catalog, Catalog, ConfigError};

fn parse(text: &str) -> Result<Catalog, ConfigError> {
    parse_catalog(text, Path::new("/srv"), PathBuf::from("gateway.toml"))
}

fn backends(tables: &str) -> Result<Vec<BackendSpec>, String> {
    parse(&format!("[[model]]\nid = \"m\"\n{tables}"))
        .map(|c| c.models[0].backends.clone())
        .map_err(|e| e.to_string())
}

#[test]
fn gateway_only_entry_with_defaults() {
    let parsed = backends(
        "[[model.backend]]\ntype = \"replicas\"\ndns = \"inferd-engine.ns.svc:8080\"\n\
         [[model.backend]]\ntype = \"bedrock\"\nmodel_id = \"us.anthropic.claude-3-5-haiku-20241022-v1:0\"\n",
    )
    .unwrap();
    assert_eq!(
        parsed,
        vec![
            BackendSpec::Replicas(ReplicaSpec {
                discovery: Discovery::Dns {
                    host: "inferd-engine.ns.svc".into(),
                    port: 8080,
                    refresh: DEFAULT_DNS_REFRESH,
                },
                model: None,
                when_none_ready: WhenNoneReady::Hold,
                max_wait: DEFAULT_MAX_WAIT,
                max_held: DEFAULT_MAX_HELD,
                keepalive: DEFAULT_KEEPALIVE,
                probe_interval: DEFAULT_PROBE_INTERVAL,
                failure_threshold: DEFAULT_FAILURE_THRESHOLD,
                open_for: DEFAULT_OPEN_FOR,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_attempts: DEFAULT_REPLICA_ATTEMPTS,
            }),
            BackendSpec::Bedrock(BedrockSpec {
                model_id: "us.anthropic.claude-3-5-haiku-20241022-v1:0".into(),
                region: None,
                endpoint_url: None,
                unsupported_params: UnsupportedParams::Reject,
                max_attempts: DEFAULT_BEDROCK_ATTEMPTS,
                timeout: DEFAULT_BEDROCK_TIMEOUT,
            }),
        ]
    );
    let catalog =
        parse("[[model]]\nid = \"m\"\n[[model.backend]]\ntype = \"replicas\"\nurls = [\"a:1\"]\n")
            .unwrap();
    assert_eq!(catalog.models[0].source, None);
    // Hold by default, and the default hold is shorter than the keep-alive interval: a
    // held stream's backend is chosen before its first byte, so it is always a header.
    assert!(DEFAULT_MAX_WAIT < DEFAULT_KEEPALIVE);
}

#[test]
fn every_key_maps() {
    let parsed = backends(
        "[[model.backend]]\ntype = \"replicas\"\nurls = [\"http://10.0.0.7:8080/\", \"[::1]:81\"]\n\
         model = \"other\"\nwhen_none_ready = \"next\"\nmax_wait_ms = 0\nmax_held = 3\n\
         keepalive_ms = 250\nprobe_interval_ms = 100\nfailure_threshold = 2\nopen_ms = 500\n\
         connect_timeout_ms = 50\nmax_attempts = 4\n\
         [[model.backend]]\ntype = \"bedrock\"\nmodel_id = \"m1\"\nregion = \"eu-west-3\"\n\
         endpoint_url = \"http://127.0.0.1:9\"\nunsupported_params = \"drop\"\nmax_attempts = 1\n\
         timeout_ms = 900\n",
    )
    .unwrap();
    let BackendSpec::Replicas(r) = &parsed[0] else {
        panic!("replicas first")
    };
    assert_eq!(
        r.discovery,
        Discovery::Static(vec!["10.0.0.7:8080".into(), "[::1]:81".into()])
    );
    assert_eq!(r.model.as_deref(), Some("other"));
    assert_eq!(r.when_none_ready, WhenNoneReady::Next);
    assert_eq!(r.max_wait, Duration::ZERO);
    assert_eq!((r.max_held, r.failure_threshold, r.max_attempts), (3, 2, 4));
    assert_eq!(r.keepalive, Duration::from_millis(250));
    assert_eq!(r.open_for, Duration::from_millis(500));
    let BackendSpec::Bedrock(b) = &parsed[1] else {
        panic!("bedrock second")
    };
    assert_eq!(b.region.as_deref(), Some("eu-west-3"));
    assert_eq!(b.unsupported_params, UnsupportedParams::Drop);
    assert_eq!(b.timeout, Duration::from_millis(900));
}

#[test]
fn bad_tables_name_the_key() {
    let cases = [
        ("type = \"replicas\"\n", "backend[0].dns"),
        (
            "type = \"replicas\"\ndns = \"a:1\"\nurls = [\"b:2\"]\n",
            "backend[0].urls",
        ),
        ("type = \"replicas\"\ndns = \"no-port\"\n", "backend[0].dns"),
        ("type = \"replicas\"\nurls = []\n", "backend[0].urls"),
        (
            "type = \"replicas\"\nurls = [\"a:1\"]\nwhen_none_ready = \"wait\"\n",
            "backend[0].when_none_ready",
        ),
        (
            "type = \"replicas\"\nurls = [\"a:1\"]\nkeepalive_ms = 1\n",
            "backend[0].keepalive_ms",
        ),
        (
            "type = \"replicas\"\nurls = [\"a:1\"]\ndns_refresh_ms = 500\n",
            "backend[0].dns_refresh_ms",
        ),
        (
            "type = \"bedrock\"\nmodel_id = \" \"\n",
            "backend[0].model_id",
        ),
        (
            "type = \"bedrock\"\nmodel_id = \"m\"\nregion = \"US East\"\n",
            "backend[0].region",
        ),
        (
            "type = \"bedrock\"\nmodel_id = \"m\"\nendpoint_url = \"bedrock.local\"\n",
            "backend[0].endpoint_url",
        ),
        (
            "type = \"bedrock\"\nmodel_id = \"m\"\nunsupported_params = \"ignore\"\n",
            "backend[0].unsupported_params",
        ),
    ];
    for (table, key) in cases {
        let message = backends(&format!("[[model.backend]]\n{table}")).unwrap_err();
        assert!(message.contains(&format!("`{key}`")), "{table}: {message}");
    }
    // Unknown keys and kinds are syntax errors that say where.
    for table in [
        "type = \"replicas\"\nurls = [\"a:1\"]\nmax_wait = 5\n",
        "type = \"vllm\"\n",
    ] {
        let message = backends(&format!("[[model.backend]]\n{table}")).unwrap_err();
        assert!(message.contains("model \"m\""), "{message}");
    }
    // Neither weights nor backends: nothing could serve it.
    let message = parse("[[model]]\nid = \"m\"\n").unwrap_err().to_string();
    assert!(message.contains("[[model.backend]]"), "{message}");
}

#[test]
fn serve_cannot_resolve_a_gateway_only_entry() {
    let catalog =
        parse("[[model]]\nid = \"m\"\n[[model.backend]]\ntype = \"replicas\"\nurls = [\"a:1\"]\n")
            .unwrap();
    let message = super::resolve(&catalog.models[0]).unwrap_err().to_string();
    assert!(message.contains("only `inferd gateway`"), "{message}");
}
