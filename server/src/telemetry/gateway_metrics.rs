//! The gateway's own families: the demand it sees, so that KEDA can scale the GPU pool
//! from zero (`inferd:gateway_demand` is non-zero while requests wait or are served
//! elsewhere), what it holds, where it falls back, and what Bedrock could not honour.
//! Registered on the process's one registry next to the engine's families.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub mod names {
    pub const GATEWAY_DEMAND: &str = "inferd:gateway_demand";
    pub const GATEWAY_HELD: &str = "inferd:gateway_requests_held";
    pub const GATEWAY_FALLBACKS: &str = "inferd:gateway_fallbacks";
    pub const GATEWAY_REPLICAS_READY: &str = "inferd:gateway_replicas_ready";
    pub const BEDROCK_DROPPED_PARAMS: &str = "inferd:bedrock_dropped_params";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    model_name: String,
    /// The backend kind that served instead (`bedrock`, ...).
    to: String,
    /// Why: `no_ready_replica`, `hold_timeout`, `hold_full`, `replicas_failed`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParamLabels {
    model_name: String,
    param: String,
}

/// Gateway families. Per request, not per token: label sets are built on the fly.
#[derive(Debug)]
pub struct GatewayMetrics {
    demand: Family<ModelLabel, Gauge>,
    held: Family<ModelLabel, Gauge>,
    fallbacks: Family<FallbackLabels, Counter>,
    replicas_ready: Family<ModelLabel, Gauge>,
    dropped_params: Family<ParamLabels, Counter>,
}

impl GatewayMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        fn family<F: Clone + prometheus_client::registry::Metric + Default>(
            registry: &mut Registry,
            name: &str,
            help: &str,
        ) -> F {
            let f = F::default();
            registry.register(name, help, f.clone());
            f
        }
        GatewayMetrics {
            demand: family(
                registry,
                names::GATEWAY_DEMAND,
                "Requests in flight at the gateway, held or served by any backend (scale-from-zero signal)",
            ),
            held: family(
                registry,
                names::GATEWAY_HELD,
                "Requests held while no replica is ready",
            ),
            fallbacks: family(
                registry,
                names::GATEWAY_FALLBACKS,
                "Requests served by a later backend than the first, by target and reason",
            ),
            replicas_ready: family(
                registry,
                names::GATEWAY_REPLICAS_READY,
                "Upstream replicas ready to take requests",
            ),
            dropped_params: family(
                registry,
                names::BEDROCK_DROPPED_PARAMS,
                "Request fields Bedrock cannot honour that were dropped (unsupported_params = \"drop\")",
            ),
        }
    }

    fn model(model: &str) -> ModelLabel {
        ModelLabel {
            model_name: model.to_owned(),
        }
    }

    /// The demand gauge of a model (inc on arrival, dec when the response ends).
    pub fn demand(&self, model: &str) -> Gauge {
        self.demand.get_or_create_owned(&Self::model(model))
    }

    /// The held-requests gauge of a model.
    pub fn held(&self, model: &str) -> Gauge {
        self.held.get_or_create_owned(&Self::model(model))
    }

    pub fn set_replicas_ready(&self, model: &str, ready: usize) {
        self.replicas_ready
            .get_or_create(&Self::model(model))
            .set(ready as i64);
    }

    pub fn inc_fallback(&self, model: &str, to: &str, reason: &str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                model_name: model.to_owned(),
                to: to.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn inc_bedrock_dropped_param(&self, model: &str, param: &str) {
        self.dropped_params
            .get_or_create(&ParamLabels {
                model_name: model.to_owned(),
                param: param.to_owned(),
            })
            .inc();
    }
}
