//! The scaled-out shape, with real processes: one `commissaire-server --bus-uri` (HTTP only),
//! `commissaire-service` worker processes, a real etcd (state, leases) and a real Redis (job
//! streams), on testbed hosts.
//!
//! * investigators share new hosts, and a `kill -9` of one mid-flight changes nothing in the
//!   end state;
//! * a rolling restart survives a `kill -9` of the clusterexec that owns it: another takes it
//!   over when the owner's lease expires, and every host reboots exactly once;
//! * watchers split the hosts between them (each host checked by one watcher per round) and
//!   take over a killed watcher's share;
//! * Redis down while hosts are added: every PUT answers 201 and every host is investigated;
//! * a service reads its configuration from etcd when `ETCD_MACHINES` is set;
//! * its metrics listener closes connections that send nothing or never finish their headers;
//! * the `storage` service publishes every store change to a stream, in order, once, also
//!   across a `kill -9` of the publisher.

#[macro_use]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::free_port;
use testsupport::redis::RedisServer;
use testsupport::testbed::{Testbed, TestbedOptions};

/// Lease TTL of every service in these tests: a killed process's work moves on after this.
const LEASE_TTL: u64 = 3;

/// One `commissaire-service` process, killed by PID when dropped.
struct Service {
    child: Option<Child>,
    log: PathBuf,
    metrics: u16,
}

impl Service {
    fn start(
        env: &Env,
        name: &str,
        id: &str,
        redis: Option<&RedisServer>,
        extra: &[&str],
    ) -> Service {
        let log = env.dir().join(format!("service-{id}.log"));
        let metrics = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-service"));
        cmd.arg(name)
            .arg("--storage-handler")
            .arg(format!("etcd:server_url={}", env.etcd_url().unwrap()))
            .arg("--secrets-key-file")
            .arg(secrets_key(env))
            .arg("--worker-id")
            .arg(id)
            .arg("--lease-ttl")
            .arg(LEASE_TTL.to_string())
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics}"))
            .args(extra);
        if let Some(r) = redis {
            cmd.arg("--bus-uri").arg(r.url());
        }
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env_remove("ETCD_MACHINES")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn commissaire-service");
        Service {
            child: Some(child),
            log,
            metrics,
        }
    }

    /// `kill -9` by PID.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The process's `/status`, once it answers (bounded).
    async fn status(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/status", self.metrics);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(5), reqwest::get(&url)).await
                && let Ok(v) = r.json::<Value>().await
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "service status never answered\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn secrets_key(env: &Env) -> PathBuf {
    env.dir().join("shared-secrets.key")
}

/// The HTTP-only server of the scaled-out shape.
async fn bus_server(env: &Env, redis: &RedisServer, tb: &Testbed) -> Server {
    let mut opts = env.options("server");
    opts.secrets_key_file = Some(secrets_key(env));
    opts.extra_args = vec!["--bus-uri".into(), redis.url()];
    // Hosts call nothing back here, but the testbed gateway must be able to reach the server
    // for user-data tests elsewhere; loopback is enough for these.
    let _ = tb;
    let s = Server::start(opts).await;
    let st = expect_status(&s.get("/status").await, 200);
    assert_eq!(st["bus"]["type"], "redis", "{st}");
    s
}

async fn put_hosts(s: &Server, tb: &Testbed, cluster: Option<&str>) {
    for a in tb.addresses() {
        let mut body = json!({"ssh_priv_key": tb.client_key_base64()});
        if let Some(c) = cluster {
            body["cluster"] = json!(c);
        }
        expect_status(&s.put(&format!("/host/{a}"), body).await, 201);
    }
}

async fn wait_all(s: &Server, tb: &Testbed, status: &str, within: Duration, services: &[&Service]) {
    let deadline = Instant::now() + within;
    for a in tb.addresses() {
        loop {
            let h = s.get(&format!("/host/{a}")).await.json;
            if h["status"] == status {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {a} did not become {status}: {h}\n{}",
                services
                    .iter()
                    .map(|s| s.log_tail())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigators_share_the_work_and_a_killed_one_loses_nothing() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 20,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Etcd);
    let redis = RedisServer::start();
    let server = bus_server(&env, &redis, &tb).await;
    let mut a = Service::start(&env, "investigator", "inv-a", Some(&redis), &[]);
    let b = Service::start(&env, "investigator", "inv-b", Some(&redis), &[]);
    a.status().await;
    b.status().await;
    put_hosts(&server, &tb, None).await;
    // Kill one while investigations are in flight (some hosts are not done yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts = server.get("/hosts").await.json;
        let busy = hosts
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["status"] == "investigating" || h["status"] == "bootstrapping")
            .count();
        let done = 20 - busy;
        if done >= 2 || busy == 0 {
            assert!(
                busy > 0,
                "every host was done before the kill: nothing to test"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no investigation finished\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill();
    let completed: Vec<bool> = tb
        .addresses()
        .iter()
        .map(|h| tb.host_file(h, MARKER).is_some())
        .collect();
    wait_all(
        &server,
        &tb,
        "disassociated",
        Duration::from_secs(180),
        &[&b],
    )
    .await;
    let st = b.status().await;
    assert!(
        st["workers"]["investigator"]["ok"].as_u64().unwrap() > 0,
        "{st}"
    );
    // A host whose bootstrap had completed is never bootstrapped again; one cut short by the
    // kill is finished by the other investigator (at most once more).
    for (h, done) in tb.addresses().iter().zip(completed) {
        let restarts = tb
            .commands_log(h)
            .iter()
            .filter(|l| {
                l.split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with("systemctl restart")
            })
            .count();
        if done {
            assert_eq!(
                restarts, 1,
                "{h} was bootstrapped again after it had completed"
            );
        } else {
            assert!((1..=2).contains(&restarts), "{h}: {restarts} bootstraps");
        }
    }
}

/// The bootstrap marker on a host.
const MARKER: &str = "/var/lib/commissaire/bootstrap";

fn boot_counts(tb: &Testbed) -> HashMap<String, u64> {
    tb.addresses()
        .into_iter()
        .map(|a| (a.clone(), tb.boot_count(&a)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_survives_the_death_of_its_clusterexec() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 12,
        reboot_delay_secs: 2.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Etcd);
    let redis = RedisServer::start();
    let server = bus_server(&env, &redis, &tb).await;
    let inv = Service::start(&env, "investigator", "inv", Some(&redis), &[]);
    let mut x1 = Service::start(&env, "clusterexec", "exec-1", Some(&redis), &[]);
    let mut x2 = Service::start(&env, "clusterexec", "exec-2", Some(&redis), &[]);
    expect_status(&server.put("/cluster/c", json!({})).await, 201);
    put_hosts(&server, &tb, Some("c")).await;
    wait_all(
        &server,
        &tb,
        "disassociated",
        Duration::from_secs(180),
        &[&inv],
    )
    .await;
    let before = boot_counts(&tb);
    expect_status(
        &server
            .put("/cluster/c/restart", json!({"batch_size": 4}))
            .await,
        201,
    );
    // Kill the owner once the first batch is done and the second is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        let op = server.get("/cluster/c/restart").await.json;
        let done = op["restarted"].as_array().map_or(0, Vec::len);
        if done >= 4 && !op["in_process"].as_array().unwrap().is_empty() {
            break op["owner"].as_str().unwrap().to_string();
        }
        assert!(op["status"] == "in_process", "ended before the kill: {op}");
        assert!(
            Instant::now() < deadline,
            "no progress: {op}\n{}\n{}",
            x1.log_tail(),
            x2.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let killed_at = Instant::now();
    let (survivor, survivor_id) = match owner.as_str() {
        "exec-1" => {
            x1.kill();
            (&x2, "exec-2")
        }
        "exec-2" => {
            x2.kill();
            (&x1, "exec-1")
        }
        other => panic!("owner {other:?} is neither clusterexec"),
    };
    // Taken over within the lease TTL plus one scan (10 s), with slack for a busy machine.
    let deadline = Instant::now() + Duration::from_secs(LEASE_TTL + 10 + 30);
    loop {
        let op = server.get("/cluster/c/restart").await.json;
        if op["owner"] == survivor_id {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over: {op}\n{}",
            survivor.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let takeover = killed_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(180);
    let op = loop {
        let op = server.get("/cluster/c/restart").await.json;
        if op["status"] != "in_process" {
            break op;
        }
        assert!(
            Instant::now() < deadline,
            "restart never ended: {op}\n{}",
            survivor.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(op["restarted"].as_array().unwrap().len(), 12, "{op}");
    for (a, n) in before {
        assert_eq!(
            tb.boot_count(&a),
            n + 1,
            "host {a} must reboot exactly once"
        );
    }
    eprintln!("takeover after {takeover:?}");
}

async fn last_round_counts(ws: &[&Service]) -> Vec<u64> {
    let mut out = vec![];
    for w in ws {
        out.push(
            w.status().await["watcher_checks_last_round"]
                .as_u64()
                .unwrap(),
        );
    }
    out
}

async fn rounds(w: &Service) -> u64 {
    w.status().await["watcher_rounds"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_split_the_hosts_and_take_over_a_dead_ones_share() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 30,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Etcd);
    let redis = RedisServer::start();
    let server = bus_server(&env, &redis, &tb).await;
    let inv = Service::start(&env, "investigator", "inv", Some(&redis), &[]);
    put_hosts(&server, &tb, None).await;
    wait_all(
        &server,
        &tb,
        "disassociated",
        Duration::from_secs(240),
        &[&inv],
    )
    .await;
    let interval = ["--watcher-interval", "4"];
    let w1 = Service::start(&env, "watcher", "w1", None, &interval);
    let w2 = Service::start(&env, "watcher", "w2", None, &interval);
    let mut w3 = Service::start(&env, "watcher", "w3", None, &interval);
    // Once all three are registered and each has done two more rounds, their shares add up.
    let deadline = Instant::now() + Duration::from_secs(90);
    let counts = loop {
        let start: Vec<u64> = vec![rounds(&w1).await, rounds(&w2).await, rounds(&w3).await];
        let settle = Instant::now() + Duration::from_secs(60);
        loop {
            let now = [rounds(&w1).await, rounds(&w2).await, rounds(&w3).await];
            if now.iter().zip(&start).all(|(n, s)| *n >= s + 2) {
                break;
            }
            assert!(
                Instant::now() < settle,
                "watchers make no rounds\n{}",
                w1.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let c = last_round_counts(&[&w1, &w2, &w3]).await;
        if c.iter().sum::<u64>() == 30 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "shares never added up to 30: {c:?}"
        );
    };
    for c in &counts {
        assert!(
            *c >= 5,
            "each watcher checks at least 5 of 30 hosts: {counts:?}"
        );
    }
    // The checks really happen: the checks counters move by the shares.
    let metric = |w: &Service| {
        let url = format!("http://127.0.0.1:{}/metrics", w.metrics);
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            text.lines()
                .find(|l| l.starts_with("commissaire_watcher_checks_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    assert!(
        metric(&w1).await >= counts[0] as f64,
        "watcher checks not counted"
    );
    // w3 dies: within its lease TTL and two rounds the others cover its hosts.
    w3.kill();
    let deadline = Instant::now() + Duration::from_secs(LEASE_TTL + 4 * 2 + 30);
    loop {
        let c = last_round_counts(&[&w1, &w2]).await;
        if c.iter().sum::<u64>() == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead watcher's hosts were not taken over: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_added_while_redis_is_down_are_still_investigated() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 4,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Etcd);
    let mut redis = RedisServer::start();
    let server = bus_server(&env, &redis, &tb).await;
    let inv = Service::start(
        &env,
        "investigator",
        "inv",
        Some(&redis),
        &["--resync", "5"],
    );
    inv.status().await;
    redis.stop();
    let down = Instant::now();
    put_hosts(&server, &tb, None).await;
    let st = server.get("/status").await.json;
    assert_eq!(st["bus"]["status"], "unavailable", "{st}");
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(down.elapsed())).await;
    redis.restart();
    wait_all(
        &server,
        &tb,
        "disassociated",
        Duration::from_secs(120),
        &[&inv],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reads_its_configuration_from_etcd() {
    let env = Env::new(Backend::Etcd);
    let store = env.etcd_store().await;
    let metrics = free_port();
    std::fs::write(secrets_key(&env), [7u8; 32]).unwrap();
    let cfg = json!({
        "storage_handlers": [{"name": "etcd", "server_url": env.etcd_url().unwrap()}],
        "worker_id": "configured-in-etcd",
        "metrics_listen": format!("127.0.0.1:{metrics}"),
        "lease_ttl": LEASE_TTL,
    });
    use store::StoreExt;
    store
        .put("config/containermgr", cfg.to_string().into_bytes())
        .await
        .unwrap();
    let log = env.dir().join("etcd-config.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_commissaire-service"))
        .arg("containermgr")
        .env("ETCD_MACHINES", env.etcd_url().unwrap())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut svc = Service {
        child: Some(child),
        log,
        metrics,
    };
    let st = svc.status().await;
    assert_eq!(st["worker_id"], "configured-in-etcd", "{st}");
    assert_eq!(st["service"], "containermgr", "{st}");
    svc.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_closes_idle_and_half_sent_connections() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use tokio::io::AsyncWriteExt;
    let env = Env::new(Backend::Etcd);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secrets_key(&env))
        .unwrap()
        .write_all("07".repeat(32).as_bytes())
        .unwrap();
    let svc = Service::start(&env, "containermgr", "bounded", None, &[]);
    svc.status().await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], svc.metrics));
    let mut conns = Vec::new();
    for i in 0..30 {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            // Headers started, never finished.
            c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        conns.push(c);
    }
    // Both kinds are closed by the listener's 10 s bound on the first byte and the headers;
    // generous deadline for a busy machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let closed =
        futures::future::join_all(conns.into_iter().map(|c| closed_by_server(c, deadline))).await;
    let n = closed.iter().filter(|c| **c).count();
    assert_eq!(
        n,
        30,
        "only {n} of 30 silent connections were closed\n{}",
        svc.log_tail()
    );
    // And the listener still serves.
    let st = svc.status().await;
    assert_eq!(st["service"], "containermgr", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_service_publishes_every_change_once_in_order() {
    let env = Env::new(Backend::Etcd);
    let redis = RedisServer::start();
    let mut opts = env.options("server");
    opts.secrets_key_file = Some(secrets_key(&env));
    opts.extra_args = vec!["--bus-uri".into(), redis.url()];
    let server = Server::start(opts).await;
    let mut p1 = Service::start(&env, "storage", "pub-1", Some(&redis), &[]);
    let mut p2 = Service::start(&env, "storage", "pub-2", Some(&redis), &[]);
    p1.status().await;
    p2.status().await;
    // Which one holds the publisher role (a key bound to its lease)?
    let store = env.etcd_store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(kv) = store::Store::get(&store, "owners/storage/publisher")
            .await
            .unwrap()
        {
            break String::from_utf8(kv.value).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no publisher took the role
{}",
            p1.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let from = server.store_revision().await;
    let total = 1000;
    for i in 0..total {
        if i == total / 3 {
            // The publisher holding the role dies; the other takes over after the lease.
            match holder.as_str() {
                "pub-1" => p1.kill(),
                "pub-2" => p2.kill(),
                other => panic!("unknown publisher {other:?}"),
            }
        }
        let r = server
            .put(
                &format!("/network/n{i}"),
                json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}),
            )
            .await;
        expect_status(&r, 201);
    }
    // The last PUT's change is the revision before its audit record (not on the bus).
    let to = server.store_revision().await - 1;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("commissaire:events")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let last = entries
            .last()
            .and_then(|(id, _)| id.split_once('-'))
            .and_then(|(r, _)| r.parse::<i64>().ok())
            .unwrap_or(0);
        if last >= to {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "stream stops at revision {last} of {to}\n{}",
            p2.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut names = BTreeSet::new();
    let mut last = (0i64, 0u64);
    for (id, fields) in &entries {
        let (r, i) = id.split_once('-').unwrap();
        let key = (r.parse::<i64>().unwrap(), i.parse::<u64>().unwrap());
        assert!(key > last, "entries out of order: {id} after {last:?}");
        last = key;
        let body: Value = serde_json::from_str(&fields[0].1).unwrap();
        assert_eq!(body["revision"], key.0, "{body}");
        assert!(
            !fields[0].1.contains("ssh_priv_key"),
            "a secret in the stream"
        );
        if key.0 > from && body["kind"] == "Network" {
            let name = body["name"].as_str().unwrap().to_string();
            assert!(names.insert(name.clone()), "{name} published twice");
        }
    }
    assert_eq!(
        names.len(),
        total,
        "every network creation is in the stream once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_ignores_a_bus_and_runs_its_workers_itself() {
    // The seeds' own example configuration names a bus and no storage handler: it must start,
    // with in-process workers (an embedded store cannot be shared), and say why in its log.
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec!["--bus-uri".into(), "redis://127.0.0.1:1/".into()];
    let s = Server::start(opts).await;
    let st = expect_status(&s.get("/status").await, 200);
    assert_eq!(st["bus"]["type"], "in-process", "{st}");
    assert_eq!(st["workers"]["investigator"]["in_process"], true, "{st}");
    assert!(
        s.log_tail(200).contains("bus-uri is not used"),
        "{}",
        s.log_tail(50)
    );
}
