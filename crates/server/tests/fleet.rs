//! Host management over real SSH: the server against a simulated fleet (testbed hosts: real
//! sshd in network/PID/mount namespaces, with package and service shims that log every call).
//!
//! Covers registration and bootstrap of a mixed fleet, the watcher (failure and recovery), a
//! changed host key and its re-trust, a failed bootstrap step, a crash in the middle of
//! investigations, and self-registration through the cloud-init user-data written by `commctl user-data`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::testbed::{Testbed, TestbedOptions};

const MARKER: &str = "/var/lib/commissaire/bootstrap";

/// Polls `GET /host/{address}` until `done(host)` holds; panics with the host and the server
/// log after `timeout`.
async fn wait_host(
    server: &Server,
    address: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = server.get(&format!("/host/{address}")).await;
        if r.status == 200 {
            last = r.json.clone();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "host {address} did not become {what} within {timeout:?}; last seen: {last}\n{}",
        server.log_tail(80)
    );
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |h| h["status"] == want
}

/// The command lines of a host's shim log (`<time> <boot id> <program> <args>`), without the
/// time and boot id.
fn commands(tb: &Testbed, address: &str) -> Vec<String> {
    tb.commands_log(address)
        .iter()
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn count(cmds: &[String], prefix: &str) -> usize {
    cmds.iter().filter(|c| c.starts_with(prefix)).count()
}

/// (os, distribution, ostree) a flavour reports: `os` is the original's enum, `atomic` for
/// every OSTree host; the distribution id stays in `distribution`.
fn expected_os(flavour: &str) -> (&'static str, &'static str, bool) {
    match flavour {
        "fedora" => ("fedora", "fedora", false),
        "rhel" => ("rhel", "rhel", false),
        "centos" => ("centos", "centos", false),
        "debian" => ("debian", "debian", false),
        "fedora-atomic" => ("atomic", "fedora", true),
        "rhel-atomic" => ("atomic", "rhel", true),
        other => panic!("unknown flavour {other}"),
    }
}

fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn register(server: &Server, tb: &Testbed, address: &str, cluster: Option<&str>) {
    let mut body = json!({"ssh_priv_key": tb.client_key_base64()});
    if let Some(c) = cluster {
        body["cluster"] = json!(c);
    }
    let r = server.put(&format!("/host/{address}"), body).await;
    let h = expect_status(&r, 201);
    assert_eq!(h["status"], "investigating", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_of_20_is_bootstrapped() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 20,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    let gw = tb.gateway();
    expect_status(
        &server
            .put(
                "/network/fs",
                json!({"type": "flannel_server", "options": {"address": format!("{gw}:8080")}}),
            )
            .await,
        201,
    );
    expect_status(
        &server
            .put(
                "/network/fe",
                json!({"type": "flannel_etcd", "options": {"server_url": format!("http://{gw}:2379")}}),
            )
            .await,
        201,
    );
    expect_status(
        &server
            .put("/containermanager/triv", json!({"type": "trivial"}))
            .await,
        201,
    );
    expect_status(
        &server
            .put(
                "/cluster/managed",
                json!({"network": "fs", "container_manager": "triv"}),
            )
            .await,
        201,
    );
    expect_status(
        &server.put("/cluster/plain", json!({"network": "fe"})).await,
        201,
    );

    let addrs = tb.addresses();
    let cluster_of = |i: usize| match i {
        18 | 19 => None,
        i if i % 2 == 0 => Some("managed"),
        _ => Some("plain"),
    };
    for (i, a) in addrs.iter().enumerate() {
        register(&server, &tb, a, cluster_of(i)).await;
    }
    let mut hosts = HashMap::new();
    for (i, a) in addrs.iter().enumerate() {
        let want = if cluster_of(i) == Some("managed") {
            "active"
        } else {
            "disassociated"
        };
        let h = wait_host(&server, a, Duration::from_secs(300), want, status_is(want)).await;
        hosts.insert(a.clone(), h);
    }

    let memory = TestbedOptions::default().memory_mib;
    for (i, a) in addrs.iter().enumerate() {
        let h = &hosts[a];
        let flavour = tb.flavour_of(a);
        let (os, distribution, ostree) = expected_os(&flavour);
        assert_eq!(h["os"], os, "{a} ({flavour}): {h}");
        assert_eq!(h["distribution"], distribution, "{a} ({flavour}): {h}");
        assert_eq!(h["ostree"], ostree, "{a}: {h}");
        assert_eq!(
            h["memory"],
            json!(memory[i % memory.len()] * 1024),
            "{a}: {h}"
        );
        assert!(h["cpus"].as_i64().unwrap() >= 1, "{h}");
        assert!(h["space"].as_i64().unwrap() > 0, "{h}");
        assert_eq!(h["boot_id"], tb.boot_id(a), "{h}");
        assert!(!h["last_check"].as_str().unwrap().is_empty());
        assert_eq!(h["bootstrapped"], true);
        assert_eq!(h["status_reason"], "");

        // What bootstrap left on the host, seen from the host's side.
        let conf = if flavour == "debian" {
            "/etc/default"
        } else {
            "/etc/sysconfig"
        };
        let docker = tb
            .host_file(a, &format!("{conf}/docker"))
            .unwrap_or_else(|| panic!("{a}: no docker config"));
        assert!(docker.contains("--log-driver=journald"), "{docker}");
        assert!(
            tb.host_file(a, MARKER).is_some(),
            "{a}: no bootstrap marker"
        );
        let flannel = tb.host_file(a, &format!("{conf}/flanneld"));
        match cluster_of(i) {
            Some("managed") => {
                let f = flannel.expect("flanneld config");
                assert!(
                    f.contains(&format!("FLANNEL_OPTIONS=\"--remote={gw}:8080\"")),
                    "{f}"
                );
            }
            Some(_) => {
                let f = flannel.expect("flanneld config");
                assert!(
                    f.contains(&format!("FLANNEL_ETCD_ENDPOINTS=\"http://{gw}:2379\"")),
                    "{f}"
                );
                assert!(
                    f.contains("FLANNEL_ETCD_PREFIX=\"/atomic01/network\""),
                    "{f}"
                );
            }
            None => assert!(
                flannel.is_none(),
                "{a}: flannel configured without a cluster"
            ),
        }
        let cmds = commands(&tb, a);
        let services = if cluster_of(i).is_some() {
            "flanneld docker"
        } else {
            "docker"
        };
        assert_eq!(
            count(&cmds, &format!("systemctl enable {services}")),
            1,
            "{a}: {cmds:?}"
        );
        assert_eq!(
            count(&cmds, &format!("systemctl restart {services}")),
            1,
            "{a}: {cmds:?}"
        );
        let flannel_pkg = if cluster_of(i).is_some() {
            "flannel "
        } else {
            ""
        };
        match flavour.as_str() {
            "fedora" => assert_eq!(
                count(&cmds, &format!("dnf install -y {flannel_pkg}docker")),
                1,
                "{cmds:?}"
            ),
            "rhel" | "centos" => {
                assert_eq!(
                    count(&cmds, &format!("yum install -y {flannel_pkg}docker")),
                    1,
                    "{cmds:?}"
                )
            }
            "debian" => {
                assert_eq!(count(&cmds, "apt-get update"), 1, "{cmds:?}");
                assert_eq!(
                    count(&cmds, &format!("apt-get install -y {flannel_pkg}docker.io")),
                    1,
                    "{cmds:?}"
                );
            }
            _ => {
                // OSTree hosts carry the packages in their image.
                assert!(
                    cmds.iter().all(|c| !c.contains("install")),
                    "{a}: installed packages on an OSTree host: {cmds:?}"
                );
            }
        }
        // The host key was trusted on first contact.
        let k = expect_status(&server.get(&format!("/host/{a}/hostkey")).await, 200);
        assert_eq!(
            key_material(k["key"].as_str().unwrap()),
            key_material(&tb.known_host_key(a))
        );
    }
    // The cluster with the trivial manager is all active.
    let c = expect_status(&server.get("/cluster/managed").await, 200);
    assert_eq!(c["status"], "ok", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_fails_a_stopped_host_and_recovers_it() {
    let interval = Duration::from_secs(2);
    let tb = Testbed::up(TestbedOptions {
        hosts: 2,
        flavours: vec!["fedora".into(), "debian".into()],
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec!["--watcher-interval".into(), interval.as_secs().to_string()];
    let server = Server::start(opts).await;
    let addrs = tb.addresses();
    for a in &addrs {
        register(&server, &tb, a, None).await;
    }
    for a in &addrs {
        wait_host(
            &server,
            a,
            Duration::from_secs(120),
            "disassociated",
            status_is("disassociated"),
        )
        .await;
    }
    let (down, up) = (&addrs[0], &addrs[1]);
    let before = server.get(&format!("/host/{up}")).await.json["last_check"].clone();

    tb.stop(down);
    // A check gives up after its SSH budget (at least 5 s): the next rounds notice the host.
    let h = wait_host(
        &server,
        down,
        Duration::from_secs(60),
        "failed",
        status_is("failed"),
    )
    .await;
    assert!(
        h["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("unreachable: "),
        "{h}"
    );
    let st = expect_status(&server.get(&format!("/host/{down}/status")).await, 200);
    assert_eq!(st["host"]["status"], "failed");

    // The other host keeps being checked.
    let other = wait_host(&server, up, Duration::from_secs(60), "re-checked", |h| {
        h["last_check"] != before
    })
    .await;
    assert_eq!(other["status"], "disassociated");

    tb.start(down);
    let h = wait_host(
        &server,
        down,
        Duration::from_secs(60),
        "disassociated again",
        status_is("disassociated"),
    )
    .await;
    assert_eq!(h["status_reason"], "", "{h}");
    // Recovery does not bootstrap again.
    assert_eq!(count(&commands(&tb, down), "systemctl restart"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_fails_the_host_until_retrusted() {
    let tb = Testbed::up(TestbedOptions::flavour(1, "centos"));
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec!["--watcher-interval".into(), "2".into()];
    let server = Server::start(opts).await;
    let a = &tb.addresses()[0];
    register(&server, &tb, a, None).await;
    wait_host(
        &server,
        a,
        Duration::from_secs(120),
        "disassociated",
        status_is("disassociated"),
    )
    .await;
    let old = expect_status(&server.get(&format!("/host/{a}/hostkey")).await, 200);

    tb.rekey(a);
    let h = wait_host(
        &server,
        a,
        Duration::from_secs(60),
        "failed",
        status_is("failed"),
    )
    .await;
    let reason = h["status_reason"].as_str().unwrap();
    assert!(reason.contains("host key changed"), "{reason}");
    assert!(
        reason.contains(old["fingerprint"].as_str().unwrap()),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("/api/v0/host/{a}/hostkey")),
        "{reason}"
    );
    // Still failed a few checks later: a changed key is never accepted silently.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        server.get(&format!("/host/{a}")).await.json["status"],
        "failed"
    );

    // A bad re-trust body is refused and changes nothing.
    let r = server
        .put(&format!("/host/{a}/hostkey"), json!({"key": "not a key"}))
        .await;
    expect_error(&r, 400, "OpenSSH public key");

    let new_key = tb.known_host_key(a);
    let r = server
        .put(
            &format!("/host/{a}/hostkey"),
            json!({"key": key_material(&new_key)}),
        )
        .await;
    let h = expect_status(&r, 200);
    assert_eq!(h["status"], "investigating");
    wait_host(
        &server,
        a,
        Duration::from_secs(120),
        "disassociated",
        status_is("disassociated"),
    )
    .await;
    let k = expect_status(&server.get(&format!("/host/{a}/hostkey")).await, 200);
    assert_eq!(
        key_material(k["key"].as_str().unwrap()),
        key_material(&new_key)
    );
    assert_ne!(k["fingerprint"], old["fingerprint"]);
    // Re-investigation found the bootstrap marker: nothing was installed or restarted again.
    let cmds = commands(&tb, a);
    assert_eq!(count(&cmds, "systemctl restart"), 1, "{cmds:?}");
    assert_eq!(count(&cmds, "yum install"), 1, "{cmds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_investigation_resumes_without_repeating_bootstraps() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 20,
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let mut server = env.server().await;
    let addrs = tb.addresses();
    for a in &addrs {
        register(&server, &tb, a, None).await;
    }
    // Kill the server once some hosts are done and others are still in flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let hosts = server.get("/hosts").await.json;
        let done = hosts
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["status"] == "disassociated")
            .count();
        if done >= 3 {
            assert!(
                done < addrs.len(),
                "every host finished before the crash; nothing to resume"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} hosts bootstrapped in 120 s; the crash would test nothing\n{}",
            server.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    let completed: Vec<bool> = addrs
        .iter()
        .map(|a| tb.host_file(a, MARKER).is_some())
        .collect();
    assert!(
        completed.iter().any(|c| *c) && !completed.iter().all(|c| *c),
        "{completed:?}"
    );

    let server = Server::start(server.opts.clone()).await;
    for a in &addrs {
        wait_host(
            &server,
            a,
            Duration::from_secs(300),
            "disassociated",
            status_is("disassociated"),
        )
        .await;
    }
    // Nothing was applied twice: a bootstrap cut off by the crash completed on the host (its
    // script does not depend on the connection), and the resumed investigation waited for it
    // and found its marker; hosts not reached before the crash were bootstrapped once after it.
    for (a, done_before) in addrs.iter().zip(&completed) {
        let cmds = commands(&tb, a);
        let restarts = count(&cmds, "systemctl restart");
        let installs = cmds.iter().filter(|c| c.contains(" install ")).count();
        assert_eq!(
            restarts, 1,
            "{a} (completed before the crash: {done_before}): {cmds:?}"
        );
        assert!(installs <= 1, "{a}: {cmds:?}");
    }
}

/// Runs `script` on the host as root over OpenSSH (the test's own access, not the server's).
fn on_host(tb: &Testbed, address: &str, script: &str) {
    let out = Command::new("ssh")
        .args(["-i", tb.client_key_path().to_str().unwrap()])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", tb.known_hosts_path().display()),
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .args(["-o", "BatchMode=yes"])
        .arg(format!("root@{address}"))
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bootstrap_step_fails_the_host_and_names_it() {
    let tb = Testbed::up(TestbedOptions::flavour(1, "fedora"));
    let env = Env::new(Backend::Sqlite);
    let server = env.server().await;
    let a = &tb.addresses()[0];
    // A directory stands where bootstrap writes docker's configuration: the step after the
    // package installation and before the service commands fails.
    on_host(&tb, a, "mkdir -p /etc/sysconfig/docker");
    register(&server, &tb, a, None).await;
    let h = wait_host(
        &server,
        a,
        Duration::from_secs(120),
        "failed",
        status_is("failed"),
    )
    .await;
    let reason = h["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("writing /etc/sysconfig/docker failed") && reason.contains("directory"),
        "{h}"
    );
    assert_eq!(h["bootstrapped"], false, "{h}");
    // The steps before it ran, the ones after it did not, and the host is not marked done.
    let cmds = commands(&tb, a);
    assert_eq!(count(&cmds, "dnf install -y docker"), 1, "{cmds:?}");
    assert_eq!(count(&cmds, "systemctl"), 0, "{cmds:?}");
    assert!(tb.host_file(a, MARKER).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_registers_itself_with_cloud_init_user_data() {
    let tb = Testbed::up(TestbedOptions::flavour(1, "fedora"));
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    // The host must reach the server: listen on the testbed bridge.
    opts.listen = tb.gateway();
    let server = Server::start(opts).await;
    let a = tb.addresses()[0].clone();

    // What `commctl user-data` does: an admin creates a registration token, and only the
    // token goes into the user-data.
    let created = expect_status(
        &server
            .send(
                server
                    .request(reqwest::Method::POST, "/registration-tokens")
                    .header("content-type", "application/json")
                    .body(json!({"single_use": true}).to_string()),
            )
            .await,
        201,
    );
    let token = created["token"].as_str().unwrap().to_string();
    let doc = commctl::userdata::build(
        &commctl::userdata::HostData {
            endpoint: server.base.clone(),
            token: Some(token.clone()),
            cluster: None,
            remote_user: "root".into(),
            ssh_key_path: None,
            authorized_keys_path: None,
        },
        None,
    );
    let dir = env.dir().join("userdata");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("user-data"), &doc).unwrap();
    assert!(
        !doc.contains(PASSWORD) && !doc.to_lowercase().contains("password"),
        "no password in the user-data"
    );
    // Parse it the way cloud-init does (Python's email package) and check the part order.
    let parse = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import email, sys, os
msg = email.message_from_file(open(sys.argv[1]))
assert msg.get_content_type() == "multipart/mixed", msg.get_content_type()
parts = [p for p in msg.walk() if not p.is_multipart()]
print(" ".join(p.get_content_type() for p in parts))
for p in parts:
    name = {"text/part-handler": "handler.py", "text/x-commissaire-host": "payload.json"}.get(p.get_content_type())
    if name:
        open(os.path.join(sys.argv[2], name), "wb").write(p.get_payload(decode=True))
"#,
        )
        .arg(dir.join("user-data"))
        .arg(&dir)
        .output()
        .expect("run python3");
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&parse.stdout).trim(),
        "text/cloud-config text/part-handler text/x-commissaire-host"
    );

    // Run the extracted part handler on the host, as cloud-init would at first boot.
    let ssh = |script: &str, input: &[u8]| {
        use std::io::Write;
        let mut child = Command::new("ssh")
            .args(["-i", tb.client_key_path().to_str().unwrap()])
            .args([
                "-o",
                &format!("UserKnownHostsFile={}", tb.known_hosts_path().display()),
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "BatchMode=yes",
            ])
            .arg(format!("root@{a}"))
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ssh {script}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ssh(
        "mkdir -p /tmp/ci && cat > /tmp/ci/handler.py",
        &std::fs::read(dir.join("handler.py")).unwrap(),
    );
    ssh(
        "cat > /tmp/ci/payload.json",
        &std::fs::read(dir.join("payload.json")).unwrap(),
    );
    ssh(
        "cd /tmp/ci && python3 -c 'import handler; handler.handle_part(None, \"text/x-commissaire-host\", \"commissaire-host.json\", open(\"payload.json\").read(), 2)'",
        b"",
    );

    // The server learnt the address from the connection, and bootstraps the host with the
    // key the handler created on it.
    let h = wait_host(
        &server,
        &a,
        Duration::from_secs(120),
        "disassociated",
        status_is("disassociated"),
    )
    .await;
    assert_eq!(h["os"], "fedora");
    let creds = expect_status(&server.get(&format!("/host/{a}/creds")).await, 200);
    assert_eq!(creds["remote_user"], "root");
    assert_ne!(
        creds["ssh_priv_key"],
        json!(tb.client_key_base64()),
        "the host registered with the key it generated, not the testbed's"
    );
    assert!(tb.host_file(&a, "/root/.ssh/id_commissaire").is_some());
    assert_eq!(count(&commands(&tb, &a), "systemctl restart docker"), 1);
    // The token was single-use: it is gone, and it never could do anything else.
    let tokens = expect_status(&server.get("/registration-tokens").await, 200);
    assert_eq!(tokens, json!([]));
    let r = server
        .send(
            server
                .client()
                .get(server.url("/hosts"))
                .timeout(REQUEST_TIMEOUT)
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
}
