//! Rolling restart, upgrade and OSTree deploy against a simulated fleet: batches, the failure
//! budget, cancel/pause/resume, crash resume (also on etcd, taken over by a second server), the
//! failure paths (a reboot that does not happen, a deployment that does not boot, a host that
//! never comes back — its node still uncordoned), and what the hosts saw (boot counts,
//! versions, commands). Also what cluster writes do to operation records.

#[macro_use]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::fakekube::{FakeKube, FakeKubeOptions};
use testsupport::testbed::{Quirk, Testbed, TestbedOptions};

/// Starts a server, makes cluster `c` of every testbed host and waits until all are
/// bootstrapped.
async fn fleet(env: &Env, tb: &Testbed) -> Server {
    let server = env.server().await;
    populate(&server, tb).await;
    server
}

/// Makes cluster `c` (on a flannel_server network) of every testbed host on `server` and waits
/// until all are bootstrapped.
async fn populate(server: &Server, tb: &Testbed) {
    flannel_server_network(server, tb).await;
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
    wait_bootstrapped(server, tb).await;
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
    while let Some(ev) = feed.next(Duration::from_secs(60)).await {
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
    let mut untouched = 0;
    for a in &addrs {
        if !done.contains(a) && op["hosts"][a]["state"] == "pending" {
            untouched += 1;
            assert_eq!(
                tb.boot_count(a),
                before[a],
                "{a} was touched after the cancel"
            );
        }
    }
    assert!(untouched >= 1, "no host was left to check: {op}");
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

// ---------------------------------------------------------------------------------------------
// Failure paths
// ---------------------------------------------------------------------------------------------

/// The commands the host logged, without time and boot id.
fn commands(tb: &Testbed, a: &str) -> Vec<String> {
    tb.commands_log(a)
        .iter()
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// How many reboot commands the host has been given.
fn reboots_requested(tb: &Testbed, a: &str) -> usize {
    commands(tb, a)
        .iter()
        .filter(|c| {
            matches!(c.as_str(), "reboot" | "systemctl reboot") || c.starts_with("shutdown -r")
        })
        .count()
}

/// An API timestamp in microseconds since the epoch.
fn micros(ts: &Value) -> i64 {
    let s = ts
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {ts}"));
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"))
        .and_utc()
        .timestamp_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_that_does_not_happen_fails_the_host_after_one_request() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        flavours: vec!["fedora".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let a = tb.addresses();
    let before = boot_counts(&tb);
    let boot_id = tb.boot_id(&a[1]);
    tb.set_quirk(&a[1], Quirk::IgnoreReboot);

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
        Duration::from_secs(240),
        ended,
    )
    .await;
    // Within the budget: the run goes on past the failed host and finishes.
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(op["failed"], json!([a[1]]), "{op}");
    assert_eq!(
        set(&op["restarted"]),
        [a[0].clone(), a[2].clone()].into_iter().collect()
    );
    assert_eq!(op["in_process"], json!([]));
    let h = &op["hosts"][&a[1]];
    assert_eq!(h["state"], "failed", "{op}");
    let err = h["error"].as_str().unwrap();
    assert!(
        err.contains("did not come back with a new boot id")
            && err.contains("still running the boot it had before"),
        "{op}"
    );
    assert!(!h["finished_at"].as_str().unwrap().is_empty(), "{op}");
    // The host stayed in its boot, and was asked to reboot exactly once: waiting for it never
    // turned into a second request.
    assert_eq!(tb.boot_id(&a[1]), boot_id);
    assert_eq!(tb.boot_count(&a[1]), before[&a[1]]);
    assert_eq!(
        reboots_requested(&tb, &a[1]),
        1,
        "{:?}",
        commands(&tb, &a[1])
    );
    // Waiting for it backs off: a host that is up is not sent an SSH login every 100 ms for
    // the whole timeout (that was ~90 logins in these 20 s; backing off to one every 2 s
    // makes ~15, whatever the machine's speed, plus those of investigation and bootstrap).
    let logins = std::fs::read_to_string(tb.host_dir(&a[1]).join("sshd.log"))
        .expect("the host's sshd log")
        .matches("Accepted publickey")
        .count();
    assert!(
        logins <= 30,
        "{logins} SSH logins on a host that did not reboot"
    );
    for ok in [&a[0], &a[2]] {
        assert_eq!(tb.boot_count(ok), before[ok] + 1, "{ok}");
        assert_eq!(reboots_requested(&tb, ok), 1, "{ok}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_version_does_not_boot_fails_and_stops_the_run() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        flavours: vec!["fedora-atomic".into(), "rhel-atomic".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let a = tb.addresses();
    let before = boot_counts(&tb);
    // The first host boots the old deployment again (a rolled-back deploy).
    tb.set_quirk(&a[0], Quirk::KeepVersion);

    let r = server
        .put(
            "/cluster/c/deploy",
            json!({"version": "7.2.1", "batch_size": 1, "timeout_seconds": 60}),
        )
        .await;
    expect_status(&r, 201);
    let op = wait_op(
        &server,
        "/cluster/c/deploy",
        Duration::from_secs(240),
        ended,
    )
    .await;
    // max_failures 0: the failure ends the run; the others are never touched.
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["failed"], json!([a[0]]), "{op}");
    assert_eq!(op["deployed"], json!([]), "{op}");
    assert!(
        op["reason"]
            .as_str()
            .unwrap()
            .contains("max_failures allows 0"),
        "{op}"
    );
    let err = op["hosts"][&a[0]]["error"].as_str().unwrap();
    assert!(
        err.contains(r#"booted OSTree version is "1.0", expected "7.2.1""#),
        "{err}"
    );
    // It did reboot (once) into the old version.
    assert_eq!(tb.boot_count(&a[0]), before[&a[0]] + 1);
    assert_eq!(tb.version_of(&a[0]), "1.0");
    assert!(
        commands(&tb, &a[0])
            .iter()
            .any(|c| c.starts_with("rpm-ostree deploy") && c.contains("7.2.1")),
        "{:?}",
        commands(&tb, &a[0])
    );
    for other in [&a[1], &a[2]] {
        assert_eq!(op["hosts"][other]["state"], "pending", "{op}");
        assert_eq!(tb.boot_count(other), before[other], "{other}");
        assert_eq!(tb.version_of(other), "1.0", "{other}");
        assert!(
            !commands(&tb, other)
                .iter()
                .any(|c| c.starts_with("rpm-ostree deploy")),
            "{other} was touched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_reboot_and_pause_seconds_between_batches() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 3,
        flavours: vec!["fedora".into(), "debian".into(), "centos".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let a = tb.addresses();
    let before = boot_counts(&tb);
    let boot_ids: HashMap<String, String> = a.iter().map(|h| (h.clone(), tb.boot_id(h))).collect();
    tb.publish("3.0");
    const PAUSE: f64 = 3.0;
    let r = server
        .put(
            "/cluster/c/upgrade",
            json!({"reboot": true, "pause_seconds": PAUSE, "batch_size": 1}),
        )
        .await;
    let started = expect_status(&r, 201);
    assert_eq!(started["options"]["reboot"], true, "{started}");
    assert_eq!(started["options"]["pause_seconds"], PAUSE, "{started}");
    let op = wait_op(
        &server,
        "/cluster/c/upgrade",
        Duration::from_secs(240),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(set(&op["upgraded"]), a.iter().cloned().collect());
    for h in &a {
        // Traditional hosts reboot only because the run asked for it: upgrade, then reboot,
        // both in the old boot, and the host runs a new boot now.
        assert_eq!(host_version(&tb, h), "3.0", "{h}");
        assert_eq!(tb.boot_count(h), before[h] + 1, "{h}");
        assert_ne!(tb.boot_id(h), boot_ids[h], "{h}");
        let log = tb.commands_log(h);
        let in_old_boot = |needle: &str| {
            log.iter()
                .position(|l| {
                    l.split_whitespace().nth(1) == Some(boot_ids[h].as_str()) && l.contains(needle)
                })
                .unwrap_or_else(|| panic!("{h}: no {needle:?} in the old boot: {log:#?}"))
        };
        let upgrade = in_old_boot(match tb.flavour_of(h).as_str() {
            "fedora" => "dnf update -y",
            "debian" => "apt-get upgrade -y",
            _ => "yum update -y",
        });
        let reboot = in_old_boot("systemctl reboot");
        assert!(upgrade < reboot, "{h}: reboot before the upgrade: {log:#?}");
    }
    // Each batch (one host) started at least pause_seconds after the previous one ended.
    let mut spans: Vec<(i64, i64)> = a
        .iter()
        .map(|h| {
            (
                micros(&op["hosts"][h]["started_at"]),
                micros(&op["hosts"][h]["finished_at"]),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        let gap = w[1].0 - w[0].1;
        assert!(
            gap >= (PAUSE * 1e6) as i64,
            "a batch started {gap} µs after the previous one ended (pause_seconds {PAUSE}): {op}"
        );
    }
}

/// A Kubernetes container manager `k` on the fake API and cluster `k` of every testbed host,
/// all `active`.
async fn kube_cluster(server: &Server, tb: &Testbed, kube: &FakeKube) {
    flannel_server_network(server, tb).await;
    expect_status(
        &server
            .put(
                "/containermanager/k",
                json!({"type": "kubernetes", "options": {
                    "server_url": kube.url(),
                    "token": kube.token().unwrap(),
                    // PEM text: the API never reads server files it is pointed at.
                    "ca": std::fs::read_to_string(kube.ca_path()).unwrap(),
                    "node_ready_timeout_seconds": 30,
                }}),
            )
            .await,
        201,
    );
    expect_status(
        &server
            .put(
                "/cluster/k",
                json!({"network": "fs", "container_manager": "k"}),
            )
            .await,
        201,
    );
    for h in tb.addresses() {
        expect_status(
            &server
                .put(
                    &format!("/host/{h}"),
                    json!({"ssh_priv_key": tb.client_key_base64(), "cluster": "k"}),
                )
                .await,
            201,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    for h in tb.addresses() {
        loop {
            let host = server.get(&format!("/host/{h}")).await.json;
            if host["status"] == "active" {
                break;
            }
            assert!(
                host["status"] != "failed" && Instant::now() < deadline,
                "host {h} not active: {host}\n{}",
                server.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// PATCHes of the host's node that cordon it (`true`) or uncordon it (`false`), in order.
fn cordon_patches(kube: &FakeKube, h: &str) -> Vec<bool> {
    kube.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == format!("/api/v1/nodes/{h}"))
        .filter(|r| r.body["spec"].get("unschedulable").is_some())
        .map(|r| r.body["spec"]["unschedulable"] == true)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_false_leaves_nodes_alone_and_a_host_that_never_returns_is_uncordoned() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 2,
        flavours: vec!["fedora".into(), "centos".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let kube = FakeKube::start(FakeKubeOptions::default());
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    kube_cluster(&server, &tb, &kube).await;
    let a = tb.addresses();
    let before = boot_counts(&tb);

    // drain: false on a cluster with a manager: the hosts reboot, their nodes are not touched.
    kube.clear_requests();
    let r = server
        .put("/cluster/k/restart", json!({"drain": false}))
        .await;
    assert_eq!(expect_status(&r, 201)["options"]["drain"], false);
    let op = wait_op(
        &server,
        "/cluster/k/restart",
        Duration::from_secs(240),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    for h in &a {
        assert_eq!(tb.boot_count(h), before[h] + 1, "{h}");
        assert_eq!(op["hosts"][h]["drained"], false, "{op}");
    }
    let touched: Vec<String> = kube
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        touched.is_empty(),
        "drain: false, yet the manager was asked to change: {touched:?}"
    );

    // The first host goes down for its reboot and never comes back. Its node was cordoned for
    // the run and must not stay so; the budget lets the run go on.
    tb.set_quirk(&a[0], Quirk::NoReturn);
    kube.clear_requests();
    let r = server
        .put(
            "/cluster/k/restart",
            json!({"max_failures": 1, "timeout_seconds": 20}),
        )
        .await;
    assert_eq!(expect_status(&r, 201)["options"]["drain"], true);
    let op = wait_op(
        &server,
        "/cluster/k/restart",
        Duration::from_secs(240),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_eq!(op["failed"], json!([a[0]]), "{op}");
    assert_eq!(op["restarted"], json!([a[1]]), "{op}");
    let err = op["hosts"][&a[0]]["error"].as_str().unwrap();
    assert!(err.contains("did not come back"), "{err}");
    assert_eq!(op["hosts"][&a[0]]["drained"], true, "{op}");
    assert_eq!(tb.status_of(&a[0]), "stopped");
    assert_eq!(tb.boot_count(&a[0]), before[&a[0]] + 1);
    for h in &a {
        assert_eq!(
            cordon_patches(&kube, h),
            vec![true, false],
            "{h}: cordoned then uncordoned once: {:#?}",
            kube.requests()
        );
        let node = kube.node(h).expect("the node is still registered");
        assert!(
            node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false,
            "{h} left cordoned: {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_an_upgrade_and_a_deploy() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 4,
        flavours: vec!["fedora-atomic".into()],
        reboot_delay_secs: 1.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = fleet(&env, &tb).await;
    let a = tb.addresses();
    tb.publish("3.0");

    // Upgrade: paused at once, the host in flight (if any) finishes, nothing new starts.
    expect_status(
        &server
            .put("/cluster/c/upgrade", json!({"batch_size": 1}))
            .await,
        201,
    );
    let op = expect_status(
        &server.put("/cluster/c/upgrade/pause", json!({})).await,
        200,
    );
    assert_eq!(op["status"], "paused");
    let op = wait_op(
        &server,
        "/cluster/c/upgrade",
        Duration::from_secs(120),
        |op| op["in_process"] == json!([]),
    )
    .await;
    let at_pause = set(&op["upgraded"]);
    assert!(at_pause.len() <= 1, "{op}");
    let boots = boot_counts(&tb);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let op = server.get("/cluster/c/upgrade").await.json;
    assert_eq!(op["status"], "paused", "{op}");
    assert_eq!(
        set(&op["upgraded"]),
        at_pause,
        "a host started while paused: {op}"
    );
    assert_eq!(op["in_process"], json!([]), "{op}");
    assert_eq!(boot_counts(&tb), boots, "a host rebooted while paused");
    expect_error(
        &server
            .put("/cluster/c/deploy", json!({"version": "9"}))
            .await,
        409,
        "paused",
    );
    let op = expect_status(
        &server.put("/cluster/c/upgrade/resume", json!({})).await,
        200,
    );
    assert_eq!(op["status"], "in_process");
    // Cancel once one more host is done: the rest keep their version and their boot.
    wait_op(
        &server,
        "/cluster/c/upgrade",
        Duration::from_secs(120),
        |op| set(&op["upgraded"]).len() > at_pause.len(),
    )
    .await;
    let op = expect_status(&server.delete("/cluster/c/upgrade").await, 200);
    assert_eq!(op["cancel_requested"], true);
    let boots = boot_counts(&tb);
    let op = wait_op(
        &server,
        "/cluster/c/upgrade",
        Duration::from_secs(120),
        ended,
    )
    .await;
    assert_eq!(op["status"], "cancelled", "{op}");
    assert_eq!(op["reason"], "cancelled on request", "{op}");
    let upgraded = set(&op["upgraded"]);
    assert!(upgraded.len() < a.len(), "{op}");
    let mut untouched = 0;
    for h in &a {
        let state = op["hosts"][h]["state"].as_str().unwrap();
        if upgraded.contains(h) {
            assert_eq!(host_version(&tb, h), "3.0", "{h}");
        } else if state == "pending" {
            untouched += 1;
            assert_eq!(host_version(&tb, h), "1.0", "{h} upgraded after the cancel");
            assert_eq!(tb.boot_count(h), boots[h], "{h} rebooted after the cancel");
        }
    }
    assert!(untouched >= 1, "no host was left to check: {op}");

    // Deploy: paused, resumed, then cancelled at once; hosts never started stay as they were.
    let before = boot_counts(&tb);
    let versions: HashMap<String, String> = a
        .iter()
        .map(|h| (h.clone(), host_version(&tb, h)))
        .collect();
    expect_status(
        &server
            .put(
                "/cluster/c/deploy",
                json!({"version": "7.2.1", "batch_size": 1}),
            )
            .await,
        201,
    );
    let op = expect_status(&server.put("/cluster/c/deploy/pause", json!({})).await, 200);
    assert_eq!(op["status"], "paused");
    expect_error(
        &server.put("/cluster/c/restart", json!({})).await,
        409,
        "paused",
    );
    let op = expect_status(
        &server.put("/cluster/c/deploy/resume", json!({})).await,
        200,
    );
    assert_eq!(op["status"], "in_process");
    let op = expect_status(&server.delete("/cluster/c/deploy").await, 200);
    assert_eq!(op["cancel_requested"], true);
    let op = wait_op(
        &server,
        "/cluster/c/deploy",
        Duration::from_secs(120),
        ended,
    )
    .await;
    assert_eq!(op["status"], "cancelled", "{op}");
    let deployed = set(&op["deployed"]);
    assert!(
        deployed.len() <= 1,
        "only the host in flight may finish: {op}"
    );
    let mut untouched = 0;
    for h in &a {
        if deployed.contains(h) {
            assert_eq!(host_version(&tb, h), "7.2.1", "{h}");
        } else if op["hosts"][h]["state"] == "pending" {
            untouched += 1;
            assert_eq!(host_version(&tb, h), versions[h], "{h}");
            assert_eq!(tb.boot_count(h), before[h], "{h}");
        }
    }
    assert!(untouched >= a.len() - 1, "{op}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_second_server_takes_over_a_restart_whose_server_died() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 6,
        flavours: vec!["fedora".into(), "debian".into()],
        reboot_delay_secs: 2.0,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Etcd);
    // Both servers open the hosts' sealed keys: one master key.
    let secrets = env.dir().join("shared-secrets.key");
    let mut opts_a = env.options("a");
    opts_a.secrets_key_file = Some(secrets.clone());
    let mut opts_b = env.options("b");
    opts_b.secrets_key_file = Some(secrets);
    let mut first = Server::start(opts_a).await;
    populate(&first, &tb).await;
    let second = Server::start(opts_b).await;
    let before = boot_counts(&tb);

    expect_status(
        &first
            .put("/cluster/c/restart", json!({"batch_size": 2}))
            .await,
        201,
    );
    // Die once some hosts are done and others are rebooting.
    let op = wait_op(
        &first,
        "/cluster/c/restart",
        Duration::from_secs(180),
        |op| set(&op["restarted"]).len() >= 2 && !op["in_process"].as_array().unwrap().is_empty(),
    )
    .await;
    let owner = op["owner"].as_str().unwrap().to_string();
    assert!(!owner.is_empty(), "{op}");
    // The second server sees the same run and leaves it to its live owner.
    let seen = expect_status(&second.get("/cluster/c/restart").await, 200);
    assert_eq!(seen["owner"], owner.as_str(), "{seen}");
    first.kill();

    let op = wait_op(
        &second,
        "/cluster/c/restart",
        Duration::from_secs(300),
        ended,
    )
    .await;
    assert_eq!(op["status"], "finished", "{op}");
    assert_ne!(
        op["owner"],
        owner.as_str(),
        "the second server did not take over: {op}"
    );
    assert_eq!(set(&op["restarted"]), tb.addresses().into_iter().collect());
    assert_eq!(op["failed"], json!([]));
    for h in tb.addresses() {
        assert_eq!(
            tb.boot_count(&h),
            before[&h] + 1,
            "{h} was rebooted {} times",
            tb.boot_count(&h) - before[&h]
        );
        assert_eq!(reboots_requested(&tb, &h), 1, "{h}");
    }
}

// ---------------------------------------------------------------------------------------------
// Operation records and cluster writes (no SSH: loopback hosts fail at once)
// ---------------------------------------------------------------------------------------------

both_backends!(cluster_put_keeps_operations_and_delete_removes_them);

/// The operation records of cluster `c` left in the store, read directly after the server is
/// stopped.
async fn stored_operations(env: &Env, server: &Server) -> Vec<String> {
    use store::Store;
    let keys = match env.backend {
        Backend::Etcd => env.etcd_store().await.list("cluster/c/").await,
        Backend::Sqlite => {
            store::sqlite::SqliteStore::open(&server.opts.data_dir.join("store.db"))
                .expect("open the stopped server's store")
                .list("cluster/c/")
                .await
        }
    };
    keys.expect("list operation records")
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

async fn cluster_put_keeps_operations_and_delete_removes_them(backend: Backend) {
    let env = Env::new(backend);
    let mut server = env.server().await;
    let key = env.key(KeyKind::Ed25519);
    for n in ["fs", "fs2"] {
        expect_status(
            &server
                .put(
                    &format!("/network/{n}"),
                    json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}),
                )
                .await,
            201,
        );
    }
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    let hosts = ["127.0.7.1", "127.0.7.2"];
    for h in hosts {
        expect_status(
            &server
                .put(
                    &format!("/host/{h}"),
                    json!({"ssh_priv_key": key.b64, "cluster": "c"}),
                )
                .await,
            201,
        );
        server.settle_host(h).await;
    }
    // One host per batch and an hour between batches: after the first host (which fails, and
    // the budget allows it) the run waits, active, for the whole test.
    expect_status(
        &server
            .put(
                "/cluster/c/restart",
                json!({"batch_size": 1, "max_failures": "100%", "pause_seconds": 3600}),
            )
            .await,
        201,
    );
    let op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        |op| op["failed"].as_array().is_some_and(|f| f.len() == 1),
    )
    .await;
    assert_eq!(op["status"], "in_process", "{op}");
    assert_eq!(op["in_process"], json!([]), "{op}");

    // Changing the cluster keeps its running operation, which still blocks another one.
    let c = expect_status(
        &server.put("/cluster/c", json!({"network": "fs2"})).await,
        201,
    );
    assert_eq!(c["network"], "fs2", "{c}");
    let kept = expect_status(&server.get("/cluster/c/restart").await, 200);
    for field in [
        "status",
        "order",
        "hosts",
        "failed",
        "options",
        "started_at",
        "restarted",
    ] {
        assert_eq!(kept[field], op[field], "{field} changed: {kept}");
    }
    expect_error(
        &server.put("/cluster/c/upgrade", json!({})).await,
        409,
        "already running",
    );
    expect_error(&server.delete("/cluster/c").await, 409, "in progress");

    // Ended, it is still kept by a cluster change.
    expect_status(&server.delete("/cluster/c/restart").await, 200);
    let ended_op = wait_op(
        &server,
        "/cluster/c/restart",
        Duration::from_secs(60),
        ended,
    )
    .await;
    assert_eq!(ended_op["status"], "cancelled", "{ended_op}");
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    let kept = expect_status(&server.get("/cluster/c/restart").await, 200);
    assert_eq!(kept["status"], "cancelled", "{kept}");
    assert_eq!(kept["hosts"], ended_op["hosts"], "{kept}");

    // The record is where the check below looks for leftovers.
    server.stop();
    assert_eq!(
        stored_operations(&env, &server).await,
        vec!["cluster/c/restart".to_string()]
    );
    let mut server = Server::start(server.opts.clone()).await;

    // Deleting the cluster deletes its operation records: a new cluster of the same name has
    // no history, and the store holds nothing under the old name.
    expect_status(&server.delete("/cluster/c").await, 200);
    expect_error(
        &server.get("/cluster/c/restart").await,
        404,
        "cluster c does not exist",
    );
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    for kind in ["restart", "upgrade", "deploy"] {
        expect_error(
            &server.get(&format!("/cluster/c/{kind}")).await,
            404,
            &format!("no {kind} has been started on cluster c"),
        );
    }
    server.stop();
    assert_eq!(
        stored_operations(&env, &server).await,
        Vec::<String>::new(),
        "operation records left after the cluster was deleted"
    );
}
