//! `inferd serve`: load every model of the catalog, start one engine per model, serve the API
//! until SIGTERM/SIGINT, then drain.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use candle_core::{DType, Device};

use crate::api::{self, AppState};
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, ModelCard};
use crate::cli::ServeArgs;
use crate::config::{self, DeviceSpec, ModelSpec, ResolvedModel};
use crate::device::{self, ComputeDevice, DeviceError, Origin, Probe};
use crate::engine::{self, EngineConfig, ModelFacts};
use crate::model::loader::{self, LoadOptions, Loaded};
use crate::model::{CausalLm, KvCache, Model};
use crate::telemetry::metrics::Metrics;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads one model onto `device` in `dtype` (weights, activations, KV cache) and starts
/// its engine.
pub fn start_model(
    spec: &ModelSpec,
    device: &Device,
    dtype: DType,
    metrics: &Metrics,
) -> anyhow::Result<LocalBackend> {
    let path = match config::resolve(spec).with_context(|| format!("model {:?}", spec.id))? {
        ResolvedModel::Gguf(p) | ResolvedModel::SafetensorsDir(p) => p,
    };
    let started = std::time::Instant::now();
    let opts = LoadOptions {
        dequantize: spec.dequantize,
        device: device.clone(),
        dtype,
    };
    let loaded =
        loader::load(&path, &opts).with_context(|| format!("loading model {:?}", spec.id))?;
    let shape = loaded.model.shape().clone();
    let facts = model_facts(&shape, dtype, &loaded.tokenizer);
    let cfg = EngineConfig::resolve(&spec.limits, facts)
        .with_context(|| format!("model {:?}", spec.id))?;
    let cache = KvCache::new(&shape, cfg.num_blocks(), cfg.block_size(), device, dtype)?;
    let Model::CausalLm(model) = loaded.model;
    let loaded = Loaded {
        model,
        tokenizer: loaded.tokenizer,
        chat_template: loaded.chat_template,
    };
    launch(spec, &path, started, loaded, cache, cfg, metrics)
}

/// What the engine needs to know of a loaded model to size itself.
pub(crate) fn model_facts(
    shape: &crate::model::ModelShape,
    dtype: DType,
    tokenizer: &crate::model::tokenizer::ModelTokenizer,
) -> ModelFacts {
    ModelFacts {
        max_position_embeddings: shape.max_position_embeddings,
        kv_bytes_per_token: shape.kv_bytes_per_token(dtype),
        eos_token_ids: tokenizer.eos_token_ids.clone(),
    }
}

/// Starts the engine of a loaded model and its cache, and the backend in front of it.
pub(crate) fn launch(
    spec: &ModelSpec,
    path: &std::path::Path,
    started: std::time::Instant,
    loaded: Loaded<Box<dyn CausalLm>>,
    cache: KvCache,
    cfg: EngineConfig,
    metrics: &Metrics,
) -> anyhow::Result<LocalBackend> {
    let shape = loaded.model.shape().clone();
    tracing::info!(
        model = %spec.id,
        path = %path.display(),
        layers = shape.num_layers,
        vocab = shape.vocab_size,
        max_model_len = cfg.max_model_len,
        kv_tokens = cfg.num_blocks() * cfg.block_size(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let card = ModelCard {
        id: spec.id.clone(),
        owned_by: "inferd".into(),
        created: unix_now(),
        max_model_len: cfg.max_model_len,
    };
    let handle = engine::spawn(loaded.model, cache, cfg, metrics.model(&spec.id))?;
    Ok(
        LocalBackend::new(card, handle, loaded.tokenizer, loaded.chat_template)
            .with_default_deadline(spec.limits.request_timeout_secs.map(Duration::from_secs)),
    )
}

/// Where `spec` runs: `--device` when given, else its `device` key; probes the GPUs only
/// when something but `cpu` is asked for.
fn placement(
    catalog: &config::Catalog,
    spec: &ModelSpec,
    flag: Option<DeviceSpec>,
) -> Result<ComputeDevice, DeviceError> {
    let (wanted, origin) = match flag {
        Some(d) => (d, Origin::Flag),
        None => (
            spec.placement.device,
            Origin::Catalog {
                path: catalog.source_path.display().to_string(),
                model: spec.id.clone(),
            },
        ),
    };
    let probe = match wanted {
        DeviceSpec::Cpu => Probe::NotBuilt,
        _ => device::probe(),
    };
    device::resolve(wanted, &origin, &probe, device::built_compute_capability())
}

/// A model placed on a GPU, in a build without the CUDA engine: `device::resolve` never
/// yields one (it answers `NotBuilt`), so this only guards the match.
#[cfg(not(feature = "cuda"))]
fn start_on_gpu(
    spec: &ModelSpec,
    gpu: &device::GpuInfo,
    _metrics: &Metrics,
) -> anyhow::Result<LocalBackend> {
    bail!(
        "model {:?}: {gpu} was selected, but this build has no CUDA engine (build with \
         `--features cuda`)",
        spec.id
    )
}

#[cfg(feature = "cuda")]
use crate::serve_cuda::start_on_gpu;

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the `serve` role until a shutdown signal and the drain complete.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let catalog = config::load_catalog(&args.models)?;
    // On the CPU every model runs in f32 (the CPU kernels' precision).
    let (device, dtype) = (Device::Cpu, DType::F32);
    let metrics = Metrics::new();
    let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    for spec in &catalog.models {
        if spec.source.is_none() {
            bail!(
                "{}: model {:?} has no `path` or `hf`: `inferd serve` cannot load it (its \
                 [[model.backend]] tables are for `inferd gateway`)",
                catalog.source_path.display(),
                spec.id
            );
        }
        match placement(&catalog, spec, args.device)? {
            ComputeDevice::Cpu => tracing::info!(model = %spec.id, device = "cpu", "device"),
            ComputeDevice::Cuda(gpu) => {
                tracing::info!(model = %spec.id, device = %gpu, "device");
                let (spec, m) = (spec.clone(), metrics.clone());
                let backend =
                    tokio::task::spawn_blocking(move || start_on_gpu(&spec, &gpu, &m)).await??;
                let backend: Arc<dyn Backend> = Arc::new(backend);
                for card in backend.models() {
                    backends.insert(card.id.clone(), backend.clone());
                }
                continue;
            }
        }
        let spec = spec.clone();
        let dev = device.clone();
        let m = metrics.clone();
        let backend =
            tokio::task::spawn_blocking(move || start_model(&spec, &dev, dtype, &m)).await??;
        let backend: Arc<dyn Backend> = Arc::new(backend);
        for card in backend.models() {
            backends.insert(card.id.clone(), backend.clone());
        }
    }
    run_api(&args, backends, metrics).await
}

/// Serves the API over `backends` until a shutdown signal, then drains: readiness off,
/// new generations refused (503) while in-flight ones finish, up to the drain deadline.
/// Shared by both roles.
pub async fn run_api(
    args: &ServeArgs,
    backends: BTreeMap<String, Arc<dyn Backend>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let state = AppState::new(backends, metrics);
    let draining = state.draining.clone();
    let backends = state.backends.clone();
    let app = api::router(state, args.max_body_bytes);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    // Machine-readable for scripts and tests (logs go to stderr).
    println!("inferd listening on http://{addr}");
    tracing::info!(%addr, "serving");
    let drain = Duration::from_secs(args.drain_timeout_secs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Tokens go out as small writes: don't let Nagle hold them back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    });
    let mut server = tokio::spawn(server.into_future());
    tokio::select! {
        res = &mut server => {
            res??;
            return Ok(());
        }
        _ = shutdown_signal() => {}
    }
    // Readiness off and new generations refused (503) while in-flight ones finish; the
    // listener stays open meanwhile so late arrivals get a clear answer, not a refusal.
    draining.store(true, Ordering::SeqCst);
    tracing::info!(
        deadline_secs = drain.as_secs(),
        "shutdown requested: draining"
    );
    let deadline = tokio::time::Instant::now() + drain;
    let idle = async {
        while backends.values().any(|b| b.in_flight() > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout_at(deadline, idle).await.is_err() {
        tracing::warn!("drain deadline passed with generations in flight; exiting");
        return Ok(());
    }
    // Every generation is done; close the listener and let open responses flush.
    let _ = stop_tx.send(true);
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(res) => {
            res??;
            tracing::info!("drained; exiting");
        }
        Err(_) => tracing::warn!("drain deadline passed while closing connections; exiting"),
    }
    Ok(())
}
