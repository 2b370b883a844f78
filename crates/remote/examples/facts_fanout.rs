//! Gathers facts from many hosts at once with the Commissaire SSH transport and reports what it
//! cost the controller. Used by `bench/facts.sh`; see `bench/README.md`.
//!
//! ```text
//! facts_fanout --hosts FILE --key FILE [--known-hosts FILE] [--concurrency N] [--user NAME]
//!              [--port N] [--connect-timeout S] [--command-timeout S]
//! facts_fanout --print-script
//! ```
//!
//! * `--hosts`: one address per line (blank lines and `#` comments ignored).
//! * `--key`: the private key file (OpenSSH or PEM, unencrypted).
//! * `--known-hosts`: OpenSSH `known_hosts` lines (`address[,address...] keytype base64`); each
//!   host must have a line, and a different key fails the host. Without it any host key is
//!   accepted (trust on first use), as the investigator does for a new host.
//! * `--concurrency`: hosts in flight at once (default 50).
//!
//! Every host gets its own connection: connect, authenticate, one exec of the facts script
//! ([`remote::facts_command`]), parse, close. Prints one JSON line on stdout:
//!
//! ```text
//! {"hosts": N, "ok": n, "concurrency": 50, "wall_s": ..., "cpu_user_s": ..., "cpu_sys_s": ...,
//!  "max_rss_kib": ...}
//! ```
//!
//! `wall_s` runs from the first connection attempt to the last close; the CPU times and peak
//! resident memory are the whole process's (`getrusage(RUSAGE_SELF)`, so including start-up and
//! the key parsing). Failed hosts are listed on stderr and make the exit status 1.
//! `--print-script` prints the exact command line the transport sends for facts (`sh -c '…'`),
//! so that a benchmark can run the same script through OpenSSH.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use commissaire_remote as remote;
use remote::{Session, Target, Timeouts};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

const USAGE: &str = "usage: facts_fanout --hosts FILE --key FILE [--known-hosts FILE] \
[--concurrency N] [--user NAME] [--port N] [--connect-timeout S] [--command-timeout S]\n       \
facts_fanout --print-script";

struct Args {
    hosts: String,
    key: String,
    known_hosts: Option<String>,
    concurrency: usize,
    user: String,
    port: u16,
    timeouts: Timeouts,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut hosts = None;
    let mut key = None;
    let mut known_hosts = None;
    let mut concurrency = 50usize;
    let mut user = "root".to_string();
    let mut port = 22u16;
    let mut timeouts = Timeouts {
        connect: Duration::from_secs(30),
        command: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--print-script" {
            return Ok(None);
        }
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--hosts" => hosts = Some(value()?),
            "--key" => key = Some(value()?),
            "--known-hosts" => known_hosts = Some(value()?),
            "--user" => user = value()?,
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--concurrency: a positive integer")?
            }
            "--port" => port = value()?.parse().map_err(|_| "--port: a port number")?,
            "--connect-timeout" => timeouts.connect = seconds(&arg, &value()?)?,
            "--command-timeout" => timeouts.command = seconds(&arg, &value()?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Args {
        hosts: hosts.ok_or("--hosts is required")?,
        key: key.ok_or("--key is required")?,
        known_hosts,
        concurrency,
        user,
        port,
        timeouts,
    }))
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag}: a positive number of seconds"))
}

/// `known_hosts` text → address → key line (`keytype base64`). Hashed entries (`|1|…`) and
/// markers (`@cert-authority`, `@revoked`) are skipped: the benchmark writes plain ones.
fn parse_known_hosts(text: &str, port: u16) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(names), Some(kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        for name in names.split(',') {
            // `[address]:port` for non-standard ports, plain `address` for 22.
            let address = match name.strip_prefix('[').and_then(|n| n.rsplit_once("]:")) {
                Some((a, p)) if p.parse() == Ok(port) => a,
                Some(_) => continue,
                None if port == 22 => name,
                None => continue,
            };
            keys.entry(address.to_string())
                .or_insert_with(|| format!("{kind} {blob}"));
        }
    }
    keys
}

/// One host: connect, facts, close.
async fn one(target: Target, timeouts: Timeouts) -> Result<(), String> {
    let (session, _) = Session::connect(&target, timeouts)
        .await
        .map_err(|e| e.to_string())?;
    let facts = session.facts().await.map_err(|e| e.to_string());
    session.close().await;
    facts.map(|_| ())
}

/// Whole-process CPU times (user, system, in seconds) and peak resident set size (KiB).
fn rusage() -> (f64, f64, i64) {
    // SAFETY: getrusage only writes into the struct we pass, which is zero-initialised
    // plain old data of the right type.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return (f64::NAN, f64::NAN, -1);
        }
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports ru_maxrss in KiB.
    (secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_maxrss)
}

async fn run(args: Args) -> Result<bool, String> {
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let addresses: Vec<String> = read(&args.hosts)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if addresses.is_empty() {
        return Err(format!("{}: no hosts", args.hosts));
    }
    let key = Zeroizing::new(read(&args.key)?);
    let known = match &args.known_hosts {
        Some(path) => Some(parse_known_hosts(&read(path)?, args.port)),
        None => None,
    };

    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    let mut failures = Vec::new();
    for address in &addresses {
        let known_host_key = match &known {
            None => None,
            Some(map) => match map.get(address) {
                Some(k) => Some(k.clone()),
                None => {
                    failures.push(format!("{address}: not in the known_hosts file"));
                    continue;
                }
            },
        };
        let target = Target {
            address: address.clone(),
            port: args.port,
            user: args.user.clone(),
            private_key: key.clone(),
            known_host_key,
        };
        let sem = sem.clone();
        let timeouts = args.timeouts;
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore never closed");
            let address = target.address.clone();
            let result = one(target, timeouts).await;
            (address, result)
        });
    }
    let mut ok = 0usize;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => ok += 1,
            Ok((address, Err(e))) => failures.push(format!("{address}: {e}")),
            Err(e) => failures.push(format!("a task died: {e}")),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let (user, sys, max_rss) = rusage();
    println!(
        "{{\"hosts\": {}, \"ok\": {ok}, \"concurrency\": {}, \"wall_s\": {wall:.3}, \
         \"cpu_user_s\": {user:.3}, \"cpu_sys_s\": {sys:.3}, \"max_rss_kib\": {max_rss}}}",
        addresses.len(),
        args.concurrency
    );
    failures.sort();
    for f in &failures {
        eprintln!("facts_fanout: FAILED {f}");
    }
    Ok(failures.is_empty())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", remote::facts_command());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            if !e.is_empty() {
                eprintln!("facts_fanout: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("facts_fanout: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("facts_fanout: {e}");
            ExitCode::from(2)
        }
    }
}
