//! The gateway's replica backend against real replicas: the real router with a scripted
//! backend on real sockets, and an `UpstreamBackend` over a static (or DNS) pool.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::net::TcpListener;

use super::tests::{chat, eventually, full_request, Replica};
use crate::api::testing::{
    delta, delta_with, finished, hello_world, token_logprob, Script, TEST_MODEL,
};
use crate::backend::upstream::{BreakerState, ReplicaPool, UpstreamBackend};
use crate::backend::{
    Backend, BackendError, FinishReason, GenEvent, GenerateRequest, Generation, ModelCard, Prompt,
    ToolCallDelta,
};
use crate::config::gateway::{Discovery, ReplicaSpec, WhenNoneReady};

fn spec(discovery: Discovery, probe_interval: Duration) -> ReplicaSpec {
    ReplicaSpec {
        model: None,
        discovery,
        when_none_ready: WhenNoneReady::Next,
        max_wait: Duration::from_secs(5),
        max_held: 16,
        keepalive: Duration::from_secs(15),
        probe_interval,
        failure_threshold: 3,
        open_for: Duration::from_secs(600),
        connect_timeout: Duration::from_secs(1),
        max_attempts: 3,
    }
}

fn card() -> ModelCard {
    ModelCard {
        id: TEST_MODEL.into(),
        owned_by: "inferd".into(),
        created: 1_700_000_000,
        max_model_len: 2048,
    }
}

/// An upstream backend over `replicas`, once all of them are ready. `probe_interval`
/// long: only the first probe runs, so passive health alone acts afterwards.
async fn gateway(replicas: &[&Replica], probe_interval: Duration) -> UpstreamBackend {
    let addrs = replicas.iter().map(|r| r.addr.clone()).collect();
    let spec = spec(Discovery::Static(addrs), probe_interval);
    let pool = ReplicaPool::start("test", &spec);
    let backend = UpstreamBackend::new(card(), pool, &spec);
    let pool = backend.pool().clone();
    eventually("every replica is ready", || {
        pool.ready_count() == replicas.len()
    })
    .await;
    backend
}

/// One generation: `generate_n` with one sample.
async fn generate(
    backend: &UpstreamBackend,
    request: GenerateRequest,
) -> Result<Generation, BackendError> {
    let mut generations = backend.generate_n(request, 1).await?;
    assert_eq!(generations.len(), 1, "one sample asked for");
    Ok(generations.remove(0))
}

const LONG: Duration = Duration::from_secs(3600);

async fn events(generation: Generation) -> Vec<Result<GenEvent, BackendError>> {
    generation.events.collect().await
}

fn status_of(pool: &ReplicaPool, addr: &str) -> crate::backend::upstream::ReplicaStatus {
    pool.snapshot()
        .into_iter()
        .find(|s| s.addr == addr)
        .unwrap()
}

#[tokio::test]
async fn a_generation_round_trips_exactly() {
    let script = vec![
        Ok(delta_with(
            "Hel",
            vec![token_logprob("Hel", -0.25, &[("Hel", -0.25), ("He", -1.5)])],
        )),
        Ok(delta("lo")),
        Ok(GenEvent::ToolCall(ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("get_weather".into()),
            arguments: "{\"city\":".into(),
        })),
        Ok(GenEvent::ToolCall(ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: "\"Paris\"}".into(),
        })),
        Ok(finished(FinishReason::ToolCalls, 11, 4, 8)),
    ];
    let replica = Replica::start(Script::Events(script.clone())).await;
    let backend = gateway(&[&replica], LONG).await;
    let request = full_request(chat("weather?"));
    let generation = generate(&backend, request.clone()).await.unwrap();
    assert_eq!(generation.served_by, format!("replica:{}", replica.addr));
    assert_eq!(generation.prompt_tokens, 3);
    assert_eq!(events(generation).await, script);
    assert_eq!(replica.server.backend.requests(), vec![request]);
    assert_eq!(replica.server.backend.samples(), vec![1]);
    eventually("the call is no longer in flight", || {
        backend.in_flight() == 0
    })
    .await;
    assert_eq!(status_of(backend.pool(), &replica.addr).outstanding, 0);
}

#[tokio::test]
async fn n_samples_round_trip_in_one_call() {
    let replica = Replica::start(Script::Echo).await;
    let backend = gateway(&[&replica], LONG).await;
    let generations = backend
        .generate_n(full_request(Prompt::Text("hi".into())), 3)
        .await
        .unwrap();
    assert_eq!(generations.len(), 3);
    for (sample, generation) in generations.into_iter().enumerate() {
        assert_eq!(generation.served_by, format!("replica:{}", replica.addr));
        let expected: Vec<Result<GenEvent, BackendError>> = vec![
            Ok(delta("echo:")),
            Ok(delta("hi")),
            Ok(delta(&format!("/{sample}"))),
            Ok(finished(
                FinishReason::Stop,
                2,
                2 + sample,
                if sample == 0 { 0 } else { 2 },
            )),
        ];
        assert_eq!(events(generation).await, expected, "sample {sample}");
    }
    // One upstream call for the three samples: they share the prompt on the replica.
    assert_eq!(replica.server.backend.samples(), vec![3]);
}

#[tokio::test]
async fn admission_errors_come_back_as_the_same_backend_error_without_retry() {
    let invalid = BackendError::InvalidRequest {
        message: "prompt too long".into(),
        param: Some("messages".into()),
    };
    let a = Replica::start(Script::Refuse(invalid.clone())).await;
    let b = Replica::start(Script::Refuse(invalid.clone())).await;
    let backend = gateway(&[&a, &b], LONG).await;
    let error = generate(&backend, full_request(chat("hi"))).await.err();
    assert_eq!(error, Some(invalid));
    let calls = a.server.backend.requests().len() + b.server.backend.requests().len();
    assert_eq!(calls, 1, "a 400 is the request's fault: no retry");

    let mut unknown = full_request(chat("hi"));
    unknown.model = "no-such-model".into();
    let error = generate(&backend, unknown).await.err();
    assert_eq!(
        error,
        Some(BackendError::ModelNotFound("no-such-model".into()))
    );
    for status in backend.pool().snapshot() {
        assert_eq!(status.consecutive_failures, 0, "{status:?}");
        assert!(status.ready);
    }
}

#[tokio::test]
async fn overloaded_replicas_are_all_tried_and_the_shortest_retry_after_wins() {
    let a = Replica::start(Script::Refuse(BackendError::Overloaded {
        retry_after_secs: 7,
    }))
    .await;
    let b = Replica::start(Script::Refuse(BackendError::Overloaded {
        retry_after_secs: 3,
    }))
    .await;
    let backend = gateway(&[&a, &b], LONG).await;
    let error = generate(&backend, full_request(chat("hi"))).await.err();
    assert_eq!(
        error,
        Some(BackendError::Overloaded {
            retry_after_secs: 3
        })
    );
    assert_eq!(a.server.backend.requests().len(), 1);
    assert_eq!(b.server.backend.requests().len(), 1);
}

#[tokio::test]
async fn the_replica_with_fewer_outstanding_requests_gets_the_next_one() {
    let hang = || Script::Hang(vec![Ok(delta("..."))]);
    let a = Replica::start(hang()).await;
    let b = Replica::start(hang()).await;
    let backend = gateway(&[&a, &b], LONG).await;
    let first = generate(&backend, full_request(chat("1"))).await.unwrap();
    let second = generate(&backend, full_request(chat("2"))).await.unwrap();
    assert_ne!(first.served_by, second.served_by);
    for status in backend.pool().snapshot() {
        assert_eq!(status.outstanding, 1, "{status:?}");
    }
    let freed = first.served_by.clone();
    drop(first);
    let pool = backend.pool().clone();
    let freed_addr = freed.trim_start_matches("replica:").to_owned();
    eventually("the dropped request is no longer outstanding", || {
        status_of(&pool, &freed_addr).outstanding == 0
    })
    .await;
    let third = generate(&backend, full_request(chat("3"))).await.unwrap();
    assert_eq!(third.served_by, freed);
    // Both busy again: ties are taken in turn, so neither is starved.
    let mut seen = BTreeSet::new();
    let mut held = vec![second, third];
    for i in 0..4 {
        let generation = generate(&backend, full_request(chat(&i.to_string())))
            .await
            .unwrap();
        seen.insert(generation.served_by.clone());
        held.push(generation);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(a.server.backend.live_streams(), 3);
    assert_eq!(b.server.backend.live_streams(), 3);
}

#[tokio::test]
async fn a_killed_replica_is_retried_on_the_survivor_before_the_first_byte() {
    let mut a = Replica::start(Script::Events(hello_world())).await;
    let b = Replica::start(Script::Events(hello_world())).await;
    let backend = gateway(&[&a, &b], LONG).await;
    a.kill().await;
    for i in 0..4 {
        let generation = generate(&backend, full_request(chat(&i.to_string())))
            .await
            .unwrap();
        assert_eq!(generation.served_by, format!("replica:{}", b.addr));
        assert_eq!(events(generation).await, hello_world());
    }
    // Ties are taken in turn, so some request tried the dead one first.
    let dead = status_of(backend.pool(), &a.addr);
    assert!(dead.consecutive_failures >= 1, "{dead:?}");
    assert_eq!(b.server.backend.requests().len(), 4);
}

#[tokio::test]
async fn a_dead_replica_opens_its_breaker_and_gets_no_more_traffic() {
    let mut a = Replica::start(Script::Events(hello_world())).await;
    let b = Replica::start(Script::Events(hello_world())).await;
    let backend = gateway(&[&a, &b], LONG).await;
    let dead = a.addr.clone();
    a.kill().await;
    let pool = backend.pool().clone();
    let mut requests = 0;
    while status_of(&pool, &dead).breaker != BreakerState::Open {
        requests += 1;
        assert!(requests <= 10, "the breaker never opened");
        let generation = generate(&backend, full_request(chat("x"))).await.unwrap();
        assert_eq!(events(generation).await, hello_world());
    }
    assert_eq!(status_of(&pool, &dead).consecutive_failures, 3);
    assert_eq!(pool.ready_count(), 1);
    for _ in 0..3 {
        let generation = generate(&backend, full_request(chat("y"))).await.unwrap();
        assert_eq!(generation.served_by, format!("replica:{}", b.addr));
    }
    assert_eq!(status_of(&pool, &dead).consecutive_failures, 3, "not tried");
}

#[tokio::test]
async fn after_open_for_a_successful_trial_closes_the_breaker() {
    let a = Replica::start(Script::Refuse(BackendError::Internal("boom".into()))).await;
    let b = Replica::start(Script::Events(hello_world())).await;
    let mut spec = spec(
        Discovery::Static(vec![a.addr.clone(), b.addr.clone()]),
        LONG,
    );
    spec.open_for = Duration::from_millis(300);
    let backend = UpstreamBackend::new(card(), ReplicaPool::start("trial", &spec), &spec);
    let pool = backend.pool().clone();
    eventually("both are ready", || pool.ready_count() == 2).await;
    // 500s are retried elsewhere, counted, and open the breaker at the threshold.
    let mut requests = 0;
    while status_of(&pool, &a.addr).breaker != BreakerState::Open {
        requests += 1;
        assert!(requests <= 10, "the breaker never opened");
        let generation = generate(&backend, full_request(chat("x"))).await.unwrap();
        assert_eq!(generation.served_by, format!("replica:{}", b.addr));
    }
    a.server.backend.set_script(Script::Events(hello_world()));
    eventually("the breaker is half-open", || pool.ready_count() == 2).await;
    assert_eq!(status_of(&pool, &a.addr).breaker, BreakerState::HalfOpen);
    let mut requests = 0;
    loop {
        requests += 1;
        assert!(requests <= 10, "the trial never came");
        let generation = generate(&backend, full_request(chat("y"))).await.unwrap();
        if generation.served_by == format!("replica:{}", a.addr) {
            assert_eq!(events(generation).await, hello_world());
            break;
        }
    }
    let status = status_of(&pool, &a.addr);
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!(status.consecutive_failures, 0);
}

#[tokio::test]
async fn a_draining_replica_is_taken_out_by_its_probe() {
    let a = Replica::start(Script::Events(hello_world())).await;
    let b = Replica::start(Script::Events(hello_world())).await;
    let backend = gateway(&[&a, &b], Duration::from_millis(20)).await;
    a.set_draining(true);
    let pool = backend.pool().clone();
    eventually("the draining replica is not ready", || {
        pool.ready_count() == 1 && !status_of(&pool, &a.addr).ready
    })
    .await;
    for _ in 0..3 {
        let generation = generate(&backend, full_request(chat("x"))).await.unwrap();
        assert_eq!(generation.served_by, format!("replica:{}", b.addr));
    }
    assert!(a.server.backend.requests().is_empty());
    a.set_draining(false);
    eventually("the replica is back", || pool.ready_count() == 2).await;
}

#[tokio::test]
async fn a_503_from_a_replica_takes_it_out_and_the_request_goes_elsewhere() {
    let a = Replica::start(Script::Events(hello_world())).await;
    let b = Replica::start(Script::Events(hello_world())).await;
    // Probes only at start: the 503 of the generate call itself must take `a` out.
    let backend = gateway(&[&a, &b], LONG).await;
    a.set_draining(true);
    for _ in 0..3 {
        let generation = generate(&backend, full_request(chat("x"))).await.unwrap();
        assert_eq!(generation.served_by, format!("replica:{}", b.addr));
        assert_eq!(events(generation).await, hello_world());
    }
    let status = status_of(backend.pool(), &a.addr);
    assert!(!status.ready, "{status:?}");
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(backend.pool().ready_count(), 1);
}

#[tokio::test]
async fn dropping_the_callers_stream_cancels_on_the_replica() {
    let replica = Replica::start(Script::Hang(vec![Ok(delta("first"))])).await;
    let backend = gateway(&[&replica], LONG).await;
    let mut generation = generate(&backend, full_request(chat("hi"))).await.unwrap();
    assert_eq!(generation.events.next().await, Some(Ok(delta("first"))));
    assert_eq!(replica.server.backend.live_streams(), 1);
    assert_eq!(backend.in_flight(), 1);
    drop(generation);
    eventually("the replica dropped its stream", || {
        replica.server.backend.live_streams() == 0
    })
    .await;
    eventually("the call is no longer in flight", || {
        backend.in_flight() == 0
    })
    .await;
    let status = status_of(backend.pool(), &replica.addr);
    assert_eq!(status.outstanding, 0);
    assert_eq!(
        status.consecutive_failures, 0,
        "a caller leaving is no failure"
    );
}

#[tokio::test]
async fn dropping_some_samples_keeps_the_others_going() {
    let replica = Replica::start(Script::Hang(vec![Ok(delta("a"))])).await;
    let backend = gateway(&[&replica], LONG).await;
    let mut generations = backend
        .generate_n(full_request(chat("hi")), 2)
        .await
        .unwrap();
    let mut kept = generations.pop().unwrap();
    drop(generations);
    assert_eq!(kept.events.next().await, Some(Ok(delta("a"))));
    assert_eq!(replica.server.backend.live_streams(), 2);
    drop(kept);
    eventually("the replica dropped both streams", || {
        replica.server.backend.live_streams() == 0
    })
    .await;
}

#[tokio::test]
async fn a_stream_broken_mid_way_ends_with_an_upstream_error() {
    let mut replica = Replica::start(Script::Hang(vec![Ok(delta("first"))])).await;
    let backend = gateway(&[&replica], LONG).await;
    let mut generation = generate(&backend, full_request(chat("hi"))).await.unwrap();
    assert_eq!(generation.events.next().await, Some(Ok(delta("first"))));
    replica.kill().await;
    match generation.events.next().await {
        Some(Err(BackendError::Upstream(message))) => assert!(
            message.starts_with(&format!("replica {} broke the stream: ", replica.addr)),
            "{message}"
        ),
        other => panic!("expected an upstream error, got {other:?}"),
    }
    assert_eq!(generation.events.next().await, None);
    let status = status_of(backend.pool(), &replica.addr);
    assert_eq!(status.consecutive_failures, 1);
}

#[tokio::test]
async fn no_ready_replica_is_unavailable_at_once() {
    let spec = spec(Discovery::Static(Vec::new()), LONG);
    let backend = UpstreamBackend::new(card(), ReplicaPool::start("empty", &spec), &spec);
    assert!(!backend.is_ready());
    let error = generate(&backend, full_request(chat("hi"))).await.err();
    assert_eq!(
        error,
        Some(BackendError::Unavailable(format!(
            "no ready replica for model {TEST_MODEL}"
        )))
    );
}

#[tokio::test]
async fn wait_ready_wakes_when_a_replica_becomes_ready() {
    // Bound but not serving yet: probes connect and wait.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let spec = spec(
        Discovery::Static(vec![addr.clone()]),
        Duration::from_millis(50),
    );
    let pool = ReplicaPool::start("late", &spec);
    assert_eq!(pool.ready_count(), 0);
    assert!(!pool.wait_ready(Duration::from_millis(200)).await);
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                pool.wait_ready(Duration::from_secs(30)).await,
                started.elapsed(),
            )
        })
    };
    let replica = Replica::serve(listener, Script::Events(hello_world()));
    let (ready, waited) = waiter.await.unwrap();
    assert!(ready);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(pool.ready_count(), 1);
    assert!(pool.wait_ready(Duration::ZERO).await, "ready at once");
    drop(replica);
}

#[tokio::test]
async fn dns_discovery_finds_the_replicas_of_a_name() {
    let replica = Replica::start(Script::Events(hello_world())).await;
    let port: u16 = replica.addr.rsplit(':').next().unwrap().parse().unwrap();
    let spec = spec(
        Discovery::Dns {
            host: "localhost".into(),
            port,
            refresh: Duration::from_millis(50),
        },
        Duration::from_millis(50),
    );
    let pool = ReplicaPool::start("localhost", &spec);
    assert!(pool.wait_ready(Duration::from_secs(10)).await);
    let addrs: Vec<String> = pool.snapshot().into_iter().map(|s| s.addr).collect();
    assert!(addrs.contains(&replica.addr), "{addrs:?}");
    let backend = UpstreamBackend::new(card(), pool, &spec);
    let generation = generate(&backend, full_request(chat("hi"))).await.unwrap();
    assert_eq!(generation.served_by, format!("replica:{}", replica.addr));
    assert_eq!(events(generation).await, hello_world());
}
