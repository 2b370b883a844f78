//! The SSH transport against a real OpenSSH server on 127.0.0.1 (see
//! `testsupport::sshd::SshServer`). Needs root (sshd switches to the logging-in user).

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commissaire_remote as remote;
use remote::{Facts, RemoteError, Session, Target, Timeouts};
use testsupport::sshd::{KeyPair, KeyType, SshServer, keygen};
use zeroize::Zeroizing;

fn target(server: &SshServer, key: &KeyPair) -> Target {
    Target {
        address: "127.0.0.1".into(),
        port: server.port(),
        user: "root".into(),
        private_key: Zeroizing::new(key.private.clone()),
        known_host_key: None,
    }
}

/// A server with one authorized ed25519 key, and a target for it.
fn setup() -> (SshServer, Target) {
    let server = SshServer::start();
    let key = keygen(KeyType::Ed25519);
    server.authorize(&key.public);
    let target = target(&server, &key);
    (server, target)
}

async fn connect(target: &Target) -> Session {
    Session::connect(target, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
        .0
}

const SHORT: Duration = Duration::from_secs(30);

/// Outer bound on an operation that must end on its own long before it: reaching it means the
/// code under test waited for something it should not have (a test fails instead of hanging).
const BOUND: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_key_type_authenticates() {
    let server = SshServer::start();
    for kind in [
        KeyType::Ed25519,
        KeyType::RsaPem,
        KeyType::EcdsaP256,
        KeyType::EcdsaP256Pem,
    ] {
        let key = keygen(kind);
        server.authorize(&key.public);
        let session = Session::connect(&target(&server, &key), Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"))
            .0;
        let out = session.exec("id -un", None, SHORT).await.unwrap();
        assert_eq!(out.stdout_text().trim(), "root", "{kind:?}");
        session.close().await;
    }
    // The RSA login necessarily used rsa-sha2: OpenSSH 9.2's default PubkeyAcceptedAlgorithms
    // no longer includes SHA-1 `ssh-rsa`.
    let log = std::fs::read_to_string(server.dir().join("sshd.log")).unwrap();
    assert_eq!(
        log.matches("Accepted publickey for root").count(),
        4,
        "{log}"
    );
    assert!(log.contains(": RSA SHA256:"), "{log}");
}

#[tokio::test]
async fn unauthorized_key_is_refused() {
    let (server, _) = setup();
    let stranger = keygen(KeyType::Ed25519);
    let err = Session::connect(&target(&server, &stranger), Timeouts::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Auth(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("root") && text.contains("127.0.0.1"),
        "{text}"
    );
}

#[tokio::test]
async fn garbage_key_is_bad_key_without_echo() {
    // The key is checked before any connection: the target is a listener that would leave a
    // connection hanging (no banner, connect timeout far away), and it never sees one.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut target = Target::new("127.0.0.1", "root", Zeroizing::new(String::new()));
    target.port = listener.local_addr().unwrap().port();
    let patient = Timeouts {
        connect: Duration::from_secs(600),
        ..Timeouts::default()
    };
    let secret = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
                  b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0SECRETSECRET\n\
                  -----END OPENSSH PRIVATE KEY-----\n";
    for text in [secret, "just some SECRETSECRET text", ""] {
        target.private_key = Zeroizing::new(text.to_string());
        let err = tokio::time::timeout(BOUND, Session::connect(&target, patient))
            .await
            .expect("a bad key is refused without waiting on the network")
            .unwrap_err();
        assert!(matches!(err, RemoteError::BadKey(_)), "{err:?}");
        for shown in [err.to_string(), format!("{err:?}"), format!("{target:?}")] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(!shown.contains("b3BlbnNzaC1rZXkt"), "{shown}");
        }
    }
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection was opened with an unusable key: {accepted:?}"
    );
}

#[tokio::test]
async fn exit_status_stdout_and_stderr_are_kept_apart() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    let out = session
        .exec("echo out; echo err >&2; exit 3", None, SHORT)
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    assert!(!out.success());
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.stderr_text(), "err");

    let ok = session.exec("true", None, SHORT).await.unwrap();
    assert!(ok.success() && ok.stdout.is_empty() && ok.stderr.is_empty());

    // Killed by a signal: 128 + n, as a shell reports it.
    let killed = session.exec("kill -KILL $$", None, SHORT).await.unwrap();
    assert_eq!(killed.status, 137, "{killed:?}");
    assert!(!killed.success());
}

#[tokio::test]
async fn stdin_is_delivered() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    let out = session
        .exec("tr a-z A-Z", Some(b"hello\nworld\n"), SHORT)
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, b"HELLO\nWORLD\n");

    // Large input echoed back (twice the 2 MiB channel window): writing and reading must run
    // concurrently or this deadlocks.
    let big: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let out = session.exec("cat", Some(&big), SHORT).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);

    // A command that ignores its input still finishes.
    let out = session.exec("echo done", Some(&big), SHORT).await.unwrap();
    assert_eq!(out.stdout, b"done\n");
}

#[tokio::test]
async fn command_timeout_closes_the_channel() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    // The command would run for ten minutes: only the 1 s timeout can end the call within BOUND.
    let started = Instant::now();
    let err = tokio::time::timeout(
        BOUND,
        session.exec("sleep 600", None, Duration::from_secs(1)),
    )
    .await
    .expect("the command timeout ends the call")
    .unwrap_err();
    assert!(matches!(err, RemoteError::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("sleep 600"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");
    // The session survives a timed-out command.
    assert!(!session.is_closed());
    let out = session.exec("echo still here", None, SHORT).await.unwrap();
    assert_eq!(out.stdout, b"still here\n");
}

#[tokio::test]
async fn upload_writes_atomically_with_mode() {
    let (server, target) = setup();
    let session = connect(&target).await;
    let path = server.dir().join("uploads/sub dir/it's.conf");
    let path = path.to_str().unwrap();
    session.upload(path, b"key=value\n", 0o640).await.unwrap();
    let out = session
        .exec(
            &format!("stat -c %a {0}; cat {0}", remote::shell_quote(path)),
            None,
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "640\nkey=value\n");

    // Overwrite with another mode; no temporary file is left behind.
    session.upload(path, b"second\n", 0o600).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"second\n");
    let out = session
        .exec(
            &format!("stat -c %a {}", remote::shell_quote(path)),
            None,
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "600\n");
    let dir = server.dir().join("uploads/sub dir");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // Parent directories get ordinary permissions, not the temp file's umask.
    let out = session
        .exec(
            &format!("stat -c %a {}", remote::shell_quote(dir.to_str().unwrap())),
            None,
            SHORT,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "755\n");

    // A failing upload reports why.
    let err = session
        .upload("/proc/version/x", b"", 0o644)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::CommandFailed { command, stderr, .. }
            if command.contains("/proc/version/x") && !stderr.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn facts_of_the_local_machine() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    let facts: Facts = session.facts().await.unwrap();
    assert_eq!(facts.os_id, "debian");
    assert!(!facts.os_version.is_empty());
    assert!(facts.cpus >= 1);
    assert!(facts.memory_kib > 0);
    assert!(facts.root_space_bytes > 0);
    assert_eq!(
        facts.boot_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
    );
    let local = std::process::Command::new("uname")
        .arg("-n")
        .output()
        .unwrap();
    assert_eq!(
        facts.hostname,
        String::from_utf8_lossy(&local.stdout).trim()
    );
    assert_eq!(
        facts.ostree,
        std::path::Path::new("/run/ostree-booted").exists()
    );
}

#[tokio::test]
async fn trust_on_first_use_then_host_key_changed() {
    let (mut server, mut target) = setup();
    let (session, first) = Session::connect(&target, Timeouts::default())
        .await
        .unwrap();
    assert_eq!(first.openssh, server.host_key());
    assert!(first.fingerprint.starts_with("SHA256:"));
    session.close().await;

    // The recorded key is accepted (a comment after it does not matter).
    target.known_host_key = Some(format!("{} some comment", first.openssh));
    let (session, again) = Session::connect(&target, Timeouts::default())
        .await
        .unwrap();
    assert_eq!(again, first);
    session.close().await;

    server.rekey();
    target.port = server.port();
    let new_key = remote::HostKey::parse(&server.host_key()).unwrap();
    let err = Session::connect(&target, Timeouts::default())
        .await
        .unwrap_err();
    match err {
        RemoteError::HostKeyChanged { expected, got } => {
            assert_eq!(expected, first.fingerprint);
            assert_eq!(got, new_key.fingerprint);
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    // No login was attempted with the changed key.
    let log = std::fs::read_to_string(server.dir().join("sshd.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 2, "{log}");

    // Re-trusting (TOFU again) works.
    target.known_host_key = None;
    let (_, retrusted) = Session::connect(&target, Timeouts::default())
        .await
        .unwrap();
    assert_eq!(retrusted, new_key);
}

#[tokio::test]
async fn closed_port_fails_fast_with_connect() {
    let key = keygen(KeyType::Ed25519);
    let port = testsupport::free_port();
    let target = Target {
        address: "127.0.0.1".into(),
        port,
        user: "root".into(),
        private_key: Zeroizing::new(key.private),
        known_host_key: None,
    };
    // A refused connection is reported at once, not after the (far away) connect timeout.
    let patient = Timeouts {
        connect: Duration::from_secs(600),
        ..Timeouts::default()
    };
    let err = tokio::time::timeout(BOUND, Session::connect(&target, patient))
        .await
        .expect("a closed port fails without waiting for the connect timeout")
        .unwrap_err();
    assert!(matches!(err, RemoteError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn silent_listener_times_out() {
    // Accepts TCP connections (the kernel does, from the backlog) but never sends a banner.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let key = keygen(KeyType::Ed25519);
    let target = Target {
        address: "127.0.0.1".into(),
        port: listener.local_addr().unwrap().port(),
        user: "root".into(),
        private_key: Zeroizing::new(key.private),
        known_host_key: None,
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let started = Instant::now();
    let err = tokio::time::timeout(BOUND, Session::connect(&target, timeouts))
        .await
        .expect("the connect timeout ends the attempt")
        .unwrap_err();
    assert!(matches!(err, RemoteError::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("exchanging keys"), "{err}");
    assert!(err.to_string().contains("longer than 1 s"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");
    drop(listener);
}

#[tokio::test]
async fn dns_failure_is_connect() {
    let key = keygen(KeyType::Ed25519);
    let target = Target::new("no-such-host.invalid", "root", Zeroizing::new(key.private));
    let err = Session::connect(&target, Timeouts::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::Connect(m) if m.contains("no-such-host.invalid")),
        "{err:?}"
    );
}

#[tokio::test]
async fn lost_connection_is_detected() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    assert!(!session.is_closed());
    // Kill this session's own sshd process: what a host going down looks like to a kept
    // session. The command itself may or may not report before the connection goes.
    let _ = session.exec("kill -TERM $PPID", None, SHORT).await;
    let deadline = Instant::now() + BOUND;
    while !session.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(session.is_closed());
    let err = session.exec("true", None, SHORT).await.unwrap_err();
    assert!(matches!(err, RemoteError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn concurrent_commands_share_one_session() {
    let (_server, target) = setup();
    let session = Arc::new(connect(&target).await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move {
                session
                    .exec(&format!("sleep 0.2; echo {i}"), None, SHORT)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().stdout_text(), format!("{i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_sessions_gather_facts() {
    let (_server, target) = setup();
    let target = Arc::new(target);
    let timeouts = Timeouts {
        // 50 key exchanges on the local sshd compete for the same 2 cores as the client.
        connect: Duration::from_secs(60),
        command: Duration::from_secs(60),
    };
    let cpu_before = own_cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let (session, _) = Session::connect(&target, timeouts).await?;
                let facts = session.facts().await?;
                session.close().await;
                Ok::<_, RemoteError>(facts)
            })
        })
        .collect();
    let mut boot_ids = Vec::new();
    for task in tasks {
        let facts = task.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        boot_ids.push(facts.boot_id);
    }
    let elapsed = started.elapsed();
    let cpu = own_cpu_time() - cpu_before;
    eprintln!(
        "50 parallel sessions (connect + facts + close): {elapsed:?} wall, \
         client CPU {cpu:?} (includes the test harness; sshd is a separate process)"
    );
    boot_ids.dedup();
    assert_eq!(boot_ids.len(), 1);
}

/// User + system CPU time of this test process so far, from `/proc/self/stat` (in clock ticks
/// of 10 ms, the Linux default `USER_HZ`).
fn own_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn a_script_larger_than_a_command_line_runs_in_one_exec() {
    let (_server, target) = setup();
    let session = connect(&target).await;
    // 300 KiB: more than Linux takes as one argument (128 KiB), so it can only have travelled
    // on stdin; the loader ran it whole, with stdin from /dev/null.
    let padding = format!("# {}\n", "x".repeat(1000)).repeat(300);
    let script = format!("{padding}echo \"$(wc -c < /dev/stdin) bytes on stdin\"\nexit 4\n");
    let out = session.run_script(&script, SHORT).await.unwrap();
    assert_eq!(out.status, 4, "{}", out.stderr_text());
    assert_eq!(out.stdout_text(), "0 bytes on stdin\n");
}
