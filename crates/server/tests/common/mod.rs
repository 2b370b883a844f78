//! Harness for the server's integration tests: runs the real `commissaire-server` binary as a
//! child process on a loopback port, on the embedded SQLite store or on a throw-away etcd, and
//! talks to it over real HTTP.
//!
//! * [`Env`] owns a temporary directory (data directories, users file, SSH keys, logs) and,
//!   for the etcd backend, its own [`EtcdServer`].
//! * [`Server`] is one server process. Its stdout and stderr go to a log file in the temporary
//!   directory; the tail of that log is printed when a test fails while the server is alive.
//!   The process is killed by PID (SIGKILL) when the value is dropped.
//! * [`Server::get`], [`Server::put`], ... send authenticated requests with a timeout and return
//!   a [`Resp`] (status, headers, text, parsed JSON) for the assertion helpers
//!   [`expect_status`] and [`expect_error`].
//! * [`EventReader`] reads the Server-Sent Events change feed, parsing `id:`/`data:` lines.
//! * [`both_backends!`] turns `async fn scenario(backend: Backend)` into two tests,
//!   `scenario::sqlite` and `scenario::etcd`.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tempfile::TempDir;
use testsupport::{EtcdServer, free_port};

/// The user the harness writes into `users.json`.
pub const USER: &str = "tester";
/// Its password.
pub const PASSWORD: &str = "s3cret-test-pass";
/// Bound on every ordinary request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a server start (until `/api/v0/status` answers 200).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the background investigation of a new host (SSH connect timeout is 15 s).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The store a server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite store in the data directory.
    Sqlite,
    /// A real etcd on loopback.
    Etcd,
}

/// Runs `async fn $name(backend: Backend)` once per backend, as `$name::sqlite` and
/// `$name::etcd`.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn etcd() {
                    super::$name($crate::common::Backend::Etcd).await;
                }
            }
        )*
    };
}

/// Installs the process-wide rustls crypto provider (reqwest is built without one).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How a server authenticates clients.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `--authentication-plugin httpbasicauth:filepath=<users.json>` with [`USER`]/[`PASSWORD`].
    Basic(PathBuf),
    /// No plugin and no `--insecure-no-auth`: the secure default (generated admin password).
    Generated,
}

/// Everything needed to (re)start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--storage-handler etcd:server_url=...` when set.
    pub etcd_url: Option<String>,
    /// `--secrets-key-file` when set.
    pub secrets_key_file: Option<PathBuf>,
    /// Authentication set-up.
    pub auth: Auth,
    /// Where stdout and stderr go (appended).
    pub log_path: PathBuf,
    /// Address to listen on (`127.0.0.1` unless a test needs its testbed hosts to reach it).
    pub listen: String,
    /// More flags; a `--watcher-interval` here replaces the harness's default (one day, so
    /// the watcher stays out of API tests).
    pub extra_args: Vec<String>,
    /// Serve HTTPS: the server's certificate bundle, the CA the harness's client trusts, and
    /// optionally the CA client certificates are verified against.
    pub tls: Option<TlsOptions>,
}

/// HTTPS for a test server.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// `--tls-pemfile` (certificate and key).
    pub pemfile: PathBuf,
    /// The CA that signed it (trusted by the harness's client).
    pub ca: PathBuf,
    /// `--tls-clientverifyfile`, when set.
    pub client_ca: Option<PathBuf>,
}

/// A test's working area: temporary directory, optional etcd, generated keys.
pub struct Env {
    /// The backend servers of this environment use.
    pub backend: Backend,
    /// The etcd of an etcd environment.
    pub etcd: Option<EtcdServer>,
    dir: TempDir,
}

impl Env {
    /// A fresh environment; starts an etcd for [`Backend::Etcd`].
    pub fn new(backend: Backend) -> Env {
        init();
        let dir = tempfile::Builder::new()
            .prefix("commissaire-server-test-")
            .tempdir()
            .expect("create a temporary directory");
        let etcd = match backend {
            Backend::Sqlite => None,
            Backend::Etcd => Some(EtcdServer::start()),
        };
        let users = dir.path().join("users.json");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hash");
        std::fs::write(
            &users,
            serde_json::json!({ USER: { "hash": hash } }).to_string(),
        )
        .expect("write users.json");
        Env { backend, etcd, dir }
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The users file written for [`Auth::Basic`].
    pub fn users_file(&self) -> PathBuf {
        self.dir().join("users.json")
    }

    /// The etcd URL of an etcd environment.
    pub fn etcd_url(&self) -> Option<String> {
        self.etcd.as_ref().map(EtcdServer::url)
    }

    /// Options for a server with basic auth, data in `<tmp>/<name>`, on this environment's
    /// backend.
    pub fn options(&self, name: &str) -> ServerOptions {
        ServerOptions {
            data_dir: self.dir().join(name),
            etcd_url: self.etcd_url(),
            secrets_key_file: None,
            auth: Auth::Basic(self.users_file()),
            log_path: self.dir().join(format!("{name}.log")),
            listen: "127.0.0.1".to_string(),
            extra_args: Vec::new(),
            tls: None,
        }
    }

    /// Starts the usual server: basic auth, data directory `<tmp>/data`.
    pub async fn server(&self) -> Server {
        Server::start(self.options("data")).await
    }

    /// Generates an SSH private key of the given kind (with `ssh-keygen`) in the temporary
    /// directory.
    pub fn key(&self, kind: KeyKind) -> Key {
        generate_key(&self.dir().join("keys"), kind)
    }

    /// An etcd store handle on this environment's etcd (default prefix `/commissaire/`).
    pub async fn etcd_store(&self) -> store::etcd::EtcdStore {
        let url = self.etcd_url().expect("an etcd environment");
        store::etcd::EtcdStore::connect(store::etcd::EtcdConfig {
            endpoints: vec![url],
            ..Default::default()
        })
        .await
        .expect("connect to etcd")
    }
}

/// One running `commissaire-server` process.
pub struct Server {
    /// The options it was started with (for restarts).
    pub opts: ServerOptions,
    /// Its port.
    pub port: u16,
    /// `http://<listen address>:<port>`.
    pub base: String,
    /// Credentials sent with every request (`None`: none sent).
    pub creds: Option<(String, String)>,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Server {
    /// Starts the binary and waits until `/api/v0/status` answers 200 (and, when credentials
    /// are known, until the `default` network has been seeded). Panics with the server log when
    /// it does not come up within [`READY_TIMEOUT`].
    pub async fn start(opts: ServerOptions) -> Server {
        init();
        let mut last = String::new();
        // A port found free may be taken before the server binds it: retry with a new one.
        for _ in 0..3 {
            let port = free_port();
            let mut server = Server::spawn(opts.clone(), port);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) if e.contains("cannot listen") || e.contains("in use") => {
                    last = e;
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("server did not start: {last}");
    }

    fn spawn(opts: ServerOptions, port: u16) -> Server {
        if let Some(parent) = opts.log_path.parent() {
            std::fs::create_dir_all(parent).expect("create the log directory");
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&opts.log_path)
            .expect("open the server log");
        let log_err = log.try_clone().expect("clone the log handle");
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}:{port}", opts.listen);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-server"));
        cmd.arg("--no-config-file")
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .args(["-i", opts.listen.as_str(), "-p"])
            .arg(port.to_string());
        // One watcher round at start, the next a day later: the watcher never touches the
        // hosts a test creates.
        if !opts.extra_args.iter().any(|a| a == "--watcher-interval") {
            cmd.args(["--watcher-interval", "86400"]);
        }
        cmd.args(&opts.extra_args);
        if let Some(tls) = &opts.tls {
            cmd.arg("--tls-pemfile").arg(&tls.pemfile);
            if let Some(ca) = &tls.client_ca {
                cmd.arg("--tls-clientverifyfile").arg(ca);
            }
        }
        let creds = match &opts.auth {
            Auth::Basic(users) => {
                cmd.arg("--authentication-plugin")
                    .arg(format!("httpbasicauth:filepath={}", users.display()));
                Some((USER.to_string(), PASSWORD.to_string()))
            }
            Auth::Generated => None,
        };
        if let Some(url) = &opts.etcd_url {
            cmd.arg("--storage-handler")
                .arg(format!("etcd:server_url={url}"));
        }
        if let Some(k) = &opts.secrets_key_file {
            cmd.arg("--secrets-key-file").arg(k);
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_err)
            .spawn()
            .expect("spawn commissaire-server");
        // Drain stdout in a thread: into the log file, and kept for tests that read it.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stdout.take().expect("piped stdout");
        let lines = stdout.clone();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                lines.lock().unwrap().push(line);
            }
        });
        // No connection reuse: the server rightly closes a connection after refusing an
        // oversized body, and a pooled client could pick that connection for the next request
        // just as it closes (a transport error that is the test's, not the server's).
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0);
        if let Some(tls) = &opts.tls {
            let pem = std::fs::read(&tls.ca).expect("read the test CA");
            builder = builder.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(&pem).expect("the test CA is PEM"),
            );
        }
        let client = builder.build().expect("reqwest client");
        Server {
            opts,
            port,
            base,
            creds,
            child: Some(child),
            stdout,
            client,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/api/v0/status", self.base);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "commissaire-server exited with {status} before answering\n{}",
                    self.log_tail(60)
                ));
            }
            let r = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == 200
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "commissaire-server did not answer GET /api/v0/status with 200 within {} s\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(60)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.creds.is_some() {
            self.wait_seeded(deadline).await?;
        }
        Ok(())
    }

    /// Waits until the `default` network exists (seeded in the background at start-up), so
    /// that tests comparing store revisions do not see the seeding write.
    pub async fn wait_seeded(&self, deadline: Instant) -> Result<(), String> {
        loop {
            let r = self.get("/network/default").await;
            if r.status == 200 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the default network was not seeded in time (last answer {r:?})\n{}",
                    self.log_tail(60)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after 10 s; waits for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of our own child, not yet reaped, so not reused.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Every stdout line read so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.opts.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ---\n{}\n---",
            self.opts.log_path.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    /// The full URL of an `/api/v0` path (`/clusters` → `http://.../api/v0/clusters`).
    pub fn url(&self, api_path: &str) -> String {
        format!("{}/api/v0{api_path}", self.base)
    }

    /// A request to an `/api/v0` path with the server's credentials and the usual timeout.
    pub fn request(&self, method: Method, api_path: &str) -> reqwest::RequestBuilder {
        self.request_url(method, &self.url(api_path))
    }

    /// A request to any URL with the server's credentials and the usual timeout.
    pub fn request_url(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, url).timeout(REQUEST_TIMEOUT);
        match &self.creds {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// The underlying client (no credentials, no per-request timeout).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and collects the answer; panics on transport errors.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let req = rb.build().expect("build the request");
        let what = format!("{} {}", req.method(), req.url().path());
        let r =
            self.client.execute(req).await.unwrap_or_else(|e| {
                panic!("{what}: transport error: {e:?}\n{}", self.log_tail(30))
            });
        Resp::read(what, r).await
    }

    /// `GET /api/v0<path>`.
    pub async fn get(&self, api_path: &str) -> Resp {
        self.send(self.request(Method::GET, api_path)).await
    }

    /// `PUT /api/v0<path>` with a JSON body.
    pub async fn put(&self, api_path: &str, body: Value) -> Resp {
        self.send(
            self.request(Method::PUT, api_path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// `PUT /api/v0<path>` with raw bytes. A body over the 1 MiB limit goes over a plain TCP
    /// stream: the server rightly answers 413 and closes without reading the rest, and an HTTP
    /// client still writing then reports a broken pipe instead of the answer it was sent.
    pub async fn put_raw(&self, api_path: &str, body: impl Into<Vec<u8>>) -> Resp {
        let body = body.into();
        if body.len() > 1024 * 1024 && self.base.starts_with("http://") {
            return self.put_over_tcp(api_path, RawBody::Sized(body)).await;
        }
        self.send(
            self.request(Method::PUT, api_path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// `PUT /api/v0<path>` with a chunked body (no Content-Length) of `chunks` chunks of
    /// `size` spaces, over a plain TCP stream for the same reason as [`Server::put_raw`].
    pub async fn put_chunked_raw(&self, api_path: &str, chunks: usize, size: usize) -> Resp {
        assert!(
            self.base.starts_with("http://"),
            "put_chunked_raw needs plain HTTP"
        );
        self.put_over_tcp(api_path, RawBody::Chunked(chunks, size))
            .await
    }

    async fn put_over_tcp(&self, api_path: &str, body: RawBody) -> Resp {
        use base64::Engine;
        use std::io::Read;
        let addr = self.base.trim_start_matches("http://").to_string();
        let path = format!("/api/v0{api_path}");
        let auth = self.creds.as_ref().map(|(u, p)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let what = format!("PUT {path}");
        let raw = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(&addr)?;
            stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            let framing = match &body {
                RawBody::Sized(b) => format!("Content-Length: {}", b.len()),
                RawBody::Chunked(..) => "Transfer-Encoding: chunked".to_string(),
            };
            let head = format!(
                "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{framing}\r\n{}Connection: close\r\n\r\n",
                auth.unwrap_or_default()
            );
            stream.write_all(head.as_bytes())?;
            // The server may stop reading once it has decided: a failed write is expected.
            let _ = match body {
                RawBody::Sized(b) => stream.write_all(&b),
                RawBody::Chunked(n, size) => (|| {
                    let chunk = vec![b' '; size];
                    for _ in 0..n {
                        stream.write_all(format!("{size:x}\r\n").as_bytes())?;
                        stream.write_all(&chunk)?;
                        stream.write_all(b"\r\n")?;
                    }
                    stream.write_all(b"0\r\n\r\n")
                })(),
            };
            let mut out = Vec::new();
            let _ = stream.read_to_end(&mut out);
            Ok(String::from_utf8_lossy(&out).into_owned())
        })
        .await
        .expect("raw request task")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{what}: no HTTP status in {raw:?}"));
        let (head, text) = raw
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_string(), b.to_string()))
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                    reqwest::header::HeaderValue::from_str(v.trim()),
                )
            {
                headers.append(k, v);
            }
        }
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            what,
            status,
            headers,
            text,
            json,
        }
    }

    /// `DELETE /api/v0<path>`.
    pub async fn delete(&self, api_path: &str) -> Resp {
        self.send(self.request(Method::DELETE, api_path)).await
    }

    /// Waits until the background investigation of a new host is over (its status is neither
    /// `investigating` nor `bootstrapping`) and returns the host. Tests use loopback addresses,
    /// where the SSH connection fails at once, so the host soon settles as `failed`; tests that
    /// compare store revisions wait for this first so that they measure only their own writes.
    pub async fn settle_host(&self, address: &str) -> Value {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let r = self.get(&format!("/host/{address}")).await;
            let h = expect_status(&r, 200);
            let status = h["status"].as_str().unwrap_or("");
            if status != "investigating" && status != "bootstrapping" {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "host {address} still {status} after {} s",
                SETTLE_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Server::settle_host`] for every host.
    pub async fn settle_hosts(&self) {
        let hosts = expect_status(&self.get("/hosts").await, 200);
        for h in hosts.as_array().expect("a list of hosts") {
            self.settle_host(h["address"].as_str().expect("address"))
                .await;
        }
    }

    /// The store revision reported by `/api/v0/status`, less one per audit record: every
    /// change request (and every refused one) writes its audit record in a transaction of its
    /// own, so this is the revision as far as everything but the audit log goes — what tests
    /// of "this request wrote nothing" compare. (The audit log is only pruned beyond 10 000
    /// records, which no test writes.)
    pub async fn revision(&self) -> i64 {
        let rev = self.store_revision().await;
        let audit = self.get("/audit?limit=10000").await;
        let records = expect_status(&audit, 200).as_array().map_or(0, Vec::len);
        rev - records as i64
    }

    /// The store revision reported by `/api/v0/status` as it is (change-feed ids are store
    /// revisions). The newest revision after a change request is its audit record, which the
    /// feed does not carry; the change itself is the revision before.
    pub async fn store_revision(&self) -> i64 {
        let r = self.get("/status").await;
        let v = expect_status(&r, 200);
        v["store"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no store.revision in {r:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
        }
        // By PID only: other tests run their own servers.
        self.kill();
    }
}

/// An HTTP answer.
pub struct Resp {
    /// `METHOD /path` of the request, for messages.
    pub what: String,
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body text.
    pub text: String,
    /// Body parsed as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Resp {
    /// Reads a whole answer.
    pub async fn read(what: String, r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e:?}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            what,
            status,
            headers,
            text,
            json,
        }
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.text.clone();
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        write!(f, "{} -> {} {}", self.what, self.status, text)
    }
}

/// Reads from `conn` until the server closes it (EOF or error): `false` if it is still open
/// at `deadline`. An answer (a 408, say) may come before the close.
pub async fn closed_by_server(
    mut conn: tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Asserts the status and returns the JSON body.
#[track_caller]
pub fn expect_status(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "unexpected status: {r:?}");
    r.json.clone()
}

/// Asserts an error answer: the status, a JSON body `{"error": {"status", "message"}}` and a
/// message containing `needle` (case-insensitive).
#[track_caller]
pub fn expect_error(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "unexpected status: {r:?}");
    assert!(
        r.content_type().starts_with("application/json"),
        "error body is not JSON: {r:?}"
    );
    let e = &r.json["error"];
    assert_eq!(
        e["status"].as_u64(),
        Some(u64::from(status)),
        "error.status differs: {r:?}"
    );
    let msg = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message: {r:?}"));
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error message {msg:?} does not mention {needle:?} ({})",
        r.what
    );
}

/// Kinds of SSH private key the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// OpenSSH format Ed25519.
    Ed25519,
    /// PEM (`-m PEM`) RSA 2048.
    RsaPem,
    /// OpenSSH format ECDSA P-256.
    Ecdsa,
    /// Ed25519 protected by a passphrase.
    Ed25519Passphrase,
}

/// A private key file: its text and the base64 (standard, no newlines) of the file.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key file's text.
    pub text: String,
    /// Base64 of the file, as `ssh_priv_key` wants it.
    pub b64: String,
}

impl Key {
    /// Distinctive fragments that must never appear in clear in the store, events or listings:
    /// the base64 of the file, a slice of it, and each line of the key's body.
    pub fn secret_fragments(&self) -> Vec<String> {
        let mut out = vec![self.b64.clone()];
        let mid = self.b64.len() / 2;
        out.push(self.b64[mid..mid + 40].to_string());
        out.extend(
            self.text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 24)
                .map(str::to_string),
        );
        out
    }
}

/// Generates a key with `ssh-keygen` into `dir`.
pub fn generate_key(dir: &Path, kind: KeyKind) -> Key {
    std::fs::create_dir_all(dir).expect("create the key directory");
    let path = dir.join(format!(
        "{kind:?}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-C", "commissaire-test"]);
    match kind {
        KeyKind::Ed25519 => cmd.args(["-t", "ed25519", "-N", ""]),
        KeyKind::RsaPem => cmd.args(["-m", "PEM", "-t", "rsa", "-b", "2048", "-N", ""]),
        KeyKind::Ecdsa => cmd.args(["-t", "ecdsa", "-b", "256", "-N", ""]),
        KeyKind::Ed25519Passphrase => cmd.args(["-t", "ed25519", "-N", "a passphrase"]),
    };
    let out = cmd
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (Debian package openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("read the generated key");
    Key {
        b64: b64(text.as_bytes()),
        text,
    }
}

/// Standard base64 without newlines.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// A reader of `GET /api/v0/events`.
pub struct EventReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl EventReader {
    /// Opens the feed, optionally resuming after `last_event_id`. Panics unless it answers 200
    /// `text/event-stream`.
    pub async fn open(server: &Server, last_event_id: Option<&str>) -> EventReader {
        EventReader::open_path(server, "/events", last_event_id).await
    }

    /// [`EventReader::open`] on an `/api/v0` path with a query, e.g.
    /// `/events?last_event_id=12`.
    pub async fn open_path(
        server: &Server,
        api_path: &str,
        last_event_id: Option<&str>,
    ) -> EventReader {
        // No total timeout on a stream: each read is bounded instead.
        let mut rb = server
            .client()
            .get(server.url(api_path))
            .header("accept", "text/event-stream");
        if let Some((u, p)) = &server.creds {
            rb = rb.basic_auth(u, Some(p));
        }
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, rb.send())
            .await
            .unwrap_or_else(|_| panic!("GET /api/v0{api_path} answers in time"))
            .unwrap_or_else(|e| panic!("GET /api/v0{api_path}: {e:?}"));
        assert_eq!(resp.status(), 200, "GET /api/v0{api_path}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            ct.starts_with("text/event-stream"),
            "events content type {ct:?}"
        );
        EventReader {
            resp,
            buf: Vec::new(),
        }
    }

    fn take_block(&mut self) -> Option<String> {
        let pos = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
        Some(String::from_utf8_lossy(&block[..pos]).replace('\r', ""))
    }

    /// The next event (keep-alive comments skipped), or `None` if none arrives within
    /// `timeout` or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(block) = self.take_block() {
                let mut ev = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => ev.id = Some(value.to_string()),
                        "event" => ev.event = Some(value.to_string()),
                        "data" => data.push(value.to_string()),
                        _ => {}
                    }
                }
                if data.is_empty() && ev.id.is_none() {
                    continue; // keep-alive
                }
                ev.data = data.join("\n");
                return Some(ev);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
            }
        }
    }

    /// Reads exactly `n` events (each within `timeout`), panicking with what arrived otherwise.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(timeout).await {
                Some(e) => out.push(e),
                None => panic!("expected {n} events, got {}: {out:#?}", out.len()),
            }
        }
        out
    }
}

/// Creates network `fs`, a flannel-server network on the testbed's gateway: clusters of testbed
/// hosts on the embedded store use it (there is no etcd for a `flannel_etcd` network; the
/// address only ends up in the hosts' flanneld configuration).
pub async fn flannel_server_network(server: &Server, tb: &testsupport::testbed::Testbed) {
    expect_status(
        &server
            .put(
                "/network/fs",
                serde_json::json!({"type": "flannel_server", "options": {"address": format!("{}:8080", tb.gateway())}}),
            )
            .await,
        201,
    );
}

impl Server {
    /// The network a plain cluster on this server's store uses: `default` on etcd; on the
    /// embedded store, where flannel cannot use the store, a `flannel_server` network `flat`
    /// (created here if missing), since a cluster on `default` is refused there.
    pub async fn usable_network(&self) -> &'static str {
        if self.opts.etcd_url.is_some() {
            return "default";
        }
        let r = self
            .put(
                "/network/flat",
                serde_json::json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}),
            )
            .await;
        expect_status(&r, 201);
        "flat"
    }

    /// The body of a plain cluster that works on this server's store (see
    /// [`Server::usable_network`]).
    pub async fn cluster_body(&self) -> Value {
        serde_json::json!({"network": self.usable_network().await})
    }
}

/// A request body sent by hand over TCP.
enum RawBody {
    /// With a Content-Length.
    Sized(Vec<u8>),
    /// Chunked: this many chunks of this many bytes.
    Chunked(usize, usize),
}
