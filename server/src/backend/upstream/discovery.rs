//! Where replica addresses come from: a fixed list, or the A/AAAA records of a Kubernetes
//! headless Service, re-resolved every `refresh`. The Service publishes only ready pods,
//! so every address is a replica; the gateway needs DNS only, no Kubernetes API access.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::pool::Shared;
use crate::config::gateway::Discovery;

/// How the pool's replica set must change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// The change from `current` to `discovered` (both sorted, so the result is too).
pub(crate) fn reconcile(current: &BTreeSet<String>, discovered: &BTreeSet<String>) -> Diff {
    Diff {
        added: discovered.difference(current).cloned().collect(),
        removed: current.difference(discovered).cloned().collect(),
    }
}

/// Fills the pool and, for DNS, keeps it in step; the task (if any) runs until aborted.
pub(crate) fn start(shared: Arc<Shared>, discovery: &Discovery) -> Option<JoinHandle<()>> {
    match discovery {
        Discovery::Static(addrs) => {
            shared.reconcile(&addrs.iter().cloned().collect());
            None
        }
        Discovery::Dns {
            host,
            port,
            refresh,
        } => Some(tokio::spawn(dns_loop(
            shared,
            host.clone(),
            *port,
            (*refresh).max(Duration::from_millis(10)),
        ))),
    }
}

/// Resolves `host:port` every `refresh`. A failed or empty answer keeps the last set:
/// its replicas' probes say whether they still serve.
async fn dns_loop(shared: Arc<Shared>, host: String, port: u16, refresh: Duration) {
    let mut ticks = tokio::time::interval(refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let answer = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|addrs| addrs.map(|a| a.to_string()).collect::<BTreeSet<_>>());
        let problem = match answer {
            Ok(addrs) if !addrs.is_empty() => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!(%host, port, replicas = addrs.len(), "replica DNS lookup works again");
                }
                shared.reconcile(&addrs);
                continue;
            }
            Ok(_) => "no addresses".to_owned(),
            Err(error) => error.to_string(),
        };
        // Expected while the pool is scaled to zero: warn once per outage, not per refresh.
        if std::mem::replace(&mut failing, true) {
            tracing::debug!(%host, port, %problem, "replica DNS lookup failed; keeping the last set");
        } else {
            tracing::warn!(%host, port, %problem, "replica DNS lookup failed; keeping the last set");
        }
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
