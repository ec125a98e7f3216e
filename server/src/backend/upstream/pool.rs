//! The replicas of one model: which exist (discovery), which can take traffic (active
//! `/ready` probes and a per-replica circuit breaker fed by request outcomes), and which
//! one a request goes to (least outstanding requests, ties taken in turn).
//!
//! Readiness and the breaker are separate on purpose: a probe answers "is it up and not
//! draining" every `probe_interval`; the breaker reacts to what requests see between
//! probes (connection refused, 5xx) and keeps a flapping replica out for `open_for`.
//! Failed probes take a replica out of traffic at once but do not count as breaker
//! failures, so a replica that was merely starting up is eligible on its first 200.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::discovery;
use crate::config::gateway::ReplicaSpec;

/// The state of a replica's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Too many consecutive failures: no requests until `open_for` has passed.
    Open,
    /// `open_for` has passed: one trial request (or a successful probe) decides.
    HalfOpen,
}

/// What a breaker transition means, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BreakerChange {
    Opened,
    Closed,
}

/// A consecutive-failure circuit breaker. Pure: every method takes the current time.
#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    /// `Some` while open or half-open: when the open period ends.
    open_until: Option<Instant>,
    /// Half-open and its one trial request is under way.
    trial: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            open_until: None,
            trial: false,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// When an open breaker turns half-open (`None` unless open).
    pub(crate) fn reopens_at(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|until| now < *until)
    }

    /// Whether a request may be sent now.
    pub(crate) fn available(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.trial,
        }
    }

    /// A request was sent; returns whether it is the half-open trial.
    pub(crate) fn begin(&mut self, now: Instant) -> bool {
        if self.state(now) == BreakerState::HalfOpen {
            self.trial = true;
            true
        } else {
            false
        }
    }

    /// The trial request ended without an outcome (its caller gave up): allow another.
    pub(crate) fn abandon_trial(&mut self) {
        self.trial = false;
    }

    /// The replica answered properly. Outcomes of requests sent before the breaker
    /// opened do not end the open period.
    pub(crate) fn success(&mut self, now: Instant) -> Option<BreakerChange> {
        match self.state(now) {
            BreakerState::Closed => {
                self.failures = 0;
                None
            }
            BreakerState::Open => None,
            BreakerState::HalfOpen => Some(self.close()),
        }
    }

    /// A probe got 200: like a successful trial, it closes a half-open breaker.
    pub(crate) fn probe_success(&mut self, now: Instant) -> Option<BreakerChange> {
        (self.state(now) == BreakerState::HalfOpen).then(|| self.close())
    }

    /// The replica failed (connect error, 5xx, broken stream).
    pub(crate) fn failure(&mut self, now: Instant) -> Option<BreakerChange> {
        self.failures = self.failures.saturating_add(1);
        match self.state(now) {
            BreakerState::Closed if self.failures >= self.threshold => Some(self.open(now)),
            BreakerState::Closed | BreakerState::Open => None,
            BreakerState::HalfOpen => Some(self.open(now)),
        }
    }

    fn open(&mut self, now: Instant) -> BreakerChange {
        self.open_until = Some(now + self.open_for);
        self.trial = false;
        BreakerChange::Opened
    }

    fn close(&mut self) -> BreakerChange {
        self.open_until = None;
        self.trial = false;
        self.failures = 0;
        BreakerChange::Closed
    }
}

/// Index of the candidate with the fewest outstanding requests; among equals, the
/// `turn`-th (modulo their number), so that idle replicas share the traffic.
pub(crate) fn pick_least_outstanding(outstanding: &[usize], turn: usize) -> Option<usize> {
    let least = *outstanding.iter().min()?;
    let tied: Vec<usize> = (0..outstanding.len())
        .filter(|&i| outstanding[i] == least)
        .collect();
    Some(tied[turn % tied.len()])
}

/// A replica as [`ReplicaPool::snapshot`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub addr: String,
    /// Its last probe (or request) said it can take requests.
    pub ready: bool,
    /// Requests this gateway has on it now.
    pub outstanding: usize,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
}

/// One replica. Requests in flight keep it alive after discovery removed it.
pub(crate) struct Replica {
    addr: String,
    outstanding: AtomicUsize,
    health: Mutex<Health>,
}

struct Health {
    ready: bool,
    breaker: Breaker,
}

impl Replica {
    fn health(&self) -> MutexGuard<'_, Health> {
        // The lock guards plain data updated in single steps: a panic elsewhere cannot
        // leave it inconsistent, so a poisoned lock is still usable.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn eligible(&self, now: Instant) -> bool {
        let health = self.health();
        health.ready && health.breaker.available(now)
    }
}

/// Settings of the pool, from [`ReplicaSpec`].
#[derive(Clone, Debug)]
struct Settings {
    probe_interval: Duration,
    probe_timeout: Duration,
    failure_threshold: u32,
    open_for: Duration,
}

/// State shared by the pool, its background tasks and the leases.
pub(crate) struct Shared {
    name: String,
    settings: Settings,
    client: reqwest::Client,
    replicas: Mutex<BTreeMap<String, Entry>>,
    /// Bumped on every change of readiness or breaker state: wakes `wait_ready`.
    changes: watch::Sender<u64>,
    turn: AtomicUsize,
}

struct Entry {
    replica: Arc<Replica>,
    probe: JoinHandle<()>,
}

impl Shared {
    fn replicas(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    fn log_breaker(&self, addr: &str, change: Option<BreakerChange>, failures: u32) {
        match change {
            Some(BreakerChange::Opened) => tracing::info!(
                pool = %self.name, replica = %addr, failures, "replica breaker open"
            ),
            Some(BreakerChange::Closed) => {
                tracing::info!(pool = %self.name, replica = %addr, "replica breaker closed")
            }
            None => return,
        }
        self.changed();
    }

    /// Makes the pool's replicas exactly `addrs` (discovery's latest answer).
    pub(crate) fn reconcile(self: &Arc<Self>, addrs: &std::collections::BTreeSet<String>) {
        let mut replicas = self.replicas();
        let current = replicas.keys().cloned().collect();
        let diff = discovery::reconcile(&current, addrs);
        for addr in diff.removed {
            if let Some(entry) = replicas.remove(&addr) {
                entry.probe.abort();
                tracing::info!(pool = %self.name, replica = %addr, "replica removed");
            }
        }
        for addr in diff.added {
            let replica = Arc::new(Replica {
                addr: addr.clone(),
                outstanding: AtomicUsize::new(0),
                health: Mutex::new(Health {
                    ready: false,
                    breaker: Breaker::new(self.settings.failure_threshold, self.settings.open_for),
                }),
            });
            let probe = tokio::spawn(probe_loop(self.clone(), replica.clone()));
            tracing::info!(pool = %self.name, replica = %addr, "replica added");
            replicas.insert(addr, Entry { replica, probe });
        }
        drop(replicas);
        self.changed();
    }

    fn on_probe(&self, replica: &Replica, outcome: Result<(), String>) {
        let now = Instant::now();
        let mut health = replica.health();
        match outcome {
            Ok(()) => {
                let change = health.breaker.probe_success(now);
                let became_ready = !health.ready;
                health.ready = true;
                let failures = health.breaker.failures();
                drop(health);
                if became_ready {
                    tracing::info!(pool = %self.name, replica = %replica.addr, "replica ready");
                    self.changed();
                }
                self.log_breaker(&replica.addr, change, failures);
            }
            Err(reason) => {
                let was_ready = std::mem::replace(&mut health.ready, false);
                drop(health);
                if was_ready {
                    tracing::info!(
                        pool = %self.name, replica = %replica.addr, %reason, "replica not ready"
                    );
                    self.changed();
                }
            }
        }
    }
}

/// Probes one replica's `/ready` every `probe_interval`, until discovery removes it.
async fn probe_loop(shared: Arc<Shared>, replica: Arc<Replica>) {
    let url = format!("http://{}/ready", replica.addr);
    let mut ticks = tokio::time::interval(shared.settings.probe_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let answer = shared
            .client
            .get(&url)
            .timeout(shared.settings.probe_timeout)
            .send()
            .await;
        let outcome = match answer {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("/ready answered {}", response.status())),
            Err(error) => Err(format!("/ready failed: {error}")),
        };
        shared.on_probe(&replica, outcome);
    }
}

/// A request's claim on a replica: counts as outstanding until dropped.
pub(crate) struct Lease {
    replica: Arc<Replica>,
    shared: Arc<Shared>,
    /// The half-open trial, not yet settled by an outcome.
    trial: bool,
}

impl Lease {
    pub(crate) fn addr(&self) -> &str {
        &self.replica.addr
    }

    /// The replica answered properly (admitted, or refused for the request's own reasons).
    pub(crate) fn succeeded(&mut self) {
        self.trial = false;
        let mut health = self.replica.health();
        let change = health.breaker.success(Instant::now());
        drop(health);
        self.shared.log_breaker(&self.replica.addr, change, 0);
    }

    /// The replica failed; `draining` (it answered 503) also takes it out of traffic until
    /// a probe finds it ready again.
    pub(crate) fn failed(&mut self, draining: bool, reason: &str) {
        self.trial = false;
        let mut health = self.replica.health();
        let change = health.breaker.failure(Instant::now());
        let failures = health.breaker.failures();
        let was_ready = draining && std::mem::replace(&mut health.ready, false);
        drop(health);
        tracing::debug!(
            pool = %self.shared.name, replica = %self.replica.addr, failures, %reason,
            "replica request failed"
        );
        if was_ready {
            tracing::info!(
                pool = %self.shared.name, replica = %self.replica.addr, %reason,
                "replica not ready"
            );
            self.shared.changed();
        }
        self.shared
            .log_breaker(&self.replica.addr, change, failures);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::SeqCst);
        if self.trial {
            self.replica.health().breaker.abandon_trial();
            self.shared.changed();
        }
    }
}

/// The replicas of one model; see the module docs.
pub struct ReplicaPool {
    shared: Arc<Shared>,
    /// The DNS refresh task (none for a static list).
    discovery: Option<JoinHandle<()>>,
}

impl ReplicaPool {
    /// Starts discovery and active health probing on the current tokio runtime; `name`
    /// labels logs (e.g. the DNS host).
    pub fn start(name: &str, spec: &ReplicaSpec) -> Arc<ReplicaPool> {
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            // Replicas are in-cluster: never route them through an HTTP(S)_PROXY.
            .no_proxy()
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "replica HTTP client settings refused; using defaults");
                reqwest::Client::new()
            });
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            settings: Settings {
                probe_interval: spec.probe_interval.max(Duration::from_millis(1)),
                probe_timeout: spec.connect_timeout.max(Duration::from_millis(100)),
                failure_threshold: spec.failure_threshold,
                open_for: spec.open_for,
            },
            client,
            replicas: Mutex::new(BTreeMap::new()),
            changes,
            turn: AtomicUsize::new(0),
        });
        let discovery = discovery::start(shared.clone(), &spec.discovery);
        Arc::new(ReplicaPool { shared, discovery })
    }

    /// The HTTP client every call to these replicas shares (pooled keep-alive connections).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.shared.client
    }

    /// Replicas eligible for traffic now: ready per probe, and breaker closed or
    /// half-open with its trial available.
    pub fn ready_count(&self) -> usize {
        let now = Instant::now();
        let replicas = self.shared.replicas();
        replicas
            .values()
            .filter(|e| e.replica.eligible(now))
            .count()
    }

    /// Resolves with `true` as soon as a replica is eligible (at once if one is), or with
    /// `false` after `timeout`. Woken by probes and breaker changes, and at the moment an
    /// open breaker of a ready replica turns half-open.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if self.ready_count() > 0 {
                return true;
            }
            let wake = match self.next_half_open() {
                Some(at) => deadline.min(tokio::time::Instant::from_std(at)),
                None => deadline,
            };
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return self.ready_count() > 0;
                    }
                }
            }
        }
    }

    /// The earliest moment an open breaker of a ready replica turns half-open.
    fn next_half_open(&self) -> Option<Instant> {
        let now = Instant::now();
        let replicas = self.shared.replicas();
        replicas
            .values()
            .filter_map(|e| {
                let health = e.replica.health();
                health
                    .ready
                    .then(|| health.breaker.reopens_at(now))
                    .flatten()
            })
            .min()
    }

    /// Every replica's state, by address.
    pub fn snapshot(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        let replicas = self.shared.replicas();
        replicas
            .values()
            .map(|e| {
                let health = e.replica.health();
                ReplicaStatus {
                    addr: e.replica.addr.clone(),
                    ready: health.ready,
                    outstanding: e.replica.outstanding.load(Ordering::SeqCst),
                    breaker: health.breaker.state(now),
                    consecutive_failures: health.breaker.failures(),
                }
            })
            .collect()
    }

    /// Claims the eligible replica with the fewest outstanding requests, skipping
    /// `exclude` (replicas this request already tried). `None`: no such replica.
    pub(crate) fn pick(&self, exclude: &[String]) -> Option<Lease> {
        let now = Instant::now();
        let replicas = self.shared.replicas();
        let candidates: Vec<&Arc<Replica>> = replicas
            .values()
            .map(|e| &e.replica)
            .filter(|r| !exclude.contains(&r.addr) && r.eligible(now))
            .collect();
        let outstanding: Vec<usize> = candidates
            .iter()
            .map(|r| r.outstanding.load(Ordering::SeqCst))
            .collect();
        let turn = self.shared.turn.fetch_add(1, Ordering::Relaxed);
        let replica = candidates[pick_least_outstanding(&outstanding, turn)?].clone();
        // Counted (and the trial taken) while the map is locked, so that concurrent
        // picks see each other.
        replica.outstanding.fetch_add(1, Ordering::SeqCst);
        let trial = replica.health().breaker.begin(now);
        drop(replicas);
        if trial {
            tracing::info!(pool = %self.shared.name, replica = %replica.addr, "replica breaker half-open: trial request");
        }
        Some(Lease {
            replica,
            shared: self.shared.clone(),
            trial,
        })
    }
}

impl Drop for ReplicaPool {
    fn drop(&mut self) {
        if let Some(task) = &self.discovery {
            task.abort();
        }
        for entry in self.shared.replicas().values() {
            entry.probe.abort();
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
