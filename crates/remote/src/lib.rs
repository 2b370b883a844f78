//! The Commissaire SSH transport: one authenticated connection per host ([`Session`]) built on
//! russh, an in-process async SSH client (SPEC §3: no `ssh` child process per host).
//!
//! * **Keys stay in memory.** [`Target::private_key`] is the private key file's text; it is
//!   decoded in memory and never written to disk, logged or put into an error message.
//! * **Host keys: trust on first use.** With [`Target::known_host_key`] `None` any host key is
//!   accepted and returned by [`Session::connect`] for the caller to record; with `Some`, a
//!   different key fails with [`RemoteError::HostKeyChanged`] carrying both fingerprints.
//! * **Everything is bounded in time.** [`Timeouts::connect`] covers resolving, TCP connect,
//!   key exchange and authentication together (russh itself has no connect timeout);
//!   every command has its own timeout, after which its channel is closed.
//! * **Commands** keep exit status, stdout and stderr apart ([`Output`]); file uploads are
//!   atomic ([`Session::upload`]); [`Session::facts`] gathers the host facts in one exec;
//!   [`Session::run_script`] runs a multi-step script in one exec ([`script`]).
//!
//! Commands are strings run by the remote user's login shell (SSH has no argv): quote
//! arguments with [`shell_quote`], and pass secrets through stdin, never on the command line
//! (where they would show up in the remote `ps` and in our error messages).
#![warn(missing_docs)]

mod facts;
pub mod keys;
pub mod script;
mod shell;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::net::TcpStream;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Read buffer of an SSH connection. Small, since sessions stay open between checks (the
/// buffer is per session); a read larger than it, such as a big data packet, bypasses it.
const READ_BUFFER: usize = 8 * 1024;

pub use facts::{FACTS_SCRIPT, Facts, facts_command};
pub use shell::{quote as shell_quote, sh_c};

/// How often an idle connection sends an SSH keepalive. Connections are kept open between
/// watcher checks (default every 60 s); a 15 s keepalive keeps NAT/firewall state alive and
/// notices a dead peer within about a minute (see [`KEEPALIVE_MAX`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Unanswered keepalives after which russh closes the connection, so that
/// [`Session::is_closed`] turns true and the caller reconnects.
pub const KEEPALIVE_MAX: usize = 3;

/// Per-stream limit on the output [`Session::exec`] collects (64 MiB): our commands print
/// little, so more means something is wrong, and the manager must not run out of memory for it.
pub const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// How much of stderr [`Output::stderr_text`] keeps (the tail, where tools put their error).
const STDERR_TEXT_MAX: usize = 2048;

/// How much of a command line goes into error messages.
const COMMAND_TEXT_MAX: usize = 120;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// IPv4 or IPv6 address (bare, without brackets) or DNS name.
    pub address: String,
    /// SSH port, 22 by default.
    pub port: u16,
    /// The remote user (the host's `remote_user`, e.g. `root`).
    pub user: String,
    /// The private key FILE TEXT (OpenSSH or PEM; ed25519, ECDSA, RSA; unencrypted). Decoded
    /// in memory only, never written to disk. Zeroized when dropped.
    pub private_key: Zeroizing<String>,
    /// The trusted host key as an OpenSSH public-key line (`ssh-ed25519 AAAA...`, a trailing
    /// comment is ignored); `None` trusts whatever key the host presents (trust on first use).
    pub known_host_key: Option<String>,
}

impl Target {
    /// A target on port 22 with no recorded host key (trust on first use).
    pub fn new(
        address: impl Into<String>,
        user: impl Into<String>,
        private_key: Zeroizing<String>,
    ) -> Target {
        Target {
            address: address.into(),
            port: 22,
            user: user.into(),
            private_key,
            known_host_key: None,
        }
    }

    /// `address:port`, with IPv6 addresses in brackets, for messages.
    pub fn endpoint(&self) -> String {
        let host = self.host();
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The address without the brackets an IPv6 literal may have been given with.
    fn host(&self) -> &str {
        let a = self.address.trim();
        a.strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(a)
    }
}

/// Redacts the private key: `Debug` output ends up in logs and panic messages.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("private_key", &"<redacted>")
            .field("known_host_key", &self.known_host_key)
            .finish()
    }
}

/// Time limits for a [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving, TCP connect, SSH key exchange and authentication together (default 10 s).
    pub connect: Duration,
    /// Default limit for the commands the session runs itself ([`Session::upload`],
    /// [`Session::facts`]); [`Session::exec`] takes its own (default 120 s).
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(120),
        }
    }
}

/// A host's public key, as presented during key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// OpenSSH public-key line without comment, e.g. `ssh-ed25519 AAAA...`: what to store and
    /// pass back as [`Target::known_host_key`].
    pub openssh: String,
    /// SHA-256 fingerprint as OpenSSH prints it, e.g. `SHA256:47DEQpj8...`: what to show.
    pub fingerprint: String,
}

impl HostKey {
    /// Parses an OpenSSH public-key line (`ssh-ed25519 AAAA... [comment]`), e.g. to show the
    /// fingerprint of a stored key.
    pub fn parse(line: &str) -> Result<HostKey, RemoteError> {
        parse_public_key(line).map(|k| HostKey::from_public_key(&k))
    }

    fn from_public_key(key: &PublicKey) -> HostKey {
        HostKey {
            openssh: openssh_line(key),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        }
    }
}

/// Why an SSH operation failed. Messages name the endpoint and never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The host could not be reached: DNS failure, connection refused, unreachable, reset, or
    /// the connection was lost. The message names the address and port.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Connecting (including key exchange and authentication) or a command took too long; the
    /// message says which.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The host presented a different key than the trusted one: possibly a reinstalled host,
    /// possibly a man in the middle. Nothing was sent to it; an operator must re-trust it.
    #[error("host key changed: expected {expected}, got {got}")]
    HostKeyChanged {
        /// Fingerprint of the trusted key.
        expected: String,
        /// Fingerprint of the key the host presented.
        got: String,
    },
    /// The server refused our key for the user.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The private key does not parse (the message never includes key material).
    #[error("unusable private key: {0}")]
    BadKey(String),
    /// A caller-supplied value is unusable (a known host key that does not parse, an upload
    /// path that is not a file path).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A command the transport runs for its own operations (e.g. the upload script) exited
    /// non-zero. [`Session::exec`] never returns this: it returns the status in [`Output`].
    #[error("{command} failed with exit status {status}: {stderr}")]
    CommandFailed {
        /// What was attempted, e.g. `upload to /etc/foo`.
        command: String,
        /// The exit status.
        status: u32,
        /// The tail of stderr ([`Output::stderr_text`]).
        stderr: String,
    },
    /// Anything else from SSH: no common algorithm, the server refused to run a command,
    /// malformed packets, ...
    #[error("SSH protocol error: {0}")]
    Protocol(String),
    /// The facts output could not be parsed; the message names the field.
    #[error("unusable facts: {0}")]
    Facts(String),
}

/// The result of one command.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status. A command killed by a signal reports `128 + n` as a POSIX shell does
    /// (`n` the Linux signal number, e.g. 137 for KILL, 143 for TERM; 255 for signals without
    /// a standard number), with the signal's name in [`Output::signal`].
    pub status: u32,
    /// Name of the signal that killed the command (`KILL`, `TERM`, ...), if any.
    pub signal: Option<String>,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0 && self.signal.is_none()
    }

    /// stdout as text (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text for status reasons and logs: lossy UTF-8, trimmed, and bounded to the
    /// last ~2 KB (tools print their actual error last), prefixed with `…` when cut.
    pub fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let text = text.trim();
        if text.len() <= STDERR_TEXT_MAX {
            return text.to_string();
        }
        let mut start = text.len() - STDERR_TEXT_MAX;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", text[start..].trim_start())
    }
}

/// Shows the output as text, bounded, rather than as byte arrays.
impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stdout = String::from_utf8_lossy(&self.stdout);
        f.debug_struct("Output")
            .field("status", &self.status)
            .field("signal", &self.signal)
            .field("stdout", &truncate(&stdout, STDERR_TEXT_MAX))
            .field("stderr", &self.stderr_text())
            .finish()
    }
}

/// One authenticated SSH connection.
///
/// Cheap to keep open (one tokio task, a few KB) and safe to share: every [`Session::exec`]
/// opens its own channel, so several commands may run concurrently on one session. `Send +
/// Sync`. Check [`Session::is_closed`] before reusing a kept session.
pub struct Session {
    handle: client::Handle<Client>,
    /// `address:port`, for messages.
    endpoint: String,
    user: String,
    timeouts: Timeouts,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The client configuration shared by all sessions.
static CONFIG: LazyLock<Arc<client::Config>> = LazyLock::new(|| {
    Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        // Kept sessions may sit idle between watcher checks: no inactivity timeout, keepalives
        // detect dead peers instead.
        inactivity_timeout: None,
        // Commands are small request/response exchanges: Nagle would only add latency.
        nodelay: true,
        ..Default::default()
    })
});

impl Session {
    /// Connects, checks the host key and authenticates, all within `timeouts.connect`.
    ///
    /// Returns the session and the key the host presented (to record on first use). Fails
    /// with [`RemoteError::BadKey`] before any network traffic if the private key does not
    /// parse, [`RemoteError::HostKeyChanged`] if `target.known_host_key` is set and differs
    /// (before authenticating, so nothing is sent to an impostor), [`RemoteError::Auth`] if
    /// the key is refused, [`RemoteError::Connect`] / [`RemoteError::Timeout`] for network
    /// trouble.
    pub async fn connect(
        target: &Target,
        timeouts: Timeouts,
    ) -> Result<(Session, HostKey), RemoteError> {
        let key = decode_private_key(&target.private_key)?;
        let expected = target
            .known_host_key
            .as_deref()
            .map(parse_public_key)
            .transpose()?;
        let endpoint = target.endpoint();
        let seen = Arc::new(Mutex::new(None));
        let phase = Mutex::new("resolving the address");
        let attempt = connect_and_authenticate(target, &endpoint, key, expected, &seen, &phase);
        let started = Instant::now();
        let attempted = tokio::time::timeout(timeouts.connect, attempt).await;
        observe(
            "commissaire_ssh_connect_duration_seconds",
            started,
            matches!(attempted, Ok(Ok(_))),
        );
        let handle = match attempted {
            Ok(result) => result?,
            Err(_) => {
                return Err(RemoteError::Timeout(format!(
                    "connecting to {endpoint} took longer than {} (while {})",
                    human(timeouts.connect),
                    phase.lock().map(|p| *p).unwrap_or("connecting")
                )));
            }
        };
        let host_key = seen
            .lock()
            .expect("host key slot")
            .as_ref()
            .map(HostKey::from_public_key)
            .ok_or_else(|| {
                RemoteError::Protocol(format!("{endpoint} completed no host key check"))
            })?;
        tracing::debug!(
            endpoint,
            user = %target.user,
            fingerprint = %host_key.fingerprint,
            "SSH session established"
        );
        Ok((
            Session {
                handle,
                endpoint,
                user: target.user.clone(),
                timeouts,
            },
            host_key,
        ))
    }

    /// Runs one command through the remote user's login shell, feeding it `stdin` (then EOF;
    /// with `None` the command sees EOF at once), and collects exit status, stdout and stderr
    /// apart.
    ///
    /// The whole exchange (opening the channel, running, collecting) is bounded by `timeout`;
    /// on expiry the command is sent TERM, its channel is closed and [`RemoteError::Timeout`]
    /// returned; the session stays usable. The remote command may outlive the timeout:
    /// OpenSSH refuses signal requests for root logins ("session signalling requires
    /// privilege separation", root sessions run without it) and does not kill a non-tty
    /// command when its channel closes, so it runs on until it ends or next writes (SIGPIPE).
    /// Commands that may hang should bound themselves: wrap them with [`bounded`].
    ///
    /// A non-zero exit is not an error: check [`Output::success`]. If the connection drops
    /// before the command reports its status (e.g. the host rebooted), the error is
    /// [`RemoteError::Connect`].
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        let started = Instant::now();
        let result = self.exec_untimed(command, stdin, timeout).await;
        observe(
            "commissaire_ssh_exec_duration_seconds",
            started,
            result.is_ok(),
        );
        result
    }

    /// [`Session::exec`] without its latency measurement.
    async fn exec_untimed(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            RemoteError::Timeout(format!(
                "command {:?} on {} did not finish within {}",
                truncate(command, COMMAND_TEXT_MAX),
                self.endpoint,
                human(timeout)
            ))
        };
        let channel = tokio::time::timeout_at(deadline, self.handle.channel_open_session())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| self.channel_error(e, command))?;
        let (mut rx, tx) = channel.split();
        let run = async {
            tx.exec(true, command)
                .await
                .map_err(|e| self.channel_error(e, command))?;
            collect(&mut rx, &tx, stdin).await
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(collected)) => self.finish(collected, command),
            Ok(Err(e)) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
                Err(e)
            }
            Err(_) => {
                // Best effort, bounded: the peer may be gone, and the caller already waited.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = tx.signal(Sig::TERM).await;
                    let _ = tx.close().await;
                })
                .await;
                Err(timed_out())
            }
        }
    }

    /// Writes `contents` to `path` atomically with permission bits `mode` (e.g. `0o644`; only
    /// the low 12 bits are used), creating missing parent directories (mode 0755).
    ///
    /// Uploads by `sh -c` with the contents on stdin rather than SFTP: one exec does mkdir,
    /// write, chmod and rename in one round trip, needs no SFTP subsystem (hardened hosts
    /// disable it) and no extra dependency. The file is written to a temporary name in the
    /// same directory (created with umask 077, so never readable by others before its final
    /// mode is set, and refusing to follow a pre-existing name) and renamed over `path`, so
    /// readers see the old or the new file, never a partial one. The new file belongs to the
    /// remote user. Bounded by [`Timeouts::command`].
    pub async fn upload(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), RemoteError> {
        let script = upload_script(path, mode, contents.len())?;
        let output = self
            .exec(&sh_c(&script), Some(contents), self.timeouts.command)
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(RemoteError::CommandFailed {
                command: format!("upload to {path}"),
                status: output.status,
                stderr: output.stderr_text(),
            })
        }
    }

    /// Runs `script` with `sh` on the host in one exec (one channel, one round trip): the
    /// script travels on stdin and runs only if it arrived whole (see [`script`]). Its stdin is
    /// `/dev/null`. It must be ASCII without NUL (files with other bytes go through
    /// [`script::heredoc_into`]); anything else is [`RemoteError::InvalidArgument`]. Bounded by `timeout` like [`Session::exec`]; a script that may hang must
    /// bound its own commands ([`bounded`]).
    pub async fn run_script(&self, script: &str, timeout: Duration) -> Result<Output, RemoteError> {
        if !script.is_ascii() || script.contains('\0') {
            return Err(RemoteError::InvalidArgument(
                "a script must be ASCII without NUL (carry other bytes in script::heredoc_into)"
                    .into(),
            ));
        }
        self.exec(
            &script::loader(script.len()),
            Some(script.as_bytes()),
            timeout,
        )
        .await
    }

    /// Gathers the host's [`Facts`] with one exec of [`FACTS_SCRIPT`] (one round trip),
    /// bounded by [`Timeouts::command`].
    pub async fn facts(&self) -> Result<Facts, RemoteError> {
        let output = self
            .exec(&facts_command(), None, self.timeouts.command)
            .await?;
        Facts::parse(&String::from_utf8_lossy(&output.stdout)).map_err(|e| match e {
            RemoteError::Facts(msg) if !output.success() || !output.stderr.is_empty() => {
                RemoteError::Facts(format!(
                    "{msg} (facts script exit status {}, stderr: {})",
                    output.status,
                    output.stderr_text()
                ))
            }
            other => other,
        })
    }

    /// Whether the connection is gone (closed by either side, or dead after unanswered
    /// keepalives). A closed session cannot run commands: connect a new one.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// `address:port` of the host, as used in messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The [`Timeouts`] the session was connected with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Says goodbye (SSH disconnect message) and drops the connection. Bounded to 2 s so a
    /// dead peer cannot hold the caller; dropping a `Session` also closes it, just less
    /// politely.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(Disconnect::ByApplication, "closing", "en"),
        )
        .await;
    }

    /// Maps an error from opening or using a channel: when the connection itself is gone the
    /// host is unreachable ([`RemoteError::Connect`]), which the watcher treats differently
    /// from protocol trouble.
    fn channel_error(&self, e: russh::Error, command: &str) -> RemoteError {
        if self.is_closed() || matches!(e, russh::Error::SendError | russh::Error::Disconnect) {
            RemoteError::Connect(format!("connection to {} was lost", self.endpoint))
        } else {
            RemoteError::Protocol(format!(
                "{} refused to run {:?}: {e}",
                self.endpoint,
                truncate(command, COMMAND_TEXT_MAX)
            ))
        }
    }

    fn finish(&self, c: Collected, command: &str) -> Result<Output, RemoteError> {
        let (status, signal) = match (c.status, c.signal) {
            (Some(status), signal) => (status, signal),
            (None, Some(signal)) => (128 + signal_number(&signal), Some(signal)),
            (None, None) if c.refused => {
                return Err(RemoteError::Protocol(format!(
                    "{} refused to run {:?}",
                    self.endpoint,
                    truncate(command, COMMAND_TEXT_MAX)
                )));
            }
            (None, None) => {
                return Err(RemoteError::Connect(format!(
                    "{}: the command {:?} ended without an exit status (connection lost?)",
                    self.endpoint,
                    truncate(command, COMMAND_TEXT_MAX)
                )));
            }
        };
        let signal = signal.map(|s| signal_name(&s));
        Ok(Output {
            status,
            signal,
            stdout: c.stdout,
            stderr: c.stderr,
        })
    }
}

/// What came back on a command's channel.
struct Collected {
    status: Option<u32>,
    signal: Option<Sig>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The server answered the exec request with failure.
    refused: bool,
}

/// Feeds stdin and collects the channel's messages until it closes.
///
/// Writing and reading run concurrently: a command that prints a lot before reading its
/// input would otherwise deadlock (our receive buffer full, its send window exhausted).
/// Reading decides the end: once the channel closes, an unfinished write is dropped (the
/// command did not want the rest of its input).
/// Records the duration of an SSH step in the histogram `name` (the server's `/metrics`), by
/// outcome. The `metrics` facade is a no-op until a recorder is installed, so library users
/// without one pay nothing.
fn observe(name: &'static str, started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!(name, "outcome" => outcome).record(started.elapsed().as_secs_f64());
}

async fn collect(
    rx: &mut russh::ChannelReadHalf,
    tx: &russh::ChannelWriteHalf<client::Msg>,
    stdin: Option<&[u8]>,
) -> Result<Collected, RemoteError> {
    let feed = async {
        if let Some(data) = stdin {
            tx.data(data).await?;
        }
        tx.eof().await
    };
    tokio::pin!(feed);
    let mut feeding = true;
    let mut c = Collected {
        status: None,
        signal: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        refused: false,
    };
    loop {
        let msg = tokio::select! {
            // Errors writing stdin mean the channel is going away; the read side reports why.
            _ = &mut feed, if feeding => { feeding = false; continue; }
            msg = rx.wait() => msg,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => append(&mut c.stdout, &data, "stdout")?,
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                append(&mut c.stderr, &data, "stderr")?
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => c.status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => c.signal = Some(signal_name),
            Some(ChannelMsg::Failure) => c.refused = true,
            Some(ChannelMsg::Close) | None => return Ok(c),
            Some(_) => {}
        }
    }
}

fn append(buf: &mut Vec<u8>, data: &[u8], what: &str) -> Result<(), RemoteError> {
    if buf.len() + data.len() > MAX_OUTPUT {
        return Err(RemoteError::Protocol(format!(
            "command {what} exceeds {} MiB",
            MAX_OUTPUT / (1024 * 1024)
        )));
    }
    buf.extend_from_slice(data);
    Ok(())
}

/// The russh event handler: decides whether to trust the host key.
struct Client {
    /// The trusted key, `None` for trust on first use.
    expected: Option<PublicKey>,
    /// The key the server presented, for [`HostKey`] and [`RemoteError::HostKeyChanged`].
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    /// russh rejects every key by default; we accept on first use or when the key material
    /// equals the trusted key (comments are irrelevant). A host certificate is judged by the
    /// key it certifies: we keep no CA, so the certificate adds nothing.
    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let trusted = match &self.expected {
            None => true,
            Some(expected) => expected.key_data() == key.key_data(),
        };
        *self.seen.lock().expect("host key slot") = Some(key);
        Ok(trusted)
    }
}

/// The steps of [`Session::connect`]; `phase` tells the timeout message where it was.
async fn connect_and_authenticate(
    target: &Target,
    endpoint: &str,
    key: PrivateKey,
    expected: Option<PublicKey>,
    seen: &Arc<Mutex<Option<PublicKey>>>,
    phase: &Mutex<&'static str>,
) -> Result<client::Handle<Client>, RemoteError> {
    set_phase(phase, "resolving the address");
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host(), target.port))
        .await
        .map_err(|e| RemoteError::Connect(format!("cannot resolve {}: {e}", target.address)))?
        .collect();
    if addrs.is_empty() {
        return Err(RemoteError::Connect(format!(
            "{} resolves to no address",
            target.address
        )));
    }

    // Like `ssh`, try every address the name resolves to, in order.
    set_phase(phase, "opening the TCP connection");
    let mut failures = Vec::new();
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    let Some(stream) = stream else {
        return Err(RemoteError::Connect(format!(
            "cannot connect to {endpoint}: {}",
            failures.join("; ")
        )));
    };
    let _ = stream.set_nodelay(true);
    // russh reads each packet with two exact reads (its length, then the rest); through a
    // read buffer one `recv` brings in whatever the host has sent, often several packets.
    // Writes pass straight through.
    let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, stream);

    set_phase(phase, "exchanging keys");
    let handler = Client {
        expected: expected.clone(),
        seen: seen.clone(),
    };
    let mut handle = client::connect_stream(CONFIG.clone(), stream, handler)
        .await
        .map_err(|e| handshake_error(e, endpoint, expected.as_ref(), seen))?;

    set_phase(phase, "authenticating");
    let key = Arc::new(key);
    // RSA signatures must be rsa-sha2-512/256: OpenSSH ≥ 8.8 refuses SHA-1 `ssh-rsa`. Ask the
    // server (RFC 8308 server-sig-algs); if it does not say, try SHA-256 first, SHA-1 last.
    let hash_algs = if key.algorithm().is_rsa() {
        match handle.best_supported_rsa_hash().await {
            Ok(Some(alg)) => vec![alg],
            Ok(None) => vec![Some(HashAlg::Sha256), None],
            Err(e) => return Err(session_error(e, endpoint, "authentication")),
        }
    } else {
        vec![None]
    };
    for alg in hash_algs {
        let attempt = PrivateKeyWithHashAlg::new(key.clone(), alg);
        match handle
            .authenticate_publickey(target.user.clone(), attempt)
            .await
        {
            Ok(AuthResult::Success) => return Ok(handle),
            Ok(AuthResult::Failure {
                partial_success: true,
                ..
            }) => {
                return Err(RemoteError::Auth(format!(
                    "{endpoint} accepted the key for user {} but requires further authentication",
                    target.user
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(session_error(e, endpoint, "authentication")),
        }
    }
    Err(RemoteError::Auth(format!(
        "{endpoint} refused the key {} ({}) for user {}",
        key.public_key().fingerprint(HashAlg::Sha256),
        key.algorithm().as_str(),
        target.user
    )))
}

/// Records which step of [`Session::connect`] is running (a `Mutex` rather than a `Cell` so
/// that the connect future stays `Send`).
fn set_phase(phase: &Mutex<&'static str>, now: &'static str) {
    if let Ok(mut p) = phase.lock() {
        *p = now;
    }
}

/// Maps a failed key exchange. A host key the handler rejected surfaces from russh as
/// `UnknownKey`; we know why, and report both fingerprints.
fn handshake_error(
    e: russh::Error,
    endpoint: &str,
    expected: Option<&PublicKey>,
    seen: &Mutex<Option<PublicKey>>,
) -> RemoteError {
    if let (russh::Error::UnknownKey, Some(expected)) = (&e, expected)
        && let Some(got) = seen.lock().expect("host key slot").as_ref()
    {
        return RemoteError::HostKeyChanged {
            expected: expected.fingerprint(HashAlg::Sha256).to_string(),
            got: got.fingerprint(HashAlg::Sha256).to_string(),
        };
    }
    session_error(e, endpoint, "the SSH handshake")
}

/// Maps russh errors on an established TCP connection: I/O trouble and hang-ups mean the
/// host is unreachable, everything else is protocol trouble.
fn session_error(e: russh::Error, endpoint: &str, during: &str) -> RemoteError {
    match e {
        russh::Error::IO(io) => RemoteError::Connect(format!("{endpoint}: {io} during {during}")),
        russh::Error::HUP | russh::Error::Disconnect | russh::Error::SendError => {
            RemoteError::Connect(format!("{endpoint} closed the connection during {during}"))
        }
        russh::Error::Version => RemoteError::Protocol(format!(
            "{endpoint} did not answer with an SSH version banner"
        )),
        other => RemoteError::Protocol(format!("{endpoint}: {other} during {during}")),
    }
}

/// Decodes the private key file text.
///
/// Error messages come from a fixed vocabulary or russh's own error text, and are checked not
/// to echo any part of the key: secrets must never reach logs or API responses.
fn decode_private_key(text: &str) -> Result<PrivateKey, RemoteError> {
    if text.trim().is_empty() {
        return Err(RemoteError::BadKey("the private key is empty".into()));
    }
    russh::keys::decode_secret_key(text, None).map_err(|e| {
        use russh::keys::Error as K;
        let msg = match e {
            K::KeyIsEncrypted => {
                "the key is passphrase-protected; an unencrypted key is required".to_string()
            }
            K::CouldNotReadKey => {
                "not a recognised private key (expected OpenSSH or PEM: ed25519, ECDSA, RSA)"
                    .to_string()
            }
            K::UnsupportedKeyType { .. } => format!("unsupported key type: {e}"),
            other => format!("malformed key data: {other}"),
        };
        RemoteError::BadKey(redact_key_material(msg, text))
    })
}

/// Replaces `msg` with a generic text if it contains any longer token of the key text.
/// russh's messages do not quote input today; this keeps it that way if one ever does.
fn redact_key_material(msg: String, key_text: &str) -> String {
    let leaks = key_text
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|t| t.len() >= 8)
        .any(|t| msg.contains(t));
    if leaks {
        "malformed key data".to_string()
    } else {
        msg
    }
}

/// Parses an OpenSSH public-key line, ignoring any comment.
fn parse_public_key(line: &str) -> Result<PublicKey, RemoteError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| {
        RemoteError::InvalidArgument(format!(
            "known host key is not an OpenSSH public key line: {e}"
        ))
    })
}

/// `algorithm base64` without comment: stable for storage and comparison.
fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| key.algorithm().as_str().to_string())
}

/// `command` wrapped so that the host itself ends it after `limit`: GNU `timeout` runs it in a
/// process group of its own and sends TERM to the whole group when the time is up (KILL 5 s
/// later). [`Session::exec`] cannot do that from our side (see its notes), so commands that may
/// hang — package managers, service restarts — go through this. Exit status 124 means the
/// limit was reached.
pub fn bounded(command: &str, limit: Duration) -> String {
    let secs = limit.as_secs_f64().max(1.0);
    format!("timeout -k 5 {secs:.0} sh -c {}", shell::quote(command))
}

/// The upload script (see [`Session::upload`]).
pub(crate) fn upload_script(path: &str, mode: u32, len: usize) -> Result<String, RemoteError> {
    if path.is_empty() || path.ends_with('/') || path.contains('\0') {
        return Err(RemoteError::InvalidArgument(format!(
            "upload path {path:?} is not a file path"
        )));
    }
    let (dir, name) = match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    };
    if name == "." || name == ".." {
        return Err(RemoteError::InvalidArgument(format!(
            "upload path {path:?} is not a file path"
        )));
    }
    let tmp_prefix = if dir == "/" {
        format!("/.{name}.commissaire-tmp.")
    } else {
        format!("{dir}/.{name}.commissaire-tmp.")
    };
    let q_path = shell::quote(path);
    Ok(format!(
        "set -e\n\
         umask 022\n\
         [ -d {dir} ] || mkdir -p -- {dir}\n\
         if [ -d {q_path} ]; then echo 'upload: the target is a directory' >&2; exit 1; fi\n\
         umask 077\n\
         tmp={tmp}$$\n\
         trap 'rm -f -- \"$tmp\"' EXIT\n\
         set -C\n\
         cat > \"$tmp\"\n\
         n=$(wc -c < \"$tmp\")\n\
         if [ \"$((n))\" -ne {len} ]; then echo \"upload: received $n of {len} bytes\" >&2; exit 1; fi\n\
         chmod {mode:04o} \"$tmp\"\n\
         mv -f -- \"$tmp\" {q_path}\n\
         trap - EXIT\n",
        dir = shell::quote(dir),
        tmp = shell::quote(&tmp_prefix),
        mode = mode & 0o7777,
    ))
}

/// Linux signal numbers for the names SSH reports, for the `128 + n` exit status.
fn signal_number(sig: &Sig) -> u32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        // No standard number: 128 + 127 = 255, still clearly "killed".
        Sig::Custom(_) => 127,
    }
}

fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// At most `max` characters of `s`, for messages.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `10 s`, `1.5 s`, `250 ms`: durations as people read them.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn session_is_send_and_sync() {
        assert_send_sync::<Session>();
        assert_send_sync::<RemoteError>();
    }

    /// Callers spawn these futures on the multi-threaded runtime.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(target: &Target, session: &Session) {
        fn send<T: Send>(_: T) {}
        send(Session::connect(target, Timeouts::default()));
        send(session.exec("true", None, Duration::from_secs(1)));
        send(session.upload("/x", b"", 0o644));
        send(session.facts());
    }

    #[test]
    fn debug_redacts_the_key() {
        let t = Target::new(
            "10.0.0.1",
            "root",
            Zeroizing::new("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETSECRET\n".into()),
        );
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("SECRET") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }

    #[test]
    fn endpoints() {
        let mut t = Target::new("::1", "root", Zeroizing::new(String::new()));
        assert_eq!(t.endpoint(), "[::1]:22");
        t.address = "[fe80::1]".into();
        t.port = 2222;
        assert_eq!(t.endpoint(), "[fe80::1]:2222");
        assert_eq!(t.host(), "fe80::1");
        t.address = "host.example".into();
        assert_eq!(t.endpoint(), "host.example:2222");
    }

    #[test]
    fn bad_keys_never_echo_their_text() {
        let garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nTOPSECRETxyz0123456789\n\
                       -----END OPENSSH PRIVATE KEY-----\n";
        for text in [
            garbage,
            "TOPSECRETxyz0123456789",
            "",
            "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETxyz0123456789\n\
             -----END RSA PRIVATE KEY-----\n",
        ] {
            let err = decode_private_key(text).unwrap_err();
            assert!(matches!(err, RemoteError::BadKey(_)), "{err:?}");
            assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        }
    }

    #[test]
    fn redaction_guard() {
        assert_eq!(
            redact_key_material("bad byte in AAAAC3NzaC1".into(), "x AAAAC3NzaC1 y"),
            "malformed key data"
        );
        assert_eq!(redact_key_material("bad".into(), "AAAAC3NzaC1"), "bad");
    }

    #[test]
    fn host_key_parse_ignores_comment() {
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let k = HostKey::parse(&format!("{line} root@example")).unwrap();
        assert_eq!(k.openssh, line);
        assert!(k.fingerprint.starts_with("SHA256:"), "{}", k.fingerprint);
        assert!(matches!(
            HostKey::parse("not a key"),
            Err(RemoteError::InvalidArgument(_))
        ));
    }

    #[test]
    fn stderr_text_is_trimmed_and_bounded() {
        let mut out = Output {
            status: 1,
            signal: None,
            stdout: vec![],
            stderr: b"  oops\n".to_vec(),
        };
        assert_eq!(out.stderr_text(), "oops");
        out.stderr = "é".repeat(3000).into_bytes();
        let text = out.stderr_text();
        assert!(
            text.starts_with('…') && text.len() <= STDERR_TEXT_MAX + 4,
            "{}",
            text.len()
        );
        assert!(!out.success());
    }

    #[test]
    fn upload_script_quotes_and_validates() {
        let s = upload_script("/etc/my dir/it's.conf", 0o600, 5).unwrap();
        assert!(s.contains("mkdir -p -- '/etc/my dir'"), "{s}");
        assert!(s.contains("chmod 0600"), "{s}");
        assert!(
            s.contains("tmp='/etc/my dir/.it'\\''s.conf.commissaire-tmp.'$$"),
            "{s}"
        );
        assert!(
            upload_script("/x", 0o644, 0)
                .unwrap()
                .contains("tmp=/.x.commissaire-tmp.$$")
        );
        for bad in ["", "/etc/", "/etc/..", "a\0b"] {
            assert!(matches!(
                upload_script(bad, 0o644, 0),
                Err(RemoteError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn upload_script_works_locally() {
        let dir = std::env::temp_dir().join(format!("commissaire-upload-{}", std::process::id()));
        let path = dir.join("a b/c'd.txt");
        let path = path.to_str().unwrap();
        let script = upload_script(path, 0o640, 6).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(path).unwrap(), b"hello\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.join("a b")).unwrap().collect();
        assert_eq!(left.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounded_commands_end_on_the_host() {
        let cmd = bounded("sleep 30; echo late", Duration::from_secs(1));
        assert_eq!(cmd, "timeout -k 5 1 sh -c 'sleep 30; echo late'");
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        // The whole pipeline is gone, well before the sleep would have ended.
        assert_eq!(out.status.code(), Some(124));
        assert!(out.stdout.is_empty());
        assert!(started.elapsed() < Duration::from_secs(20));
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(bounded("echo 'it'\\''s fine'", Duration::from_secs(10)))
            .output()
            .unwrap();
        assert!(ok.status.success());
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "it's fine\n");
    }

    #[test]
    fn a_truncated_upload_leaves_nothing() {
        // What a dropped connection looks like to the remote script: stdin ends early.
        let dir = std::env::temp_dir().join(format!("commissaire-trunc-{}", std::process::id()));
        let path = dir.join("marker");
        let script = upload_script(path.to_str().unwrap(), 0o644, 64).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"abc").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("received 3 of 64 bytes"),
            "{out:?}"
        );
        assert!(!path.exists(), "a truncated upload was committed");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(10)), "10 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
    }
}
