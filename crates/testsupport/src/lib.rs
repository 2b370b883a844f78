//! Test helpers shared by the Commissaire crates.
//!
//! [`EtcdServer`] runs a real, throw-away etcd (Debian package `etcd-server`, 3.4) on loopback
//! with its data in a temporary directory, so store and server tests exercise the genuine
//! protocol rather than a mock. Each server gets its own free ports, so tests can run in
//! parallel.
//!
//! [`fakekube::FakeKube`] is a fake Kubernetes API server (HTTPS on loopback, real paths, verbs,
//! JSON shapes and status codes) for tests of the Kubernetes client.
#![warn(missing_docs)]

pub mod fakekeystone;
pub mod fakekube;
pub mod pki;
pub mod redis;
pub mod sshd;
pub mod testbed;

pub use testbed::{Testbed, TestbedOptions};

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian's `etcd-server` package installs the server.
const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a freshly spawned etcd may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `stop` waits after SIGTERM before resorting to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
/// released). Another process may grab it in between; callers that spawn servers on it should
/// be ready to retry.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A single-member etcd cluster on 127.0.0.1, owned by one test.
///
/// The process is killed (by PID) when the value is dropped, and its data directory removed.
/// Output goes to `etcd.log` inside the temporary directory; its tail is included in the panic
/// message when the server does not come up.
#[derive(Debug)]
pub struct EtcdServer {
    /// Holds the data directory and the log file; removed on drop.
    dir: TempDir,
    /// Port serving gRPC and HTTP (`/health`) to clients.
    client_port: u16,
    /// Raft peer port (unused by a one-member cluster, but etcd must listen somewhere).
    peer_port: u16,
    /// The running process, `None` while stopped.
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a fresh etcd on free loopback ports and waits (at most 20 s) until it reports
    /// healthy.
    ///
    /// # Panics
    ///
    /// When `/usr/bin/etcd` is missing, or the server does not become healthy in time.
    pub fn start() -> EtcdServer {
        if !Path::new(ETCD_BIN).exists() {
            panic!(
                "etcd not found: install Debian package etcd-server (apt-get install etcd-server)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("commissaire-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let mut server = EtcdServer {
            dir,
            client_port: 0,
            peer_port: 0,
            child: None,
        };
        // A port found free can be taken by someone else before etcd binds it: retry with new
        // ports a few times instead of failing the test on that race.
        let mut last_error = String::new();
        for _ in 0..3 {
            server.client_port = free_port();
            server.peer_port = free_port();
            while server.peer_port == server.client_port {
                server.peer_port = free_port();
            }
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.kill();
                    // Start over with an empty data directory.
                    let _ = std::fs::remove_dir_all(server.data_dir());
                }
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The temporary directory holding the data directory and `etcd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is currently running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within 5 s. The data
    /// directory is kept so that [`EtcdServer::restart`] brings back the same data.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the PID of a child we spawned and have not yet reaped, so
        // the PID cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Restarts a stopped (or running) server on the same ports with the same data directory,
    /// and waits until it is healthy again.
    ///
    /// # Panics
    ///
    /// When the server does not come back within 20 s.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            self.kill();
            panic!("etcd did not restart: {e}");
        }
    }

    /// Compacts the key-value history up to `revision` (through etcd's JSON gateway), so
    /// tests can check how a watch from an older revision fails.
    ///
    /// # Panics
    ///
    /// When etcd does not accept the request.
    pub fn compact(&self, revision: i64) {
        let body = format!("{{\"revision\":\"{revision}\",\"physical\":true}}");
        let (status, text) = self
            .http("POST", "/v3/kv/compaction", &body)
            .unwrap_or_else(|e| panic!("compaction request failed: {e}"));
        assert_eq!(status, 200, "compaction to {revision} refused: {text}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// SIGKILL by PID and reap, for drop and failed starts.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open etcd.log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open etcd.log: {e}"))?;
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let name = format!("test{}", self.client_port);
        let child = Command::new(ETCD_BIN)
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot spawn {ETCD_BIN}: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}; {}", self.log_tail()));
            }
            if let Ok((200, body)) = self.http("GET", "/health", "")
                && body.contains("\"health\":\"true\"")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd not healthy after {} s; {}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP/1.1 request to the client port with a plain TCP stream; returns the status code
    /// and the body.
    fn http(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let timeout = Duration::from_secs(2);
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| "malformed HTTP response".to_string())?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_path().display())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // By PID only: never by process name, other tests run their own etcd.
        self.kill();
    }
}
