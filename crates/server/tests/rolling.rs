//! Rolling restart, upgrade and OSTree deploy against a simulated fleet: batches, the failure
//! budget, cancel/pause/resume, crash resume, and what the hosts saw (boot counts, versions).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::testbed::{Testbed, TestbedOptions};

/// Starts a server, makes cluster `c` of every testbed host and waits until all are
/// bootstrapped.
async fn fleet(env: &Env, tb: &Testbed) -> Server {
    let server = env.server().await;
    flannel_server_network(&server, tb).await;
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    for a in tb.addresses() {
        let r = server
            .put(
                &format!("/host/{a}"),
                json!({"ssh_priv_key": tb.client_key_base64(), "cluster": "c"}),
            )
            .await;
        expect_status(&r, 201);
    }
    wait_bootstrapped(&server, tb).await;
    server
}

async fn wait_bootstrapped(server: &Server, tb: &Testbed) {
    let deadline = Instant::now() + Duration::from_secs(240);
    for a in tb.addresses() {
        loop {
            let h = server.get(&format!("/host/{a}")).await.json;
            if h["status"] == "disassociated" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {a} not bootstrapped: {h}\n{}",
                server.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls the operation until `done(op)`; panics with it and the server log after `timeout`.
async fn wait_op(
    server: &Server,
    path: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = server.get(path).await;
        if r.status == 200 {
            last = r.json.clone();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{path} did not reach the expected state in {timeout:?}: {last}\n{}",
        server.log_tail(80)
    );
}

fn ended(op: &Value) -> bool {
    !matches!(op["status"].as_str(), Some("in_process" | "paused"))
}

fn boot_counts(tb: &Testbed) -> HashMap<String, u64> {
    tb.addresses()
        .into_iter()
        .map(|a| (a.clone(), tb.boot_count(&a)))
        .collect()
}

fn set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn host_version(tb: &Testbed, a: &str) -> String {
    std::fs::read_to_string(tb.host_dir(a).join("version"))
        .unwrap()
        .trim()
        .to_string()
}

/// Samples, until stopped, the largest number of hosts down at the same time.
fn sample_down(
    tb: Arc<Testbed>,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let (s, m) = (stop.clone(), max.clone());
    let h = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            let down = tb
                .addresses()
                .iter()
                .filter(|a| tb.status_of(a) != "up")
                .count();
            m.fetch_max(down, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (stop, max, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_12_hosts_in_batches_of_4() {
    let tb = Arc::new(Testbed::up(TestbedOptions {
        hosts: 12,
        reboot_delay_secs: 2.0,
        ..TestbedOptions::default()
    }));
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let before = boot_counts(&tb);
    let mut feed = EventReader::open(&server, None).await;

    let (stop, max_down, sampler) = sample_down(tb.clone());
    let r = server
        .put("/cluster/c/restart", json!({"batch_size": 4}))
        .await;
    let op = expect_status(&r, 201);
    assert_eq!(op["status"], "in_process");
    assert_eq!(op["restarted"], json!([]));
    assert_eq!(op["finished_at"], "");
    // Only one operation at a time on a cluster.
    expect_error(
        &server.put("/cluster/c/upgrade", json!({})).await,
        409,
        "already running",
    );
    expect_error(&server.delete("/cluster/c").await, 409, "in progress");

    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(240),
        ended,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(set(&op["restarted"]), tb.addresses().into_iter().collect());
    assert_eq!(op["failed"], json!([]));
    assert_eq!(op["in_process"], json!([]));
    assert!(!op["finished_at"].as_str().unwrap().is_empty());
    for a in tb.addresses() {
        assert_eq!(
            tb.boot_count(&a),
            before[&a] + 1,
            "{a} rebooted {} times",
            tb.boot_count(&a) - before[&a]
        );
        assert_eq!(op["hosts"][&a]["state"], "done");
    }
    let most = max_down.load(Ordering::Relaxed);
    assert!(
        most <= 4,
        "{most} hosts were down at once with batch_size 4"
    );
    assert!(most >= 2, "hosts were never rebooted together ({most})");

    // Progress was streamed: an update event per transition, ending with the finished record.
    let mut saw_finished = false;
    let mut updates = 0;
    while let Some(ev) = feed.next(Duration::from_secs(5)).await {
        let d = ev.json();
        if d["kind"] == "ClusterRestart" {
            updates += 1;
            if d["object"]["status"] == "finished" {
                saw_finished = true;
                break;
            }
        }
    }
    assert!(
        saw_finished && updates > 12 * 3,
        "{updates} ClusterRestart events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_and_the_failure_budget() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        flavours: vec!["fedora".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let addrs = tb.addresses();
    let before = boot_counts(&tb);

    // max_failures 0: the run stops at the failing host; the one after it is never touched.
    let r = server
        .put("/cluster/c/restart", json!({"timeout_seconds": 20}))
        .await;
    expect_status(&r, 201);
    wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        |op| op["hosts"][&addrs[0]]["state"] != "pending",
    )
    .await;
    tb.stop(&addrs[1]);
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(120),
        ended,
    )
    .await;
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["failed"], json!([addrs[1]]));
    assert_eq!(op["restarted"], json!([addrs[0]]));
    assert!(
        op["reason"]
            .as_str()
            .unwrap()
            .contains("max_failures allows 0"),
        "{op}"
    );
    assert!(
        !op["hosts"][&addrs[1]]["error"].as_str().unwrap().is_empty(),
        "{op}"
    );
    assert_eq!(op["hosts"][&addrs[2]]["state"], "pending");
    assert_eq!(tb.boot_count(&addrs[2]), before[&addrs[2]]);

    // max_failures 1: the others complete.
    let r = server
        .put(
            "/cluster/c/restart",
            json!({"max_failures": 1, "timeout_seconds": 20}),
        )
        .await;
    expect_status(&r, 201);
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(120),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(op["failed"], json!([addrs[1]]));
    assert_eq!(
        set(&op["restarted"]),
        [addrs[0].clone(), addrs[2].clone()].into_iter().collect()
    );
    assert_eq!(tb.boot_count(&addrs[0]), before[&addrs[0]] + 2);
    assert_eq!(tb.boot_count(&addrs[2]), before[&addrs[2]] + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twice_during_a_restart_reboots_every_host_once() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 12,
        reboot_delay_secs: 2.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let mut server = fleet(&env, &tb).await;
    let before = boot_counts(&tb);
    expect_status(
        &server
            .put("/cluster/c/restart", json!({"batch_size": 2}))
            .await,
        201,
    );
    for threshold in [2usize, 6] {
        // Kill once some hosts are done and others are rebooting.
        wait_op(
            &server,
            "/cluster/c/restart",
            Duration::from_secs(180),
            |op| {
                set(&op["restarted"]).len() >= threshold
                    && !op["in_process"].as_array().unwrap().is_empty()
            },
        )
        .await;
        server.kill();
        server = Server::start(server.opts.clone()).await;
    }
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(300),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(set(&op["restarted"]).len(), 12);
    for a in tb.addresses() {
        assert_eq!(
            tb.boot_count(&a),
            before[&a] + 1,
            "{a} was rebooted {} times",
            tb.boot_count(&a) - before[&a]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_mixed_flavours_and_deploy_on_ostree() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 6,
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let before = boot_counts(&tb);
    tb.publish("3.0");
    let r = server
        .put("/cluster/c/upgrade", json!({"batch_size": "50%"}))
        .await;
    expect_status(&r, 201);
    let op = wait_op(
        &server,
        "/cluster/c/upgrade",
        Duration::from_secs(240),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(set(&op["upgraded"]).len(), 6);
    for a in tb.addresses() {
        assert_eq!(host_version(&tb, &a), "3.0", "{a} ({})", tb.flavour_of(&a));
        let cmds: Vec<String> = tb.commands_log(&a);
        let flavour = tb.flavour_of(&a);
        let expected = match flavour.as_str() {
            "fedora" => "dnf update -y",
            "rhel" | "centos" => "yum update -y",
            "debian" => "apt-get upgrade -y",
            _ => "rpm-ostree upgrade",
        };
        assert!(cmds.iter().any(|c| c.contains(expected)), "{a}: {cmds:?}");
        // OSTree hosts reboot to apply; the others do not without "reboot": true.
        let reboots = tb.boot_count(&a) - before[&a];
        assert_eq!(
            reboots,
            u64::from(flavour.ends_with("-atomic")),
            "{a} ({flavour})"
        );
    }

    // Deploy: OSTree hosts end with the version booted; traditional hosts fail with a reason.
    let r = server
        .put(
            "/cluster/c/deploy",
            json!({"version": "7.2.1", "max_failures": "100%", "batch_size": 6}),
        )
        .await;
    let op = expect_status(&r, 201);
    assert_eq!(op["version"], "7.2.1");
    let op = wait_op(
        &server,
        "/cluster/c/deploy",
        Duration::from_secs(240),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    for a in tb.addresses() {
        let flavour = tb.flavour_of(&a);
        if flavour.ends_with("-atomic") {
            assert_eq!(host_version(&tb, &a), "7.2.1", "{a}");
            assert!(set(&op["deployed"]).contains(&a));
        } else {
            assert!(set(&op["failed"]).contains(&a), "{op}");
            let err = op["hosts"][&a]["error"].as_str().unwrap();
            assert!(err.contains("deploy needs an OSTree host"), "{err}");
            assert_eq!(host_version(&tb, &a), "3.0");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pause_resume_and_bad_requests() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 4,
        flavours: vec!["centos".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let addrs = tb.addresses();

    expect_error(
        &server.get("/cluster/c/restart").await,
        404,
        "no restart has been started",
    );
    expect_error(
        &server.get("/cluster/nope/restart").await,
        404,
        "does not exist",
    );
    expect_error(
        &server.put("/cluster/c/deploy", json!({})).await,
        400,
        "version",
    );
    expect_error(
        &server
            .put("/cluster/c/restart", json!({"batch_size": 0}))
            .await,
        400,
        "batch_size",
    );
    expect_error(
        &server
            .put("/cluster/c/restart", json!({"max_failures": "x"}))
            .await,
        400,
        "max_failures",
    );
    expect_error(
        &server
            .put("/cluster/c/restart", json!({"reboot": true}))
            .await,
        400,
        "reboot",
    );
    expect_error(
        &server.put("/cluster/nope/restart", json!({})).await,
        404,
        "does not exist",
    );

    // Pause: the host in flight finishes, nothing new starts until resumed.
    expect_status(&server.put("/cluster/c/restart", json!({})).await, 201);
    let op = expect_status(
        &server.put("/cluster/c/restart/pause", json!({})).await,
        200,
    );
    assert_eq!(op["status"], "paused");
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        |op| op["in_process"] == json!([]),
    )
    .await;
    let done_at_pause = set(&op["restarted"]).len();
    assert!(done_at_pause <= 1, "{op}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let op = server.get("/cluster/c/restart").await.json;
    assert_eq!(op["status"], "paused");
    assert_eq!(
        set(&op["restarted"]).len(),
        done_at_pause,
        "a host started while paused: {op}"
    );
    assert_eq!(op["in_process"], json!([]));
    expect_error(
        &server.put("/cluster/c/upgrade", json!({})).await,
        409,
        "paused",
    );

    let op = expect_status(
        &server.put("/cluster/c/restart/resume", json!({})).await,
        200,
    );
    assert_eq!(op["status"], "in_process");
    // Cancel once one more host is done: the rest are never touched.
    wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        |op| set(&op["restarted"]).len() > done_at_pause,
    )
    .await;
    let before = boot_counts(&tb);
    let op = expect_status(&server.delete("/cluster/c/restart").await, 200);
    assert_eq!(op["cancel_requested"], true);
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        ended,
    )
    .await;
    assert_eq!(op["status"], "cancelled", "{op}");
    let done = set(&op["restarted"]);
    assert!(done.len() < 4, "{op}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for a in &addrs {
        if !done.contains(a) && op["hosts"][a]["state"] == "pending" {
            assert_eq!(
                tb.boot_count(a),
                before[a],
                "{a} was touched after the cancel"
            );
        }
    }
    // An ended operation cannot be controlled; a new one can start.
    expect_error(
        &server.delete("/cluster/c/restart").await,
        409,
        "already ended",
    );
    expect_error(
        &server.put("/cluster/c/restart/resume", json!({})).await,
        409,
        "already ended",
    );
    expect_status(
        &server
            .put("/cluster/c/restart", json!({"batch_size": 4}))
            .await,
        201,
    );
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(120),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
}
