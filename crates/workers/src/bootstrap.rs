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
                vars["flannel_key"] = json!(
                    opt_str(&net.options, "key").unwrap_or_else(|| DEFAULT_FLANNEL_KEY.into())
                );
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
                    }
                }
            }
            NetworkType::FlannelServer => {
                vars["network_type"] = json!("flannel_server");
                vars["flannel_server"] =
                    json!(opt_str(&net.options, "address").unwrap_or_default());
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
}

/// Whether the plan was applied or found already applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The commands ran.
    Ran,
    /// The host's marker already held this plan's fingerprint; nothing ran.
    AlreadyDone,
}

/// Applies `plan` on the host behind `session`.
pub async fn run(
    session: &remote::Session,
    plan: &Plan,
    command_timeout: Duration,
) -> Result<Applied, RunError> {
    let marker = session
        .exec(
            &format!("cat {MARKER_PATH} 2>/dev/null || true"),
            None,
            command_timeout,
        )
        .await?;
    if String::from_utf8_lossy(&marker.stdout).trim() == plan.fingerprint {
        return Ok(Applied::AlreadyDone);
    }
    let exec = |cmd: String| async move {
        // Bounded on the host too: a hung package manager must not outlive our timeout.
        let out = session
            .exec(
                &remote::bounded(&cmd, command_timeout),
                None,
                command_timeout + Duration::from_secs(10),
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(RunError::Command {
                command: cmd,
                status: out.status,
                stderr: out.stderr_text(),
            })
        }
    };
    for cmd in &plan.install {
        exec(cmd.clone()).await?;
    }
    for f in &plan.files {
        session.upload(&f.path, &f.contents, f.mode).await?;
    }
    for cmd in &plan.activate {
        exec(cmd.clone()).await?;
    }
    session
        .upload(
            MARKER_PATH,
            format!("{}\n", plan.fingerprint).as_bytes(),
            0o644,
        )
        .await?;
    Ok(Applied::Ran)
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
