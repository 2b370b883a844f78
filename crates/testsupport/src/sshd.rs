//! A throw-away OpenSSH server on loopback, for tests of the SSH transport against the real
//! thing rather than a mock.
//!
//! [`SshServer::start`] runs the machine's `/usr/sbin/sshd` (Debian package `openssh-server`)
//! in the foreground on `127.0.0.1:<free port>` with everything (config, host key,
//! `authorized_keys`, PID file, log) in its own temporary directory, so tests can run many
//! servers in parallel without touching the machine's own sshd. Run the tests as root: sshd
//! needs it to switch to the logging-in user (and only root can log in as root).
//!
//! [`keygen`] makes client key pairs with `ssh-keygen` in the formats the transport must read.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Where Debian's `openssh-server` package installs the server.
const SSHD_BIN: &str = "/usr/sbin/sshd";

/// Where Debian's `openssh-client` package installs the key generator.
const SSH_KEYGEN_BIN: &str = "/usr/bin/ssh-keygen";

/// How long a freshly spawned sshd may take to send its banner.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `stop` waits after SIGTERM before resorting to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running (or stopped) sshd on 127.0.0.1, owned by one test.
///
/// Killed by PID when dropped (never by name: other tests run their own sshd), and its
/// directory removed. Its log (`sshd -e` output) is `sshd.log` in [`SshServer::dir`]; its tail
/// is in the panic message when the server does not come up.
#[derive(Debug)]
pub struct SshServer {
    /// Config, host key, authorized_keys, PID file and log; removed on drop.
    dir: TempDir,
    /// The listening port (kept across [`SshServer::rekey`] when possible).
    port: u16,
    /// The running process, `None` while stopped.
    child: Option<Child>,
}

impl SshServer {
    /// Generates an ed25519 host key, writes `sshd_config` and starts sshd on a free loopback
    /// port; returns once it sends its SSH banner (at most 10 s).
    ///
    /// The config allows public-key logins only (root included: `PermitRootLogin
    /// prohibit-password`) with keys from [`SshServer::authorize`]; `StrictModes no` because
    /// the temporary directory's ownership and modes are not sshd's business here, `UsePAM no`
    /// so no PAM stack is involved, and `MaxStartups 200` so that tests may open many
    /// connections at once (the default, 10:30:100, randomly drops unauthenticated connections
    /// beyond 10, which real fleets never see from one manager but a fan-out test would).
    ///
    /// # Panics
    ///
    /// When sshd or ssh-keygen is missing, or the server does not come up.
    pub fn start() -> SshServer {
        for bin in [SSHD_BIN, SSH_KEYGEN_BIN] {
            if !Path::new(bin).exists() {
                panic!(
                    "{bin} not found: install Debian packages openssh-server and openssh-client"
                );
            }
        }
        // sshd refuses to start without its privilege-separation directory, which Debian
        // creates only when the system sshd service starts. Harmless if it exists.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("commissaire-sshd-")
            .tempdir()
            .expect("create a temporary directory for sshd");
        let mut server = SshServer {
            dir,
            port: 0,
            child: None,
        };
        server.generate_host_key();
        File::create(server.authorized_keys_path()).expect("create authorized_keys");
        server.start_on_some_port(None);
        server
    }

    /// The listening port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding `sshd_config`, the host key, `authorized_keys` and
    /// `sshd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's host public key as an OpenSSH line without comment, `ssh-ed25519 AAAA...`.
    pub fn host_key(&self) -> String {
        let text = std::fs::read_to_string(self.host_key_path().with_extension("pub"))
            .expect("read the host public key");
        public_line_without_comment(&text)
    }

    /// Appends a public-key line (`ssh-ed25519 AAAA... comment`) to `authorized_keys`. Takes
    /// effect for the next login: sshd reads the file per authentication.
    pub fn authorize(&self, pubkey_line: &str) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.authorized_keys_path())
            .expect("open authorized_keys");
        writeln!(f, "{}", pubkey_line.trim()).expect("write authorized_keys");
    }

    /// Replaces the host key with a new one and restarts the server (on the same port when it
    /// is still free, which it normally is), like a reinstalled host or a man in the middle.
    ///
    /// # Panics
    ///
    /// When the server does not come back.
    pub fn rekey(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.host_key_path());
        let _ = std::fs::remove_file(self.host_key_path().with_extension("pub"));
        self.generate_host_key();
        self.start_on_some_port(Some(self.port));
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within 5 s. Established
    /// sessions are served by their own sshd processes and live on until they disconnect, as
    /// with a real sshd restart; new connections are refused.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the PID of a child we spawned and have not yet reaped, so
        // the PID cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a stopped server again on its port, with the same host key.
    ///
    /// # Panics
    ///
    /// When the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.start_on_some_port(Some(self.port));
    }

    /// Whether the process is currently running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.path().join("ssh_host_ed25519_key")
    }

    fn authorized_keys_path(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn generate_host_key(&self) {
        run_keygen(&self.host_key_path(), &["-t", "ed25519"]);
    }

    /// Starts on `preferred` if given, else (or if that fails) on new free ports: a port found
    /// free can be taken by someone else before sshd binds it, so retry instead of failing the
    /// test on that race.
    fn start_on_some_port(&mut self, preferred: Option<u16>) {
        let mut last_error = String::new();
        let mut candidates: Vec<Option<u16>> = Vec::new();
        if let Some(port) = preferred {
            candidates.extend([Some(port), Some(port)]);
        }
        candidates.extend([None, None, None]);
        for candidate in candidates {
            self.port = candidate.unwrap_or_else(free_port);
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last_error = e;
                    self.stop();
                }
            }
        }
        panic!("sshd did not start: {last_error}");
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {d}/ssh_host_ed25519_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UsePAM no\n\
             MaxStartups 200\n\
             MaxSessions 100\n\
             PrintMotd no\n\
             LogLevel VERBOSE\n",
            port = self.port,
        );
        std::fs::write(self.config_path(), config).expect("write sshd_config");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.write_config();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open sshd.log: {e}"))?;
        let child = Command::new(SSHD_BIN)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn {SSHD_BIN}: {e}"))?;
        self.child = Some(child);

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("sshd exited with {status}; {}", self.log_tail()));
            }
            if banner(&addr).is_some_and(|b| b.starts_with("SSH-2.0-")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sshd sent no banner after {} s; {}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_path().display())
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        // By PID only: never by process name, other tests run their own sshd.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first line a server sends, if it sends one within a second.
fn banner(addr: &SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

/// Client key types and file formats the transport must accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ed25519 in the OpenSSH format (`BEGIN OPENSSH PRIVATE KEY`), ssh-keygen's default.
    Ed25519,
    /// RSA 2048 in the PEM (PKCS#1, `BEGIN RSA PRIVATE KEY`) format (`ssh-keygen -m PEM`).
    RsaPem,
    /// ECDSA P-256 in the OpenSSH format.
    EcdsaP256,
    /// ECDSA P-256 in the PEM (SEC1, `BEGIN EC PRIVATE KEY`) format.
    EcdsaP256Pem,
}

/// A client key pair as file texts.
#[derive(Clone)]
pub struct KeyPair {
    /// The private key file's text.
    pub private: String,
    /// The public key line, `ssh-ed25519 AAAA... comment`.
    pub public: String,
}

/// Hides the private key, like the production types do, so test logs do not teach bad habits.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

/// Generates an unencrypted key pair with `ssh-keygen` in a temporary directory (removed
/// afterwards) and returns both files' texts.
///
/// # Panics
///
/// When ssh-keygen is missing or fails.
pub fn keygen(kind: KeyType) -> KeyPair {
    let dir = tempfile::Builder::new()
        .prefix("commissaire-keygen-")
        .tempdir()
        .expect("create a temporary directory for ssh-keygen");
    let path = dir.path().join("id");
    let args: &[&str] = match kind {
        KeyType::Ed25519 => &["-t", "ed25519"],
        KeyType::RsaPem => &["-t", "rsa", "-b", "2048", "-m", "PEM"],
        KeyType::EcdsaP256 => &["-t", "ecdsa", "-b", "256"],
        KeyType::EcdsaP256Pem => &["-t", "ecdsa", "-b", "256", "-m", "PEM"],
    };
    run_keygen(&path, args);
    KeyPair {
        private: std::fs::read_to_string(&path).expect("read the private key"),
        public: std::fs::read_to_string(path.with_extension("pub"))
            .expect("read the public key")
            .trim()
            .to_string(),
    }
}

/// Runs `ssh-keygen -q -N '' -C test -f <path> <args>`.
fn run_keygen(path: &Path, args: &[&str]) {
    let out = Command::new(SSH_KEYGEN_BIN)
        .args(["-q", "-N", "", "-C", "commissaire-test", "-f"])
        .arg(path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SSH_KEYGEN_BIN}: {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `type base64` of an OpenSSH public-key line, dropping the comment.
fn public_line_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
