//! The Commissaire REST server: `/api/v0` on a real store.
//!
//! [`run`] is the whole program behind the `commissaire-server` binary: it loads the
//! configuration, opens the store (embedded SQLite or etcd), sets up authentication, and
//! serves HTTP or HTTPS until SIGTERM/SIGINT. [`app`] builds the router alone, for tests.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod error;
pub mod fleet_metrics;
pub mod limits;
pub mod openapi;
pub mod service;
pub mod state;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use store::SharedStore;
use store::secrets::Sealer;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{Authenticator, Plugin};
use crate::config::{Config, LogFormat};
use crate::error::ApiError;
use crate::state::{AppState, JobQueue, WorkerStatus};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Turns any error response that is not already our JSON (axum rejections, 405, 413) into the
/// API's error body, so clients always get `{"error": {...}}`.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .unwrap_or_default();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} is not allowed on {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body is larger than the limit of {BODY_LIMIT} bytes")
        }
        StatusCode::NOT_FOUND => format!("no such route: {method} {path}"),
        _ if !text.trim().is_empty() => text.trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let mut new = ApiError::new(status, message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            new.headers_mut().insert(k.clone(), v.clone());
        }
    }
    new
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no such route: {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// Builds the complete HTTP application.
pub fn app(state: AppState, auth: Arc<Authenticator>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = api::router()
        .merge(openapi::docs_router())
        .route("/metrics", axum::routing::get(api::ops::metrics_route))
        .fallback(not_found)
        .with_state(state);
    let api = api
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(auth, auth::layer))
        .layer(middleware::from_fn(ui::no_browser_prompt))
        .layer(middleware::from_fn(api::ops::track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    // The dashboard's static files are outside authentication: they hold no data.
    ui::router().merge(api)
}

/// Whether log lines may carry ANSI colour codes: only when they go to a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string (<https://no-color.org>). Escape
/// codes in a file or a pipe are noise that log shippers and `grep` trip over.
pub fn log_colour(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// [`log_colour`] for this process's standard output and environment.
pub fn log_colour_here() -> bool {
    use std::io::IsTerminal;
    log_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn init_logging(cfg: &Config) {
    let filter = cfg
        .logging
        .clone()
        .unwrap_or_else(|| if cfg.debug { "debug" } else { "info" }.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_colour_here());
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Opens the configured store.
pub async fn open_store(cfg: &Config) -> anyhow::Result<SharedStore> {
    match &cfg.etcd {
        Some(h) => open_etcd(h).await,
        None => {
            let path = cfg.data_dir.join("store.db");
            let s = store::sqlite::SqliteStore::open(&path)
                .with_context(|| format!("opening the embedded store {}", path.display()))?;
            Ok(Arc::new(s))
        }
    }
}

/// Opens an etcd store.
pub async fn open_etcd(h: &config::EtcdHandler) -> anyhow::Result<SharedStore> {
    let ecfg = store::etcd::EtcdConfig {
        endpoints: h.server_urls.clone(),
        ca_path: h.certificate_ca_path.clone(),
        cert_path: h.certificate_path.clone(),
        key_path: h.certificate_key_path.clone(),
        ..Default::default()
    };
    let s = store::etcd::EtcdStore::connect(ecfg)
        .await
        .context("configuring the etcd store")?;
    Ok(Arc::new(s))
}

fn create_data_dir(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !cfg.data_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.data_dir)
            .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    }
    Ok(())
}

fn build_auth(cfg: &Config) -> anyhow::Result<Authenticator> {
    if cfg.insecure_no_auth {
        tracing::warn!(
            "running WITHOUT authentication (insecure-no-auth): anyone who can reach the port controls every host"
        );
        return Ok(Authenticator::new(vec![], cfg.self_auths.clone()));
    }
    let mut plugins = cfg
        .authentication_plugins
        .iter()
        .map(|p| {
            Plugin::from_config(
                p,
                cfg.tls_pemfile.is_some() && cfg.tls_clientverifyfile.is_some(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if plugins.is_empty() {
        let (path, created) =
            auth::ensure_admin_users_file(&cfg.data_dir).map_err(anyhow::Error::msg)?;
        if let Some(pw) = created {
            // Shown once, deliberately not through the logger (log files are kept and shipped;
            // this must not be). Standard error, so standard output stays pure log lines
            // (every one JSON with --log-format json).
            eprintln!(
                "\nCreated {} with user \"admin\" and password:\n\n    {pw}\n\nThis password is shown only once. Use it with HTTP basic auth, e.g.\n    curl -u admin:{pw} http://{}:{}/api/v0/clusters\n",
                path.display(),
                cfg.listen_interface,
                cfg.listen_port
            );
        } else {
            tracing::info!(users_file = %path.display(), "using the generated users file (user admin)");
        }
        let mut opts = serde_json::Map::new();
        opts.insert(
            "filepath".into(),
            serde_json::Value::String(path.display().to_string()),
        );
        plugins.push(Plugin::Basic(
            auth::BasicAuth::from_options(&opts).map_err(anyhow::Error::msg)?,
        ));
    }
    Ok(Authenticator::new(plugins, cfg.self_auths.clone()))
}

fn tls_config(cfg: &Config) -> anyhow::Result<Option<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(pem) = &cfg.tls_pemfile else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem)
        .with_context(|| format!("tls-pemfile {}: cannot read", pem.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls-pemfile {}: bad certificate", pem.display()))?;
    if certs.is_empty() {
        bail!(
            "tls-pemfile {}: no certificate found; the file must hold the server's PEM certificate chain and its private key (docs/tls.md shows how to make them)",
            pem.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(pem)
        .with_context(|| {
            format!(
                "tls-pemfile {}: no private key found; append the certificate's key (PEM) to the file, e.g. cat server.pem server-key.pem > bundle.pem (docs/tls.md)",
                pem.display()
            )
        })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &cfg.tls_clientverifyfile {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("tls-clientverifyfile {}: cannot read", ca.display()))?
            {
                roots
                    .add(c.with_context(|| {
                        format!("tls-clientverifyfile {}: bad certificate", ca.display())
                    })?)
                    .with_context(|| format!("tls-clientverifyfile {}", ca.display()))?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
            // With httpauthclientcert stacked with other plugins, a client without a
            // certificate may still log in another way (a certificate it does send must
            // verify). Otherwise tls-clientverifyfile requires one, as it always did.
            let is_cert =
                |p: &config::PluginConfig| auth::short_name(&p.name) == "httpauthclientcert";
            let plugins = &cfg.authentication_plugins;
            if plugins.iter().any(is_cert) && plugins.iter().any(|p| !is_cert(p)) {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .with_context(|| format!("tls-clientverifyfile {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut sc = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("tls-pemfile {}: key does not match", pem.display()))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(sc))
}

/// This server's stable id, kept in `DATA_DIR/server.id` so that after a restart it resumes the
/// operations it owned at once instead of waiting for their heartbeat to go stale.
fn server_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("server.id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = format!(
        "{}-{}",
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "server".into()),
        uuid::Uuid::new_v4()
    );
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Time to live of this process's etcd lease: how long after a crash its operations and
/// watcher share pass to the others.
const LEASE_TTL_SECONDS: i64 = 10;

/// Seeds the `default` network and the membership records of clusters written by older
/// versions, retrying in the background while the store is unreachable.
fn seed(store: SharedStore) {
    tokio::spawn(async move {
        for attempt in 0..600u32 {
            let seeded = async {
                domain::networks::seed_default(store.as_ref()).await?;
                domain::clusters::backfill_memberships(store.as_ref()).await
            };
            match seeded.await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(
                            records = n,
                            "membership records written for existing clusters"
                        );
                    }
                    return;
                }
                Err(e) => {
                    if attempt == 0 {
                        tracing::warn!(error = %e, "cannot seed the default network yet; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Waits for SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Sets hyper's bound on receiving request headers. On HTTP/1 it also bounds the wait for the
/// next request of a keep-alive connection (that wait is a header read), so idle keep-alive
/// and slowloris clients are both dropped after it.
pub(crate) fn bound_headers<A: axum_server::Address, Acc>(
    server: &mut axum_server::Server<A, Acc>,
    timeout: Duration,
) {
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// Runs the server with already-parsed configuration until a shutdown signal.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(&cfg);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    create_data_dir(&cfg)?;
    let sealer = Sealer::load_or_create(&cfg.secrets_key_file).map_err(anyhow::Error::msg)?;
    kube::trusted::configure(cfg.trusted_files_dir.as_deref()).map_err(anyhow::Error::msg)?;
    api::events::configure(api::events::FeedLimits {
        max_subscribers: cfg.max_event_subscribers,
        // Keep-alive comments must come well within the idle timeout, or a quiet feed would
        // be cut as idle.
        keep_alive: (cfg.idle_timeout / 3).min(Duration::from_secs(15)),
        ..api::events::FeedLimits::default()
    });
    let store = fleet_metrics::timed(open_store(&cfg).await?);
    let auth = Arc::new(build_auth(&cfg)?.with_store(store.clone()));
    let tls = tls_config(&cfg)?;
    seed(store.clone());
    let templates =
        workers::Templates::load(cfg.templates_dir.as_deref()).map_err(anyhow::Error::msg)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sealer = Arc::new(sealer);
    let jobs = Arc::new(JobQueue::new());
    let worker_status = Arc::new(WorkerStatus::default());
    let server_id = server_id(&cfg.data_dir)?;
    // The recorder goes in before the workers start, so their first measurements count.
    let _ = api::ops::prometheus();
    let bus = match (&cfg.bus_uri, store.backend_name()) {
        (Some(uri), "etcd") => {
            Some(workers::bus::Bus::new(uri, &cfg.bus_exchange).map_err(anyhow::Error::msg)?)
        }
        (Some(_), backend) => {
            tracing::warn!(
                backend,
                "bus-uri is not used: the embedded store cannot be shared between processes, so this server runs every worker itself"
            );
            None
        }
        (None, _) => None,
    };
    let drivers: Arc<workers::DriverStatsByKind> = Arc::default();
    let worker_handles = match &bus {
        // Scaled out: the commissaire-service processes do the work; jobs go on the bus.
        Some(b) => {
            tracing::info!("workers run in commissaire-service processes; jobs go on the bus");
            vec![tokio::spawn(workers::bus::forward_jobs(
                b.clone(),
                jobs.clone(),
                shutdown_rx.clone(),
            ))]
        }
        None => {
            // On etcd several processes may share the work: ownership and shards go through leases.
            let coord = if store.backend_name() == "etcd" {
                workers::coordinator::Coordinator::etcd(
                    store.clone(),
                    server_id.clone(),
                    workers::driver::WorkerKind::ALL.to_vec(),
                    LEASE_TTL_SECONDS,
                    shutdown_rx.clone(),
                )
                .await
            } else {
                workers::coordinator::Coordinator::local(server_id.clone())
            };
            let ctx = Arc::new(workers::Ctx {
                store: store.clone(),
                sealer: sealer.clone(),
                jobs: jobs.clone(),
                cfg: workers::WorkerConfig {
                    watcher_interval: cfg.watcher_interval,
                    templates,
                    // The URL only: the server's etcd client credentials never go to hosts.
                    etcd: cfg.etcd.as_ref().map(|h| workers::EtcdInfo {
                        server_url: h.server_urls[0].clone(),
                    }),
                    ssh: remote::Timeouts {
                        connect: Duration::from_secs(15),
                        command: Duration::from_secs(600),
                    },
                    resync: workers::RESYNC,
                },
                status: worker_status.clone(),
                shutdown: shutdown_rx.clone(),
                server_id,
                coord,
                drivers: drivers.clone(),
            });
            workers::start(ctx).await
        }
    };
    let state = AppState {
        bus,
        drivers,
        domain: domain::Domain::new(store.clone(), sealer.clone(), jobs.clone()),
        store: store.clone(),
        sealer,
        jobs,
        workers: worker_status,
        shutdown: shutdown_rx,
    };
    let app = app(state, auth);
    // A host name listens on the first address it resolves to (IPv4 first): one socket, as
    // the original's server had (docs/configuration.md).
    let ips = config::resolve_listen(&cfg.listen_interface).map_err(anyhow::Error::msg)?;
    if ips.len() > 1 {
        tracing::info!(
            listen_interface = %cfg.listen_interface,
            resolved = ?ips,
            "listen-interface resolves to several addresses; listening on the first"
        );
    }
    let addr = SocketAddr::new(ips[0], cfg.listen_port);
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
        h2.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(
        address = %addr,
        tls = tls.is_some(),
        store = store.backend_name(),
        data_dir = %cfg.data_dir.display(),
        "commissaire-server listening"
    );
    let svc = app.into_make_service_with_connect_info::<SocketAddr>();
    let limits = limits::LimitAcceptor::new(
        cfg.max_connections,
        cfg.idle_timeout,
        cfg.header_read_timeout,
    );
    match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(limits)
                .handle(handle);
            bound_headers(&mut server, cfg.header_read_timeout);
            server.serve(svc).await?
        }
        Some(sc) => {
            let rc = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(sc));
            // The socket is counted and idle-bounded before the handshake, which itself has
            // the header-read bound.
            let acceptor = auth::clientcert::PeerCertAcceptor::new(
                axum_server::tls_rustls::RustlsAcceptor::new(rc)
                    .handshake_timeout(cfg.header_read_timeout)
                    .acceptor(limits),
            );
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle);
            bound_headers(&mut server, cfg.header_read_timeout);
            server.serve(svc).await?
        }
    }
    for h in worker_handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    tracing::info!("stopped");
    Ok(())
}
