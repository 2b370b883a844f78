//! The simulated fleet, exercised for real with the system OpenSSH client. Needs root.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use commissaire_testsupport::testbed::{ALL_FLAVOURS, Quirk};
use commissaire_testsupport::{Testbed, TestbedOptions};

/// Longest a rebooting host may take to come back in these tests.
const BACK_WITHIN: Duration = Duration::from_secs(30);

fn opts(flavours: &[&str], reboot_delay_secs: f64) -> TestbedOptions {
    TestbedOptions {
        hosts: flavours.len(),
        flavours: flavours.iter().map(|f| f.to_string()).collect(),
        reboot_delay_secs,
        ..TestbedOptions::default()
    }
}

/// `ssh root@ADDR CMD` with the testbed's client key and strict host key checking against
/// `known_hosts`; killed after 30 s.
fn ssh_with(tb: &Testbed, known_hosts: &std::path::Path, address: &str, cmd: &str) -> Output {
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(tb.client_key_path())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{address}"))
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let _ = out.read_to_end(&mut o);
        let _ = err.read_to_end(&mut e);
        (o, e)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ssh") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ssh {address} {cmd:?} hung");
        }
        sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = reader.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn ssh(tb: &Testbed, address: &str, cmd: &str) -> Output {
    ssh_with(tb, &tb.known_hosts_path(), address, cmd)
}

/// Runs `cmd` on the host and returns its stdout; panics unless it exits 0.
fn run(tb: &Testbed, address: &str, cmd: &str) -> String {
    let out = ssh(tb, address, cmd);
    assert!(
        out.status.success(),
        "{address}: {cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Whether the host runs a command; gives up on connecting after 1 s (reboot delays in these
/// tests are longer).
fn reachable(tb: &Testbed, address: &str) -> bool {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(tb.client_key_path())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            tb.known_hosts_path().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=1", "-o", "LogLevel=ERROR"])
        .arg(format!("root@{address}"))
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Polls until the host runs commands again; returns the boot id it reports.
fn wait_back(tb: &Testbed, address: &str) -> String {
    let deadline = Instant::now() + BACK_WITHIN;
    loop {
        let out = ssh(tb, address, "cat /proc/sys/kernel/random/boot_id");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{address} not back within {BACK_WITHIN:?}"
        );
        sleep(Duration::from_millis(200));
    }
}

fn os_release_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

#[test]
fn every_flavour_reports_its_own_facts() {
    let started = Instant::now();
    let tb = Testbed::up(TestbedOptions::default());
    eprintln!("up 6 hosts: {:?}", started.elapsed());
    let addresses = tb.addresses();
    assert_eq!(addresses.len(), 6);
    let memory = [2048u64, 4096, 6144, 8192, 2048, 4096];
    let mut boot_ids = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let flavour = ALL_FLAVOURS[i];
        assert_eq!(tb.flavour_of(address), flavour);
        let out = run(
            &tb,
            address,
            "cat /etc/os-release; echo HOSTNAME=$(hostname); grep ^MemTotal: /proc/meminfo; \
             echo BOOT=$(cat /proc/sys/kernel/random/boot_id); \
             for t in dnf yum rpm rpm-ostree apt-get dpkg; do command -v $t >/dev/null && echo HAS=$t; done; \
             test -e /run/ostree-booted && echo OSTREE=yes; test -e /etc/redhat-release && echo REDHAT=yes; \
             echo PID1=$(cat /proc/1/comm); echo PROCS=$(ls /proc | grep -c '^[0-9]')",
        );
        let id = os_release_field(&out, "ID");
        let version = os_release_field(&out, "VERSION_ID");
        let expected = match flavour {
            "fedora" | "fedora-atomic" => ("fedora", "26"),
            "rhel" | "rhel-atomic" => ("rhel", "7.4"),
            "centos" => ("centos", "7"),
            "debian" => ("debian", "12"),
            other => panic!("flavour {other}"),
        };
        assert_eq!((id.as_str(), version.as_str()), expected, "{flavour}");
        assert_eq!(os_release_field(&out, "HOSTNAME"), tb.name_of(address));
        let mem_kib = memory[i] * 1024;
        assert!(
            out.lines()
                .any(|l| l.starts_with("MemTotal:") && l.ends_with(&format!(" {mem_kib} kB"))),
            "{flavour}: MemTotal should be {mem_kib} kB:\n{out}"
        );
        let boot = os_release_field(&out, "BOOT");
        assert_eq!(boot, tb.boot_id(address));
        boot_ids.push(boot);
        let tools: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("HAS=")).collect();
        let expected_tools: &[&str] = match flavour {
            "fedora" => &["dnf", "yum", "rpm"],
            "rhel" | "centos" => &["yum", "rpm"],
            "fedora-atomic" | "rhel-atomic" => &["rpm", "rpm-ostree"],
            _ => &["apt-get", "dpkg"],
        };
        assert_eq!(tools, expected_tools, "{flavour}: package tools");
        assert_eq!(
            out.contains("OSTREE=yes"),
            flavour.ends_with("-atomic"),
            "{flavour}: /run/ostree-booted"
        );
        assert_eq!(
            out.contains("REDHAT=yes"),
            flavour != "debian",
            "{flavour}: /etc/redhat-release"
        );
        assert_eq!(os_release_field(&out, "PID1"), "systemd");
        let procs: u32 = os_release_field(&out, "PROCS").parse().unwrap();
        assert!(
            procs < 10,
            "{flavour}: sees only its own processes ({procs})"
        );
        // The key the host serves is the one the testbed reports.
        let known = std::fs::read_to_string(tb.known_hosts_path()).unwrap();
        assert!(known.contains(&format!("{address} {}", tb.known_host_key(address))));
    }
    boot_ids.sort();
    boot_ids.dedup();
    assert_eq!(boot_ids.len(), 6, "boot ids differ per host");
    // The base64 form of the client key is what `base64 -w0` makes of the file.
    let b64 = Command::new("base64")
        .arg("-w0")
        .arg(tb.client_key_path())
        .output()
        .unwrap();
    assert_eq!(
        tb.client_key_base64(),
        String::from_utf8(b64.stdout).unwrap()
    );
}

#[test]
fn reboot_over_ssh_takes_the_host_down_and_back_with_a_new_boot_id() {
    let tb = Testbed::up(opts(&["fedora"], 3.0));
    let address = &tb.addresses()[0];
    let before = tb.boot_id(address);
    let started = Instant::now();
    // Like a real reboot, the host goes down under the command: the session is cut.
    let out = ssh(&tb, address, "systemctl reboot");
    let why = format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(255), "{why}");
    assert!(why.contains("closed by remote host"), "{why}");
    assert_eq!(
        tb.status_of(address),
        "rebooting",
        "{}\n{:?}\n{}",
        std::fs::read_to_string(tb.state_dir().join("supervisor.log")).unwrap(),
        tb.commands_log(address),
        std::fs::read_to_string(tb.host_dir(address).join("console.log")).unwrap()
    );
    assert!(
        !reachable(&tb, address),
        "host still reachable while rebooting"
    );
    let after = wait_back(&tb, address);
    eprintln!("reboot round trip: {:?}", started.elapsed());
    assert_ne!(after, before);
    assert_eq!(after, tb.boot_id(address));
    assert_eq!(tb.boot_count(address), 2);
    let log = tb.commands_log(address);
    let reboot = log
        .iter()
        .find(|l| l.ends_with(" systemctl reboot"))
        .expect("reboot logged");
    let fields: Vec<&str> = reboot.split_whitespace().collect();
    assert!(fields[0].parse::<f64>().is_ok(), "timestamp: {reboot}");
    assert_eq!(fields[1], before, "logged with the boot id it ran in");
}

#[test]
fn package_tools_record_what_they_install() {
    let tb = Testbed::up(opts(&["fedora", "debian", "rhel"], 1.0));
    let a = tb.addresses();
    let (fedora, debian, rhel) = (&a[0], &a[1], &a[2]);

    assert_eq!(run(&tb, fedora, "dnf install -y flannel"), "Complete!\n");
    assert_eq!(run(&tb, fedora, "rpm -q flannel"), "flannel-1.0-1.x86_64\n");
    assert!(!ssh(&tb, fedora, "rpm -q docker").status.success());
    let boot = tb.boot_id(fedora);
    assert!(
        tb.commands_log(fedora)
            .iter()
            .any(|l| l.ends_with(&format!("{boot} dnf install -y flannel"))),
        "{:?}",
        tb.commands_log(fedora)
    );
    let packages = std::fs::read_to_string(tb.host_dir(fedora).join("packages")).unwrap();
    assert_eq!(packages, "flannel\n");

    run(
        &tb,
        debian,
        "apt-get update && apt-get install -y docker.io",
    );
    assert!(run(&tb, debian, "dpkg -s docker.io").contains("Status: install ok installed"));
    assert!(!ssh(&tb, debian, "dpkg -s flannel").status.success());
    assert_eq!(
        ssh(&tb, debian, "dnf install -y flannel").status.code(),
        Some(127),
        "no dnf on debian"
    );
    tb.publish("3.0");
    run(&tb, debian, "apt-get upgrade -y");
    assert!(run(&tb, debian, "dpkg -s testos").contains("Version: 3.0"));

    assert_eq!(ssh(&tb, rhel, "yum check-update").status.code(), Some(100));
    run(&tb, rhel, "yum update -y");
    assert_eq!(run(&tb, rhel, "rpm -q testos"), "testos-3.0\n");
    assert_eq!(ssh(&tb, rhel, "yum check-update").status.code(), Some(0));
    assert_eq!(ssh(&tb, rhel, "command -v dnf").status.code(), Some(1));

    run(&tb, rhel, "systemctl enable --now flanneld");
    assert_eq!(run(&tb, rhel, "systemctl is-active flanneld"), "active\n");
    assert_eq!(
        ssh(&tb, rhel, "systemctl is-active docker").status.code(),
        Some(3)
    );
}

#[test]
fn rpm_ostree_deploy_is_booted_after_a_reboot() {
    let tb = Testbed::up(opts(&["fedora-atomic", "rhel-atomic"], 1.0));
    let a = tb.addresses();
    let (fedora, rhel) = (&a[0], &a[1]);
    assert_eq!(
        ssh(&tb, fedora, "dnf install -y flannel").status.code(),
        Some(127)
    );
    assert_eq!(
        ssh(&tb, fedora, "yum install -y flannel").status.code(),
        Some(127)
    );

    run(&tb, fedora, "rpm-ostree deploy 7.2");
    let status = run(&tb, fedora, "rpm-ostree status");
    assert!(status.contains("Version: 7.2 (staged)"), "{status}");
    let before = tb.boot_id(fedora);
    let _ = ssh(&tb, fedora, "systemctl reboot");
    let after = wait_back(&tb, fedora);
    assert_ne!(after, before);
    let status = run(&tb, fedora, "rpm-ostree status");
    assert!(status.contains("● testbed:"), "{status}");
    assert!(
        status.contains("Version: 7.2\n") && !status.contains("staged"),
        "7.2 booted: {status}"
    );

    // `upgrade` stages the published version; an outside power cycle boots it too.
    tb.publish("8.0");
    run(&tb, rhel, "rpm-ostree upgrade");
    assert!(
        run(&tb, rhel, "rpm-ostree status --json")
            .contains(r#""version":"8.0","booted":false,"staged":true"#)
    );
    tb.reboot(rhel);
    assert!(tb.wait_up(rhel, BACK_WITHIN));
    assert!(run(&tb, rhel, "rpm-ostree status").contains("Version: 8.0\n"));
}

#[test]
fn stop_and_start_from_outside() {
    let tb = Testbed::up(opts(&["centos"], 1.0));
    let address = &tb.addresses()[0];
    let before = tb.boot_id(address);
    tb.stop(address);
    let out = ssh(&tb, address, "true");
    assert!(!out.status.success(), "stopped host answered");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port 22"),
        "connection-level failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tb.start(address);
    assert!(reachable(&tb, address));
    assert_ne!(tb.boot_id(address), before);
    assert_eq!(
        run(&tb, address, "cat /proc/sys/kernel/random/boot_id").trim(),
        tb.boot_id(address)
    );
}

#[test]
fn rekey_fails_verification_with_the_old_known_hosts() {
    let tb = Testbed::up(opts(&["rhel", "fedora"], 1.0));
    let a = tb.addresses();
    let (address, other) = (&a[0], &a[1]);
    let old_key = tb.known_host_key(address);
    let boot = tb.boot_id(address);
    let old_known_hosts = std::fs::read_to_string(tb.known_hosts_path()).unwrap();
    tb.rekey(address);
    assert_ne!(tb.known_host_key(address), old_key);
    assert_eq!(tb.boot_id(address), boot, "rekey is not a reboot");
    assert_eq!(
        std::fs::read_to_string(tb.known_hosts_path()).unwrap(),
        old_known_hosts,
        "known_hosts untouched"
    );
    let out = ssh(&tb, address, "true");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = tb.known_hosts_new_path();
    let out = ssh_with(&tb, &new, address, "hostname");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_known_hosts = std::fs::read_to_string(&new).unwrap();
    assert!(new_known_hosts.contains(&format!("{address} {}", tb.known_host_key(address))));
    assert!(reachable(&tb, other), "other hosts keep their key");
}

#[test]
fn files_written_over_ssh_land_in_the_host_dir() {
    let tb = Testbed::up(opts(&["fedora", "fedora"], 1.0));
    let a = tb.addresses();
    run(
        &tb,
        &a[0],
        "mkdir -p /etc/sysconfig && printf 'FLANNEL_ETCD=\"http://10.0.0.1:2379\"\\n' > /etc/sysconfig/flanneld \
         && echo scratch > /tmp/upload && rm -f /etc/hostname",
    );
    assert_eq!(
        tb.host_file(&a[0], "/etc/sysconfig/flanneld").as_deref(),
        Some("FLANNEL_ETCD=\"http://10.0.0.1:2379\"\n")
    );
    assert_eq!(
        tb.host_file(&a[0], "/tmp/upload").as_deref(),
        Some("scratch\n")
    );
    assert_eq!(tb.host_file(&a[0], "/etc/hostname"), None, "deleted");
    assert_eq!(tb.host_file(&a[1], "/etc/sysconfig/flanneld"), None);
    assert_eq!(tb.host_file(&a[0], "/usr/bin/dnf"), None);
    // Each host has its own /etc and /tmp; the machine's are untouched.
    assert_eq!(
        ssh(&tb, &a[1], "test -e /etc/sysconfig/flanneld")
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        ssh(&tb, &a[1], "test -e /tmp/upload").status.code(),
        Some(1)
    );
    assert!(!std::path::Path::new("/tmp/upload").exists());
    assert!(std::path::Path::new("/etc/hostname").exists());
}

#[test]
fn two_testbeds_run_side_by_side() {
    let first = Testbed::up(opts(&["fedora", "debian"], 1.0));
    let second = Testbed::up(opts(&["rhel", "centos"], 1.0));
    assert_ne!(first.state_dir(), second.state_dir());
    assert_ne!(first.prefix(), second.prefix());
    let (a, b) = (first.addresses(), second.addresses());
    assert!(a.iter().all(|x| !b.contains(x)), "{a:?} vs {b:?}");
    for address in &a {
        assert!(run(&first, address, "hostname").starts_with(first.prefix()));
    }
    for address in &b {
        assert!(run(&second, address, "hostname").starts_with(second.prefix()));
    }
    // Taking one down leaves the other working.
    let gone = a[0].clone();
    drop(first);
    assert!(!second.wait_up(&gone, Duration::from_millis(300)));
    assert!(reachable(&second, &b[1]));
    assert!(second.wait_up(&b[0], BACK_WITHIN));
}

#[test]
fn quirks_ignore_a_reboot_never_return_or_keep_the_booted_version() {
    let tb = Testbed::up(opts(&["fedora", "centos", "fedora-atomic"], 1.0));
    let a = tb.addresses();
    let (ignoring, lost, atomic) = (&a[0], &a[1], &a[2]);

    // ignore-reboot: the command succeeds, the host stays in the same boot.
    tb.set_quirk(ignoring, Quirk::IgnoreReboot);
    let before = tb.boot_id(ignoring);
    let out = ssh(&tb, ignoring, "systemctl reboot");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        run(&tb, ignoring, "reboot; echo still here"),
        "still here\n"
    );
    assert_eq!(
        run(&tb, ignoring, "cat /proc/sys/kernel/random/boot_id").trim(),
        before
    );
    assert_eq!(tb.status_of(ignoring), "up");
    assert_eq!(tb.boot_count(ignoring), 1);
    let reboots = tb
        .commands_log(ignoring)
        .iter()
        .filter(|l| l.ends_with(" reboot"))
        .count();
    assert_eq!(reboots, 2, "{:?}", tb.commands_log(ignoring));
    // Back to normal: the next reboot is real.
    tb.set_quirk(ignoring, Quirk::None);
    let _ = ssh(&tb, ignoring, "systemctl reboot");
    assert_ne!(wait_back(&tb, ignoring), before);
    assert_eq!(tb.boot_count(ignoring), 2);

    // no-return: down under the command, and it stays down until started from outside.
    tb.set_quirk(lost, Quirk::NoReturn);
    let out = ssh(&tb, lost, "systemctl reboot");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let deadline = Instant::now() + BACK_WITHIN;
    while tb.status_of(lost) != "stopped" {
        assert!(
            Instant::now() < deadline,
            "{lost} is {}",
            tb.status_of(lost)
        );
        sleep(Duration::from_millis(50));
    }
    // Several reboot delays later it is still off.
    assert!(!tb.wait_up(lost, Duration::from_secs(5)));
    assert_eq!(tb.status_of(lost), "stopped");
    assert_eq!(tb.boot_count(lost), 1);
    tb.set_quirk(lost, Quirk::None);
    tb.start(lost);
    assert_eq!(tb.boot_count(lost), 2);

    // keep-version: the staged deployment is dropped at boot; the old version stays booted.
    tb.set_quirk(atomic, Quirk::KeepVersion);
    run(&tb, atomic, "rpm-ostree deploy 7.2");
    assert!(run(&tb, atomic, "rpm-ostree status").contains("Version: 7.2 (staged)"));
    let before = tb.boot_id(atomic);
    let _ = ssh(&tb, atomic, "systemctl reboot");
    assert_ne!(wait_back(&tb, atomic), before);
    assert_eq!(tb.boot_count(atomic), 2);
    let status = run(&tb, atomic, "rpm-ostree status --json");
    assert_eq!(
        status.trim(),
        r#"{"deployments":[{"version":"1.0","booted":true,"staged":false}],"transaction":null}"#
    );
    assert_eq!(tb.version_of(atomic), "1.0");
}
