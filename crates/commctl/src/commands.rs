//! What each command does.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use clap::CommandFactory;
use serde_json::{Map, Value, json};

use crate::cli::{
    Cli, ClusterCmd, Command, ContainerManagerCmd, ControlArgs, DeployCmd, HostCmd, NetworkCmd,
    RegistrationTokenCmd, RestartCmd, RunOptions, StatusArgs, UpgradeCmd, UserDataArgs,
};
use crate::client::{Client, seg};
use crate::config::{self, Overrides};
use crate::error::{CliError, CliResult, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK};
use crate::output::{self, Format, Style};
use crate::userdata::{self, HostData};

/// With the change feed open, the status is still requested this often when no event came,
/// should the feed stall without closing.
const STREAM_RECHECK: Duration = Duration::from_secs(30);

/// Writes a line to standard output; a closed pipe (`commctl host list | head`) is not an
/// error worth a panic.
fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

/// The configuration file and the connection flags of a command line (`--token @FILE` read).
fn cli_connection(cli: &Cli) -> CliResult<(config::FileConfig, Overrides)> {
    let file = config::load(cli.config.as_deref().or(cli.config_short.as_deref()))?;
    let token = match cli.token.as_deref() {
        Some(t) if t.starts_with('@') => {
            let path = &t[1..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::general(format!("--token @{path}: {e}")))?;
            let text = text.trim().to_string();
            if text.is_empty() {
                return Err(CliError::usage(format!(
                    "--token @{path}: the file is empty"
                )));
            }
            Some(text)
        }
        Some("") => return Err(CliError::usage("--token: the token is empty")),
        other => other.map(str::to_string),
    };
    Ok((
        file,
        Overrides {
            endpoints: cli.endpoint.clone(),
            username: cli.username.clone(),
            password: None,
            kubeconfig: cli.kubeconfig.clone(),
            token,
            ca_path: cli.ca_path.clone(),
            client_cert: cli.client_cert.clone(),
            client_key: cli.client_key.clone(),
            connect_timeout: cli.connect_timeout,
            timeout: cli.timeout,
        },
    ))
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> CliResult<u8> {
    let connection = cli_connection(&cli);
    match cli.command {
        Command::Passhash {
            password,
            file,
            rounds,
        } => passhash(password, file.as_deref(), rounds),
        Command::UserData(a) => user_data(a, &connection?),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "commctl", &mut buf);
            let _ = std::io::stdout().write_all(&buf);
            Ok(EXIT_OK)
        }
        command => {
            let stdin_key = matches!(
                &command,
                Command::Host(HostCmd::Create { ssh_priv_key_file, .. }) if ssh_priv_key_file.as_os_str() == "-"
            );
            if cli.password_stdin && stdin_key {
                return Err(CliError::usage(
                    "--password-stdin cannot be combined with a key read from standard input (-)",
                ));
            }
            let password = if cli.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| CliError::general(format!("reading the password: {e}")))?;
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            let (file, mut flags) = connection?;
            flags.password = password;
            let settings = config::resolve(file, flags)?;
            let ctx = Ctx {
                client: Client::new(&settings)?,
                global: cli.output,
                style: Style::detect(),
            };
            ctx.run(command)
        }
    }
}

struct Ctx {
    client: Client,
    global: Option<Format>,
    style: Style,
}

/// Exit code of a multi-name command: 0 when all succeeded, 3 when every failure was "not
/// found", else 1.
fn worst(codes: &[u8]) -> u8 {
    if codes.iter().all(|c| *c == EXIT_OK) {
        EXIT_OK
    } else if codes.iter().all(|c| *c == EXIT_OK || *c == EXIT_NOT_FOUND) {
        EXIT_NOT_FOUND
    } else {
        EXIT_ERROR
    }
}

fn as_list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

impl Ctx {
    fn format(&self, local: Option<Format>) -> Format {
        local.or(self.global).unwrap_or_default()
    }

    /// Prints `v` as JSON/YAML, or the table `table` makes.
    fn show(&self, format: Format, v: &Value, table: impl FnOnce(Style) -> String) {
        match output::machine(format, v) {
            Some(s) => emit(s.trim_end()),
            None => emit(&table(self.style)),
        }
    }

    fn run(&self, command: Command) -> CliResult<u8> {
        match command {
            Command::Cluster(c) => self.cluster(c),
            Command::ContainerManager(c) => self.container_manager(c),
            Command::Host(c) => self.host(c),
            Command::Network(c) => self.network(c),
            Command::RegistrationToken(c) => self.registration_token(c),
            Command::Passhash { .. } | Command::UserData(_) | Command::Completions { .. } => {
                unreachable!("local commands run without a server")
            }
        }
    }

    /// Deletes each `names` at `prefix/NAME`, reporting each one.
    fn delete_many(
        &self,
        what: &str,
        prefix: &str,
        names: &[String],
        format: Format,
    ) -> CliResult<u8> {
        let mut codes = Vec::new();
        let mut deleted = Vec::new();
        for n in names {
            match self.client.delete(&format!("{prefix}/{}", seg(n))) {
                Ok(_) => {
                    if format == Format::Table {
                        emit(&format!("Deleted {what} {n}."));
                    }
                    deleted.push(Value::String(n.clone()));
                    codes.push(EXIT_OK);
                }
                Err(e) => {
                    eprintln!("commctl: {}", e.message);
                    codes.push(e.code);
                }
            }
        }
        if format != Format::Table {
            let v = json!({ "deleted": deleted });
            if let Some(s) = output::machine(format, &v) {
                emit(s.trim_end());
            }
        }
        Ok(worst(&codes))
    }

    /// Reads every named object of a list answer (skipping ones deleted meanwhile).
    fn fetch_all(&self, prefix: &str, names: &[Value]) -> CliResult<Vec<Value>> {
        let mut out = Vec::new();
        for n in names {
            let Some(n) = n.as_str() else { continue };
            match self.client.get(&format!("{prefix}/{}", seg(n))) {
                Ok(v) => out.push(v),
                Err(e) if e.code == EXIT_NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    // ----- clusters -----

    fn cluster(&self, c: ClusterCmd) -> CliResult<u8> {
        match c {
            ClusterCmd::Create {
                kind,
                network,
                container_manager,
                name,
                out,
            } => {
                let mut body = Map::new();
                if let Some(t) = kind {
                    body.insert("type".into(), Value::String(t));
                }
                if let Some(n) = network {
                    body.insert("network".into(), Value::String(n));
                }
                if let Some(cm) = container_manager {
                    body.insert("container_manager".into(), Value::String(cm));
                }
                let v = self
                    .client
                    .put(&format!("/cluster/{}", seg(&name)), &Value::Object(body))?;
                self.show(self.format(out.output), &v, |s| output::cluster(s, &v));
                Ok(EXIT_OK)
            }
            ClusterCmd::Delete { names, out } => {
                self.delete_many("cluster", "/cluster", &names, self.format(out.output))
            }
            ClusterCmd::Get { name, out } => {
                let v = self.client.get(&format!("/cluster/{}", seg(&name)))?;
                self.show(self.format(out.output), &v, |s| output::cluster(s, &v));
                Ok(EXIT_OK)
            }
            ClusterCmd::List { out } => {
                let v = self.client.get("/clusters")?;
                let format = self.format(out.output);
                if format == Format::Table {
                    let names = as_list(&v);
                    if names.is_empty() {
                        emit("No clusters.");
                    } else {
                        let all = self.fetch_all("/cluster", &names)?;
                        emit(&output::cluster_list(self.style, &all));
                    }
                } else {
                    self.show(format, &v, |_| String::new());
                }
                Ok(EXIT_OK)
            }
            ClusterCmd::Restart(r) => match r {
                RestartCmd::Start { name, opts, out } => {
                    self.op_start("restart", &name, None, false, &opts, out.output)
                }
                RestartCmd::Status(a) => self.op_status("restart", &a),
                RestartCmd::Cancel(a) => self.op_control("restart", "cancel", &a),
                RestartCmd::Pause(a) => self.op_control("restart", "pause", &a),
                RestartCmd::Resume(a) => self.op_control("restart", "resume", &a),
            },
            ClusterCmd::Upgrade(u) => match u {
                UpgradeCmd::Start {
                    name,
                    version,
                    reboot,
                    opts,
                    out,
                } => {
                    if let Some(v) = version {
                        eprintln!(
                            "commctl: note: version {v:?} is not used: an upgrade moves every host to its newest packages (to move OSTree hosts to a given version: commctl cluster deploy start {name} {v})"
                        );
                    }
                    self.op_start("upgrade", &name, None, reboot, &opts, out.output)
                }
                UpgradeCmd::Status(a) => self.op_status("upgrade", &a),
                UpgradeCmd::Cancel(a) => self.op_control("upgrade", "cancel", &a),
                UpgradeCmd::Pause(a) => self.op_control("upgrade", "pause", &a),
                UpgradeCmd::Resume(a) => self.op_control("upgrade", "resume", &a),
            },
            ClusterCmd::Deploy(d) => match d {
                DeployCmd::Start {
                    name,
                    version,
                    opts,
                    out,
                } => self.op_start("deploy", &name, Some(&version), false, &opts, out.output),
                DeployCmd::Status(a) => self.op_status("deploy", &a),
                DeployCmd::Cancel(a) => self.op_control("deploy", "cancel", &a),
                DeployCmd::Pause(a) => self.op_control("deploy", "pause", &a),
                DeployCmd::Resume(a) => self.op_control("deploy", "resume", &a),
            },
        }
    }

    fn op_start(
        &self,
        kind: &str,
        name: &str,
        version: Option<&str>,
        reboot: bool,
        opts: &RunOptions,
        local: Option<Format>,
    ) -> CliResult<u8> {
        let body = start_body(version, reboot, opts);
        let path = format!("/cluster/{}/{kind}", seg(name));
        let v = self.client.put(&path, &body)?;
        let format = self.format(local);
        if opts.watch {
            if format == Format::Table {
                eprintln!("Started the {kind} of cluster {name}.");
            }
            return self.watch(kind, name, format, opts.interval, Some(v));
        }
        if format == Format::Table {
            emit(&format!(
                "Started the {kind} of cluster {name}. Follow it with: commctl cluster {kind} status {name} --watch\n"
            ));
        }
        self.show(format, &v, |s| output::operation(s, kind, &v));
        Ok(EXIT_OK)
    }

    fn op_status(&self, kind: &str, a: &StatusArgs) -> CliResult<u8> {
        let format = self.format(a.out.output);
        if a.watch {
            return self.watch(kind, &a.name, format, a.interval, None);
        }
        let v = self
            .client
            .get(&format!("/cluster/{}/{kind}", seg(&a.name)))?;
        self.show(format, &v, |s| output::operation(s, kind, &v));
        Ok(EXIT_OK)
    }

    fn op_control(&self, kind: &str, action: &str, a: &ControlArgs) -> CliResult<u8> {
        let path = format!("/cluster/{}/{kind}", seg(&a.name));
        let v = match action {
            "cancel" => self.client.delete(&path)?,
            _ => self.client.put(&format!("{path}/{action}"), &json!({}))?,
        };
        let format = self.format(a.out.output);
        if format == Format::Table {
            emit(&match action {
                "cancel" => format!(
                    "Cancel requested for the {kind} of cluster {}: hosts in flight finish their step, no new host starts.\n",
                    a.name
                ),
                "pause" => format!(
                    "Paused the {kind} of cluster {}: no new host starts until `commctl cluster {kind} resume {}`.\n",
                    a.name, a.name
                ),
                _ => format!("Resumed the {kind} of cluster {}.\n", a.name),
            });
        }
        self.show(format, &v, |s| output::operation(s, kind, &v));
        Ok(EXIT_OK)
    }

    /// Follows an operation until it is no longer in process or paused.
    fn watch(
        &self,
        kind: &str,
        name: &str,
        format: Format,
        interval: f64,
        first: Option<Value>,
    ) -> CliResult<u8> {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let path = format!("/cluster/{}/{kind}", seg(name));
        let tty = std::io::stderr().is_terminal();
        // Hidden until the first record gives the host count; stays hidden off a terminal.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} hosts {elapsed_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{kind} {name}"));
        let interval = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
        // Subscribed before the first status request, so no change after it is missed.
        let mut changes = self.follow_operation(kind, name);
        let mut last_line = String::new();
        let mut ticking = false;
        let mut next = first;
        loop {
            let v = match next.take() {
                Some(v) => v,
                None => self.client.get(&path)?,
            };
            let p = output::progress(kind, &v);
            bar.set_length(p.total as u64);
            bar.set_position((p.done + p.failed) as u64);
            let mut msg = p.status.clone();
            if p.failed > 0 {
                msg.push_str(&format!(", {} failed", p.failed));
            }
            if !p.in_process.is_empty() {
                msg.push_str(&format!(", now: {}", p.in_process.join(" ")));
            }
            bar.set_message(msg);
            if tty && !ticking {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(200));
                ticking = true;
            }
            let line = output::progress_line(kind, name, &p);
            if !tty && line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
            if !output::is_active(&p.status) {
                bar.finish_and_clear();
                self.show(format, &v, |s| output::operation(s, kind, &v));
                if p.status == "finished" {
                    return Ok(EXIT_OK);
                }
                eprintln!("commctl: the {kind} of cluster {name} ended {}", p.status);
                return Ok(EXIT_ERROR);
            }
            match &changes {
                Some(rx) => match rx.recv_timeout(STREAM_RECHECK) {
                    // Several events may have come at once: one status request covers them.
                    Ok(()) => while rx.try_recv().is_ok() {},
                    // A quiet feed: ask anyway, in case the stream stalled unnoticed.
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        changes = None;
                    }
                },
                None => std::thread::sleep(interval),
            }
        }
    }

    /// Follows the change feed (`GET /events`) for changes of cluster `name`'s `kind`
    /// operation: each one sends `()` on the returned channel, which disconnects when the
    /// feed ends. `None` when the feed is unavailable (an older server, the subscriber limit,
    /// a proxy that buffers): the caller polls instead.
    fn follow_operation(&self, kind: &str, name: &str) -> Option<std::sync::mpsc::Receiver<()>> {
        use std::io::BufRead;
        let event_kind = match kind {
            "restart" => "ClusterRestart",
            "upgrade" => "ClusterUpgrade",
            "deploy" => "ClusterDeploy",
            _ => return None,
        };
        let resp = self.client.open_stream("/events").ok()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let name = name.to_string();
        // Detached: it ends with the feed, or with the process once the watch is over.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(resp).lines() {
                let Ok(line) = line else { break };
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(ev) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if ev["kind"] == event_kind && ev["name"] == name.as_str() && tx.send(()).is_err() {
                    break;
                }
            }
        });
        Some(rx)
    }

    // ----- container managers -----

    fn container_manager(&self, c: ContainerManagerCmd) -> CliResult<u8> {
        match c {
            ContainerManagerCmd::Create {
                kind,
                options,
                name,
                out,
            } => {
                let opts = parse_kv_options(&options)?;
                let body = json!({ "type": kind, "options": opts });
                let v = self
                    .client
                    .put(&format!("/containermanager/{}", seg(&name)), &body)?;
                self.show(self.format(out.output), &v, |s| output::typed(s, &v));
                Ok(EXIT_OK)
            }
            ContainerManagerCmd::Delete { names, out } => self.delete_many(
                "container manager",
                "/containermanager",
                &names,
                self.format(out.output),
            ),
            ContainerManagerCmd::Get { name, out } => {
                let v = self
                    .client
                    .get(&format!("/containermanager/{}", seg(&name)))?;
                self.show(self.format(out.output), &v, |s| output::typed(s, &v));
                Ok(EXIT_OK)
            }
            ContainerManagerCmd::List { out } => self.typed_list(
                "/containermanagers",
                "/containermanager",
                "container managers",
                out.output,
            ),
        }
    }

    fn typed_list(
        &self,
        list_path: &str,
        item_prefix: &str,
        what: &str,
        local: Option<Format>,
    ) -> CliResult<u8> {
        let v = self.client.get(list_path)?;
        let format = self.format(local);
        if format == Format::Table {
            let names = as_list(&v);
            if names.is_empty() {
                emit(&format!("No {what}."));
            } else {
                let all = self.fetch_all(item_prefix, &names)?;
                emit(&output::typed_list(self.style, &all));
            }
        } else {
            self.show(format, &v, |_| String::new());
        }
        Ok(EXIT_OK)
    }

    // ----- networks -----

    fn registration_token(&self, c: RegistrationTokenCmd) -> CliResult<u8> {
        match c {
            RegistrationTokenCmd::Create {
                cluster,
                expires_in,
                single_use,
                description,
                out,
            } => {
                let v = create_registration_token(
                    &self.client,
                    cluster.as_deref(),
                    expires_in,
                    single_use,
                    description.as_deref(),
                )?;
                self.show(self.format(out.output), &v, |s| {
                    output::fields(s, registration_token_fields(&v, true))
                });
                Ok(EXIT_OK)
            }
            RegistrationTokenCmd::List { out } => {
                let v = self.client.get("/registration-tokens")?;
                self.show(self.format(out.output), &v, |s| {
                    let rows = as_list(&v)
                        .iter()
                        .map(|t| {
                            [
                                "id",
                                "cluster",
                                "expires",
                                "single_use",
                                "created_by",
                                "description",
                            ]
                            .iter()
                            .map(|k| output::cell(t.get(*k)))
                            .collect()
                        })
                        .collect();
                    output::table(
                        s,
                        &[
                            "ID",
                            "CLUSTER",
                            "EXPIRES",
                            "SINGLE USE",
                            "CREATED BY",
                            "DESCRIPTION",
                        ],
                        rows,
                    )
                });
                Ok(EXIT_OK)
            }
            RegistrationTokenCmd::Revoke { ids, out } => self.delete_many(
                "registration token",
                "/registration-tokens",
                &ids,
                self.format(out.output),
            ),
        }
    }

    fn network(&self, c: NetworkCmd) -> CliResult<u8> {
        match c {
            NetworkCmd::Create {
                name,
                kind,
                options,
                out,
            } => {
                // The same KEY=VALUE / JSON forms as `container_manager create -o`.
                let opts = parse_kv_options(&options)?;
                let body = json!({ "type": kind, "options": opts });
                let v = self
                    .client
                    .put(&format!("/network/{}", seg(&name)), &body)?;
                self.show(self.format(out.output), &v, |s| output::typed(s, &v));
                Ok(EXIT_OK)
            }
            NetworkCmd::Delete { names, out } => {
                self.delete_many("network", "/network", &names, self.format(out.output))
            }
            NetworkCmd::Get { name, out } => {
                let v = self.client.get(&format!("/network/{}", seg(&name)))?;
                self.show(self.format(out.output), &v, |s| output::typed(s, &v));
                Ok(EXIT_OK)
            }
            NetworkCmd::List { out } => {
                self.typed_list("/networks", "/network", "networks", out.output)
            }
        }
    }

    // ----- hosts -----

    fn host(&self, c: HostCmd) -> CliResult<u8> {
        match c {
            HostCmd::Create {
                address,
                ssh_priv_key_file,
                cluster,
                remote_user,
                out,
            } => {
                let key = read_key_file(&ssh_priv_key_file)?;
                let mut body = Map::new();
                body.insert(
                    "ssh_priv_key".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&key)),
                );
                if let Some(c) = cluster {
                    body.insert("cluster".into(), Value::String(c));
                }
                if let Some(u) = remote_user {
                    body.insert("remote_user".into(), Value::String(u));
                }
                let v = self
                    .client
                    .put(&format!("/host/{}", seg(&address)), &Value::Object(body))?;
                self.show(self.format(out.output), &v, |s| output::host(s, &v));
                Ok(EXIT_OK)
            }
            HostCmd::Delete { addresses, out } => {
                self.delete_many("host", "/host", &addresses, self.format(out.output))
            }
            HostCmd::Get { address, out } => {
                let v = self.client.get(&format!("/host/{}", seg(&address)))?;
                self.show(self.format(out.output), &v, |s| output::host(s, &v));
                Ok(EXIT_OK)
            }
            HostCmd::List { cluster, out } => {
                let format = self.format(out.output);
                let Some(cluster) = cluster else {
                    let v = self.client.get("/hosts")?;
                    if format == Format::Table && as_list(&v).is_empty() {
                        emit("No hosts.");
                    } else {
                        self.show(format, &v, |s| output::host_list(s, &as_list(&v)));
                    }
                    return Ok(EXIT_OK);
                };
                let members = self
                    .client
                    .get(&format!("/cluster/{}/hosts", seg(&cluster)))?;
                if format != Format::Table {
                    self.show(format, &members, |_| String::new());
                    return Ok(EXIT_OK);
                }
                let members = as_list(&members);
                if members.is_empty() {
                    emit(&format!("Cluster {cluster} has no hosts."));
                    return Ok(EXIT_OK);
                }
                let all = as_list(&self.client.get("/hosts")?);
                let rows: Vec<Value> = members
                    .iter()
                    .map(|m| {
                        all.iter()
                            .find(|h| h.get("address") == Some(m))
                            .cloned()
                            .unwrap_or_else(|| json!({ "address": m }))
                    })
                    .collect();
                emit(&output::host_list(self.style, &rows));
                Ok(EXIT_OK)
            }
            HostCmd::Status { address, out } => {
                let v = self
                    .client
                    .get(&format!("/host/{}/status", seg(&address)))?;
                self.show(self.format(out.output), &v, |s| output::host_status(s, &v));
                Ok(EXIT_OK)
            }
            HostCmd::Join {
                address,
                cluster,
                out,
            } => {
                let v = self.client.put(
                    &format!("/cluster/{}/hosts/{}", seg(&cluster), seg(&address)),
                    &json!({}),
                )?;
                self.show(self.format(out.output), &v, |_| {
                    format!("Host {address} is a member of cluster {cluster}.")
                });
                Ok(EXIT_OK)
            }
            HostCmd::Unjoin {
                address,
                cluster,
                out,
            } => {
                let v = self.client.delete(&format!(
                    "/cluster/{}/hosts/{}",
                    seg(&cluster),
                    seg(&address)
                ))?;
                self.show(self.format(out.output), &v, |_| {
                    format!("Host {address} left cluster {cluster}.")
                });
                Ok(EXIT_OK)
            }
            HostCmd::Hostkey { address, out } => {
                let v = self
                    .client
                    .get(&format!("/host/{}/hostkey", seg(&address)))?;
                self.show(self.format(out.output), &v, |s| {
                    output::fields(
                        s,
                        vec![
                            ("address".into(), output::cell(v.get("address"))),
                            ("key".into(), output::cell(v.get("key"))),
                            ("fingerprint".into(), output::cell(v.get("fingerprint"))),
                            ("trusted at".into(), output::cell(v.get("trusted_at"))),
                        ],
                    )
                });
                Ok(EXIT_OK)
            }
            HostCmd::TrustHostkey { address, key, out } => {
                let body = match &key {
                    Some(k) => json!({ "key": k }),
                    None => json!({}),
                };
                let v = self
                    .client
                    .put(&format!("/host/{}/hostkey", seg(&address)), &body)?;
                let format = self.format(out.output);
                if format == Format::Table {
                    emit(&match key {
                        Some(_) => format!("Host {address}: the given SSH host key is trusted.\n"),
                        None => format!(
                            "Host {address}: the SSH host key it presents at the next contact will be trusted.\n"
                        ),
                    });
                }
                self.show(format, &v, |s| output::host(s, &v));
                Ok(EXIT_OK)
            }
            HostCmd::Ssh {
                address,
                insecure_accept_host_key,
                ssh_args,
                command,
            } => {
                let (before, after) = crate::cli::split_ssh_args(ssh_args, command);
                self.host_ssh(&address, insecure_accept_host_key, &before, &after)
            }
        }
    }

    fn host_ssh(
        &self,
        address: &str,
        insecure: bool,
        before: &[String],
        after: &[String],
    ) -> CliResult<u8> {
        let creds = self.client.get(&format!("/host/{}/creds", seg(address)))?;
        let (Some(key_b64), Some(user)) = (
            creds.get("ssh_priv_key").and_then(Value::as_str),
            creds
                .get("remote_user")
                .and_then(Value::as_str)
                .or(Some("root")),
        ) else {
            return Err(CliError::general(
                "Unable to determine key and user from the server.",
            ));
        };
        let cleaned: String = key_b64.chars().filter(|c| !c.is_whitespace()).collect();
        let mut key = base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|_| {
                CliError::general(format!(
                    "the server's SSH key for {address} is not valid base64"
                ))
            })?;
        if !key.ends_with(b"\n") {
            key.push(b'\n');
        }
        let host_key = match self.client.get(&format!("/host/{}/hostkey", seg(address))) {
            Ok(v) => v
                .get("key")
                .and_then(Value::as_str)
                .map(str::to_string)
                .filter(|k| !k.trim().is_empty()),
            Err(e) if e.http_status == Some(404) => None,
            Err(e) => return Err(e),
        };
        if host_key.is_none() && !insecure {
            return Err(CliError::general(format!(
                "no SSH host key recorded for {address} yet (the server records it when it first reaches the host; see `commctl host status {address}`); use --insecure-accept-host-key to connect anyway"
            )));
        }
        let signals = SignalGuard::install();
        let code = with_temp_files(&key, address, host_key.as_deref(), |key_path, kh_path| {
            let mut argv: Vec<String> = vec![
                "-i".into(),
                key_path.display().to_string(),
                "-l".into(),
                user.to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-o".into(),
                format!("UserKnownHostsFile={}", kh_path.display()),
                "-o".into(),
                "GlobalKnownHostsFile=/dev/null".into(),
                "-o".into(),
                format!(
                    "StrictHostKeyChecking={}",
                    if host_key.is_some() {
                        "yes"
                    } else {
                        "accept-new"
                    }
                ),
                "-o".into(),
                format!("HostKeyAlias={address}"),
            ];
            argv.extend(before.iter().cloned());
            argv.push(address.to_string());
            argv.extend(after.iter().cloned());
            eprintln!("Calling ssh: ssh {}", argv.join(" "));
            run_ssh(&argv)
        })?;
        drop(signals);
        eprintln!("Removed temporary ssh key.");
        Ok(code)
    }
}

/// The PUT body that starts an operation.
pub fn start_body(version: Option<&str>, reboot: bool, opts: &RunOptions) -> Value {
    let mut b = Map::new();
    if let Some(v) = version {
        b.insert("version".into(), Value::String(v.to_string()));
    }
    if let Some(v) = &opts.batch_size {
        b.insert("batch_size".into(), v.clone());
    }
    if let Some(v) = &opts.max_failures {
        b.insert("max_failures".into(), v.clone());
    }
    if let Some(v) = opts.pause_seconds {
        b.insert("pause_seconds".into(), json!(v));
    }
    if opts.no_drain {
        b.insert("drain".into(), Value::Bool(false));
    } else if opts.drain {
        b.insert("drain".into(), Value::Bool(true));
    }
    if reboot {
        b.insert("reboot".into(), Value::Bool(true));
    }
    if let Some(v) = opts.timeout_seconds {
        b.insert("timeout_seconds".into(), json!(v));
    }
    Value::Object(b)
}

/// Merges `-o KEY=VALUE` / `-o KEY=@FILE` / `-o '{"json": "object"}'` options; later ones win.
/// `true`/`false` values become booleans, whole numbers for `*_seconds` keys become numbers;
/// other values stay strings.
pub fn parse_kv_options(items: &[String]) -> CliResult<Value> {
    let mut m = Map::new();
    for item in items {
        let t = item.trim();
        if t.starts_with('{') {
            match serde_json::from_str::<Value>(t) {
                Ok(Value::Object(o)) => m.extend(o),
                _ => {
                    return Err(CliError::usage(format!(
                        "-o {item:?}: is not a JSON object"
                    )));
                }
            }
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(CliError::usage(format!(
                "-o {item:?}: give KEY=VALUE, KEY=@FILE or a JSON object"
            )));
        };
        if k.trim().is_empty() {
            return Err(CliError::usage(format!("-o {item:?}: the key is empty")));
        }
        let value = match v.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| CliError::general(format!("-o {k}=@{path}: {e}")))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => v.to_string(),
        };
        // Flags like insecure_skip_tls_verify are booleans in the API, and durations such as
        // node_ready_timeout_seconds are numbers.
        let value = match value.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            n if k.trim().ends_with("_seconds") && n.parse::<u64>().is_ok() => {
                Value::from(n.parse::<u64>().unwrap_or_default())
            }
            _ => Value::String(value),
        };
        m.insert(k.trim().to_string(), value);
    }
    Ok(Value::Object(m))
}

/// Reads a private key file (`-`: standard input) and checks it is not obviously the wrong
/// file; the server checks that it parses.
fn read_key_file(path: &Path) -> CliResult<Vec<u8>> {
    let data = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::general(format!("reading the key from standard input: {e}")))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| {
            CliError::general(format!("reading the key file {}: {e}", path.display()))
        })?
    };
    let text = String::from_utf8_lossy(&data);
    let name = if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    if text.trim().is_empty() {
        return Err(CliError::general(format!("the key file {name} is empty")));
    }
    if text.trim_start().starts_with("ssh-")
        || text.trim_start().starts_with("ecdsa-")
        || text.contains("PUBLIC KEY-----")
    {
        return Err(CliError::general(format!(
            "{name} holds a public key; give the private key file (e.g. ~/.ssh/id_ed25519, not .pub)"
        )));
    }
    Ok(data)
}

/// Writes the key (0600) and the known_hosts line to temporary files, calls `f` with their
/// paths, and removes both afterwards whatever happened.
fn with_temp_files<T>(
    key: &[u8],
    address: &str,
    host_key: Option<&str>,
    f: impl FnOnce(&Path, &Path) -> CliResult<T>,
) -> CliResult<T> {
    use std::os::unix::fs::PermissionsExt;
    let key_file = tempfile::Builder::new()
        .prefix("commctl-key-")
        .tempfile()
        .map_err(|e| CliError::general(format!("creating a temporary key file: {e}")))?;
    std::fs::set_permissions(key_file.path(), std::fs::Permissions::from_mode(0o600))?;
    key_file.as_file().write_all(key)?;
    key_file.as_file().sync_all()?;
    let kh_file = tempfile::Builder::new()
        .prefix("commctl-known_hosts-")
        .tempfile()
        .map_err(|e| CliError::general(format!("creating a temporary known_hosts file: {e}")))?;
    if let Some(k) = host_key {
        writeln!(kh_file.as_file(), "{address} {}", k.trim())?;
        kh_file.as_file().sync_all()?;
    }
    let result = f(key_file.path(), kh_file.path());
    // Explicit close reports a failed removal; drop would hide it.
    let key_path = key_file.path().to_path_buf();
    if let Err(e) = key_file.close() {
        eprintln!(
            "commctl: could not remove the temporary key file {}: {e}",
            key_path.display()
        );
    }
    let _ = kh_file.close();
    result
}

static SSH_CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = SSH_CHILD.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

extern "C" fn ignore_signal(_sig: libc::c_int) {}

/// While alive, commctl does not die from terminal signals, so that the temporary key is
/// always removed: `Ctrl-C` and `Ctrl-\` reach ssh directly (same process group), SIGTERM and SIGHUP
/// are forwarded to it. Handlers (unlike ignored signals) are reset in the child, so ssh
/// behaves as usual.
struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl SignalGuard {
    fn install() -> SignalGuard {
        let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 4] = [
            (libc::SIGINT, ignore_signal),
            (libc::SIGQUIT, ignore_signal),
            (libc::SIGTERM, forward_signal),
            (libc::SIGHUP, forward_signal),
        ];
        let mut previous = Vec::new();
        for (sig, h) in handlers {
            // SAFETY: installing a handler that only calls async-signal-safe functions.
            let old = unsafe { libc::signal(sig, h as *const () as libc::sighandler_t) };
            previous.push((sig, old));
        }
        SignalGuard { previous }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restoring the previous disposition.
            unsafe {
                libc::signal(sig, old);
            }
        }
    }
}

/// Runs `ssh ARGV...` in the foreground and returns its exit code.
fn run_ssh(argv: &[String]) -> CliResult<u8> {
    let mut child = std::process::Command::new("ssh")
        .args(argv)
        .spawn()
        .map_err(|e| {
            CliError::general(format!(
                "could not run ssh: {e} (is the OpenSSH client installed and on PATH?)"
            ))
        })?;
    SSH_CHILD.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    let status = child.wait();
    SSH_CHILD.store(0, std::sync::atomic::Ordering::SeqCst);
    let status = status.map_err(|e| CliError::general(format!("waiting for ssh: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => EXIT_ERROR,
    })
}

fn passhash(password: Option<String>, file: Option<&Path>, rounds: u32) -> CliResult<u8> {
    if !(4..=31).contains(&rounds) {
        return Err(CliError::usage(format!(
            "--rounds {rounds}: bcrypt cost must be 4 to 31"
        )));
    }
    let pw = match (password, file) {
        (Some(p), _) => p,
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::general(format!("reading {}: {e}", f.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::general(format!("reading the password: {e}")))?,
    };
    let hash = bcrypt::hash(pw, rounds).map_err(|e| CliError::general(e.to_string()))?;
    emit(&hash);
    Ok(EXIT_OK)
}

/// `POST /registration-tokens`.
fn create_registration_token(
    client: &Client,
    cluster: Option<&str>,
    expires_in: Option<u64>,
    single_use: bool,
    description: Option<&str>,
) -> CliResult<Value> {
    let mut body = json!({"single_use": single_use});
    if let Some(c) = cluster {
        body["cluster"] = json!(c);
    }
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    client.post("/registration-tokens", &body)
}

/// The fields of a registration token for a table (`with_token`: the secret too, shown once).
fn registration_token_fields(v: &Value, with_token: bool) -> Vec<(String, String)> {
    let mut keys = vec![
        "id",
        "cluster",
        "expires",
        "single_use",
        "created_by",
        "description",
    ];
    if with_token {
        keys.push("token");
    }
    keys.into_iter()
        .map(|k| (k.to_string(), output::cell(v.get(k))))
        .collect()
}

fn user_data(a: UserDataArgs, connection: &(config::FileConfig, Overrides)) -> CliResult<u8> {
    let (file, flags) = connection;
    // The original's own example omits -e; the endpoint commctl itself uses is the one the new
    // host should call too.
    let Some(endpoint) = a
        .endpoint
        .clone()
        .or_else(|| flags.endpoints.first().cloned())
        .or_else(|| file.endpoints.first().cloned())
    else {
        return Err(CliError::usage(
            "user-data needs the endpoint new hosts call: give -e/--endpoint URL or set \"endpoint\" in commctl's configuration file",
        ));
    };
    config::check_endpoint(&endpoint).map_err(|m| CliError::usage(format!("--endpoint: {m}")))?;
    let out_path = a.out_path().map(std::path::Path::to_path_buf);
    // `-p` alone (as the original's walkthrough writes it) asks for the password of the
    // configured user.
    let username = a
        .username
        .clone()
        .or_else(|| flags.username.clone())
        .or_else(|| file.username.clone());
    let password = if a.password {
        if username.is_none() {
            return Err(CliError::usage(
                "-p/--password needs a user: give -u/--username or set \"username\" in commctl's configuration file",
            ));
        }
        Some(
            rpassword::prompt_password("Password: ")
                .map_err(|e| CliError::general(format!("reading the password: {e}")))?,
        )
    } else {
        None
    };
    // The operator's credentials create a registration token, and only the token goes into
    // the user-data: whoever reads a host's boot data can register hosts until it expires or
    // is revoked, nothing more. The API is the one of the configuration (or --endpoint),
    // else the URL the host will call.
    let mut flags = flags.clone();
    // user-data's own -e/--endpoint shares its name with the global --endpoint, so clap hands
    // it over as the global one too: that is the URL the host calls, not a choice of API.
    if a.endpoint.is_some() && flags.endpoints == [endpoint.clone()] {
        flags.endpoints.clear();
    }
    if flags.endpoints.is_empty() && file.endpoints.is_empty() {
        flags.endpoints = vec![endpoint.trim_end_matches('/').to_string()];
    }
    if a.username.is_some() || a.password {
        flags.username = username;
        flags.password = password;
        flags.token = None;
    }
    let client = Client::new(&config::resolve(file.clone(), flags)?)?;
    let created = create_registration_token(
        &client,
        a.cluster.as_deref(),
        a.expires_in,
        a.single_use,
        Some("commctl user-data"),
    )?;
    let token = created["token"]
        .as_str()
        .ok_or_else(|| CliError::general("the server answered without a registration token"))?
        .to_string();
    eprintln!(
        "registration token {} created (expires {}); revoke it with: commctl registration-token revoke {}",
        output::cell(created.get("id")),
        output::cell(created.get("expires")),
        output::cell(created.get("id")),
    );
    let cloud_config = match &a.cloud_init {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CliError::general(format!("reading --cloud-init file {}: {e}", p.display()))
        })?),
        None => None,
    };
    let doc = userdata::build(
        &HostData {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: Some(token),
            cluster: a.cluster,
            remote_user: a.remote_user,
            ssh_key_path: a.ssh_key_path,
            authorized_keys_path: a.authorized_keys_path,
        },
        cloud_config.as_deref(),
    );
    match out_path {
        Some(p) => std::fs::write(&p, doc)
            .map_err(|e| CliError::general(format!("writing {}: {e}", p.display())))?,
        None => {
            let _ = std::io::stdout().write_all(doc.as_bytes());
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_options_merge() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "s3cret\n").unwrap();
        let v = parse_kv_options(&[
            "server_url=https://k:6443".into(),
            r#"{"ca_path": "/ca.pem", "server_url": "https://other"}"#.into(),
            format!("token=@{}", tok.display()),
            "x=a=b".into(),
            "insecure_skip_tls_verify=true".into(),
            "node_ready_timeout_seconds=120".into(),
            "port=6443".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"server_url": "https://other", "ca_path": "/ca.pem", "token": "s3cret", "x": "a=b",
                   "insecure_skip_tls_verify": true, "node_ready_timeout_seconds": 120,
                   "port": "6443"})
        );
        assert_eq!(parse_kv_options(&["nokey".into()]).unwrap_err().code, 2);
        assert_eq!(parse_kv_options(&["{bad".into()]).unwrap_err().code, 2);
        assert_eq!(parse_kv_options(&["=v".into()]).unwrap_err().code, 2);
    }

    #[test]
    fn start_bodies() {
        let opts = RunOptions {
            batch_size: Some(json!("25%")),
            max_failures: Some(json!(1)),
            pause_seconds: Some(2.5),
            no_drain: true,
            timeout_seconds: Some(100),
            ..Default::default()
        };
        assert_eq!(
            start_body(Some("7.1"), true, &opts),
            json!({"version": "7.1", "batch_size": "25%", "max_failures": 1, "pause_seconds": 2.5,
                   "drain": false, "reboot": true, "timeout_seconds": 100})
        );
        assert_eq!(start_body(None, false, &RunOptions::default()), json!({}));
    }

    #[test]
    fn exit_code_of_many() {
        assert_eq!(worst(&[0, 0]), 0);
        assert_eq!(worst(&[0, 3]), 3);
        assert_eq!(worst(&[3, 1]), 1);
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pub");
        std::fs::write(&p, "ssh-ed25519 AAAA me@x\n").unwrap();
        assert!(
            read_key_file(&p)
                .unwrap_err()
                .message
                .contains("public key")
        );
        std::fs::write(&p, "").unwrap();
        assert!(read_key_file(&p).unwrap_err().message.contains("empty"));
        let e = read_key_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.message.contains("reading the key file"));
        std::fs::write(&p, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n").unwrap();
        assert!(read_key_file(&p).is_ok());
    }

    #[test]
    fn temp_files_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let mut seen = None;
        let r: CliResult<()> =
            with_temp_files(b"KEY\n", "10.0.0.1", Some("ssh-ed25519 AAAA"), |k, kh| {
                let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
                assert_eq!(std::fs::read(k).unwrap(), b"KEY\n");
                assert_eq!(
                    std::fs::read_to_string(kh).unwrap(),
                    "10.0.0.1 ssh-ed25519 AAAA\n"
                );
                seen = Some((k.to_path_buf(), kh.to_path_buf()));
                Err(CliError::general("ssh failed"))
            });
        assert!(r.is_err());
        let (k, kh) = seen.unwrap();
        assert!(!k.exists() && !kh.exists());
    }
}
