//! Bootstrap: what to install, write and start on a host so it joins its cluster's network
//! and container manager.
//!
//! [`plan`] is pure: from the host's command set, its cluster, network and container manager it
//! computes the files (rendered from templates) and commands, plus a fingerprint of the whole.
//! [`run`] applies a plan over SSH, skipping it when the host's marker file already holds the
//! same fingerprint, so a host whose bootstrap completed is never bootstrapped again, even if
//! the worker crashed before recording it in the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use minijinja::Environment;
use model::{Cluster, ContainerManagerConfig, ContainerManagerType, Network, NetworkType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::oscmd::{DOCKER_SERVICE, FLANNEL_SERVICE, KUBE_SERVICES, OsCommands};

/// Where a bootstrapped host records the fingerprint of the applied plan.
pub const MARKER_PATH: &str = "/var/lib/commissaire/bootstrap";
/// Default flannel configuration key in etcd (the original's value).
pub const DEFAULT_FLANNEL_KEY: &str = "/atomic01/network";

/// Templates shipped with the project; an operator's templates directory overrides any of them
/// by file name.
const BUILTIN: &[(&str, &str)] = &[
    ("flanneld", include_str!("../templates/flanneld")),
    ("docker", include_str!("../templates/docker")),
    (
        "kubernetes-config",
        include_str!("../templates/kubernetes-config"),
    ),
    ("kubelet", include_str!("../templates/kubelet")),
    ("kubeconfig", include_str!("../templates/kubeconfig")),
];

/// The bootstrap templates, with operator overrides.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads the built-in templates, replacing each by `dir/<name>` when that file exists.
    /// A broken override is an error at start-up, not at the first bootstrap.
    pub fn load(dir: Option<&Path>) -> Result<Templates, String> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .map_err(|e| format!("template syntax: {e}"))?,
        );
        env.set_formatter(escape_output);
        for (name, builtin) in BUILTIN {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|e| format!("template {}: {e}", p.display()))?,
                None => builtin.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(Templates { env })
    }

    fn render(&self, name: &str, vars: &Value) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(vars))))
            .map_err(|e| format!("rendering template {name}: {e}"))
    }
}

/// The etcd the server itself uses, for `flannel_etcd` networks without their own URL.
///
/// Only the URL: the server's own etcd client credentials never leave the server. Flannel on a
/// TLS etcd gets the files the operator named in the network's options for that purpose.
#[derive(Clone, Debug, Default)]
pub struct EtcdInfo {
    /// Client URL.
    pub server_url: String,
}

/// Everything bootstrap depends on.
pub struct Inputs<'a> {
    /// The host's address.
    pub address: &'a str,
    /// Its command set.
    pub os: &'a OsCommands,
    /// Its cluster, if any.
    pub cluster: Option<&'a Cluster>,
    /// The cluster's network.
    pub network: Option<&'a Network>,
    /// The cluster's container manager, secrets opened.
    pub container_manager: Option<&'a ContainerManagerConfig>,
    /// The server's etcd, if it runs on etcd.
    pub etcd: Option<&'a EtcdInfo>,
}

/// One file to put on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path on the host.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What bootstrap does on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Commands run before the files are written (package installation).
    pub install: Vec<String>,
    /// Files written.
    pub files: Vec<FileSpec>,
    /// Commands run after (service reload, enable, restart).
    pub activate: Vec<String>,
    /// SHA-256 over all of the above, recorded in [`MARKER_PATH`].
    pub fingerprint: String,
}

fn opt_str(options: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    options.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Escapes every string a template prints for the syntax of the file it renders: YAML for the
/// kubeconfig, a double-quoted shell-style value for the sysconfig files. Values were already
/// validated at the API; this is the second line, and it also covers records written before
/// the validators existed.
fn escape_output(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) => {
            let escaped = if state.name() == "kubeconfig" {
                model::validate::escape_yaml(s)
            } else {
                model::validate::escape_sysconfig(s)
            };
            out.write_str(&escaped).map_err(minijinja::Error::from)
        }
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// The original's Docker registry mirror, which its bootstrap hard-coded (see
/// docs/configuration.md, "Bootstrap templates").
pub const ORIGINAL_DOCKER_REGISTRY: (&str, u16) = ("127.0.0.1", 8080);

/// Defines the original's `commissaire_*` bootstrap variables, so an operator's templates
/// written for the original render unchanged. Network-specific ones (`commissaire_flanneld_server`,
/// `commissaire_etcd_*`) are set where the network is handled; until then they are null.
fn original_vars(vars: &mut Value, inputs: &Inputs<'_>, conf: &dyn Fn(&str) -> String) {
    let os = inputs.os;
    let install = |packages: &[&str]| match os.install {
        Some(cmd) if !packages.is_empty() => format!("{cmd} {}", packages.join(" ")),
        // Nothing to install (OSTree hosts): the original used the no-op `true`.
        _ => "true".to_string(),
    };
    let selinux_python: &[&str] = match (os.selinux, os.name.as_str()) {
        (false, _) => &[],
        (true, "fedora") => &["python3-libselinux"],
        (true, _) => &["libselinux-python"],
    };
    let enable_repos = if os.name == "rhel" {
        "subscription-manager repos --enable=rhel-7-server-extras-rpms --enable=rhel-7-server-optional-rpms"
    } else {
        "true"
    };
    let values = [
        ("commissaire_bootstrap_ip", json!(inputs.address)),
        (
            "commissaire_docker_registry_host",
            json!(ORIGINAL_DOCKER_REGISTRY.0),
        ),
        (
            "commissaire_docker_registry_port",
            json!(ORIGINAL_DOCKER_REGISTRY.1),
        ),
        ("commissaire_flannel_key", json!(DEFAULT_FLANNEL_KEY)),
        ("commissaire_docker_config_local", json!("docker")),
        ("commissaire_flanneld_config_local", json!("flanneld")),
        ("commissaire_docker_config", json!(conf("docker"))),
        ("commissaire_flanneld_config", json!(conf("flanneld"))),
        (
            "commissaire_install_libselinux_python",
            json!(install(selinux_python)),
        ),
        (
            "commissaire_install_flannel",
            json!(install(os.flannel_packages)),
        ),
        (
            "commissaire_install_docker",
            json!(install(os.docker_packages)),
        ),
        ("commissaire_flannel_service", json!(FLANNEL_SERVICE)),
        // The original set this to flanneld by mistake; docker is what it meant.
        ("commissaire_docker_service", json!(DOCKER_SERVICE)),
        ("commissaire_flanneld_server", Value::Null),
        ("commissaire_etcd_server_url", Value::Null),
        ("commissaire_etcd_ca_path", Value::Null),
        ("commissaire_etcd_ca_path_local", Value::Null),
        ("commissaire_etcd_client_cert_path", Value::Null),
        ("commissaire_etcd_client_cert_path_local", Value::Null),
        ("commissaire_etcd_client_key_path", Value::Null),
        ("commissaire_etcd_client_key_path_local", Value::Null),
        ("commissaire_enable_pkg_repos", json!(enable_repos)),
        ("commissaire_restart_command", json!(os.restart)),
        ("commissaire_upgrade_command", json!(os.upgrade)),
        // Bootstrap deploys no particular version; the original's deploy play set it.
        ("commissaire_deploy_version", json!("")),
    ];
    for (k, v) in values {
        vars[k] = v;
    }
}

/// Computes the bootstrap plan of a host.
pub fn plan(inputs: &Inputs<'_>, templates: &Templates) -> Result<Plan, String> {
    let os = inputs.os;
    let mut packages: Vec<&str> = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    let mut files = Vec::new();
    let conf = |name: &str| format!("{}/{name}", os.config_dir);
    let mut vars = json!({
        "address": inputs.address,
        "selinux": os.selinux,
        "cluster_name": inputs.cluster.map(|c| c.name.clone()).unwrap_or_default(),
        "network_type": null, "etcd_server_url": null, "flannel_key": null, "flannel_server": null,
        "etcd_ca_path": null, "etcd_client_cert_path": null, "etcd_client_key_path": null,
        "kubernetes_api_server_url": null, "kubernetes_bearer_token": null,
        "kubernetes_client_cert_path": null, "kubernetes_client_key_path": null,
        "kubernetes_ca_path": null, "kubeconfig_path": "/etc/kubernetes/kubeconfig",
    });

    original_vars(&mut vars, inputs, &conf);

    if let Some(net) = inputs.network {
        packages.extend(os.flannel_packages);
        services.push(FLANNEL_SERVICE);
        match net.kind {
            NetworkType::FlannelEtcd => {
                let url = opt_str(&net.options, "server_url")
                    .or_else(|| inputs.etcd.map(|e| e.server_url.clone()))
                    .ok_or_else(|| {
                        format!(
                            "network {} (flannel_etcd) has no etcd URL: set options.server_url on the network, or run the server on an etcd store",
                            net.name
                        )
                    })?;
                vars["network_type"] = json!("flannel_etcd");
                vars["etcd_server_url"] = json!(url);
                vars["commissaire_etcd_server_url"] = json!(url);
                let key =
                    opt_str(&net.options, "key").unwrap_or_else(|| DEFAULT_FLANNEL_KEY.into());
                vars["flannel_key"] = json!(key);
                vars["commissaire_flannel_key"] = json!(key);
                // TLS files only from the network's options (files the operator put in the
                // trusted files directory for flannel), never the server's own etcd keys.
                let copies = [
                    ("ca_path", "/etc/etcd/cacert.pem", "etcd_ca_path", 0o644),
                    (
                        "certificate_path",
                        "/etc/etcd/client.crt",
                        "etcd_client_cert_path",
                        0o644,
                    ),
                    (
                        "certificate_key_path",
                        "/etc/etcd/key.crt",
                        "etcd_client_key_path",
                        0o600,
                    ),
                ];
                for (opt, remote, var, mode) in copies {
                    if let Some(name) = opt_str(&net.options, opt) {
                        let contents = kube::trusted::read(
                            &format!("network {} options.{opt}", net.name),
                            &name,
                        )
                        .map_err(|e| e.to_string())?;
                        files.push(FileSpec {
                            path: remote.to_string(),
                            contents,
                            mode,
                        });
                        vars[var] = json!(remote);
                        vars[format!("commissaire_{var}")] = json!(remote);
                        vars[format!("commissaire_{var}_local")] = json!(name);
                    }
                }
            }
            NetworkType::FlannelServer | NetworkType::FlanneldService => {
                // Templates test for one spelling of client/server flannel.
                vars["network_type"] = json!("flannel_server");
                let address = opt_str(&net.options, "address").unwrap_or_default();
                vars["flannel_server"] = json!(address);
                vars["commissaire_flanneld_server"] = json!(address);
            }
        }
        files.push(FileSpec {
            path: conf("flanneld"),
            contents: templates.render("flanneld", &vars)?.into_bytes(),
            mode: 0o644,
        });
    }

    packages.extend(os.docker_packages);
    services.push(DOCKER_SERVICE);
    files.push(FileSpec {
        path: conf("docker"),
        contents: templates.render("docker", &vars)?.into_bytes(),
        mode: 0o644,
    });

    if let Some(cm) = inputs
        .container_manager
        .filter(|cm| cm.kind != ContainerManagerType::Trivial)
    {
        packages.extend(os.kube_packages);
        services.extend(KUBE_SERVICES);
        vars["kubernetes_api_server_url"] =
            json!(opt_str(&cm.options, "server_url").unwrap_or_default());
        vars["kubernetes_bearer_token"] = json!(opt_str(&cm.options, "token"));
        // PEM text from the options or files named in the trusted files directory; a record
        // that still names an arbitrary server path is refused, never read.
        let tls = kube::client::TlsMaterial::from_options(&cm.options)
            .map_err(|e| format!("container manager {}: {e}", cm.name))?;
        let copies = [
            (
                tls.certificate,
                "/etc/kubernetes/client.crt",
                "kubernetes_client_cert_path",
                0o644,
            ),
            (
                tls.certificate_key,
                "/etc/kubernetes/client.key",
                "kubernetes_client_key_path",
                0o600,
            ),
            (
                tls.ca,
                "/etc/kubernetes/ca.crt",
                "kubernetes_ca_path",
                0o644,
            ),
        ];
        for (contents, remote, var, mode) in copies {
            if let Some(contents) = contents {
                files.push(FileSpec {
                    path: remote.to_string(),
                    contents,
                    mode,
                });
                vars[var] = json!(remote);
            }
        }
        files.push(FileSpec {
            path: "/etc/kubernetes/config".into(),
            contents: templates.render("kubernetes-config", &vars)?.into_bytes(),
            mode: 0o644,
        });
        files.push(FileSpec {
            path: "/etc/kubernetes/kubelet".into(),
            contents: templates.render("kubelet", &vars)?.into_bytes(),
            mode: 0o644,
        });
        files.push(FileSpec {
            path: "/etc/kubernetes/kubeconfig".into(),
            contents: templates.render("kubeconfig", &vars)?.into_bytes(),
            // It may hold a bearer token.
            mode: 0o600,
        });
    }

    let mut install = Vec::new();
    if let Some(cmd) = os.install
        && !packages.is_empty()
    {
        if let Some(refresh) = os.refresh {
            install.push(refresh.to_string());
        }
        install.push(format!("{cmd} {}", packages.join(" ")));
    }
    let svc = services.join(" ");
    let activate = vec![
        "systemctl daemon-reload".to_string(),
        format!("systemctl enable {svc}"),
        format!("systemctl restart {svc}"),
    ];
    let mut h = Sha256::new();
    for c in install.iter().chain(activate.iter()) {
        h.update(c.as_bytes());
        h.update([0]);
    }
    for f in &files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(&f.contents);
        h.update(f.mode.to_be_bytes());
    }
    Ok(Plan {
        install,
        files,
        activate,
        fingerprint: hex::encode(h.finalize()),
    })
}

/// Why applying a plan failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// SSH failed.
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
    /// A command exited non-zero.
    #[error("bootstrap command `{command}` failed with exit status {status}: {stderr}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status.
        status: u32,
        /// The end of its stderr.
        stderr: String,
    },
    /// Writing a file failed.
    #[error("bootstrap: writing {path} failed with exit status {status}: {stderr}")]
    File {
        /// The file on the host.
        path: String,
        /// The writer's exit status.
        status: u32,
        /// The end of its stderr.
        stderr: String,
    },
    /// The script ended without a result: it did not arrive whole, or was killed.
    #[error("bootstrap script ended with exit status {status} {after}: {stderr}")]
    Incomplete {
        /// Its exit status.
        status: u32,
        /// Where it stopped, in words.
        after: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// Whether the plan was applied or found already applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The commands ran.
    Ran,
    /// The host's marker already held this plan's fingerprint; nothing ran.
    AlreadyDone,
}

/// One step of the bootstrap script, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// A command (before the files or after them).
    Command(String),
    /// A file written (the marker last).
    File(String),
}

/// Lines the script prints on stdout: its structured answer. Nothing else writes to its
/// stdout (each step's output goes to a private file or `/dev/null`).
const ALREADY_DONE: &str = "commissaire-bootstrap already-done";
const APPLIED: &str = "commissaire-bootstrap applied";
const STEP: &str = "commissaire-step";

/// How much of a failed step's stderr the script sends back.
const STEP_STDERR_MAX: usize = 4096;

/// The bootstrap as one POSIX sh script, for [`remote::Session::run_script`]: the marker
/// check, every command (bounded on the host by `command_timeout`) and every file (carried as
/// a here-document, written atomically with its byte count checked), the marker last. It stops
/// at the first failing step; each step reports `commissaire-step <n> ok` or
/// `commissaire-step <n> failed <status>`, a failure with the end of its stderr.
///
/// Resumable like the step-by-step bootstrap it replaces: the marker is written only after
/// every step succeeded, so a run that failed runs again in full, and a completed run is never
/// repeated. A run whose connection dropped (the server crashed, the network went) is not cut
/// short: the answer is collected in a variable and printed once at the end, so no write to the
/// dead channel kills the script between steps (SIGPIPE), and it completes and writes the
/// marker. A run started meanwhile (the resumed investigation) waits for it on a lock next to
/// the marker, then finds the marker and applies nothing. So a crash applies nothing twice.
///
/// Returns the script, its steps in order, and the time it may take on the host.
fn script(
    plan: &Plan,
    marker_path: &str,
    command_timeout: Duration,
) -> Result<(String, Vec<Step>, Duration), RunError> {
    let mut steps = Vec::new();
    let mut files: Vec<(&str, &[u8], u32)> = Vec::new();
    for cmd in &plan.install {
        steps.push(Step::Command(cmd.clone()));
    }
    for f in &plan.files {
        steps.push(Step::File(f.path.clone()));
        files.push((&f.path, &f.contents, f.mode));
    }
    for cmd in &plan.activate {
        steps.push(Step::Command(cmd.clone()));
    }
    let marker = format!("{}\n", plan.fingerprint);
    steps.push(Step::File(marker_path.to_string()));
    files.push((marker_path, marker.as_bytes(), 0o644));
    // Each command is bounded on the host by `command_timeout` (plus the 5 s before KILL);
    // the files and checks around them take a fraction of a second each.
    let commands = steps
        .iter()
        .filter(|s| matches!(s, Step::Command(_)))
        .count();
    let limit = (command_timeout + Duration::from_secs(5))
        .saturating_mul(u32::try_from(commands).unwrap_or(u32::MAX))
        + command_timeout;
    let marker_dir = match marker_path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    };

    // Built-ins where they do the job (`read`, `[`, the answer kept in a variable and printed
    // once on exit): every process forked on the host costs more than the step it serves.
    let mut s = String::new();
    s.push_str(&format!(
        "fp={fp}\n\
         ans= e=\n\
         trap 'printf %s \"$ans\"; if [ -n \"$e\" ]; then rm -f -- \"$e\"; fi' EXIT\n\
         e=$(mktemp) || exit 1\n\
         if command -v flock >/dev/null 2>&1; then\n\
         {{ [ -d {dir} ] || mkdir -p -- {dir}; }} && exec 9>>{lock} && flock -w {wait} 9 || {{ echo 'bootstrap: another bootstrap holds '{lock} >&2; exit 1; }}\n\
         fi\n\
         m=\n\
         if [ -r {marker} ]; then read -r m < {marker} || :; fi\n\
         if [ \"$m\" = \"$fp\" ]; then ans='{ALREADY_DONE}\n'; exit 0; fi\n",
        fp = remote::shell_quote(&plan.fingerprint),
        marker = remote::shell_quote(marker_path),
        dir = remote::shell_quote(marker_dir),
        lock = remote::shell_quote(&format!("{marker_path}.lock")),
        wait = limit.as_secs().max(1),
    ));
    for (i, (path, contents, mode)) in files.iter().enumerate() {
        s.push_str(&remote::script::write_file_function(
            &format!("put_{i}"),
            path,
            *mode,
            contents.len(),
        )?);
    }
    // Steps do not inherit the lock's descriptor (9): a daemon a step leaves running would
    // otherwise hold the lock after the script ended.
    let mut file = 0;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Command(cmd) => {
                s.push_str(&remote::bounded(cmd, command_timeout));
                s.push_str(" >/dev/null 2>\"$e\" 9>&-\n");
            }
            Step::File(_) => {
                let (_, contents, _) = files[file];
                s.push_str(&remote::script::heredoc_into(
                    &format!("put_{file} >/dev/null 2>\"$e\" 9>&-"),
                    contents,
                ));
                file += 1;
            }
        }
        s.push_str(&format!(
            "s=$?\n\
             if [ \"$s\" -ne 0 ]; then ans=\"${{ans}}{STEP} {n} failed $s\n\"; tail -c {STEP_STDERR_MAX} \"$e\" >&2; exit 1; fi\n\
             ans=\"${{ans}}{STEP} {n} ok\n\"\n"
        ));
    }
    s.push_str(&format!("ans=\"${{ans}}{APPLIED}\n\"\n"));
    Ok((s, steps, limit))
}

/// Reads the script's answer (see [`script`]).
fn outcome(out: &remote::Output, steps: &[Step]) -> Result<Applied, RunError> {
    let stdout = out.stdout_text();
    let mut done: usize = 0;
    for line in stdout.lines() {
        if line == ALREADY_DONE && out.success() {
            return Ok(Applied::AlreadyDone);
        }
        if line == APPLIED && out.success() {
            return Ok(Applied::Ran);
        }
        let mut words = line.split(' ');
        if words.next() != Some(STEP) {
            continue;
        }
        let n: Option<usize> = words.next().and_then(|w| w.parse().ok());
        match (n.and_then(|n| steps.get(n)), words.next(), words.next()) {
            (Some(_), Some("ok"), None) => done += 1,
            (Some(step), Some("failed"), Some(status)) => {
                let status = status.parse().unwrap_or(out.status);
                let stderr = out.stderr_text();
                return Err(match step {
                    Step::Command(command) => RunError::Command {
                        command: command.clone(),
                        status,
                        stderr,
                    },
                    Step::File(path) => RunError::File {
                        path: path.clone(),
                        status,
                        stderr,
                    },
                });
            }
            _ => {}
        }
    }
    let after = match done.checked_sub(1).and_then(|n| steps.get(n)) {
        None => "before its first step".to_string(),
        Some(Step::Command(c)) => format!("after command `{c}`"),
        Some(Step::File(p)) => format!("after writing {p}"),
    };
    Err(RunError::Incomplete {
        status: out.status,
        after,
        stderr: out.stderr_text(),
    })
}

/// Applies `plan` on the host behind `session` in one exec (one channel, one round trip):
/// see [`script`].
pub async fn run(
    session: &remote::Session,
    plan: &Plan,
    command_timeout: Duration,
) -> Result<Applied, RunError> {
    let (text, steps, limit) = script(plan, MARKER_PATH, command_timeout)?;
    // Twice the host's own bound: a resumed bootstrap may first wait that long on the lock for
    // the run it resumes (see [`script`]).
    let out = session
        .run_script(&text, limit.saturating_mul(2) + Duration::from_secs(10))
        .await?;
    outcome(&out, &steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(kind: NetworkType, options: Value) -> Network {
        Network {
            name: "n".into(),
            kind,
            options: options
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn flannel_server_plan() {
        let t = Templates::load(None).unwrap();
        let os = OsCommands::for_host("fedora", false).unwrap();
        let net = network(
            NetworkType::FlannelServer,
            json!({"address": "10.0.0.1:8080"}),
        );
        let p = plan(
            &Inputs {
                address: "10.1.1.1",
                os: &os,
                cluster: None,
                network: Some(&net),
                container_manager: None,
                etcd: None,
            },
            &t,
        )
        .unwrap();
        assert_eq!(p.install, vec!["dnf install -y flannel docker"]);
        let flannel = String::from_utf8(p.files[0].contents.clone()).unwrap();
        assert!(
            flannel.contains("FLANNEL_OPTIONS=\"--remote=10.0.0.1:8080\""),
            "{flannel}"
        );
        assert!(p.activate[1].contains("enable flanneld docker"));
    }

    #[test]
    fn flannel_etcd_needs_url_and_kube_files() {
        let t = Templates::load(None).unwrap();
        let os = OsCommands::for_host("rhel", true).unwrap();
        let net = network(NetworkType::FlannelEtcd, json!({}));
        let inputs = Inputs {
            address: "h",
            os: &os,
            cluster: None,
            network: Some(&net),
            container_manager: None,
            etcd: None,
        };
        assert!(
            plan(&inputs, &t)
                .unwrap_err()
                .contains("options.server_url")
        );
        let etcd = EtcdInfo {
            server_url: "http://etcd:2379".into(),
        };
        let cm = ContainerManagerConfig {
            name: "k".into(),
            kind: ContainerManagerType::Kubernetes,
            options: [
                ("server_url".to_string(), json!("https://k8s:6443")),
                ("token".to_string(), json!("tok")),
            ]
            .into_iter()
            .collect(),
        };
        let p = plan(
            &Inputs {
                etcd: Some(&etcd),
                container_manager: Some(&cm),
                ..inputs
            },
            &t,
        )
        .unwrap();
        // OSTree: nothing to install.
        assert!(p.install.is_empty());
        let flannel = String::from_utf8(p.files[0].contents.clone()).unwrap();
        assert!(flannel.contains("FLANNEL_ETCD_ENDPOINTS=\"http://etcd:2379\""));
        assert!(!flannel.contains("FLANNEL_OPTIONS"));
        let kc = p
            .files
            .iter()
            .find(|f| f.path == "/etc/kubernetes/kubeconfig")
            .unwrap();
        assert_eq!(kc.mode, 0o600);
        let text = String::from_utf8(kc.contents.clone()).unwrap();
        assert!(text.contains("server: https://k8s:6443") && text.contains("token: tok"));
    }

    #[test]
    fn no_server_file_reaches_a_host() {
        let t = Templates::load(None).unwrap();
        let os = OsCommands::for_host("fedora", false).unwrap();
        let net = network(
            NetworkType::FlannelEtcd,
            json!({"server_url": "https://etcd:2379"}),
        );
        let etcd = EtcdInfo {
            server_url: "https://etcd:2379".into(),
        };
        // A record from before the fix that names server paths.
        let cm = ContainerManagerConfig {
            name: "k".into(),
            kind: ContainerManagerType::Kubernetes,
            options: [
                ("server_url".to_string(), json!("https://k8s:6443")),
                ("ca_path".to_string(), json!("/etc/ssl/private/server.key")),
            ]
            .into_iter()
            .collect(),
        };
        let inputs = Inputs {
            address: "h",
            os: &os,
            cluster: None,
            network: Some(&net),
            container_manager: None,
            etcd: Some(&etcd),
        };
        let p = plan(&inputs, &t).unwrap();
        // Flannel on the server's TLS etcd gets no file the server holds.
        assert!(p.files.iter().all(|f| !f.path.starts_with("/etc/etcd/")));
        let e = plan(
            &Inputs {
                container_manager: Some(&cm),
                ..inputs
            },
            &t,
        )
        .unwrap_err();
        assert!(e.contains("options.ca_path"), "{e}");
    }

    #[test]
    fn rendered_values_are_escaped() {
        let t = Templates::load(None).unwrap();
        let os = OsCommands::for_host("fedora", false).unwrap();
        // Stored before validation existed: escaped on the way out.
        let net = network(
            NetworkType::FlannelEtcd,
            json!({"server_url": "http://e:2379", "key": "/a\"\nEVIL=\"$(id)\""}),
        );
        let cm = ContainerManagerConfig {
            name: "k".into(),
            kind: ContainerManagerType::Kubernetes,
            options: [
                ("server_url".to_string(), json!("https://k8s:6443")),
                ("token".to_string(), json!("x\nclusters: []")),
            ]
            .into_iter()
            .collect(),
        };
        let p = plan(
            &Inputs {
                address: "h",
                os: &os,
                cluster: None,
                network: Some(&net),
                container_manager: Some(&cm),
                etcd: None,
            },
            &t,
        )
        .unwrap();
        let flannel = String::from_utf8(p.files[0].contents.clone()).unwrap();
        assert!(
            !flannel.lines().any(|l| l.starts_with("EVIL=")),
            "{flannel}"
        );
        assert!(flannel.contains("\\$(id)"), "{flannel}");
        let kc = p
            .files
            .iter()
            .find(|f| f.path == "/etc/kubernetes/kubeconfig")
            .unwrap();
        let text = String::from_utf8(kc.contents.clone()).unwrap();
        assert!(text.contains("token: \"x\\nclusters: []\""), "{text}");
    }

    /// Runs the bootstrap script of `plan` locally through the same loader as over SSH, with
    /// the marker at `marker`, and reads its answer.
    fn run_locally(plan: &Plan, marker: &Path) -> Result<Applied, RunError> {
        let (text, steps, _) = script(plan, marker.to_str().unwrap(), Duration::from_secs(60))?;
        let out = start_locally(&text).wait_with_output().unwrap();
        outcome(
            &remote::Output {
                status: out.status.code().map_or(255, |c| c as u32),
                signal: None,
                stdout: out.stdout,
                stderr: out.stderr,
            },
            &steps,
        )
    }

    /// A plan whose commands log to `dir/log`, writing two files under `dir`.
    fn local_plan(dir: &Path, activate: &[&str]) -> Plan {
        let log = remote::shell_quote(dir.join("log").to_str().unwrap());
        let mut p = Plan {
            install: vec![format!("echo install >> {log}")],
            files: vec![
                FileSpec {
                    path: dir.join("etc/docker").to_str().unwrap().into(),
                    contents: b"OPTIONS=\"--x\"\n".to_vec(),
                    mode: 0o644,
                },
                FileSpec {
                    path: dir.join("etc/it's key").to_str().unwrap().into(),
                    contents: b"\0binary, no newline\nCOMMISSAIRE_EOF".to_vec(),
                    mode: 0o600,
                },
            ],
            activate: activate.iter().map(|a| a.replace("LOG", &log)).collect(),
            fingerprint: String::new(),
        };
        p.fingerprint = hex::encode(Sha256::digest(format!("{p:?}")));
        p
    }

    fn log_of(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    }

    #[test]
    fn one_script_applies_everything_once() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("var/marker");
        let p = local_plan(dir.path(), &["echo restart >> LOG"]);
        assert_eq!(run_locally(&p, &marker).unwrap(), Applied::Ran);
        assert_eq!(log_of(dir.path()), "install\nrestart\n");
        for f in &p.files {
            assert_eq!(std::fs::read(&f.path).unwrap(), f.contents, "{}", f.path);
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, f.mode, "{}", f.path);
        }
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            format!("{}\n", p.fingerprint)
        );
        // The marker holds this plan: nothing runs again.
        assert_eq!(run_locally(&p, &marker).unwrap(), Applied::AlreadyDone);
        assert_eq!(log_of(dir.path()), "install\nrestart\n");
    }

    #[test]
    fn a_failed_step_is_named_and_stops_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let failing = "echo 'unit not found' >&2; exit 7";
        let p = local_plan(dir.path(), &[failing, "echo restart >> LOG"]);
        match run_locally(&p, &marker) {
            Err(e @ RunError::Command { .. }) => {
                let text = e.to_string();
                assert!(text.contains(failing), "{text}");
                assert!(text.contains("exit status 7"), "{text}");
                assert!(text.contains("unit not found"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // The steps before it ran, the ones after did not, and the marker is not written.
        assert_eq!(log_of(dir.path()), "install\n");
        assert!(std::path::Path::new(&p.files[1].path).exists());
        assert!(!marker.exists());

        // A file that cannot be written names its path.
        let blocked = local_plan(dir.path(), &["echo restart >> LOG"]);
        std::fs::remove_file(&blocked.files[0].path).unwrap();
        std::fs::create_dir(&blocked.files[0].path).unwrap();
        match run_locally(&blocked, &marker) {
            Err(RunError::File { path, stderr, .. }) => {
                assert_eq!(path, blocked.files[0].path);
                assert!(stderr.contains("directory"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log_of(dir.path()), "install\ninstall\n");

        // Fixed, it resumes from the start and completes once.
        std::fs::remove_dir(&blocked.files[0].path).unwrap();
        assert_eq!(run_locally(&blocked, &marker).unwrap(), Applied::Ran);
        assert_eq!(
            run_locally(&blocked, &marker).unwrap(),
            Applied::AlreadyDone
        );
        assert_eq!(log_of(dir.path()), "install\ninstall\ninstall\nrestart\n");
    }

    /// Starts the bootstrap script of `plan` locally like [`run_locally`], without waiting.
    fn spawn_locally(plan: &Plan, marker: &Path) -> (std::process::Child, Vec<Step>) {
        let (text, steps, _) =
            script(plan, marker.to_str().unwrap(), Duration::from_secs(60)).unwrap();
        (start_locally(&text), steps)
    }

    /// Runs `sh` with the loader a host runs, and feeds it the script `text` as SSH would.
    fn start_locally(text: &str) -> std::process::Child {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(remote::script::loader(text.len()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child
    }

    /// A plan whose first command waits until the test opens `dir/gate` for writing: the test
    /// then knows that script is inside its first step (holding the lock), with no sleeping.
    fn gated_plan(dir: &Path) -> Plan {
        let gate = dir.join("gate");
        let made = std::process::Command::new("mkfifo")
            .arg(&gate)
            .status()
            .unwrap();
        assert!(made.success());
        let mut p = local_plan(dir, &["echo restart >> LOG"]);
        let gate = remote::shell_quote(gate.to_str().unwrap());
        p.install.insert(0, format!("cat {gate} > /dev/null"));
        p
    }

    fn open_gate(dir: &Path) {
        // Blocks until the first step opened the FIFO; closing it lets the step end.
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("gate"))
                .unwrap(),
        );
    }

    #[test]
    fn a_dropped_connection_does_not_cut_the_script_short() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let p = gated_plan(dir.path());
        let (mut child, _) = spawn_locally(&p, &marker);
        // The server's end of the channel goes away while the first step runs.
        drop(child.stdout.take());
        drop(child.stderr.take());
        open_gate(dir.path());
        let _ = child.wait().unwrap();
        // Every step ran and the marker is written: the resumed investigation finds it.
        assert_eq!(log_of(dir.path()), "install\nrestart\n");
        assert_eq!(run_locally(&p, &marker).unwrap(), Applied::AlreadyDone);
    }

    #[test]
    fn a_concurrent_run_waits_and_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let p = gated_plan(dir.path());
        let (first, steps) = spawn_locally(&p, &marker);
        // Open the gate from a thread: it returns once the first run is inside its first step,
        // holding the lock; the second run is started only then.
        let gate = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || open_gate(&dir))
        };
        let (second, _) = {
            // The gate thread cannot finish before the first script opened the FIFO for
            // reading, which it does inside its first step, after taking the lock.
            gate.join().unwrap();
            // Without the lock the second run would now run its first step: a plain file in
            // place of the FIFO makes that show as a second install instead of a hang.
            std::fs::remove_file(dir.path().join("gate")).unwrap();
            std::fs::write(dir.path().join("gate"), "").unwrap();
            spawn_locally(&p, &marker)
        };
        let answer = |c: std::process::Child| {
            let out = c.wait_with_output().unwrap();
            outcome(
                &remote::Output {
                    status: out.status.code().map_or(255, |c| c as u32),
                    signal: None,
                    stdout: out.stdout,
                    stderr: out.stderr,
                },
                &steps,
            )
        };
        assert_eq!(answer(first).unwrap(), Applied::Ran);
        assert_eq!(answer(second).unwrap(), Applied::AlreadyDone);
        assert_eq!(log_of(dir.path()), "install\nrestart\n");
    }

    #[test]
    fn a_script_without_an_answer_is_incomplete() {
        let steps = vec![
            Step::Command("dnf install -y docker".into()),
            Step::File("/etc/sysconfig/docker".into()),
        ];
        let out = |stdout: &str, status| remote::Output {
            status,
            signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"received 10 of 99 bytes".to_vec(),
        };
        let e = outcome(&out("", remote::script::LOADER_FAILED), &steps).unwrap_err();
        assert!(
            e.to_string().contains("before its first step") && e.to_string().contains("10 of 99"),
            "{e}"
        );
        // Killed after the first step: said so, even with a zero status.
        let e = outcome(&out("commissaire-step 0 ok\n", 0), &steps).unwrap_err();
        assert!(
            e.to_string()
                .contains("after command `dnf install -y docker`"),
            "{e}"
        );
    }

    #[test]
    fn operator_override_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker"), "CUSTOM {{ address }}\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let os = OsCommands::for_host("debian", false).unwrap();
        let p = plan(
            &Inputs {
                address: "h1",
                os: &os,
                cluster: None,
                network: None,
                container_manager: None,
                etcd: None,
            },
            &t,
        )
        .unwrap();
        assert_eq!(p.files[0].path, "/etc/default/docker");
        assert_eq!(p.files[0].contents, b"CUSTOM h1\n");
        std::fs::write(dir.path().join("docker"), "{% if %}").unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
