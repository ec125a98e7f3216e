//! Tests of the Prometheus metrics (names, types, buckets, labels).
use super::*;

fn assert_send_sync<T: Send + Sync>() {}

/// Exposed family names and types, exactly as documented in the README.
const EXPOSED: [(&str, &str); 17] = [
    ("inferd:num_requests_running", "gauge"),
    ("inferd:num_requests_waiting", "gauge"),
    ("inferd:kv_cache_usage_perc", "gauge"),
    ("inferd:cache_config_info", "gauge"),
    ("inferd:num_preemptions_total", "counter"),
    ("inferd:prompt_tokens_total", "counter"),
    ("inferd:generation_tokens_total", "counter"),
    ("inferd:prefix_cache_queries_total", "counter"),
    ("inferd:prefix_cache_hits_total", "counter"),
    ("inferd:request_success_total", "counter"),
    ("inferd:time_to_first_token_seconds", "histogram"),
    ("inferd:inter_token_latency_seconds", "histogram"),
    ("inferd:e2e_request_latency_seconds", "histogram"),
    ("inferd:request_queue_time_seconds", "histogram"),
    ("inferd:request_prompt_tokens", "histogram"),
    ("inferd:request_generation_tokens", "histogram"),
    ("inferd:backend_requests_total", "counter"),
];

/// The value of the one sample line whose name-and-labels part equals `series`.
fn sample(text: &str, series: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((s, v)) = line.rsplit_once(' ') {
            if s == series {
                assert!(found.is_none(), "duplicate series {series}:\n{text}");
                found = Some(v.to_owned());
            }
        }
    }
    found
}

fn touch_all(m: &ModelMetrics) {
    m.set_running(3);
    m.set_waiting(2);
    m.set_kv_usage(0.25);
    m.set_cache_config(16, 1024);
    m.inc_preemptions(1);
    m.add_prompt_tokens(10);
    m.add_generation_tokens(5);
    m.add_prefix_cache_queries(10);
    m.add_prefix_cache_hits(4);
    m.inc_request_success("stop");
    m.observe_ttft(0.05);
    m.observe_inter_token_latency(0.02);
    m.observe_e2e_latency(1.2);
    m.observe_queue_time(0.1);
    m.observe_prompt_tokens(10);
    m.observe_generation_tokens(5);
}

#[test]
fn handles_are_send_sync() {
    assert_send_sync::<Metrics>();
    assert_send_sync::<ModelMetrics>();
    assert_send_sync::<Arc<Metrics>>();
}

#[test]
fn names_are_exactly_as_documented() {
    let metrics = Metrics::new();
    // Families without series are left out of the exposition entirely.
    assert_eq!(metrics.encode(), "");
    metrics.model("m").set_cache_config(16, 8);
    metrics.inc_backend_request("m", "local");
    let text = metrics.encode();
    let mut types: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.to_owned(), t.to_owned())
        })
        .collect();
    let mut helps: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split_once(' ').unwrap().0.to_owned())
        .collect();
    let mut expected: Vec<(String, String)> = EXPOSED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    types.sort();
    helps.sort();
    expected.sort();
    assert_eq!(types, expected, "{text}");
    let expected_names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
    assert_eq!(helps, expected_names);
    // The `:` survives (prometheus-client neither rejects nor rewrites it).
    assert!(
        text.contains("# TYPE inferd:num_requests_running gauge\n"),
        "{text}"
    );
}

#[test]
fn every_family_has_the_model_label_after_one_observation() {
    let metrics = Metrics::new();
    touch_all(&metrics.model("org/llama-3"));
    metrics.inc_backend_request("org/llama-3", "local");
    let text = metrics.encode();
    let label = r#"model_name="org/llama-3""#;
    for (name, ty) in EXPOSED {
        let prefix = match ty {
            "histogram" => format!("{name}_count{{{label}"),
            _ => format!("{name}{{{label}"),
        };
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "no {prefix} in:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            r#"inferd:num_requests_running{model_name="org/llama-3"}"#
        )
        .as_deref(),
        Some("3")
    );
    assert_eq!(
        sample(
            &text,
            r#"inferd:num_requests_waiting{model_name="org/llama-3"}"#
        )
        .as_deref(),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            r#"inferd:cache_config_info{model_name="org/llama-3",block_size="16",num_gpu_blocks="1024"}"#
        )
        .as_deref(),
        Some("1")
    );
    for (name, v) in [
        ("inferd:num_preemptions_total", "1"),
        ("inferd:prompt_tokens_total", "10"),
        ("inferd:generation_tokens_total", "5"),
        ("inferd:prefix_cache_queries_total", "10"),
        ("inferd:prefix_cache_hits_total", "4"),
    ] {
        let series = format!("{name}{{{label}}}");
        assert_eq!(sample(&text, &series).as_deref(), Some(v), "{series}");
    }
    assert_eq!(
        sample(
            &text,
            r#"inferd:backend_requests_total{model_name="org/llama-3",backend="local"}"#
        )
        .as_deref(),
        Some("1")
    );
    for (name, sum) in [
        ("inferd:time_to_first_token_seconds", "0.05"),
        ("inferd:inter_token_latency_seconds", "0.02"),
        ("inferd:e2e_request_latency_seconds", "1.2"),
        ("inferd:request_queue_time_seconds", "0.1"),
        ("inferd:request_prompt_tokens", "10.0"),
        ("inferd:request_generation_tokens", "5.0"),
    ] {
        let count = format!("{name}_count{{{label}}}");
        assert_eq!(sample(&text, &count).as_deref(), Some("1"), "{count}");
        let s = sample(&text, &format!("{name}_sum{{{label}}}")).unwrap();
        assert_eq!(
            s.parse::<f64>().unwrap(),
            sum.parse::<f64>().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn model_series_exist_at_zero_before_any_observation() {
    let metrics = Metrics::new();
    let _m = metrics.model("m");
    let text = metrics.encode();
    for reason in FINISH_REASONS {
        let series =
            format!(r#"inferd:request_success_total{{model_name="m",finished_reason="{reason}"}}"#);
        assert_eq!(sample(&text, &series).as_deref(), Some("0"), "{series}");
    }
    assert_eq!(
        sample(&text, r#"inferd:prompt_tokens_total{model_name="m"}"#).as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(
            &text,
            r#"inferd:time_to_first_token_seconds_count{model_name="m"}"#
        )
        .as_deref(),
        Some("0")
    );
    // No cache config until the engine reports it.
    assert!(!text.contains("inferd:cache_config_info{"), "{text}");
}

#[test]
fn histogram_buckets_count_correctly() {
    let metrics = Metrics::new();
    let m = metrics.model("m");
    for v in [0.0005, 0.001, 0.003, 0.05, 0.05, 3000.0] {
        m.observe_ttft(v);
    }
    let text = metrics.encode();
    let bucket = |le: &str| {
        sample(
            &text,
            &format!(r#"inferd:time_to_first_token_seconds_bucket{{model_name="m",le="{le}"}}"#),
        )
        .unwrap_or_else(|| panic!("no le={le} in\n{text}"))
    };
    // Cumulative, upper bound inclusive.
    assert_eq!(bucket("0.001"), "2");
    assert_eq!(bucket("0.005"), "3");
    assert_eq!(bucket("0.04"), "3");
    assert_eq!(bucket("0.06"), "5");
    assert_eq!(bucket("2560"), "5");
    assert_eq!(bucket("+Inf"), "6");
    assert_eq!(
        sample(
            &text,
            r#"inferd:time_to_first_token_seconds_count{model_name="m"}"#
        )
        .as_deref(),
        Some("6")
    );
    let sum: f64 = sample(
        &text,
        r#"inferd:time_to_first_token_seconds_sum{model_name="m"}"#,
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!((sum - 3000.1045).abs() < 1e-9, "{sum}");

    // Token counts: 1-2-5 buckets.
    m.observe_prompt_tokens(7);
    m.observe_prompt_tokens(2000);
    let text = metrics.encode();
    let tok = |le: &str| {
        sample(
            &text,
            &format!(r#"inferd:request_prompt_tokens_bucket{{model_name="m",le="{le}"}}"#),
        )
        .unwrap_or_else(|| panic!("no le={le} in\n{text}"))
    };
    assert_eq!(tok("5"), "0");
    assert_eq!(tok("10"), "1");
    assert_eq!(tok("1000"), "1");
    assert_eq!(tok("2000"), "2");
    assert_eq!(tok("+Inf"), "2");
}

/// The `le` values of one histogram series, in exposition order.
fn bounds(text: &str, name: &str) -> Vec<String> {
    let prefix = format!(r#"{name}_bucket{{model_name="m",le=""#);
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|l| l.split_once('"').unwrap().0.to_owned())
        .collect()
}

#[test]
fn bucket_boundaries_are_vllms() {
    let metrics = Metrics::new();
    let _m = metrics.model("m");
    let text = metrics.encode();
    let expect = |b: &[f64]| -> Vec<String> {
        b.iter()
            .map(|v| v.to_string())
            .chain(["+Inf".to_owned()])
            .collect()
    };
    assert_eq!(
        bounds(&text, names::TIME_TO_FIRST_TOKEN_SECONDS),
        expect(&TTFT_BUCKETS)
    );
    assert_eq!(
        bounds(&text, names::INTER_TOKEN_LATENCY_SECONDS),
        expect(&INTER_TOKEN_LATENCY_BUCKETS)
    );
    for name in [
        names::E2E_REQUEST_LATENCY_SECONDS,
        names::REQUEST_QUEUE_TIME_SECONDS,
    ] {
        assert_eq!(
            bounds(&text, name),
            expect(&REQUEST_LATENCY_BUCKETS),
            "{name}"
        );
    }
    // GoFloat formatting: 1e6 would print as "1e+06".
    let tokens = bounds(&text, names::REQUEST_PROMPT_TOKENS);
    assert_eq!(tokens.first().map(String::as_str), Some("1"));
    assert_eq!(tokens.len(), 19 + 1);
    assert_eq!(bounds(&text, names::REQUEST_GENERATION_TOKENS), tokens);
    assert_eq!(
        build_1_2_5_buckets(100),
        vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    );
    assert_eq!(build_1_2_5_buckets(8192).last(), Some(&5000.0));
    // Terminates without overflow: 1, 2, 5, …, 5e18, 1e19.
    let all = build_1_2_5_buckets(u64::MAX);
    assert_eq!((all.len(), all.last()), (58, Some(&1e19)));
}

#[test]
fn kv_usage_gauge_reads_back() {
    let metrics = Metrics::new();
    let m = metrics.model("m");
    let read = || {
        sample(
            &metrics.encode(),
            r#"inferd:kv_cache_usage_perc{model_name="m"}"#,
        )
        .unwrap()
        .parse::<f64>()
        .unwrap()
    };
    assert_eq!(read(), 0.0);
    m.set_kv_usage(0.42);
    assert_eq!(read(), 0.42);
    m.set_kv_usage(1.0);
    assert_eq!(read(), 1.0);
    m.set_kv_usage(1.5);
    assert_eq!(read(), 1.0);
    m.set_kv_usage(-0.1);
    assert_eq!(read(), 0.0);
}

#[test]
fn cache_config_is_replaced_not_duplicated() {
    let metrics = Metrics::new();
    let m = metrics.model("m");
    m.set_cache_config(16, 100);
    m.set_cache_config(16, 200);
    m.set_cache_config(16, 200);
    let text = metrics.encode();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("inferd:cache_config_info{"))
        .collect();
    assert_eq!(
        lines,
        [r#"inferd:cache_config_info{model_name="m",block_size="16",num_gpu_blocks="200"} 1"#],
        "{text}"
    );
}

#[test]
fn same_model_shares_handles_and_models_are_separate() {
    let metrics = Metrics::new();
    let a1 = metrics.model("a");
    let a2 = metrics.model("a");
    let b = metrics.model("b");
    a1.add_generation_tokens(2);
    a2.clone().add_generation_tokens(3);
    b.add_generation_tokens(7);
    a1.inc_request_success("length");
    a2.inc_request_success("abort");
    a2.inc_request_success("error");
    a2.inc_request_success("weird");
    a1.inc_request_success("weird");
    metrics.inc_backend_request("a", "bedrock");
    metrics.inc_backend_request("a", "bedrock");
    metrics.inc_backend_request("a", "replica");
    let text = metrics.encode();
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        get(r#"inferd:generation_tokens_total{model_name="a"}"#),
        "5"
    );
    assert_eq!(
        get(r#"inferd:generation_tokens_total{model_name="b"}"#),
        "7"
    );
    for (reason, v) in [
        ("stop", "0"),
        ("length", "1"),
        ("abort", "1"),
        ("error", "1"),
        ("weird", "2"),
    ] {
        assert_eq!(
            get(&format!(
                r#"inferd:request_success_total{{model_name="a",finished_reason="{reason}"}}"#
            )),
            v,
            "{reason}"
        );
    }
    assert_eq!(
        get(r#"inferd:backend_requests_total{model_name="a",backend="bedrock"}"#),
        "2"
    );
    assert_eq!(
        get(r#"inferd:backend_requests_total{model_name="a",backend="replica"}"#),
        "1"
    );
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    metrics.model("we\"ird\\name").set_running(1);
    let text = metrics.encode();
    assert!(
        text.contains(r#"inferd:num_requests_running{model_name="we\"ird\\name"} 1"#),
        "{text}"
    );
}

#[test]
fn handles_work_across_threads() {
    let metrics = Metrics::new();
    let m = metrics.model("m");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    m.add_generation_tokens(1);
                    m.observe_inter_token_latency(0.01);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = metrics.encode();
    assert_eq!(
        sample(&text, r#"inferd:generation_tokens_total{model_name="m"}"#).as_deref(),
        Some("4000")
    );
    assert_eq!(
        sample(
            &text,
            r#"inferd:inter_token_latency_seconds_count{model_name="m"}"#
        )
        .as_deref(),
        Some("4000")
    );
}
