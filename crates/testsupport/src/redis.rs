//! A real `redis-server` on 127.0.0.1 owned by one test (Debian package `redis-server`): no
//! persistence, a free port, killed by PID when dropped. It can be stopped and started again
//! on the same port to test outages.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const REDIS_BIN: &str = "/usr/bin/redis-server";

/// One Redis server.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh Redis and waits (at most 20 s) until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not come up.
    pub fn start() -> RedisServer {
        assert!(
            Path::new(REDIS_BIN).exists(),
            "redis-server not found: install Debian package redis-server (apt-get install redis-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("commissaire-redis-")
            .tempdir()
            .expect("create a temporary directory for redis");
        let mut server = RedisServer {
            dir,
            port: 0,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..3 {
            server.port = crate::free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last = e;
                    server.kill();
                }
            }
        }
        panic!("redis did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGKILL by PID); [`RedisServer::restart`] brings it back empty on the
    /// same port.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port.
    ///
    /// # Panics
    ///
    /// When it does not come back within 20 s.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            self.kill();
            panic!("redis did not restart: {e}");
        }
    }

    /// Sends one command in Redis's inline syntax and returns the raw reply.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached.
    pub fn command(&self, line: &str) -> String {
        self.raw(line)
            .unwrap_or_else(|e| panic!("redis command {line:?} failed: {e}"))
    }

    fn raw(&self, line: &str) -> Result<String, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let timeout = Duration::from_secs(2);
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{line}\r\nQUIT\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        Ok(out)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(REDIS_BIN)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn {REDIS_BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server exited with {status}"));
            }
            if self.raw("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("redis-server did not answer PING within 20 s".into());
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
