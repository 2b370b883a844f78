//! The README's quickstart works as written: `scripts/quickstart-check.sh` extracts its
//! ```` ```sh quickstart ```` blocks and runs them verbatim against a fresh server and a fresh
//! testbed (needs root, like every testbed test), checking that the cluster reads `ok` and the
//! rolling restart `finished`.
//!
//! The script builds the current `commctl` and `commissaire-server` into this test's target
//! directory and profile (a no-op after a workspace build), so it never runs stale binaries.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script's own bound on the quickstart is 900 s; building and tearing down come on top.
const LIMIT: Duration = Duration::from_secs(1500);

#[test]
fn readme_quickstart_runs_verbatim() {
    let exe = Path::new(env!("CARGO_BIN_EXE_commissaire-server"));
    let profile_dir = exe.parent().expect("binary directory");
    let target_dir = profile_dir.parent().expect("target directory");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("scripts/quickstart-check.sh"))
        .current_dir(&repo)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(&cargo).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    let mut child = cmd.spawn().expect("run scripts/quickstart-check.sh");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the script") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            // SIGTERM by PID: the script's trap stops its server and testbed.
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let t = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && t.elapsed() < Duration::from_secs(180)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => {
            assert!(err.contains("quickstart-check: ok"), "{out}\n{err}");
        }
        Some(s) => panic!("quickstart-check failed ({s}):\n{out}\n{err}"),
        None => panic!("quickstart-check did not finish within {LIMIT:?}:\n{out}\n{err}"),
    }
}

/// Runs `testbed.sh ARGS` on `tb`'s instance (its state dir, prefix and subnet), bounded.
fn testbed_sh(tb: &testsupport::testbed::Testbed, net: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("180")
        .arg("bash")
        .arg(testsupport::testbed::Testbed::script_path())
        .args(args)
        .env("TESTBED_STATE", tb.state_dir())
        .env("TESTBED_PREFIX", tb.prefix())
        .env("TESTBED_NET", net)
        .env_remove("TESTBED_OWNER");
    let out = cmd.output().expect("run testbed.sh");
    assert!(
        out.status.success(),
        "testbed.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn routes(subnet: &str) -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "root", subnet])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// After `down` the subnet is unreachable (nothing for it leaves the machine), `up` takes it
/// back and gives every host its earlier key, `env` describes the instance, and
/// `down --purge` removes the route with the state.
#[test]
fn testbed_down_keeps_the_subnet_unreachable_and_up_keeps_host_keys() {
    use testsupport::testbed::{Testbed, TestbedOptions};
    let tb = Testbed::up(TestbedOptions {
        hosts: 2,
        ..TestbedOptions::default()
    });
    let gateway = tb.gateway();
    let net = gateway.split('.').nth(1).unwrap().to_string();
    let subnet = format!("10.{net}.0.0/16");
    let keys = std::fs::read_to_string(tb.known_hosts_path()).unwrap();

    let env = testbed_sh(&tb, &net, &["env"]);
    assert!(env.contains(&format!("TB_GATEWAY={gateway}")), "{env}");
    for a in tb.addresses() {
        assert!(env.contains(&a), "{a}: {env}");
    }
    assert!(env.contains("id_ed25519"), "{env}");

    testbed_sh(&tb, &net, &["down"]);
    let r = routes(&subnet);
    assert!(r.starts_with("unreachable"), "after down: {r:?}");

    let pid = std::process::id().to_string();
    testbed_sh(&tb, &net, &["up", "2", "--owner", &pid]);
    let r = routes(&subnet);
    assert!(!r.contains("unreachable"), "after up: {r:?}");
    assert_eq!(
        std::fs::read_to_string(tb.known_hosts_path()).unwrap(),
        keys,
        "host keys changed across down/up"
    );
    testbed_sh(&tb, &net, &["up", "2", "--owner", &pid, "--new-keys"]);
    assert_ne!(
        std::fs::read_to_string(tb.known_hosts_path()).unwrap(),
        keys
    );

    drop(tb); // down --purge
    assert_eq!(routes(&subnet), "", "the route outlived --purge");
}
