//! What the server writes where: log lines on standard output without colour codes when it is
//! not a terminal (or `NO_COLOR` is set), every standard-output line JSON with
//! `--log-format json`, and the first-start admin password on standard error, once.
//!
//! The real binary on loopback, a fresh data directory each time; every wait is bounded and
//! the server is stopped by its PID.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a server run printed.
struct Printed {
    stdout: String,
    stderr: String,
}

/// Starts the server on `data` with `args` and `env`, makes one request once it listens (so
/// there are request log lines), stops it by its PID and returns what it printed.
/// The port comes from `COMMISSAIRE_LISTEN_PORT` in `env` when given there, else from `-p`.
fn run_server(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Printed {
    let from_env = env
        .iter()
        .find(|(k, _)| *k == "COMMISSAIRE_LISTEN_PORT")
        .map(|(_, v)| v.parse::<u16>().unwrap());
    let port = from_env.unwrap_or_else(free_port);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-server"));
    cmd.arg("--no-config-file")
        .arg("--data-dir")
        .arg(data)
        .args(["-i", "127.0.0.1"])
        .args(["--watcher-interval", "86400"])
        .args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if from_env.is_none() {
        cmd.args(["-p", &port.to_string()]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start commissaire-server");
    let (out, err) = readers(&mut child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut up = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(
                b"GET /api/v0/clusters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child by its PID; SIGTERM lets it shut down cleanly.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let printed = Printed {
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    };
    assert!(
        up,
        "server did not listen:\n{}\n{}",
        printed.stdout, printed.stderr
    );
    printed
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn readers(child: &mut Child) -> (Reader, Reader) {
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    (
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = o.read_to_end(&mut b);
            b
        }),
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = e.read_to_end(&mut b);
            b
        }),
    )
}

#[test]
fn json_format_writes_only_json_to_stdout_and_the_password_to_stderr_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = run_server(&data, &["--log-format", "json"], &[]);
    let lines: Vec<&str> = p.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines: {}", p.stderr);
    for l in &lines {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    assert!(!p.stdout.contains('\u{1b}'), "{}", p.stdout);
    assert_eq!(
        p.stderr.matches("This password is shown only once").count(),
        1,
        "{}",
        p.stderr
    );
    assert!(p.stderr.contains("with user \"admin\" and password:"));
    assert!(!p.stdout.contains("password:"), "{}", p.stdout);

    // Second start on the same data directory: the users file exists, no password at all.
    let p = run_server(&data, &["--log-format", "json"], &[]);
    assert!(!p.stderr.contains("shown only once"), "{}", p.stderr);
    for l in p.stdout.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"));
    }
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Not a terminal: no escape codes, whether or not NO_COLOR is set.
    for env in [&[][..], &[("NO_COLOR", "1")][..]] {
        let data = dir.path().join(format!("data{}", env.len()));
        let p = run_server(&data, &[], env);
        assert!(p.stdout.contains("INFO"), "{env:?}: {}", p.stdout);
        assert!(!p.stdout.contains('\u{1b}'), "{env:?}: {:?}", p.stdout);
        assert!(!p.stderr.contains('\u{1b}'), "{env:?}: {:?}", p.stderr);
    }
}

#[test]
fn colour_rule() {
    use commissaire_server::log_colour;
    use std::ffi::OsStr;
    assert!(log_colour(true, None));
    assert!(log_colour(true, Some(OsStr::new(""))));
    assert!(!log_colour(true, Some(OsStr::new("1"))));
    assert!(!log_colour(false, None));
    assert!(!log_colour(false, Some(OsStr::new("1"))));
}

#[test]
fn environment_variables_configure_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    // Port and log format from the environment only; the flag still wins over a variable.
    let p = run_server(
        &dir.path().join("data"),
        &[],
        &[
            ("COMMISSAIRE_LISTEN_PORT", port.as_str()),
            ("COMMISSAIRE_LOG_FORMAT", "json"),
        ],
    );
    let lines: Vec<&str> = p.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{}", p.stderr);
    for l in lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
    }
    let p = run_server(
        &dir.path().join("data"),
        &["--log-format", "text"],
        &[
            ("COMMISSAIRE_LISTEN_PORT", port.as_str()),
            ("COMMISSAIRE_LOG_FORMAT", "json"),
        ],
    );
    assert!(p.stdout.contains("INFO"), "{}", p.stdout);
    // A bad value stops start-up, naming the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_commissaire-server"))
        .args(["--no-config-file", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("COMMISSAIRE_LISTEN_PORT", "eighty")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("COMMISSAIRE_LISTEN_PORT"),
        "{out:?}"
    );
}

#[test]
fn tls_file_problems_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("empty.pem");
    std::fs::write(&pem, "not a certificate\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_commissaire-server"))
        .args(["--no-config-file", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .arg("--tls-pemfile")
        .arg(&pem)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no certificate found") && err.contains("docs/tls.md"),
        "{err}"
    );
}
