//! End-to-end tests: the real `commctl` binary against a real `commissaire-server` (embedded
//! store, HTTP basic auth from a users file written with `commctl passhash`), plus a small fake
//! HTTP server for the rolling-operation commands and for checking request headers.
//!
//! Network rule: everything stays on loopback. Hosts are created at 127.x addresses only (the
//! server contacts a new host over SSH at once; there they fail, which is fine).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const PASSWORD: &str = "s3cret-pw";

fn commctl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_commctl"))
}

/// Newest modification time of the files the server is built from (every crate but commctl,
/// and the workspace manifests).
fn newest_server_source(workspace: &Path) -> std::time::SystemTime {
    fn walk(p: &Path, newest: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "target" || name.starts_with('.') {
                return;
            }
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(m);
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for f in ["Cargo.toml", "Cargo.lock"] {
        walk(&workspace.join(f), &mut newest);
    }
    for e in std::fs::read_dir(workspace.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name() != "commctl" {
            walk(&e.path(), &mut newest);
        }
    }
    newest
}

/// The server binary: `$COMMCTL_TEST_SERVER_BIN`, or `commissaire-server` next to `commctl`.
/// It is built (once per test process) when missing or older than its sources; a workspace
/// test run has already built it.
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("COMMCTL_TEST_SERVER_BIN") {
            return PathBuf::from(p);
        }
        let dir = commctl_bin().parent().expect("binary directory");
        let bin = dir.join("commissaire-server");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let fresh = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .is_ok_and(|built| built >= newest_server_source(&workspace));
        if fresh {
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args([
            "build",
            "--quiet",
            "-p",
            "commissaire-server",
            "--bin",
            "commissaire-server",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // A failed build fails the tests: an older binary would test code that is not there.
        match cmd.status() {
            Ok(s) if s.success() => {}
            other => panic!(
                "commissaire-server is needed by these tests and could not be built ({other:?}); \
                 see `cargo build -p commissaire-server`, or set COMMCTL_TEST_SERVER_BIN"
            ),
        }
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Bound on one commctl (or helper) run: a hung command fails its test instead of stalling the
/// suite.
const COMMCTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for `child` (stdout and stderr piped) for at most [`COMMCTL_TIMEOUT`], reading its
/// output meanwhile; kills it (by its PID) and panics with what it printed when it overruns.
fn wait_bounded(mut child: Child, what: &str) -> std::process::Output {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + COMMCTL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for commctl") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {COMMCTL_TIMEOUT:?}; it printed:\n{}\n{}",
                String::from_utf8_lossy(&out.join().unwrap_or_default()),
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A `commctl passhash` run: the hash for the users file.
fn passhash(password: &str, rounds: &str) -> String {
    let child = Command::new(commctl_bin())
        .args(["passhash", "-p", password, "-r", rounds])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run commctl passhash");
    let out = wait_bounded(child, "commctl passhash");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A running commissaire-server; killed (by its pid) when dropped.
struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[], "http", "4")
    }

    fn start_with(extra: &[&str], scheme: &str, rounds: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        let hash = passhash(PASSWORD, rounds);
        std::fs::write(
            &users,
            serde_json::to_string(&json!({"admin": {"hash": hash}})).unwrap(),
        )
        .unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut child = Command::new(server_bin())
                .arg("--no-config-file")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .arg("--authentication-plugin")
                .arg(format!("httpbasicauth:filepath={}", users.display()))
                .args(["--watcher-interval", "86400"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start commissaire-server");
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return Server {
                    child,
                    url: format!("{scheme}://127.0.0.1:{port}"),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            if attempt == 4 || !log.contains("in use") {
                panic!("commissaire-server did not start:\n{log}");
            }
        }
        unreachable!()
    }

    /// `GET /api/v0{path}` straight from the API.
    fn api_get(&self, path: &str) -> Value {
        let r = http()
            .get(format!("{}/api/v0{path}", self.url))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
    }

    fn api_status(&self, path: &str) -> u16 {
        http()
            .get(format!("{}/api/v0{path}", self.url))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until the host's investigation is over (it fails: nothing listens on :22).
    fn wait_host_settled(&self, address: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self.api_get(&format!("/host/{address}"));
            let s = h["status"].as_str().unwrap_or("").to_string();
            if s == "failed" || s == "disassociated" || s == "active" {
                return;
            }
            assert!(Instant::now() < deadline, "host {address} stayed {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // By pid, this child only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One commctl invocation's result.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    fn yaml(&self) -> Value {
        serde_norway::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not YAML ({e}): {self:#?}"))
    }
}

/// Where commctl runs: its own HOME and configuration file.
struct Env {
    home: tempfile::TempDir,
    config: Option<PathBuf>,
    path_prefix: Option<PathBuf>,
    extra_env: Vec<(String, String)>,
}

impl Env {
    /// No configuration file at all.
    fn bare() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            config: None,
            path_prefix: None,
            extra_env: vec![],
        }
    }

    /// A configuration file with `cfg` as content, named by `$COMMCTL_CONFIG`.
    fn with_config(cfg: Value) -> Env {
        let mut e = Env::bare();
        let p = e.home.path().join("commctl.json");
        std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        e.config = Some(p);
        e
    }

    /// Logged in as admin on `server`.
    fn for_server(server: &Server) -> Env {
        Env::with_config(json!({"endpoint": server.url, "username": "admin", "password": PASSWORD}))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(commctl_bin());
        c.args(args)
            .env("HOME", self.home.path())
            .env_remove("COMMCTL_CONFIG")
            .env_remove("COMMCTL_TEST_SERVER_BIN");
        if let Some(cfg) = &self.config {
            c.env("COMMCTL_CONFIG", cfg);
        }
        if let Some(p) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", p.display()));
        }
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            // A command that exits without reading its input closes the pipe: not our failure.
            let mut input = child.stdin.take().unwrap();
            let _ = input.write_all(stdin);
        }
        let out = wait_bounded(child, &format!("commctl {}", args.join(" ")));
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with_stdin(args, b"")
    }
}

/// A new ed25519 key pair in `dir`: (private key path, public key line).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "commctl-test", "-f"])
        .arg(&p)
        .status()
        .expect("ssh-keygen (OpenSSH client) is needed by the tests");
    assert!(st.success());
    let public = std::fs::read_to_string(p.with_extension("pub")).unwrap();
    // "ssh-ed25519 AAAA... comment" → without the comment.
    let line = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (p, line)
}

// ---------------------------------------------------------------------------------------------
// Real server
// ---------------------------------------------------------------------------------------------

#[test]
fn passhash_output_verifies_with_the_servers_httpbasicauth() {
    // Default cost (12), as an operator would run it.
    let server = Server::start_with(&[], "http", "12");
    let hash = std::fs::read_to_string(server.dir.path().join("users.json")).unwrap();
    assert!(hash.contains("$2b$12$"), "{hash}");
    let env = Env::for_server(&server);
    let out = env.run(&["cluster", "list"]).ok();
    assert_eq!(out.stdout.trim(), "No clusters.");
    // The password from a file and from standard input gives a hash that verifies too.
    let pwfile = env.path("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let h = env
        .run(&["passhash", "-f", pwfile.to_str().unwrap(), "-r", "4"])
        .ok();
    assert!(bcrypt::verify(PASSWORD, h.stdout.trim()).unwrap());
    let h = env.run_with_stdin(
        &["passhash", "-f", "-", "-r", "4"],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(bcrypt::verify(PASSWORD, h.ok().stdout.trim()).unwrap());
    assert_eq!(env.run(&["passhash", "-p", "x", "-r", "3"]).code, 2);
}

#[test]
fn networks_container_managers_and_clusters() {
    let server = Server::start();
    let env = Env::for_server(&server);

    // Networks
    let out = env
        .run(&[
            "network",
            "create",
            "overlay",
            "-t",
            "flannel_server",
            "-o",
            r#"{"address": "10.0.0.1:8080"}"#,
        ])
        .ok();
    assert!(
        out.stdout.contains("flannel_server") && out.stdout.contains("10.0.0.1:8080"),
        "{out:?}"
    );
    // The KEY=VALUE form, as on `container_manager create`.
    let out = env
        .run(&[
            "network",
            "create",
            "kv",
            "-t",
            "flannel_server",
            "-o",
            "address=10.0.0.2:8080",
            "--output",
            "json",
        ])
        .ok();
    assert_eq!(out.json()["options"]["address"], "10.0.0.2:8080", "{out:?}");
    let out = env.run(&["network", "create", "broken", "-t", "flannel_server"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("options.address"), "{out:?}");
    let out = env
        .run(&["network", "create", "etcdnet", "--output", "json"])
        .ok();
    assert_eq!(out.json(), server.api_get("/network/etcdnet"));
    let out = env.run(&["network", "get", "overlay", "-o", "json"]).ok();
    assert_eq!(out.json(), server.api_get("/network/overlay"));
    let out = env.run(&["network", "get", "overlay", "-o", "yaml"]).ok();
    assert_eq!(out.yaml(), server.api_get("/network/overlay"));
    let out = env.run(&["network", "get", "overlay"]).ok();
    assert!(
        out.stdout.contains("options.address") && out.stdout.contains("10.0.0.1:8080"),
        "{out:?}"
    );
    let out = env.run(&["network", "list"]).ok();
    for n in [
        "NAME",
        "default",
        "overlay",
        "kv",
        "etcdnet",
        "flannel_etcd",
    ] {
        assert!(out.stdout.contains(n), "{n}: {out:?}");
    }
    assert_eq!(
        env.run(&["network", "list", "-o", "json"]).ok().json(),
        server.api_get("/networks")
    );

    // Container managers: KEY=VALUE, KEY=@FILE and JSON options.
    let token = env.path("token");
    std::fs::write(&token, "tok-123\n").unwrap();
    let token_opt = format!("token=@{}", token.display());
    let out = env
        .run(&[
            "container_manager",
            "create",
            "-t",
            "kubernetes",
            "-o",
            "server_url=https://127.0.0.1:6443",
            "-o",
            &token_opt,
            "-o",
            r#"{"insecure_skip_tls_verify": true}"#,
            "k8s",
        ])
        .ok();
    assert!(out.stdout.contains("kubernetes"), "{out:?}");
    assert!(
        !out.stdout.contains("tok-123"),
        "secrets are not shown: {out:?}"
    );
    let api = server.api_get("/containermanager/k8s");
    assert_eq!(api["options"]["server_url"], "https://127.0.0.1:6443");
    assert_eq!(api["options"]["insecure_skip_tls_verify"], true);
    assert_eq!(
        env.run(&["container_manager", "get", "k8s", "-o", "json"])
            .ok()
            .json(),
        api
    );
    env.run(&["container-manager", "create", "-t", "trivial", "plain"])
        .ok();
    let out = env.run(&["container_manager", "list"]).ok();
    assert!(
        out.stdout.contains("k8s") && out.stdout.contains("trivial"),
        "{out:?}"
    );
    assert_eq!(
        env.run(&["container_manager", "list", "-o", "yaml"])
            .ok()
            .yaml(),
        server.api_get("/containermanagers")
    );
    let out = env.run(&["container_manager", "create", "-o", "novalue", "x"]);
    assert_eq!(out.code, 2, "{out:?}");

    // Clusters
    let out = env
        .run(&[
            "cluster",
            "create",
            "-t",
            "kubernetes",
            "-n",
            "overlay",
            "-c",
            "plain",
            "prod",
        ])
        .ok();
    assert!(
        out.stdout.contains("overlay") && out.stdout.contains("plain"),
        "{out:?}"
    );
    // The embedded store cannot back flannel: a cluster on the default network is refused,
    // and the message says what to do instead.
    let out = env.run(&["cluster", "create", "staging"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("flannel_server"), "{out:?}");
    env.run(&["cluster", "create", "-n", "overlay", "staging"])
        .ok();
    let out = env.run(&["cluster", "get", "prod"]).ok();
    for want in ["prod", "overlay", "plain", "hosts total", "hosts available"] {
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }
    assert_eq!(
        env.run(&["cluster", "get", "prod", "-o", "json"])
            .ok()
            .json(),
        server.api_get("/cluster/prod")
    );
    assert_eq!(
        env.run(&["--output", "yaml", "cluster", "get", "prod"])
            .ok()
            .yaml(),
        server.api_get("/cluster/prod")
    );
    let out = env.run(&["cluster", "list"]).ok();
    assert!(
        out.stdout.contains("prod") && out.stdout.contains("staging") && out.stdout.contains("0/0"),
        "{out:?}"
    );
    assert_eq!(
        env.run(&["cluster", "list", "-o", "json"]).ok().json(),
        json!(["prod", "staging"])
    );
    let out = env.run(&["cluster", "create", "-n", "nonet", "bad"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("network nonet does not exist"),
        "{out:?}"
    );

    // Not found: exit 3 with the server's message.
    for args in [
        &["cluster", "get", "nope"][..],
        &["network", "get", "nope"],
        &["container_manager", "get", "nope"],
        &["host", "get", "127.0.9.9"],
        &["host", "status", "127.0.9.9"],
        &["host", "list", "nope"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains("does not exist"), "{args:?}: {out:?}");
    }

    // Deletes, one line per name; a missing one makes the exit code 3.
    let out = env.run(&["cluster", "delete", "prod", "staging"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(out.stdout.contains("Deleted cluster prod."), "{out:?}");
    let out = env.run(&["network", "delete", "overlay", "ghost"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("Deleted network overlay."), "{out:?}");
    assert!(out.stderr.contains("ghost"), "{out:?}");
    let out = env
        .run(&[
            "container_manager",
            "delete",
            "k8s",
            "plain",
            "--output",
            "json",
        ])
        .ok();
    assert_eq!(out.json(), json!({"deleted": ["k8s", "plain"]}));
    assert_eq!(env.run(&["cluster", "get", "prod"]).code, 3);
    assert_eq!(env.run(&["network", "get", "overlay"]).code, 3);
    assert_eq!(
        env.run(&["container_manager", "list", "-o", "json"])
            .ok()
            .json(),
        json!([])
    );
    assert_eq!(
        env.run(&["container_manager", "list"]).ok().stdout.trim(),
        "No container managers."
    );
}

#[test]
fn hosts() {
    let server = Server::start();
    let env = Env::for_server(&server);
    let (key, _) = keypair(env.home.path(), "hostkey");
    let (other_key, other_pub) = keypair(env.home.path(), "otherkey");
    let key_s = key.to_str().unwrap();

    env.run(&[
        "network",
        "create",
        "overlay",
        "-t",
        "flannel_server",
        "-o",
        r#"{"address": "127.0.0.1:8080"}"#,
    ])
    .ok();
    env.run(&["cluster", "create", "-n", "overlay", "prod"])
        .ok();
    let out = env
        .run(&["host", "create", "127.0.5.1", key_s, "-c", "prod"])
        .ok();
    assert!(out.stdout.contains("127.0.5.1"), "{out:?}");
    // From standard input, with a remote user.
    let out = env.run_with_stdin(
        &[
            "host",
            "create",
            "127.0.5.2",
            "-",
            "-r",
            "admin",
            "--output",
            "json",
        ],
        &std::fs::read(&key).unwrap(),
    );
    assert_eq!(out.ok().json()["address"], "127.0.5.2");
    let creds = server.api_get("/host/127.0.5.2/creds");
    assert_eq!(creds["remote_user"], "admin");
    assert_eq!(
        creds["ssh_priv_key"],
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&key).unwrap())
    );
    // A public key is refused before anything is sent; a different key for an existing host
    // is the server's conflict.
    let out = env.run(&[
        "host",
        "create",
        "127.0.5.3",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("public key"), "{out:?}");
    let out = env.run(&["host", "create", "127.0.5.1", other_key.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("commctl: "), "{out:?}");
    let out = env.run(&["host", "create", "127.0.5.3", "/nonexistent/key"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/key"), "{out:?}");

    server.wait_host_settled("127.0.5.1");
    server.wait_host_settled("127.0.5.2");

    let out = env.run(&["host", "list"]).ok();
    for want in [
        "ADDRESS",
        "STATUS",
        "OS",
        "CPUS",
        "MEMORY",
        "LAST CHECK",
        "127.0.5.1",
        "127.0.5.2",
        "failed",
    ] {
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }
    assert_eq!(
        env.run(&["host", "list", "-o", "json"]).ok().json(),
        server.api_get("/hosts")
    );
    assert_eq!(
        env.run(&["host", "list", "-o", "yaml"]).ok().yaml(),
        server.api_get("/hosts")
    );
    let out = env.run(&["host", "list", "prod"]).ok();
    assert!(
        out.stdout.contains("127.0.5.1") && !out.stdout.contains("127.0.5.2"),
        "{out:?}"
    );
    assert_eq!(
        env.run(&["host", "list", "prod", "-o", "json"]).ok().json(),
        json!(["127.0.5.1"])
    );

    let out = env.run(&["host", "get", "127.0.5.1"]).ok();
    assert!(out.stdout.contains("status reason"), "{out:?}");
    assert_eq!(
        env.run(&["host", "get", "127.0.5.1", "-o", "json"])
            .ok()
            .json(),
        server.api_get("/host/127.0.5.1")
    );
    let out = env.run(&["host", "status", "127.0.5.1"]).ok();
    assert!(
        out.stdout.contains("host_only") && out.stdout.contains("failed"),
        "{out:?}"
    );
    assert_eq!(
        env.run(&["host", "status", "127.0.5.1", "-o", "yaml"])
            .ok()
            .yaml(),
        server.api_get("/host/127.0.5.1/status")
    );

    // Membership: already a member → fine; after leaving, a failed host may not join again.
    let out = env.run(&["host", "join", "127.0.5.1", "prod"]).ok();
    assert!(
        out.stdout.contains("is a member of cluster prod"),
        "{out:?}"
    );
    let out = env.run(&["host", "unjoin", "127.0.5.1", "prod"]).ok();
    assert!(
        out.stdout.contains("Host 127.0.5.1 left cluster prod."),
        "{out:?}"
    );
    assert_eq!(server.api_get("/cluster/prod/hosts"), json!([]));
    let out = env.run(&["host", "join", "127.0.5.1", "prod"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("active or disassociated"), "{out:?}");
    assert_eq!(env.run(&["host", "join", "127.0.5.1", "nope"]).code, 3);
    assert_eq!(
        env.run(&["host", "unjoin", "127.0.5.1", "prod", "--output", "json"])
            .ok()
            .json(),
        json!([])
    );

    // Host keys: none recorded (nothing answered on :22), then trusted by hand.
    if server.api_status("/host/127.0.5.1/hostkey") == 404 {
        let out = env.run(&["host", "hostkey", "127.0.5.1"]);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains("no SSH host key"), "{out:?}");
    }
    let out = env
        .run(&["host", "trust-hostkey", "127.0.5.1", &other_pub])
        .ok();
    assert!(out.stdout.contains("trusted"), "{out:?}");
    let out = env.run(&["host", "hostkey", "127.0.5.1"]).ok();
    assert!(out.stdout.contains(&other_pub), "{out:?}");
    assert!(out.stdout.contains("SHA256:"), "{out:?}");
    let out = env.run(&["host", "trust-hostkey", "127.0.5.1", "not a key"]);
    assert_eq!(out.code, 1, "{out:?}");

    let out = env.run(&["host", "delete", "127.0.5.1", "127.0.5.2"]).ok();
    assert!(
        out.stdout.contains("Deleted host 127.0.5.1.")
            && out.stdout.contains("Deleted host 127.0.5.2."),
        "{out:?}"
    );
    assert_eq!(env.run(&["host", "get", "127.0.5.1"]).code, 3);
    assert_eq!(env.run(&["host", "list"]).ok().stdout.trim(), "No hosts.");
    assert_eq!(env.run(&["host", "delete", "127.0.5.1"]).code, 3);
}

/// A fake `ssh` that records its arguments, the key file's mode and content, and the
/// known_hosts file, then exits 7.
const FAKE_SSH: &str = r#"#!/bin/sh
log="$FAKE_SSH_LOG"
printf '%s\n' "$@" > "$log.args"
key=""; kh=""; prev=""
for a in "$@"; do
  if [ "$prev" = "-i" ]; then key="$a"; fi
  case "$a" in UserKnownHostsFile=*) kh="${a#UserKnownHostsFile=}";; esac
  prev="$a"
done
stat -c %a "$key" > "$log.mode"
cat "$key" > "$log.key"
cat "$kh" > "$log.known_hosts"
printf '%s\n%s\n' "$key" "$kh" > "$log.paths"
if [ -n "$FAKE_SSH_SLEEP" ]; then exec sleep "$FAKE_SSH_SLEEP"; fi
exit 7
"#;

#[test]
fn host_ssh_uses_a_private_key_file_and_the_recorded_host_key() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let mut env = Env::for_server(&server);
    let bin = env.path("fakebin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("ssh"), FAKE_SSH).unwrap();
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = env.path("ssh-log");
    env.path_prefix = Some(bin);
    env.extra_env
        .push(("FAKE_SSH_LOG".into(), log.display().to_string()));
    let logf = |ext: &str| PathBuf::from(format!("{}.{ext}", log.display()));

    let (key, _) = keypair(env.home.path(), "k");
    let (_, host_pub) = keypair(env.home.path(), "hostid");
    env.run(&[
        "host",
        "create",
        "127.0.5.3",
        key.to_str().unwrap(),
        "-r",
        "core",
    ])
    .ok();
    env.run(&["host", "create", "127.0.5.4", key.to_str().unwrap()])
        .ok();
    server.wait_host_settled("127.0.5.3");
    server.wait_host_settled("127.0.5.4");
    env.run(&["host", "trust-hostkey", "127.0.5.3", &host_pub])
        .ok();

    // Recorded key: strict checking against exactly that key.
    let out = env.run(&["host", "ssh", "127.0.5.3", "-p", "2222", "--", "uptime"]);
    assert_eq!(out.code, 7, "ssh's exit code is passed on: {out:?}");
    assert!(out.stderr.contains("Calling ssh"), "{out:?}");
    assert_eq!(std::fs::read_to_string(logf("mode")).unwrap().trim(), "600");
    assert_eq!(
        std::fs::read(logf("key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(logf("known_hosts")).unwrap(),
        format!("127.0.5.3 {host_pub}\n")
    );
    let args: Vec<String> = std::fs::read_to_string(logf("args"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    assert!(
        has("StrictHostKeyChecking=yes") && has("HostKeyAlias=127.0.5.3"),
        "{args:?}"
    );
    let l = args.iter().position(|a| a == "-l").unwrap();
    assert_eq!(args[l + 1], "core");
    assert_eq!(
        &args[args.len() - 4..],
        ["-p", "2222", "127.0.5.3", "uptime"],
        "{args:?}"
    );
    let paths = std::fs::read_to_string(logf("paths")).unwrap();
    for p in paths.lines() {
        assert!(!Path::new(p).exists(), "{p} was not removed");
    }

    // `-- CMD` right after the address: the command follows the host name, and no `--` or
    // command word reaches ssh as an option.
    for (argv, tail) in [
        (
            &["host", "ssh", "127.0.5.3", "--", "uptime"][..],
            &["127.0.5.3", "uptime"][..],
        ),
        (
            &["host", "ssh", "127.0.5.3", "--", "ls", "-l", "--", "/"],
            &["127.0.5.3", "ls", "-l", "--", "/"],
        ),
        (
            &["host", "ssh", "127.0.5.3", "-v", "--", "uptime"],
            &["-v", "127.0.5.3", "uptime"],
        ),
    ] {
        let out = env.run(argv);
        assert_eq!(out.code, 7, "{argv:?}: {out:?}");
        let args: Vec<String> = std::fs::read_to_string(logf("args"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(&args[args.len() - tail.len()..], tail, "{argv:?}: {args:?}");
        assert!(
            !args[..args.len() - tail.len()].iter().any(|a| a == "--"),
            "{argv:?}: {args:?}"
        );
    }

    // commctl killed (SIGTERM) while ssh runs: ssh gets the signal, the files still go.
    std::fs::remove_file(logf("paths")).unwrap();
    let child = env
        .command(&["host", "ssh", "127.0.5.3"])
        .env("FAKE_SSH_SLEEP", "30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logf("paths").exists()
        || std::fs::read_to_string(logf("paths"))
            .unwrap()
            .lines()
            .count()
            < 2
    {
        assert!(Instant::now() < deadline, "fake ssh did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process by its pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = wait_bounded(child, "commctl host ssh (after SIGTERM)");
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Removed temporary ssh key"),
        "{out:?}"
    );
    for p in std::fs::read_to_string(logf("paths")).unwrap().lines() {
        assert!(!Path::new(p).exists(), "{p} was not removed");
    }

    // No recorded key: refused, ssh not run.
    std::fs::remove_file(logf("args")).unwrap();
    if server.api_status("/host/127.0.5.4/hostkey") == 404 {
        let out = env.run(&["host", "ssh", "127.0.5.4"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr
                .contains("no SSH host key recorded for 127.0.5.4 yet"),
            "{out:?}"
        );
        assert!(out.stderr.contains("--insecure-accept-host-key"), "{out:?}");
        assert!(!logf("args").exists(), "ssh must not run");

        // Unless asked to accept whatever key the host presents.
        let out = env.run(&["host", "ssh", "127.0.5.4", "--insecure-accept-host-key"]);
        assert_eq!(out.code, 7, "{out:?}");
        let args = std::fs::read_to_string(logf("args")).unwrap();
        assert!(args.contains("StrictHostKeyChecking=accept-new"), "{args}");
        assert!(args.lines().any(|l| l == "root"), "{args}");
        assert_eq!(std::fs::read_to_string(logf("known_hosts")).unwrap(), "");
        for p in std::fs::read_to_string(logf("paths")).unwrap().lines() {
            assert!(!Path::new(p).exists(), "{p} was not removed");
        }
    }

    // Unknown host: not found.
    let out = env.run(&["host", "ssh", "127.0.9.9"]);
    assert_eq!(out.code, 3, "{out:?}");
}

#[test]
fn wrong_or_missing_credentials() {
    let server = Server::start();
    let env =
        Env::with_config(json!({"endpoint": server.url, "username": "admin", "password": "wrong"}));
    let out = env.run(&["host", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "commctl: The provided credentials were incorrect."
    );
    assert!(
        !out.stderr.contains("wrong"),
        "the password is never printed"
    );
    // No credentials at all (not a terminal: nothing is asked).
    let env = Env::with_config(json!({"endpoint": server.url}));
    let out = env.run(&["cluster", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("The provided credentials were incorrect."),
        "{out:?}"
    );
    // A username without a password, not on a terminal: a clear error.
    let env = Env::with_config(json!({"endpoint": server.url, "username": "admin"}));
    let out = env.run(&["cluster", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--password-stdin"), "{out:?}");
    // Flags instead of the file.
    let env = Env::bare();
    let out = env.run_with_stdin(
        &[
            "--endpoint",
            &server.url,
            "--username",
            "admin",
            "--password-stdin",
            "cluster",
            "list",
        ],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(out.ok().stdout.trim(), "No clusters.");
    // ~/.commissaire.json is read when nothing else is named.
    std::fs::write(
        env.path(".commissaire.json"),
        json!({"endpoint": server.url, "username": "admin", "password": PASSWORD}).to_string(),
    )
    .unwrap();
    env.run(&["network", "list"]).ok();
    // -c names another file; a missing one is an error.
    let out = env.run(&["-c", "/nonexistent/commctl.json", "network", "list"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not exist"), "{out:?}");
}

#[test]
fn endpoint_list_falls_back_on_connection_errors() {
    let server = Server::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = Env::with_config(json!({
        "endpoint": [dead, server.url], "username": "admin", "password": PASSWORD
    }));
    let out = env.run(&["cluster", "list"]).ok();
    assert!(
        out.stderr.contains(&format!(
            "Could not connect to {dead}. Retrying with {}.",
            server.url
        )),
        "{out:?}"
    );
    assert_eq!(out.stdout.trim(), "No clusters.");
    // Every endpoint dead.
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let env = Env::with_config(json!({"endpoint": [dead, dead2]}));
    let out = env.run(&["cluster", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("No servers could be reached. Tried the following:"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!("- {dead}")) && out.stderr.contains(&format!("- {dead2}")),
        "{out:?}"
    );
    assert!(out.stderr.contains("Exiting..."), "{out:?}");
}

#[test]
fn global_flags_work_after_the_command() {
    let server = Server::start();
    let env = Env::bare();
    let out = env.run_with_stdin(
        &[
            "network",
            "create",
            "n1",
            "-t",
            "flannel_server",
            "-o",
            "address=127.0.0.1:8081",
            "--endpoint",
            &server.url,
            "--username",
            "admin",
            "--password-stdin",
            "--connect-timeout",
            "5",
            "--timeout",
            "30",
        ],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(server.api_get("/networks").to_string().contains("n1"));
    // --config after the command (and -c keeping its per-command meaning).
    let cfg = env.path("cfg.json");
    std::fs::write(
        &cfg,
        json!({"endpoint": server.url, "username": "admin", "password": PASSWORD}).to_string(),
    )
    .unwrap();
    let out = env
        .run(&[
            "cluster",
            "create",
            "prod",
            "-n",
            "n1",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .ok();
    assert!(out.stdout.contains("prod"), "{out:?}");
    let out = env
        .run(&["-c", cfg.to_str().unwrap(), "cluster", "list", "-o", "json"])
        .ok();
    assert_eq!(out.json(), json!(["prod"]));
}

#[test]
fn request_timeout_is_separate_from_the_connect_timeout() {
    // A server that accepts connections and never answers: the connection succeeds at once,
    // so only the request timeout ends the wait.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    // Detached: it ends on its own deadline, and the test process exits before that anyway.
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((c, _)) = listener.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let env = Env::bare();
    let started = Instant::now();
    let out = env.run(&[
        "cluster",
        "list",
        "--endpoint",
        &url,
        "--timeout",
        "1",
        "--connect-timeout",
        "5",
    ]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not answer"), "{out:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The configuration file's values apply when no flag is given.
    let env = Env::with_config(json!({"endpoint": url, "timeout": 1, "connect_timeout": 5}));
    let started = Instant::now();
    let out = env.run(&["cluster", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not answer"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = Env::bare().run(&["cluster", "list", "--connect-timeout", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn tls_with_a_custom_ca_and_client_certificates() {
    // scripts/test.sh installs openssl; a missing one must not pass silently.
    assert!(
        Command::new("openssl").arg("version").output().is_ok(),
        "the openssl command is needed to make test certificates (apt-get install openssl)"
    );
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let sh = |script: &str| {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(child, script);
        assert!(out.status.success(), "{script}: {out:?}");
    };
    std::fs::write(
        d.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = commctl-test-ca\n[v3_ca]\n\
         basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    std::fs::write(
        d.join("srv.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cli.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    sh(&format!(
        "openssl req -x509 -config ca.cnf -extensions v3_ca {ec} -keyout ca.key -out ca.pem -days 2"
    ));
    for (n, cn) in [("srv", "localhost"), ("cli", "test-client")] {
        sh(&format!(
            "openssl req -new {ec} -keyout {n}.key -out {n}.csr -subj /CN={cn}"
        ));
        sh(&format!(
            "openssl x509 -req -in {n}.csr -CA ca.pem -CAkey ca.key -set_serial {} -out {n}.crt -days 2 -extfile {n}.ext",
            if n == "srv" { 2 } else { 3 }
        ));
    }
    sh("cat srv.crt srv.key > srv.pem && cat cli.crt cli.key > cli-both.pem");
    let p = |f: &str| d.join(f).display().to_string();
    let server = Server::start_with(
        &[
            "--tls-pemfile",
            &p("srv.pem"),
            "--tls-clientverifyfile",
            &p("ca.pem"),
        ],
        "https",
        "4",
    );
    let base = json!({"endpoint": server.url, "username": "admin", "password": PASSWORD});
    let with = |extra: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Env::with_config(c)
    };
    let env = with(
        json!({"ca_path": p("ca.pem"), "client_cert": p("cli.crt"), "client_key": p("cli.key")}),
    );
    assert!(
        env.run(&["network", "list"])
            .ok()
            .stdout
            .contains("default")
    );
    // One PEM file holding both.
    let env = with(json!({"ca_path": p("ca.pem"), "client_cert": p("cli-both.pem")}));
    env.run(&["network", "list"]).ok();
    // Flags work as well as the file.
    let env = with(json!({}));
    env.run(&[
        "--ca-path",
        &p("ca.pem"),
        "--client-cert",
        &p("cli.crt"),
        "--client-key",
        &p("cli.key"),
        "network",
        "list",
    ])
    .ok();
    // Without the client certificate the server refuses the connection.
    let env = with(json!({"ca_path": p("ca.pem")}));
    let out = env.run(&["network", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    // Without the CA the server's certificate is not trusted.
    let env = with(json!({"client_cert": p("cli.crt"), "client_key": p("cli.key")}));
    let out = env.run(&["network", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("certificate"), "{out:?}");
    // A bad CA file is reported.
    let env = with(json!({"ca_path": p("ca.cnf")}));
    let out = env.run(&["network", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("ca_path"), "{out:?}");
}

#[test]
fn rolling_operations_against_the_real_server() {
    let server = Server::start();
    let env = Env::for_server(&server);
    // A flannel_server network: the embedded store has no etcd for a flannel_etcd one.
    env.run(&[
        "network",
        "create",
        "overlay",
        "-t",
        "flannel_server",
        "-o",
        r#"{"address": "127.0.0.1:8080"}"#,
    ])
    .ok();
    env.run(&["cluster", "create", "-n", "overlay", "prod"])
        .ok();
    // The server's own answer first: the route exists and says why there is nothing.
    let r = http()
        .get(format!("{}/api/v0/cluster/prod/restart", server.url))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["error"]["message"], "no restart has been started on cluster prod",
        "{body}"
    );
    let out = env.run(&["cluster", "restart", "status", "prod"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("no restart has been started on cluster prod"),
        "{out:?}"
    );
    let (key, _) = keypair(env.home.path(), "k");
    env.run(&[
        "host",
        "create",
        "127.0.5.5",
        key.to_str().unwrap(),
        "-c",
        "prod",
    ])
    .ok();
    server.wait_host_settled("127.0.5.5");
    // --watch follows the change feed: with status requests only every 30 s, the end of the
    // run (the host cannot be reached, so it fails at once) is still seen within seconds.
    let t = Instant::now();
    let out = env.run(&[
        "cluster",
        "restart",
        "start",
        "prod",
        "--batch-size",
        "50%",
        "--watch",
        "--interval",
        "30",
        "--output",
        "json",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "took {:?}: {out:?}",
        t.elapsed()
    );
    assert_eq!(out.code, 1, "{out:?}");
    let started = out.json();
    assert_eq!(started["name"], "prod");
    assert_eq!(started["options"]["batch_size"], "50%");
    // The host cannot be reached, so the run ends failed: --watch exits 1.
    let out = env.run(&[
        "cluster",
        "restart",
        "status",
        "prod",
        "--watch",
        "--interval",
        "0.1",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("127.0.5.5"), "{out:?}");
    assert!(out.stderr.contains("ended failed"), "{out:?}");
    assert_eq!(
        env.run(&["cluster", "restart", "status", "prod", "-o", "json"])
            .ok()
            .json(),
        server.api_get("/cluster/prod/restart")
    );
    let out = env.run(&["cluster", "deploy", "status", "prod"]);
    assert_eq!(out.code, 3, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Fake server: operations and request headers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

type Handler = dyn Fn(&Req) -> (u16, Value) + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 answering with `handler`, recording every request.
struct FakeServer {
    url: String,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl FakeServer {
    fn start(handler: impl Fn(&Req) -> (u16, Value) + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = recorded.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &recorded, handler.as_ref()));
            }
        });
        FakeServer { url, requests }
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Req>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let req = Req {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, value) = handler(&req);
    recorded.lock().unwrap().push(req);
    let body = value.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn op_record(
    kind: &str,
    status: &str,
    done: &[&str],
    in_process: &[&str],
    failed: &[&str],
) -> Value {
    let hosts_order = ["127.0.6.1", "127.0.6.2", "127.0.6.3"];
    let mut hosts = serde_json::Map::new();
    for h in hosts_order {
        let state = if done.contains(&h) {
            "done"
        } else if failed.contains(&h) {
            "failed"
        } else if in_process.contains(&h) {
            "rebooting"
        } else {
            "pending"
        };
        hosts.insert(
            h.into(),
            json!({"state": state, "started_at": "", "finished_at": "",
                   "error": if state == "failed" { "boom" } else { "" }}),
        );
    }
    let done_field = match kind {
        "upgrade" => "upgraded",
        "deploy" => "deployed",
        _ => "restarted",
    };
    let mut v = json!({
        "name": "prod", "kind": kind, "status": status,
        "in_process": in_process, "failed": failed,
        "started_at": "2025-01-01T00:00:00.000000",
        "finished_at": if status == "in_process" || status == "paused" { "" } else { "2025-01-01T00:10:00.000000" },
        "options": {"batch_size": 1, "max_failures": 0, "pause_seconds": 0.0, "drain": false,
                    "reboot": false, "timeout_seconds": 600},
        "order": hosts_order, "hosts": hosts, "cancel_requested": false
    });
    v[done_field] = json!(done);
    if kind == "deploy" {
        v["version"] = json!("7.2.6");
    }
    v
}

#[test]
fn rolling_operation_commands() {
    let gets = Arc::new(Mutex::new(0usize));
    let g = gets.clone();
    let fake = FakeServer::start(move |r| {
        let not_found = |m: &str| (404, json!({"error": {"status": 404, "message": m}}));
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/api/v0/cluster/prod/restart") => {
                (201, op_record("restart", "in_process", &[], &[], &[]))
            }
            ("GET", "/api/v0/cluster/prod/restart") => {
                let mut n = g.lock().unwrap();
                *n += 1;
                match *n {
                    1 => (
                        200,
                        op_record("restart", "in_process", &[], &["127.0.6.1"], &[]),
                    ),
                    2 => (
                        200,
                        op_record("restart", "paused", &["127.0.6.1"], &[], &[]),
                    ),
                    3 => (
                        200,
                        op_record("restart", "in_process", &["127.0.6.1"], &["127.0.6.2"], &[]),
                    ),
                    _ => (
                        200,
                        op_record(
                            "restart",
                            "finished",
                            &["127.0.6.1", "127.0.6.2", "127.0.6.3"],
                            &[],
                            &[],
                        ),
                    ),
                }
            }
            ("DELETE", "/api/v0/cluster/prod/restart") => {
                let mut v = op_record("restart", "in_process", &[], &["127.0.6.1"], &[]);
                v["cancel_requested"] = json!(true);
                (200, v)
            }
            ("PUT", "/api/v0/cluster/prod/restart/pause") => {
                (200, op_record("restart", "paused", &[], &[], &[]))
            }
            ("PUT", "/api/v0/cluster/prod/restart/resume") => {
                (200, op_record("restart", "in_process", &[], &[], &[]))
            }
            ("PUT", "/api/v0/cluster/prod/upgrade") => {
                (201, op_record("upgrade", "in_process", &[], &[], &[]))
            }
            ("GET", "/api/v0/cluster/prod/upgrade") => (
                200,
                op_record("upgrade", "failed", &["127.0.6.1"], &[], &["127.0.6.2"]),
            ),
            (
                "PUT",
                "/api/v0/cluster/prod/upgrade/pause" | "/api/v0/cluster/prod/upgrade/resume",
            ) => (200, op_record("upgrade", "in_process", &[], &[], &[])),
            ("DELETE", "/api/v0/cluster/prod/upgrade") => {
                (200, op_record("upgrade", "in_process", &[], &[], &[]))
            }
            ("PUT", "/api/v0/cluster/prod/deploy") => {
                (201, op_record("deploy", "in_process", &[], &[], &[]))
            }
            ("GET", "/api/v0/cluster/prod/deploy") => (
                200,
                op_record("deploy", "cancelled", &["127.0.6.1"], &[], &[]),
            ),
            ("PUT", "/api/v0/cluster/prod/deploy/pause" | "/api/v0/cluster/prod/deploy/resume")
            | ("DELETE", "/api/v0/cluster/prod/deploy") => {
                (200, op_record("deploy", "in_process", &[], &[], &[]))
            }
            ("PUT", "/api/v0/cluster/busy/restart") => (
                409,
                json!({"error": {"status": 409, "message": "a upgrade is already running on cluster busy"}}),
            ),
            (_, p) if p.starts_with("/api/v0/cluster/none/") => {
                not_found("cluster none does not exist")
            }
            _ => not_found("no such route"),
        }
    });
    let env =
        Env::with_config(json!({"endpoint": fake.url, "username": "admin", "password": PASSWORD}));
    let last_body = |fake: &FakeServer| -> (String, String, Value) {
        let r = fake.requests().last().cloned().unwrap();
        let body = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&r.body).unwrap()
        };
        (r.method, r.path, body)
    };

    // start, with every option in the request body
    let out = env
        .run(&[
            "cluster",
            "restart",
            "start",
            "prod",
            "--batch-size",
            "25%",
            "--max-failures",
            "1",
            "--pause-seconds",
            "5",
            "--no-drain",
            "--timeout-seconds",
            "300",
        ])
        .ok();
    assert!(
        out.stdout.contains("Started the restart of cluster prod"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("127.0.6.1") && out.stdout.contains("pending"),
        "{out:?}"
    );
    assert_eq!(
        last_body(&fake),
        (
            "PUT".into(),
            "/api/v0/cluster/prod/restart".into(),
            json!({"batch_size": "25%", "max_failures": 1, "pause_seconds": 5.0, "drain": false, "timeout_seconds": 300})
        )
    );
    let req = fake.requests().last().cloned().unwrap();
    assert_eq!(
        req.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(
        req.headers
            .get("authorization")
            .unwrap()
            .starts_with("Basic ")
    );

    // status: table, JSON (exactly the API's), YAML
    let out = env.run(&["cluster", "restart", "status", "prod"]).ok();
    for want in [
        "in_process",
        "0/3 hosts done",
        "HOST",
        "STATE",
        "rebooting",
        "127.0.6.3",
    ] {
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }
    let out = env
        .run(&["cluster", "restart", "status", "prod", "-o", "json"])
        .ok();
    assert_eq!(
        out.json(),
        op_record("restart", "paused", &["127.0.6.1"], &[], &[])
    );
    let out = env
        .run(&["cluster", "restart", "status", "prod", "-o", "yaml"])
        .ok();
    assert_eq!(
        out.yaml(),
        op_record("restart", "in_process", &["127.0.6.1"], &["127.0.6.2"], &[])
    );

    // --watch follows it through paused until finished
    *gets.lock().unwrap() = 0;
    let out = env
        .run(&[
            "cluster",
            "restart",
            "status",
            "prod",
            "--watch",
            "--interval",
            "0.05",
        ])
        .ok();
    assert!(
        out.stderr
            .contains("restart of cluster prod: in_process, 0/3 hosts done"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("restart of cluster prod: paused, 1/3 hosts done"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("restart of cluster prod: finished, 3/3 hosts done"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("finished") && out.stdout.contains("3/3 hosts done"),
        "{out:?}"
    );
    // start --watch, with JSON at the end
    *gets.lock().unwrap() = 3;
    let out = env
        .run(&[
            "cluster",
            "restart",
            "start",
            "prod",
            "--watch",
            "--interval",
            "0.05",
            "--output",
            "json",
        ])
        .ok();
    assert_eq!(out.json()["status"], "finished");

    // cancel, pause, resume
    let out = env.run(&["cluster", "restart", "cancel", "prod"]).ok();
    assert!(
        out.stdout.contains("Cancel requested") && out.stdout.contains("cancel requested"),
        "{out:?}"
    );
    assert_eq!(last_body(&fake).0, "DELETE");
    let out = env.run(&["cluster", "restart", "pause", "prod"]).ok();
    assert!(out.stdout.contains("Paused the restart"), "{out:?}");
    assert_eq!(
        last_body(&fake),
        (
            "PUT".into(),
            "/api/v0/cluster/prod/restart/pause".into(),
            json!({})
        )
    );
    env.run(&["cluster", "restart", "resume", "prod"]).ok();
    assert_eq!(last_body(&fake).1, "/api/v0/cluster/prod/restart/resume");

    // upgrade: --reboot; a failed run makes --watch exit 1
    let out = env
        .run(&["cluster", "upgrade", "start", "prod", "--reboot", "--drain"])
        .ok();
    assert!(out.stdout.contains("Started the upgrade"), "{out:?}");
    assert_eq!(last_body(&fake).2, json!({"reboot": true, "drain": true}));
    let out = env.run(&["cluster", "upgrade", "status", "prod"]).ok();
    assert!(
        out.stdout.contains("boom") && out.stdout.contains("127.0.6.2"),
        "{out:?}"
    );
    let out = env.run(&["cluster", "upgrade", "status", "prod", "--watch"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the upgrade of cluster prod ended failed"),
        "{out:?}"
    );
    env.run(&["cluster", "upgrade", "pause", "prod"]).ok();
    env.run(&["cluster", "upgrade", "resume", "prod"]).ok();
    env.run(&["cluster", "upgrade", "cancel", "prod"]).ok();
    assert_eq!(last_body(&fake).0, "DELETE");

    // deploy: the version goes in the body
    let out = env
        .run(&[
            "cluster",
            "deploy",
            "start",
            "prod",
            "7.2.6",
            "--batch-size",
            "2",
        ])
        .ok();
    assert!(out.stdout.contains("7.2.6"), "{out:?}");
    assert_eq!(
        last_body(&fake).2,
        json!({"version": "7.2.6", "batch_size": 2})
    );
    let out = env.run(&["cluster", "deploy", "status", "prod"]).ok();
    assert!(
        out.stdout.contains("cancelled") && out.stdout.contains("version"),
        "{out:?}"
    );
    assert_eq!(
        env.run(&["cluster", "deploy", "status", "prod", "-o", "json"])
            .ok()
            .json(),
        op_record("deploy", "cancelled", &["127.0.6.1"], &[], &[])
    );
    let out = env.run(&["cluster", "deploy", "status", "prod", "-w"]);
    assert_eq!(out.code, 1, "cancelled is not success: {out:?}");
    env.run(&["cluster", "deploy", "pause", "prod"]).ok();
    env.run(&["cluster", "deploy", "resume", "prod"]).ok();
    env.run(&["cluster", "deploy", "cancel", "prod"]).ok();

    // errors
    let out = env.run(&["cluster", "restart", "status", "none"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stderr.trim(), "commctl: cluster none does not exist");
    let out = env.run(&["cluster", "restart", "start", "busy"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("already running"), "{out:?}");
    let out = env.run(&["cluster", "restart", "start", "prod", "--batch-size", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = env.run(&["cluster", "deploy", "start", "prod"]);
    assert_eq!(out.code, 2, "the version is required: {out:?}");
}

#[test]
fn kubeconfig_token_is_sent_as_a_bearer_token() {
    let fake = FakeServer::start(|_| (200, json!([])));
    let env = Env::bare();
    let kc = env.path("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n\
         users:\n- name: u\n  user: {token: kube-token-1}\n",
    )
    .unwrap();
    let cfg = env.path("c.json");
    std::fs::write(
        &cfg,
        json!({"endpoint": fake.url, "username": "ignored", "password": "x", "kubeconfig": kc})
            .to_string(),
    )
    .unwrap();
    let out = env
        .run(&["-c", cfg.to_str().unwrap(), "cluster", "list"])
        .ok();
    assert_eq!(out.stdout.trim(), "No clusters.");
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.path, "/api/v0/clusters");
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some("Bearer kube-token-1")
    );
    // --kubeconfig on the command line does the same.
    let out = env
        .run(&[
            "--endpoint",
            &fake.url,
            "--kubeconfig",
            kc.to_str().unwrap(),
            "network",
            "list",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "No networks.");
    assert_eq!(
        fake.requests()
            .pop()
            .unwrap()
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer kube-token-1")
    );
}

// ---------------------------------------------------------------------------------------------
// Local commands and usage
// ---------------------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    let env = Env::bare();
    for args in [
        &[][..],
        &["bogus"],
        &["host", "get"],
        &["host", "list", "-o", "xml"],
        &["cluster", "create"],
        &["cluster", "create", "-t", "swarm", "c"],
        &["network", "create", "n", "-t", "vxlan"],
        &["network", "create", "n", "-o", "notjson"],
        &["cluster", "delete"],
        &["--endpoint", "ftp://x", "host", "list"],
        &["completions", "tcsh"],
        &["user-data", "-e", "not-a-url"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn help_has_examples_and_exit_codes_on_every_command() {
    use clap::CommandFactory;
    let env = Env::bare();
    fn walk(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            let mut p = prefix.clone();
            p.push(sub.get_name().to_string());
            out.push(p.clone());
            walk(sub, p, out);
        }
    }
    let mut paths = Vec::new();
    walk(&commctl::cli::Cli::command(), vec![], &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    let top = env.run(&["--help"]).ok();
    assert!(
        top.stdout.contains("Examples:") && top.stdout.contains("Exit codes:"),
        "{top:?}"
    );
    assert!(top.stdout.contains("3  not found"), "{top:?}");
    for p in paths {
        let mut args: Vec<&str> = p.iter().map(String::as_str).collect();
        args.push("--help");
        let out = env.run(&args).ok();
        assert!(
            out.stdout.contains("Examples:\n  commctl "),
            "{args:?}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("Exit codes:"), "{args:?}");
    }
    let out = env.run(&["--version"]).ok();
    assert_eq!(
        out.stdout.trim(),
        format!("commctl {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions() {
    let env = Env::bare();
    for (shell, needle) in [
        ("bash", "_commctl"),
        ("zsh", "#compdef commctl"),
        ("fish", "complete -c commctl"),
    ] {
        let out = env.run(&["completions", shell]).ok();
        assert!(
            out.stdout.contains(needle),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
        assert!(out.stdout.contains("container_manager"), "{shell}");
    }
}

#[test]
fn user_data_carries_a_registration_token_not_a_password() {
    let server = Server::start();
    let env = Env::for_server(&server);
    // The cluster-scoped token needs the cluster (a flannel_server network: the embedded store
    // has no etcd for the default one).
    env.run(&[
        "network",
        "create",
        "flat",
        "-t",
        "flannel_server",
        "-o",
        "address=127.0.0.1:8080",
    ])
    .ok();
    env.run(&["cluster", "create", "-n", "flat", "prod"]).ok();
    let out = env
        .run(&[
            "user-data",
            "-e",
            "https://commissaire.example.com:8000/",
            "-c",
            "prod",
            "--single-use",
        ])
        .ok();
    assert!(
        out.stdout.contains("Content-Type: text/x-commissaire-host"),
        "{out:?}"
    );
    let host_part = out.stdout.find("text/x-commissaire-host").unwrap();
    let handler_part = out.stdout.find("text/part-handler").unwrap();
    assert!(handler_part < host_part, "the part handler comes first");
    // Decode the host part: a registration token, never a user or a password.
    let b64: String = out.stdout[host_part..]
        .split("\n\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    use base64::Engine;
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap(),
    )
    .unwrap();
    let token = payload["registration_token"].as_str().unwrap();
    assert!(token.starts_with("cmsreg_"), "{payload}");
    assert!(payload.get("password").is_none() && payload.get("username").is_none());
    assert!(!out.stdout.contains(PASSWORD) && !out.stdout.to_lowercase().contains("password"));
    // The token is on the server, scoped and single-use; stderr says how to revoke it.
    let tokens = env
        .run(&["registration-token", "list", "-o", "json"])
        .ok()
        .json();
    assert_eq!(tokens[0]["cluster"], "prod");
    assert_eq!(tokens[0]["single_use"], true);
    let id = tokens[0]["id"].as_str().unwrap();
    assert!(
        out.stderr
            .contains(&format!("registration-token revoke {id}")),
        "{out:?}"
    );
    // Written to a file as well.
    let file = env.path("ud.txt");
    env.run(&["user-data", "-e", &server.url, "-o", file.to_str().unwrap()])
        .ok();
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("multipart/mixed")
    );
    // Without credentials that may create tokens, nothing is written.
    let nobody = Env::bare();
    let out = nobody.run(&[
        "user-data",
        "-e",
        &server.url,
        "-o",
        env.path("no.txt").to_str().unwrap(),
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!env.path("no.txt").exists());
}

#[test]
fn registration_tokens_and_api_tokens_from_commctl() {
    use sha2::Digest;
    let token = "commctl-test-api-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        json!({"script": {"hash": format!("sha256:{}", hex::encode(sha2::Sha256::digest(token.as_bytes()))), "role": "admin"}}).to_string(),
    )
    .unwrap();
    let server = Server::start_with(
        &[
            "--authentication-plugin",
            &format!("apitokenauth:filepath={}", tokens.display()),
        ],
        "http",
        "4",
    );
    // --token, from the command line and from a file; the config file's token.
    let env = Env::bare();
    let token_file = env.path("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let out = env
        .run(&[
            "--endpoint",
            &server.url,
            "--token",
            token,
            "registration-token",
            "create",
            "--expires-in",
            "600",
            "-d",
            "rack 12",
            "--output",
            "json",
        ])
        .ok();
    let created = out.json();
    assert!(created["token"].as_str().unwrap().starts_with("cmsreg_"));
    assert_eq!(created["created_by"], "script");
    let id = created["id"].as_str().unwrap().to_string();
    let at_file = format!("@{}", token_file.display());
    let list = env
        .run(&[
            "--endpoint",
            &server.url,
            "--token",
            &at_file,
            "registration-token",
            "list",
        ])
        .ok();
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("rack 12"),
        "{list:?}"
    );
    assert!(!list.stdout.contains("cmsreg_"), "no secret in the list");
    let cfg = Env::with_config(json!({"endpoint": server.url, "token": token}));
    cfg.run(&["registration-token", "revoke", &id]).ok();
    let out = cfg.run(&["registration-token", "revoke", &id]);
    assert_eq!(out.code, 3, "revoking it again: not found: {out:?}");
    // A wrong token is refused with the usual message.
    let out = env.run(&[
        "--endpoint",
        &server.url,
        "--token",
        "nope",
        "registration-token",
        "list",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        !out.stderr.contains("nope"),
        "the token is not echoed: {out:?}"
    );
    let out = env.run(&[
        "--endpoint",
        &server.url,
        "--token",
        "@/nonexistent/token",
        "host",
        "list",
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("/nonexistent/token"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// The original's documentation
// ---------------------------------------------------------------------------------------------

/// Runs `commctl ARGS` under a pseudo-terminal (`script`), typing `typed` at its prompts: the
/// forms that ask for a password read it from the terminal, as the original's did.
fn run_on_terminal(env: &Env, args: &[&str], typed: &str) -> Out {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(commctl_bin().to_str().unwrap())
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    // The environment commctl would get from `Env::command`, for the command under script.
    let cmd = env.command(&[]);
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs commctl on a terminal");
    {
        let mut input = child.stdin.take().unwrap();
        // The prompt must be up before the answer is typed, or the terminal echoes it back.
        std::thread::sleep(Duration::from_millis(500));
        let _ = input.write_all(typed.as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = wait_bounded(child, &format!("commctl {}", args.join(" ")));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The decoded `text/x-commissaire-host` part of a user-data document.
fn host_part(doc: &str) -> Value {
    let start = doc.find("text/x-commissaire-host").expect("host part");
    let body = &doc[start..];
    let body = &body[body.find("\n\n").unwrap() + 2..];
    let b64: String = body
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Every commctl command line the original's documentation prints, against a real server on a
/// real etcd, with only addresses and paths replaced by the test's own (hosts at 127.0.6.x,
/// the OpenShift endpoint at a closed loopback port, the flannel server on loopback).
#[test]
fn every_command_line_of_the_original_documentation() {
    use std::os::unix::fs::PermissionsExt;
    let etcd = testsupport::EtcdServer::start();
    let handler = format!("etcd:server_url={}", etcd.url());
    let server = Server::start_with(&["--storage-handler", &handler], "http", "4");
    let mut env = Env::for_server(&server);
    let (key, _) = keypair(env.home.path(), "ssh_key");
    let key = key.to_str().unwrap().to_string();
    let bin = env.path("fakebin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("ssh"), FAKE_SSH).unwrap();
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = env.path("ssh-log");
    env.path_prefix = Some(bin);
    env.extra_env
        .push(("FAKE_SSH_LOG".into(), log.display().to_string()));
    let pwfile = env.path("my_password.txt");
    std::fs::write(&pwfile, "from-a-file\n").unwrap();
    let pwfile = pwfile.to_str().unwrap().to_string();
    // The walkthroughs' clusters exist before their commands run.
    let seed_cluster = |name: &str| {
        let r = http()
            .put(format!("{}/api/v0/cluster/{name}", server.url))
            .basic_auth("admin", Some(PASSWORD))
            .json(&json!({}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    };
    seed_cluster("datacenter1");

    let line = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.replace("/path/to/remote/hosts/priv/ssh_key", &key)
                    .replace("my_password.txt", &pwfile)
            })
            .collect()
    };
    // (command line as printed, with addresses replaced; what must hold afterwards)
    let plain: &[&str] = &[
        "network create --type flannel_server --options {\"address\":\"127.0.0.1:8080\"} my_network",
        "network get my_network",
        "cluster create --type kubernetes --network default my_cluster",
        "cluster get my_cluster",
        "cluster list",
        "host create --cluster my_cluster 127.0.6.10 /path/to/remote/hosts/priv/ssh_key",
        "host create 127.0.6.100 /path/to/remote/hosts/priv/ssh_key",
        "host get 127.0.6.10",
        "host status 127.0.6.10",
        "host list",
        "host list datacenter1",
        "cluster restart start my_cluster",
        "cluster restart status my_cluster",
        "cluster upgrade start datacenter1 7.2.2",
        "cluster upgrade status datacenter1",
        "passhash --file my_password.txt",
        "passhash --password bad_idea",
        "passhash --password bad_idea --rounds 5",
    ];
    for l in plain {
        let args = line(l);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&argv);
        assert_eq!(out.code, 0, "commctl {l}: {out:#?}");
    }
    // The `--options=JSON` spelling with spaces inside the JSON, as printed.
    env.run(&[
        "container_manager",
        "create",
        "--type",
        "openshift",
        r#"--options={"server_url": "https://127.0.0.1:1", "token": "aaa"}"#,
        "ocp",
    ])
    .ok();
    env.run(&[
        "cluster",
        "create",
        "--container-manager",
        "ocp",
        "mycluster",
    ])
    .ok();
    env.run(&["cluster", "deploy", "start", "mycluster", "7.4.1"])
        .ok();
    env.run(&["cluster", "deploy", "status", "mycluster"]).ok();
    env.run(&[
        "network",
        "create",
        "--type",
        "flannel_server",
        "--options",
        r#"{"address": "127.0.0.1:8080"}"#,
        "other_network",
    ])
    .ok();

    // What the server holds is what the lines asked for.
    assert_eq!(
        server.api_get("/network/my_network")["options"]["address"],
        "127.0.0.1:8080"
    );
    assert_eq!(server.api_get("/cluster/my_cluster")["network"], "default");
    assert_eq!(
        server.api_get("/cluster/mycluster")["container_manager"],
        "ocp"
    );
    assert_eq!(server.api_get("/containermanager/ocp")["type"], "openshift");
    assert_eq!(
        server.api_get("/cluster/my_cluster/hosts"),
        json!(["127.0.6.10"])
    );
    assert_eq!(
        server.api_get("/cluster/mycluster/deploy")["version"],
        "7.4.1"
    );
    server.api_get("/cluster/my_cluster/restart");
    server.api_get("/cluster/datacenter1/upgrade");
    let out = env.run(&["passhash", "--password", "bad_idea", "--rounds", "5"]);
    assert!(out.stdout.trim().starts_with("$2b$05$"), "{out:?}");
    let out = env.run(&["cluster", "upgrade", "start", "datacenter1", "7.2.2"]);
    assert!(
        out.stderr.contains("version \"7.2.2\" is not used"),
        "{out:?}"
    );

    // `host ssh ADDRESS` and with ssh's own options after it. The server records a host's
    // key when it first reaches it; nothing listens at this address, so it is trusted here
    // (commctl refuses to connect to a host whose key nobody recorded).
    server.wait_host_settled("127.0.6.100");
    let (_, host_pub) = keypair(env.home.path(), "hostid");
    env.run(&["host", "trust-hostkey", "127.0.6.100", &host_pub])
        .ok();
    for (l, tail) in [
        ("host ssh 127.0.6.100", &["127.0.6.100"][..]),
        (
            "host ssh 127.0.6.100 -v -p 9876",
            &["-v", "-p", "9876", "127.0.6.100"][..],
        ),
    ] {
        let args = line(l);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&argv);
        assert_eq!(
            out.code, 7,
            "commctl {l}: ssh's exit code is passed on: {out:#?}"
        );
        let args: Vec<String> = std::fs::read_to_string(format!("{}.args", log.display()))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(&args[args.len() - tail.len()..], tail, "{l}: {args:?}");
    }

    // The Automatic Registration walkthrough: options, a prompted password, and the output
    // file as the last argument. Its placeholders are replaced like the addresses: USER by a
    // user of this server (whose credentials create the registration token) and CLUSTER by an
    // existing cluster.
    seed_cluster("CLUSTER");
    let file = env.path("CLUSTER.userdata");
    let pw_line = format!("{PASSWORD}\n");
    let out = run_on_terminal(
        &env,
        &[
            "user-data",
            "--password",
            "--username",
            "admin",
            "--cluster",
            "CLUSTER",
            "--endpoint",
            "https://127.0.0.1:8000/",
            file.to_str().unwrap(),
        ],
        &pw_line,
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let doc = std::fs::read_to_string(&file).unwrap();
    assert!(doc.starts_with("Content-Type: multipart/mixed"), "{doc}");
    assert!(
        !doc.contains(PASSWORD),
        "the password is not in the user-data"
    );
    let host = host_part(&doc);
    assert_eq!(host["endpoint"], "https://127.0.0.1:8000");
    assert_eq!(host["cluster"], "CLUSTER");
    assert!(
        host["registration_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("cmsreg_")),
        "{host}"
    );
    assert!(
        host.get("password").is_none() && host.get("username").is_none(),
        "{host}"
    );
    // The user-data reference's example: -p -c CLUSTER -o FILE, the endpoint and the user
    // from commctl's own configuration.
    let file = env.path("cluster.userdata");
    let out = run_on_terminal(
        &env,
        &[
            "user-data",
            "-p",
            "-c",
            "my_cluster",
            "-o",
            file.to_str().unwrap(),
        ],
        &pw_line,
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let host = host_part(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(host["endpoint"], server.url.as_str());
    assert_eq!(host["cluster"], "my_cluster");
    assert!(
        host["registration_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("cmsreg_")),
        "{host}"
    );
    // Both spellings of the output file at once is a usage error naming them.
    let out = env.run(&["user-data", "-e", "https://x:1", "-o", "a", "b"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--outfile"), "{out:?}");

    // The deletes last, as in the walkthroughs.
    for l in [
        "host delete 127.0.6.10",
        "network delete other_network",
        "cluster delete my_cluster",
    ] {
        let args = line(l);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&argv).ok();
    }
    assert_eq!(server.api_status("/host/127.0.6.10"), 404);
    assert_eq!(server.api_status("/cluster/my_cluster"), 404);
}
