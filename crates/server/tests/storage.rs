//! What the server keeps on disk: secrets sealed at rest (both backends), data surviving a
//! SIGKILL, and the secure default of a first start without any authentication plugin.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Auth, Backend, Env, KeyKind, Server, expect_error, expect_status};
use reqwest::Method;
use serde_json::json;
use store::Store;

both_backends!(secrets_at_rest);

const TOKEN: &str = "tok-SECRET-e8d1c6a0f3b94e2d";

/// Whether `needle` (ASCII) occurs in `haystack`. Non-UTF-8 bytes become U+FFFD, which never
/// joins or splits an ASCII run, so nothing is missed; `str::contains` keeps this fast on the
/// tens of megabytes of etcd's preallocated WAL.
fn contains(haystack: &str, needle: &str) -> bool {
    assert!(needle.is_ascii() && !needle.is_empty());
    haystack.contains(needle)
}

/// Every file under `dir` (recursively), concatenated.
fn read_tree(dir: &Path, skip: &str) -> Vec<u8> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with(skip) {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

async fn secrets_at_rest(backend: Backend) {
    let env = Env::new(backend);
    let mut s = env.server().await;
    let ed = env.key(KeyKind::Ed25519);
    let rsa = env.key(KeyKind::RsaPem);

    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);
    expect_status(
        &s.put(
            "/host/127.0.1.1",
            json!({"ssh_priv_key": ed.b64, "cluster": "c1"}),
        )
        .await,
        201,
    );
    expect_status(
        &s.put("/host/127.0.1.2", json!({"ssh_priv_key": rsa.b64}))
            .await,
        201,
    );
    expect_status(
        &s.put(
            "/containermanager/k1",
            json!({"type": "kubernetes",
                   "options": {"server_url": "https://k8s.example.com:6443", "token": TOKEN}}),
        )
        .await,
        201,
    );
    // The API still gives the key back (so it is stored, sealed).
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.2/creds").await, 200)["ssh_priv_key"],
        rsa.b64
    );

    let mut secrets: Vec<String> = ed.secret_fragments();
    secrets.extend(rsa.secret_fragments());
    secrets.push(TOKEN.to_string());

    let raw: Vec<u8> = match backend {
        Backend::Sqlite => {
            s.stop();
            let data = &s.opts.data_dir;
            let mut raw = vec![];
            let mut found = 0;
            for name in ["store.db", "store.db-wal", "store.db-shm"] {
                if let Ok(bytes) = std::fs::read(data.join(name)) {
                    found += 1;
                    raw.extend(bytes);
                }
            }
            assert!(found >= 1, "no store.db in {}", data.display());
            raw
        }
        Backend::Etcd => {
            let store = env.etcd_store().await;
            let kvs = store.list("").await.expect("list every key");
            let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
            assert!(keys.contains(&"secrets/hosts/127.0.1.1"), "{keys:?}");
            assert!(keys.contains(&"secrets/container_managers/k1"), "{keys:?}");
            let mut raw = vec![];
            for kv in &kvs {
                raw.extend(kv.key.as_bytes());
                raw.extend(&kv.value);
            }
            // etcd's own files too (WAL and database).
            let etcd = env.etcd.as_ref().expect("etcd");
            raw.extend(read_tree(etcd.dir(), "etcd.log"));
            raw
        }
    };
    let raw = String::from_utf8_lossy(&raw);
    // Sanity: we are looking at the right data.
    assert!(contains(&raw, "127.0.1.2"), "the dump holds the hosts");
    assert!(
        contains(&raw, "k8s.example.com"),
        "the dump holds the manager"
    );
    for frag in &secrets {
        assert!(
            !contains(&raw, frag),
            "the store holds a secret in clear: {}…",
            &frag[..frag.len().min(12)]
        );
    }
    // Nor does the server log.
    let log = std::fs::read_to_string(&s.opts.log_path).expect("server log");
    for frag in &secrets {
        assert!(!contains(&log, frag), "the server log shows a secret");
    }
}

/// Data survives a SIGKILL of the server (SQLite, synchronous=FULL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_after_sigkill() {
    let env = Env::new(Backend::Sqlite);
    let mut s = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    // A flannel_etcd network with its own etcd URL works on either store.
    expect_status(
        &s.put(
            "/network/n1",
            json!({"options": {"server_url": "http://127.0.0.1:2379"}}),
        )
        .await,
        201,
    );
    expect_status(&s.put("/cluster/c1", json!({"network": "n1"})).await, 201);
    expect_status(
        &s.put(
            "/host/127.0.1.1",
            json!({"ssh_priv_key": key.b64, "cluster": "c1"}),
        )
        .await,
        201,
    );
    let rev = s.revision().await;
    s.kill();

    let s = Server::start(s.opts.clone()).await;
    let c = expect_status(&s.get("/cluster/c1").await, 200);
    assert_eq!(c["network"], "n1");
    assert_eq!(c["hostset"], json!(["127.0.1.1"]));
    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!(["c1"]));
    // The sealing key persisted too: the credentials still open.
    assert_eq!(
        expect_status(&s.get("/host/127.0.1.1/creds").await, 200)["ssh_priv_key"],
        key.b64
    );
    assert!(s.revision().await >= rev);
    let mode = std::fs::metadata(s.opts.data_dir.join("secrets.key"))
        .expect("secrets.key in the data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secrets.key mode");
}

/// Finds the password printed after the `password:` line.
fn printed_password(lines: &[String]) -> Option<String> {
    let at = lines
        .iter()
        .position(|l| l.trim_end().ends_with("password:"))?;
    lines[at + 1..]
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// No plugin and no `--insecure-no-auth`: a generated admin password, printed once, required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_default_generates_an_admin_password() {
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.auth = Auth::Generated;
    let mut s = Server::start(opts.clone()).await;

    // The password goes to standard error (stdout carries only log lines); the harness writes
    // stderr to the server's log file.
    let log_lines = |s: &Server| -> Vec<String> {
        std::fs::read_to_string(&s.opts.log_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let password = loop {
        if let Some(p) = printed_password(&log_lines(&s)) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no password printed on stderr: {:?}",
            log_lines(&s)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(password.len() >= 16, "a strong password: {password:?}");
    assert_eq!(
        printed_password(&s.stdout_lines()),
        None,
        "the password must not be on stdout"
    );

    // Without credentials: 401.
    expect_error(&s.get("/clusters").await, 401, "authentication required");
    let r = s
        .send(
            s.client()
                .get(s.url("/clusters"))
                .basic_auth("admin", Some("wrong"))
                .timeout(common::REQUEST_TIMEOUT),
        )
        .await;
    expect_error(&r, 401, "invalid credentials");
    // Status stays open.
    expect_status(&s.get("/status").await, 200);

    s.creds = Some(("admin".to_string(), password.clone()));
    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!([]));
    expect_status(&s.put("/cluster/c1", s.cluster_body().await).await, 201);

    let users = opts.data_dir.join("users.json");
    let meta = std::fs::metadata(&users).expect("users.json in the data dir");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "users.json mode");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        !text.contains(&password),
        "users.json holds a hash, not the password"
    );
    assert!(text.contains("\"admin\""));
    let dir_mode = std::fs::metadata(&opts.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "data dir mode");

    // Restart: no new password, the same one still works.
    s.stop();
    let mut s = Server::start(opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let banners = log_lines(&s)
        .iter()
        .filter(|l| l.trim_end().ends_with("password:"))
        .count();
    assert_eq!(banners, 1, "a restart must not print a new password");
    expect_error(&s.get("/clusters").await, 401, "authentication required");
    s.creds = Some(("admin".to_string(), password.clone()));
    assert_eq!(expect_status(&s.get("/clusters").await, 200), json!(["c1"]));
    let r = s.send(s.request(Method::GET, "/cluster/c1")).await;
    expect_status(&r, 200);
}
