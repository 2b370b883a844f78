//! `commissaire-service NAME`: one worker kind (or all of them) as its own process, for the
//! scaled-out shape — several of them and any number of `commissaire-server`s share one etcd
//! (state, leases) and one Redis (job streams).
//!
//! Configuration, as in the original's services: `/etc/commissaire/NAME.conf` (JSON) or
//! `-c FILE`; when `ETCD_MACHINES` is set, etcd key `/commissaire/config/NAME` is read first
//! (`ETCD_TLSPEM`, `ETCD_TLSKEY`, `ETCD_CACERT` for TLS). Flags override both. `-` and `_` are
//! the same in keys.
//!
//! NAME `storage` publishes the change feed to the bus: every store change in revision order
//! to the stream `<exchange>:events`, one publisher at a time (lease), resuming after the last
//! published revision; entry ids are `<revision>-<index>`, so nothing is published twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use store::SharedStore;
use store::secrets::Sealer;
use tokio::sync::watch;
use workers::bus::{Bus, RedisSource};
use workers::coordinator::Coordinator;
use workers::driver::{JobSource, WorkerKind};

use crate::config::{self, EtcdHandler, PluginConfig};

/// Command line of `commissaire-service`.
#[derive(Debug, Parser)]
#[command(
    name = "commissaire-service",
    version,
    about = "Runs Commissaire workers as their own process (the scaled-out shape)",
    after_help = "NAME: investigator, watcher, clusterexec, containermgr, storage, or all.\n\
                  Example: commissaire-service watcher --bus-uri redis://127.0.0.1:6379/ \\\n  \
                  --storage-handler etcd:server_url=http://127.0.0.1:2379 --secrets-key-file /var/lib/commissaire/secrets.key"
)]
pub struct ServiceCli {
    /// Which worker to run.
    pub name: String,
    /// Configuration file (default `/etc/commissaire/NAME.conf` when it exists).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Redis URI of the bus (`redis://host:port/db`).
    #[arg(long)]
    pub bus_uri: Option<String>,
    /// Prefix of the bus's stream names.
    #[arg(long)]
    pub bus_exchange: Option<String>,
    /// `etcd:server_url=URL[,certificate_path=..,certificate_key_path=..,certificate_ca_path=..]`.
    #[arg(long)]
    pub storage_handler: Option<String>,
    /// The server's secrets master key (to open host credentials).
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
    /// Serve `/metrics` and `/status` of this process on HOST:PORT.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds between watcher rounds.
    #[arg(long)]
    pub watcher_interval: Option<f64>,
    /// Operator overrides of the bootstrap templates.
    #[arg(long)]
    pub templates_dir: Option<PathBuf>,
    /// This process's id among the workers (default: host name and process id).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Seconds this process's lease outlives it.
    #[arg(long)]
    pub lease_ttl: Option<i64>,
    /// Seconds between scans of the store for work no job announced.
    #[arg(long)]
    pub resync: Option<f64>,
    /// Debug logging.
    #[arg(long)]
    pub debug: bool,
}

/// A service's validated configuration.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Worker kinds to run.
    pub kinds: Vec<WorkerKind>,
    /// Whether to publish the change feed.
    pub storage: bool,
    /// The name given.
    pub name: String,
    /// Redis bus.
    pub bus_uri: Option<String>,
    /// Stream name prefix.
    pub bus_exchange: String,
    /// The etcd store.
    pub etcd: EtcdHandler,
    /// Secrets key file.
    pub secrets_key_file: Option<PathBuf>,
    /// Metrics/status listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Watcher interval.
    pub watcher_interval: Duration,
    /// Template overrides.
    pub templates_dir: Option<PathBuf>,
    /// Worker id.
    pub worker_id: String,
    /// Lease TTL in seconds.
    pub lease_ttl: i64,
    /// Time between scans of the store.
    pub resync: Duration,
    /// Log filter.
    pub logging: String,
    /// Keys accepted but not (fully) used, one message each naming the key and why.
    pub warnings: Vec<String>,
}

const KNOWN: &[&str] = &[
    "bus_uri",
    "bus_exchange",
    "storage_handlers",
    "logging",
    "debug",
    "secrets_key_file",
    "metrics_listen",
    "watcher_interval",
    "templates_dir",
    "worker_id",
    "lease_ttl",
    "resync",
];

/// Reads `/commissaire/config/NAME` from the etcd named by `ETCD_MACHINES` (`None` when the
/// variable is unset or the key is absent).
async fn config_from_etcd(name: &str) -> anyhow::Result<Option<Map<String, Value>>> {
    let Ok(machines) = std::env::var("ETCD_MACHINES") else {
        return Ok(None);
    };
    for var in ["ETCD_USERNAME", "ETCD_PASSWORD"] {
        if std::env::var_os(var).is_some() {
            bail!(
                "{var}: etcd user authentication is not supported; use client certificates (ETCD_TLSPEM, ETCD_TLSKEY, ETCD_CACERT)"
            );
        }
    }
    let h = EtcdHandler {
        server_urls: machines.split(',').map(|u| u.trim().to_string()).collect(),
        certificate_path: std::env::var_os("ETCD_TLSPEM").map(PathBuf::from),
        certificate_key_path: std::env::var_os("ETCD_TLSKEY").map(PathBuf::from),
        certificate_ca_path: std::env::var_os("ETCD_CACERT").map(PathBuf::from),
    };
    let s = crate::open_etcd(&h).await.context("ETCD_MACHINES")?;
    let key = format!("config/{name}");
    let Some(kv) = s
        .get(&key)
        .await
        .with_context(|| format!("reading /commissaire/{key}"))?
    else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => bail!("/commissaire/{key} in etcd is not a JSON object"),
    }
}

impl ServiceConfig {
    /// Builds the configuration: etcd (`ETCD_MACHINES`), else the file, then the flags.
    pub async fn load(cli: ServiceCli) -> anyhow::Result<ServiceConfig> {
        let (kinds, storage) = match cli.name.as_str() {
            "all" => (WorkerKind::ALL.to_vec(), true),
            "storage" => (vec![], true),
            n => match WorkerKind::parse(n) {
                Some(k) => (vec![k], false),
                None => bail!(
                    "{n:?} is not a service; use investigator, watcher, clusterexec, containermgr, storage or all"
                ),
            },
        };
        let file = match config_from_etcd(&cli.name).await? {
            Some(m) => m,
            None => match &cli.config {
                Some(p) => config::read_file(p).map_err(anyhow::Error::msg)?,
                None => {
                    let p = PathBuf::from(format!("/etc/commissaire/{}.conf", cli.name));
                    if p.exists() {
                        config::read_file(&p).map_err(anyhow::Error::msg)?
                    } else {
                        Map::new()
                    }
                }
            },
        };
        let mut cfg = ServiceConfig {
            kinds,
            storage,
            name: cli.name.clone(),
            bus_uri: None,
            bus_exchange: "commissaire".into(),
            etcd: EtcdHandler {
                server_urls: vec![],
                certificate_path: None,
                certificate_key_path: None,
                certificate_ca_path: None,
            },
            secrets_key_file: None,
            metrics_listen: None,
            watcher_interval: Duration::from_secs(60),
            templates_dir: None,
            worker_id: default_worker_id(&cli.name),
            lease_ttl: 10,
            resync: workers::RESYNC,
            logging: "info".into(),
            warnings: vec![],
        };
        let mut handlers: Vec<PluginConfig> = vec![];
        let mut custodia_warned = false;
        let mut debug = false;
        let mut logging = None;
        for (raw, v) in file {
            let key = raw.replace('-', "_");
            let bad = |m: &str| anyhow::anyhow!("{raw}: {m}");
            match key.as_str() {
                "bus_uri" => {
                    cfg.bus_uri = Some(config::as_str(&raw, &v).map_err(anyhow::Error::msg)?)
                }
                "bus_exchange" => {
                    cfg.bus_exchange = config::as_str(&raw, &v).map_err(anyhow::Error::msg)?
                }
                "storage_handlers" => {
                    handlers = config::parse_plugins(&raw, &v).map_err(anyhow::Error::msg)?
                }
                "logging" => {
                    let spec = config::logging::parse(&raw, &v).map_err(anyhow::Error::msg)?;
                    cfg.warnings.extend(spec.warning);
                    logging = Some(spec.filter);
                }
                k if k.starts_with("custodia_") => {
                    if !custodia_warned {
                        custodia_warned = true;
                        cfg.warnings.push(format!(
                            "{raw}: accepted and not used: host credentials are sealed in the store with the secrets master key (secrets_key_file); there is no Custodia"
                        ));
                    }
                }
                "debug" => debug = config::as_bool(&raw, &v).map_err(anyhow::Error::msg)?,
                "secrets_key_file" => {
                    cfg.secrets_key_file =
                        Some(config::as_str(&raw, &v).map_err(anyhow::Error::msg)?.into())
                }
                "metrics_listen" => {
                    cfg.metrics_listen = Some(
                        config::as_str(&raw, &v)
                            .map_err(anyhow::Error::msg)?
                            .parse()
                            .map_err(|_| {
                                bad("must be HOST:PORT with an IP address, e.g. 127.0.0.1:9200")
                            })?,
                    )
                }
                "watcher_interval" => {
                    cfg.watcher_interval = seconds(v.as_f64())
                        .ok_or_else(|| bad("must be a number of seconds between 1 and 86400"))?
                }
                "templates_dir" => {
                    cfg.templates_dir =
                        Some(config::as_str(&raw, &v).map_err(anyhow::Error::msg)?.into())
                }
                "worker_id" => {
                    cfg.worker_id = config::as_str(&raw, &v).map_err(anyhow::Error::msg)?
                }
                "lease_ttl" => {
                    cfg.lease_ttl = v
                        .as_i64()
                        .filter(|t| (2..=300).contains(t))
                        .ok_or_else(|| bad("must be a number of seconds between 2 and 300"))?
                }
                "resync" => {
                    cfg.resync = seconds(v.as_f64())
                        .ok_or_else(|| bad("must be a number of seconds between 1 and 86400"))?
                }
                _ => bail!("{raw}: unknown key (known keys: {})", KNOWN.join(", ")),
            }
        }
        if let Some(s) = cli.storage_handler {
            handlers = vec![
                config::parse_plugin_arg("--storage-handler", &s).map_err(anyhow::Error::msg)?,
            ];
        }
        let (etcd, storage_warnings) =
            config::parse_storage(handlers).map_err(anyhow::Error::msg)?;
        cfg.warnings.extend(storage_warnings);
        cfg.etcd = match etcd {
            Some(h) => h,
            None => bail!(
                "storage_handlers: commissaire-service needs an etcd storage handler (e.g. --storage-handler etcd:server_url=http://127.0.0.1:2379): the embedded store cannot be shared between processes"
            ),
        };
        if let Some(u) = cli.bus_uri {
            cfg.bus_uri = Some(u);
        }
        if let Some(x) = cli.bus_exchange {
            cfg.bus_exchange = x;
        }
        if let Some(p) = cli.secrets_key_file {
            cfg.secrets_key_file = Some(p);
        }
        if let Some(a) = cli.metrics_listen {
            cfg.metrics_listen = Some(a);
        }
        if let Some(w) = cli.watcher_interval {
            cfg.watcher_interval = seconds(Some(w)).ok_or_else(|| {
                anyhow::anyhow!(
                    "--watcher-interval: must be a number of seconds between 1 and 86400"
                )
            })?;
        }
        if let Some(r) = cli.resync {
            cfg.resync = seconds(Some(r)).ok_or_else(|| {
                anyhow::anyhow!("--resync: must be a number of seconds between 1 and 86400")
            })?;
        }
        if let Some(t) = cli.templates_dir {
            cfg.templates_dir = Some(t);
        }
        if let Some(id) = cli.worker_id {
            cfg.worker_id = id;
        }
        if let Some(t) = cli.lease_ttl {
            if !(2..=300).contains(&t) {
                bail!("--lease-ttl: must be a number of seconds between 2 and 300");
            }
            cfg.lease_ttl = t;
        }
        if cfg.worker_id.is_empty() || cfg.worker_id.contains('/') {
            bail!("worker_id: must be non-empty and contain no '/'");
        }
        cfg.logging =
            logging.unwrap_or_else(|| if debug || cli.debug { "debug" } else { "info" }.into());
        let needs_key = cfg.kinds.iter().any(|k| *k != WorkerKind::Containermgr);
        if needs_key && cfg.secrets_key_file.is_none() {
            bail!(
                "secrets_key_file: required by {} (the server's secrets master key, to open host credentials)",
                cfg.name
            );
        }
        if let Some(p) = &cfg.secrets_key_file
            && !p.is_file()
        {
            bail!(
                "secrets_key_file: {} does not exist; give the key file of the server (it seals the hosts' SSH keys)",
                p.display()
            );
        }
        Ok(cfg)
    }
}

fn seconds(v: Option<f64>) -> Option<Duration> {
    v.filter(|s| s.is_finite() && (1.0..=86400.0).contains(s))
        .map(Duration::from_secs_f64)
}

fn default_worker_id(name: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{name}-{}", std::process::id())
}

/// Runs a service until SIGTERM/SIGINT.
pub async fn run(cfg: ServiceConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.logging)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::log_colour_here())
        .try_init();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let _ = crate::api::ops::prometheus();
    let store = crate::open_etcd(&cfg.etcd).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let bus = match &cfg.bus_uri {
        Some(u) => Some(Bus::new(u, &cfg.bus_exchange).map_err(anyhow::Error::msg)?),
        None => {
            tracing::warn!(
                "no bus-uri: this process finds its work by scanning the store only (jobs from the API reach it at the next scan)"
            );
            None
        }
    };
    let mut kinds = cfg.kinds.clone();
    let coord = Coordinator::etcd(
        store.clone(),
        cfg.worker_id.clone(),
        kinds.clone(),
        cfg.lease_ttl,
        shutdown_rx.clone(),
    )
    .await;
    let sealer = match &cfg.secrets_key_file {
        Some(p) => Arc::new(Sealer::load_or_create(p).map_err(anyhow::Error::msg)?),
        // Only the container-manager worker runs without it; it never opens host credentials.
        None => Arc::new(
            Sealer::load_or_create(
                &std::env::temp_dir()
                    .join(format!("commissaire-unused-{}.key", std::process::id())),
            )
            .map_err(anyhow::Error::msg)?,
        ),
    };
    let templates =
        workers::Templates::load(cfg.templates_dir.as_deref()).map_err(anyhow::Error::msg)?;
    let jobs = Arc::new(workers::JobQueue::new());
    let ctx = Arc::new(workers::Ctx {
        store: store.clone(),
        sealer,
        jobs: jobs.clone(),
        cfg: workers::WorkerConfig {
            watcher_interval: cfg.watcher_interval,
            templates,
            // The URL only: the store's client credentials never go to hosts.
            etcd: Some(workers::EtcdInfo {
                server_url: cfg.etcd.server_urls[0].clone(),
            }),
            ssh: remote::Timeouts {
                connect: Duration::from_secs(15),
                command: Duration::from_secs(600),
            },
            resync: cfg.resync,
        },
        status: Arc::default(),
        shutdown: shutdown_rx.clone(),
        server_id: cfg.worker_id.clone(),
        coord,
        drivers: Arc::default(),
    });
    let mut handles = Vec::new();
    match &bus {
        // Jobs the workers themselves raise (the watcher re-queues recovered hosts) go on the
        // bus like the API's.
        Some(b) => handles.push(tokio::spawn(workers::bus::forward_jobs(
            b.clone(),
            jobs.clone(),
            shutdown_rx.clone(),
        ))),
        None => {
            let started = workers::start(ctx.clone()).await;
            kinds.clear();
            handles.extend(started);
        }
    }
    for kind in kinds {
        let source: Box<dyn JobSource> = match (&bus, kind) {
            (_, WorkerKind::Watcher) => Box::new(workers::driver::NoJobs),
            (Some(b), k) => Box::new(RedisSource::new(b.clone(), k, &cfg.worker_id)),
            (None, _) => Box::new(workers::driver::NoJobs),
        };
        handles.push(workers::start_kind(ctx.clone(), kind, source));
    }
    if cfg.storage {
        match &bus {
            Some(b) => handles.push(tokio::spawn(publish_changes(
                store.clone(),
                b.clone(),
                ctx.coord.clone(),
                shutdown_rx.clone(),
            ))),
            None => bail!(
                "bus_uri: the storage service publishes the change feed on the bus; configure bus_uri"
            ),
        }
    }
    if let Some(addr) = cfg.metrics_listen {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("metrics_listen {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("metrics_listen {addr}"))?;
        if !addr.ip().is_loopback() {
            tracing::warn!(address = %addr, "metrics_listen is not a loopback address: its /metrics and /status answer without credentials (/status names the hosts and clusters of the last jobs and errors); keep it on a management network");
        }
        let app = status_router(ctx.clone(), bus.clone(), cfg.name.clone());
        // The same bounds as the API's listener, fixed: a scraper needs a few connections,
        // and nobody may hold one open without sending a request.
        let limits = crate::limits::LimitAcceptor::new(
            METRICS_MAX_CONNECTIONS,
            METRICS_IDLE_TIMEOUT,
            METRICS_HEADER_READ_TIMEOUT,
        );
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp(listener)
            .with_context(|| format!("metrics_listen {addr}"))?
            .acceptor(limits)
            .handle(handle.clone());
        crate::bound_headers(&mut server, METRICS_HEADER_READ_TIMEOUT);
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            let _ = rx.changed().await;
            handle.graceful_shutdown(Some(Duration::from_secs(2)));
        });
        handles.push(tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        }));
    }
    tracing::info!(service = %cfg.name, worker_id = %cfg.worker_id, "service running");
    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(handles)).await;
    Ok(())
}

/// Connections the metrics listener serves at once; more are closed at once.
const METRICS_MAX_CONNECTIONS: usize = 64;
/// A metrics connection that moves no byte for this long is closed.
const METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A client has this long to send its request's headers (and its first byte).
const METRICS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn status_router(ctx: Arc<workers::Ctx>, bus: Option<Arc<Bus>>, name: String) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async { crate::api::ops::prometheus().render() }),
        )
        .route(
            "/status",
            get(move || {
                let (ctx, bus, name) = (ctx.clone(), bus.clone(), name.clone());
                async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    let store_ok = ctx.store.health().await.is_ok();
                    let bus_ok = match &bus {
                        Some(b) => Some(b.ping().await.is_ok()),
                        None => None,
                    };
                    let mut workers = Map::new();
                    let mut stuck_workers = Vec::new();
                    let now = std::time::Instant::now();
                    let shutting_down = *ctx.shutdown.borrow();
                    for kind in WorkerKind::ALL {
                        let s = ctx.drivers.of(kind);
                        // Only the kinds this process runs.
                        if s.progress().started.is_none() {
                            continue;
                        }
                        let (mut v, stuck) =
                            crate::api::ops::worker_status(s, now, shutting_down, true);
                        if stuck {
                            stuck_workers.push(kind.as_str());
                        }
                        v["ok"] = s.ok.load(Relaxed).into();
                        v["errors"] = s.errors.load(Relaxed).into();
                        v["jobs"] = s.jobs.load(Relaxed).into();
                        v["resyncs"] = s.resyncs.load(Relaxed).into();
                        workers.insert(kind.as_str().into(), v);
                    }
                    axum::Json(json!({
                        "status": if !store_ok { "unavailable" } else if stuck_workers.is_empty() { "ok" } else { "degraded" },
                        "stuck_workers": stuck_workers,
                        "service": name,
                        "worker_id": ctx.coord.id(),
                        "store": if store_ok { "ok" } else { "unreachable" },
                        "bus": bus_ok.map(|ok| if ok { "ok" } else { "unreachable" }),
                        "workers": workers,
                        "watcher_checks_last_round": ctx.status.watcher_last_checked.load(Relaxed),
                        "watcher_rounds": ctx.status.watcher_rounds.load(Relaxed),
                    }))
                }
            }),
        )
}

/// The lease-held key of the change-feed publisher.
const PUBLISHER: &str = "storage/publisher";

/// Publishes every store change to `<exchange>:events`, while this process holds the
/// publisher role; resumes after the last entry in the stream.
async fn publish_changes(
    store: SharedStore,
    bus: Arc<Bus>,
    coord: Arc<Coordinator>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let attempt = async {
            if !coord.claim(PUBLISHER).await? {
                return Ok::<(), anyhow::Error>(());
            }
            publish_while_owner(&store, &bus, &coord).await
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            r = attempt => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "change-feed publisher interrupted; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn publish_while_owner(
    store: &SharedStore,
    bus: &Bus,
    coord: &Coordinator,
) -> anyhow::Result<()> {
    let stream = bus.events_stream();
    let (last_rev, last_idx) = bus.last_event_id(&stream).await?;
    tracing::info!(stream = %stream, after = last_rev, "publishing the change feed");
    let mut changes = store.watch("", Some(last_rev.max(1))).await?;
    let mut checked = tokio::time::Instant::now();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), changes.next()).await;
        if checked.elapsed() >= Duration::from_secs(2) {
            checked = tokio::time::Instant::now();
            if !coord.still_owner(PUBLISHER).await? {
                tracing::warn!("no longer the change-feed publisher");
                return Ok(());
            }
        }
        let batch = match next {
            Err(_) => continue,
            Ok(None) => bail!("the store's change stream ended"),
            Ok(Some(b)) => b?,
        };
        let mut idx = 0u64;
        for e in batch {
            let Some((kind, name)) = crate::api::events::classify(&e.key) else {
                continue;
            };
            let this = idx;
            idx += 1;
            if e.revision < last_rev
                || (e.revision == last_rev && last_idx.is_some_and(|l| this <= l))
            {
                continue;
            }
            let action = match (e.kind, e.created) {
                (store::EventKind::Delete, _) => "deleted",
                (store::EventKind::Put, true) => "created",
                (store::EventKind::Put, false) => "updated",
            };
            let object = e
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                .unwrap_or(Value::Null);
            let body = json!({"revision": e.revision, "kind": kind, "action": action, "name": name, "object": object});
            bus.publish_event(&stream, e.revision, this, &body.to_string())
                .await?;
        }
    }
}
