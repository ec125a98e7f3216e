//! `inferd gateway`: loads no weights. Each model of the catalog is served through its
//! `[[model.backend]]` list (upstream replicas, then Bedrock) by a
//! [`PolicyBackend`](crate::backend::policy::PolicyBackend); the API layer is the same as
//! `inferd serve`'s. Needs no Kubernetes API access: replicas come from DNS.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;

use crate::backend::bedrock::BedrockBackend;
use crate::backend::policy::{PolicyBackend, Route};
use crate::backend::upstream::{ReplicaPool, UpstreamBackend};
use crate::backend::{Backend, ModelCard};
use crate::cli::ServeArgs;
use crate::config::gateway::BackendSpec;
use crate::config::{self, Catalog};
use crate::serve::run_api;
use crate::telemetry::metrics::Metrics;

/// How often the replicas-ready gauge is refreshed.
const GAUGE_REFRESH: Duration = Duration::from_millis(500);

/// Runs the `gateway` role until a shutdown signal and the drain complete.
pub async fn gateway(args: ServeArgs) -> anyhow::Result<()> {
    let catalog = config::load_catalog(&args.models)?;
    let metrics = Metrics::new();
    let policies = build(&catalog, &metrics).await?;
    spawn_gauges(&policies, &metrics);
    let backends = policies
        .into_iter()
        .map(|(id, policy)| (id, policy as Arc<dyn Backend>))
        .collect();
    run_api(&args, backends, metrics).await
}

/// One routing policy per model. Models whose replica tables name the same discovery
/// share one pool (one set of probes and breakers per replica).
pub async fn build(
    catalog: &Catalog,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<BTreeMap<String, Arc<PolicyBackend>>> {
    let mut pools: HashMap<String, Arc<ReplicaPool>> = HashMap::new();
    let mut policies = BTreeMap::new();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for spec in &catalog.models {
        if spec.backends.is_empty() {
            bail!(
                "{}: model {:?} has no [[model.backend]] tables: `inferd gateway` has nowhere \
                 to send it",
                catalog.source_path.display(),
                spec.id
            );
        }
        let card = ModelCard {
            id: spec.id.clone(),
            owned_by: "inferd".into(),
            created,
            max_model_len: spec.limits.max_model_len.unwrap_or(0),
        };
        let mut routes = Vec::with_capacity(spec.backends.len());
        for backend in &spec.backends {
            routes.push(match backend {
                BackendSpec::Replicas(replicas) => {
                    let key = format!("{:?}", replicas.discovery);
                    let pool = pools
                        .entry(key)
                        .or_insert_with(|| ReplicaPool::start(&pool_name(replicas), replicas))
                        .clone();
                    Route::Replicas {
                        upstream: Arc::new(UpstreamBackend::new(card.clone(), pool, replicas)),
                        spec: replicas.clone(),
                    }
                }
                BackendSpec::Bedrock(bedrock) => Route::Direct(Arc::new(
                    BedrockBackend::new(&spec.id, bedrock, metrics.clone()).await,
                )),
            });
        }
        tracing::info!(model = %spec.id, backends = routes.len(), "gateway model configured");
        policies.insert(
            spec.id.clone(),
            Arc::new(PolicyBackend::new(card, routes, metrics.clone())),
        );
    }
    Ok(policies)
}

fn pool_name(spec: &crate::config::gateway::ReplicaSpec) -> String {
    match &spec.discovery {
        crate::config::gateway::Discovery::Dns { host, port, .. } => format!("{host}:{port}"),
        crate::config::gateway::Discovery::Static(addrs) => addrs.join(","),
    }
}

/// Keeps `inferd:gateway_replicas_ready` current.
fn spawn_gauges(policies: &BTreeMap<String, Arc<PolicyBackend>>, metrics: &Arc<Metrics>) {
    let policies: Vec<_> = policies
        .iter()
        .map(|(id, p)| (id.clone(), p.clone()))
        .collect();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_REFRESH);
        loop {
            tick.tick().await;
            for (id, policy) in &policies {
                metrics
                    .gateway()
                    .set_replicas_ready(id, policy.replicas_ready());
            }
        }
    });
}
