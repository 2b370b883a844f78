//! Parsing and validation of request bodies.
//!
//! Bodies are read into a JSON object first and then checked field by field, so that a wrong
//! type or value is reported with the field's name ("cpus must be an integer, got a string")
//! rather than a serde position. Unknown fields are ignored, as the original API did, except
//! inside `options`, whose keys are checked per type so that typos are caught.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::validate::{
    PemKind, canonical_address, validate_etcd_key, validate_name, validate_pem, validate_token,
    validate_trusted_file_name, validate_url,
};
use crate::{
    ContainerManagerConfig, ContainerManagerType, Network, NetworkType, SECRET_OPTION_KEYS,
    ValidationError,
};

/// A request body: a JSON object (an empty body counts as `{}`).
pub type Fields = Map<String, Value>;

/// Parses a request body. Empty or whitespace-only → empty object; anything that is not a JSON
/// object → an error saying what it was.
pub fn parse_body(bytes: &[u8]) -> Result<Fields, ValidationError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ValidationError::new("body", format!("is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ValidationError::new(
            "body",
            format!("must be a JSON object, got {}", describe(&other)),
        )),
    }
}

/// Names a JSON value's type for error messages.
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_str(f: &Fields, key: &str) -> Result<Option<String>, ValidationError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ValidationError::new(
            key,
            format!("must be a string, got {}", describe(other)),
        )),
    }
}

fn opt_int(f: &Fields, key: &str) -> Result<Option<i64>, ValidationError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(other) => Err(ValidationError::new(
            key,
            format!("must be an integer, got {}", describe(other)),
        )),
    }
}

fn opt_str_list(f: &Fields, key: &str) -> Result<Option<Vec<String>>, ValidationError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ValidationError::new(
                    format!("{key}[{i}]"),
                    format!("must be a string, got {}", describe(other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(ValidationError::new(
            key,
            format!("must be a list of strings, got {}", describe(other)),
        )),
    }
}

fn opt_object(f: &Fields, key: &str) -> Result<Option<Fields>, ValidationError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(other) => Err(ValidationError::new(
            key,
            format!("must be an object, got {}", describe(other)),
        )),
    }
}

/// Checks a login name for SSH: POSIX portable user name characters, at most 32 long.
pub fn validate_remote_user(user: &str) -> Result<(), ValidationError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "remote_user",
            format!(
                "{user:?} is not a valid user name (1-32 letters, digits, '.', '_' or '-', not starting with '-')"
            ),
        ))
    }
}

/// Body of `PUT /host/{address}` and `PUT /host`.
#[derive(Clone, PartialEq, Eq)]
pub struct HostCreateRequest {
    /// `address` from the body, canonicalized (the URL's address wins over it).
    pub address: Option<String>,
    /// Base64 of the private key file; checked to parse by the server.
    pub ssh_priv_key: Option<String>,
    /// User to log in as (default `root`).
    pub remote_user: String,
    /// Cluster to join on creation.
    pub cluster: Option<String>,
}

impl std::fmt::Debug for HostCreateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCreateRequest")
            .field("address", &self.address)
            .field(
                "ssh_priv_key",
                &self.ssh_priv_key.as_ref().map(|_| "<redacted>"),
            )
            .field("remote_user", &self.remote_user)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl HostCreateRequest {
    /// Validates a host-creation body. Host attributes the server fills in itself (`status`,
    /// `os`, `cpus`, ...) are type-checked for compatibility and otherwise ignored: facts come
    /// from investigating the host, not from the client.
    pub fn from_json(f: &Fields) -> Result<Self, ValidationError> {
        for key in ["status", "os", "last_check", "source"] {
            opt_str(f, key)?;
        }
        for key in ["cpus", "memory", "space"] {
            opt_int(f, key)?;
        }
        let address = opt_str(f, "address")?
            .map(|a| canonical_address("address", &a))
            .transpose()?;
        let ssh_priv_key = opt_str(f, "ssh_priv_key")?;
        let remote_user = opt_str(f, "remote_user")?.unwrap_or_else(|| "root".to_string());
        validate_remote_user(&remote_user)?;
        let cluster = match opt_str(f, "cluster")? {
            Some(c) if c.is_empty() => None,
            Some(c) => {
                validate_name("cluster", &c)?;
                Some(c)
            }
            None => None,
        };
        Ok(HostCreateRequest {
            address,
            ssh_priv_key,
            remote_user,
            cluster,
        })
    }
}

/// Body of `PUT /cluster/{name}`: the fields to set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRequest {
    /// Network name (must exist).
    pub network: Option<String>,
    /// Container manager name (must exist; `""` removes it).
    pub container_manager: Option<String>,
}

impl ClusterRequest {
    /// Validates a cluster body. `status` and `type` (sent by old clients) are type-checked
    /// and ignored; `hostset` may only be empty, since members join through the membership
    /// routes, which check each host.
    pub fn from_json(f: &Fields) -> Result<Self, ValidationError> {
        opt_str(f, "status")?;
        opt_str(f, "type")?;
        if let Some(hosts) = opt_str_list(f, "hostset")?
            && !hosts.is_empty()
        {
            return Err(ValidationError::new(
                "hostset",
                "members cannot be set here; add them with PUT /api/v0/cluster/{name}/hosts/{address} or PUT /api/v0/cluster/{name}/hosts",
            ));
        }
        let network = opt_str(f, "network")?;
        if let Some(n) = &network {
            validate_name("network", n)?;
        }
        let container_manager = opt_str(f, "container_manager")?;
        if let Some(cm) = &container_manager
            && !cm.is_empty()
        {
            validate_name("container_manager", cm)?;
        }
        Ok(ClusterRequest {
            network,
            container_manager,
        })
    }
}

/// Body of `PUT /cluster/{name}/hosts`: replace the member list if it still equals `old`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRequest {
    /// The member list the client last saw.
    pub old: Vec<String>,
    /// The member list wanted.
    pub new: Vec<String>,
}

impl MembershipRequest {
    /// Validates a membership body: `old` and `new` are both required lists of addresses.
    pub fn from_json(f: &Fields) -> Result<Self, ValidationError> {
        let list = |key: &str| -> Result<Vec<String>, ValidationError> {
            let items = opt_str_list(f, key)?
                .ok_or_else(|| ValidationError::new(key, "is required (a list of addresses)"))?;
            items
                .iter()
                .enumerate()
                .map(|(i, a)| canonical_address(&format!("{key}[{i}]"), a))
                .collect()
        };
        Ok(MembershipRequest {
            old: list("old")?,
            new: list("new")?,
        })
    }
}

fn check_option_keys(
    options: &Fields,
    allowed: &[&str],
    what: &str,
) -> Result<(), ValidationError> {
    for key in options.keys() {
        if !allowed.contains(&key.as_str()) {
            let list = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ValidationError::new(
                format!("options.{key}"),
                format!("is not an option of {what} (allowed: {list})"),
            ));
        }
    }
    Ok(())
}

fn option_str(options: &Fields, key: &str) -> Result<Option<String>, ValidationError> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ValidationError::new(
            format!("options.{key}"),
            format!("must be a string, got {}", describe(other)),
        )),
    }
}

/// Checks `host:port` (host an IPv4 address, DNS name, or `[IPv6]`).
fn validate_host_port(field: &str, s: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            field,
            format!("{s:?} is not host:port ({why})"),
        ))
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return bad("the port must be 1-65535"),
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("put an IPv6 address in brackets");
    }
    if canonical_address(field, host).is_err() {
        return bad("the host is not an address or DNS name");
    }
    Ok(())
}

/// Body of `PUT /network/{name}`; `type` defaults to `flannel_etcd`, `options` to `{}`.
pub struct NetworkRequest;

impl NetworkRequest {
    /// Validates a network body into the record to store under `name`.
    ///
    /// Options: `flannel_server` (and `flanneld_service`, the seeds' name for it) requires `address` (`host:port` of the flannel server);
    /// `flannel_etcd` accepts `server_url` (etcd URL for flannel, default: the store's etcd),
    /// `key` (etcd prefix of the flannel configuration, default `/atomic01/network`) and, for a
    /// TLS etcd, `ca_path`, `certificate_path` + `certificate_key_path`: names of files in the
    /// server's trusted files directory, copied to the hosts. Every value lands in a sysconfig
    /// file on the hosts, so each is checked against that syntax here.
    pub fn from_json(name: &str, f: &Fields) -> Result<Network, ValidationError> {
        validate_name("name", name)?;
        let kind = match opt_str(f, "type")?.as_deref() {
            None | Some("flannel_etcd") => NetworkType::FlannelEtcd,
            Some("flannel_server") => NetworkType::FlannelServer,
            Some("flanneld_service") => NetworkType::FlanneldService,
            Some(other) => {
                return Err(ValidationError::new(
                    "type",
                    format!(
                        "{other:?} is not a network type; use flannel_etcd, flannel_server or flanneld_service"
                    ),
                ));
            }
        };
        let options = opt_object(f, "options")?.unwrap_or_default();
        match kind {
            NetworkType::FlannelServer | NetworkType::FlanneldService => {
                let what = format!("{} networks", kind.as_str());
                check_option_keys(&options, &["address"], &what)?;
                let addr = option_str(&options, "address")?.ok_or_else(|| {
                    ValidationError::new(
                        "options.address",
                        format!("is required for {what} (host:port of the flannel server)"),
                    )
                })?;
                validate_host_port("options.address", &addr)?;
            }
            NetworkType::FlannelEtcd => {
                check_option_keys(
                    &options,
                    &[
                        "server_url",
                        "key",
                        "ca_path",
                        "certificate_path",
                        "certificate_key_path",
                    ],
                    "flannel_etcd networks",
                )?;
                let url = option_str(&options, "server_url")?;
                if let Some(url) = &url {
                    validate_url("options.server_url", url)?;
                }
                if let Some(key) = option_str(&options, "key")? {
                    validate_etcd_key("options.key", &key)?;
                }
                // TLS credentials for flannel are files the operator put in the trusted files
                // directory for this purpose, named here; never the server's own etcd keys.
                for opt in ["ca_path", "certificate_path", "certificate_key_path"] {
                    if let Some(name) = option_str(&options, opt)? {
                        validate_trusted_file_name(&format!("options.{opt}"), &name)?;
                        if !url.as_deref().is_some_and(|u| u.starts_with("https://")) {
                            return Err(ValidationError::new(
                                format!("options.{opt}"),
                                "TLS files need an https:// options.server_url",
                            ));
                        }
                    }
                }
                if options.contains_key("certificate_path")
                    != options.contains_key("certificate_key_path")
                {
                    return Err(ValidationError::new(
                        "options.certificate_path",
                        "certificate_path and certificate_key_path must be given together",
                    ));
                }
            }
        }
        Ok(Network {
            name: name.to_string(),
            kind,
            options: options.into_iter().collect::<BTreeMap<_, _>>(),
        })
    }
}

/// Checks the TLS material of a container manager; returns whether a client certificate is
/// configured. Each of the CA, the certificate and the key comes either as PEM text (`ca`,
/// `certificate`, `certificate_key`) or as a file name in the trusted files directory
/// (`*_path`), not both; certificate and key come together.
fn check_tls_options(options: &Fields) -> Result<bool, ValidationError> {
    let pems = [
        ("ca", "ca_path", PemKind::Certificates),
        ("certificate", "certificate_path", PemKind::Certificates),
        (
            "certificate_key",
            "certificate_key_path",
            PemKind::PrivateKey,
        ),
    ];
    let mut present = [false; 3];
    for (i, (text_key, path_key, kind)) in pems.into_iter().enumerate() {
        let text = option_str(options, text_key)?;
        let path = option_str(options, path_key)?;
        if text.is_some() && path.is_some() {
            return Err(ValidationError::new(
                format!("options.{path_key}"),
                format!("give either {text_key} (PEM text) or {path_key}, not both"),
            ));
        }
        if let Some(t) = &text {
            validate_pem(&format!("options.{text_key}"), t, kind)?;
        }
        if let Some(p) = &path {
            validate_trusted_file_name(&format!("options.{path_key}"), p)?;
        }
        present[i] = text.is_some() || path.is_some();
    }
    if present[1] != present[2] {
        return Err(ValidationError::new(
            "options.certificate",
            "a client certificate needs its key: give certificate and certificate_key (or certificate_path and certificate_key_path) together",
        ));
    }
    Ok(present[1])
}

/// Whether a re-`PUT` of an existing container manager may answer 201 without writing.
///
/// Secret options are never compared, so the answer cannot confirm a guessed secret: a
/// request that carries any secret option (`token`, `certificate_key`) is always a conflict
/// with an existing record, and one without secrets matches only a stored record that is
/// equal to it, secrets included (so a stored record that has a secret never matches).
pub fn container_manager_reput_matches(
    existing: &ContainerManagerConfig,
    requested: &ContainerManagerConfig,
) -> bool {
    let carries_secret = SECRET_OPTION_KEYS
        .iter()
        .any(|k| requested.options.contains_key(*k));
    !carries_secret && existing == requested
}

/// Body of `PUT /containermanager/{name}`; `type` defaults to `openshift`.
pub struct ContainerManagerRequest;

impl ContainerManagerRequest {
    /// Validates a container-manager body into the record to store under `name`.
    ///
    /// `openshift`/`kubernetes` options: `server_url` (required), `token`, `ca` (PEM CA
    /// bundle), `certificate` and `certificate_key` (PEM client certificate and key, both or
    /// neither; the key is sealed like the token), or instead of those three `ca_path`,
    /// `certificate_path`, `certificate_key_path` naming files in the server's trusted files
    /// directory (never arbitrary server paths), `insecure_skip_tls_verify`
    /// (boolean, default false), `node_ready_timeout_seconds` (how long a new host's node may
    /// take to become Ready, default 300). `trivial` takes no options.
    pub fn from_json(name: &str, f: &Fields) -> Result<ContainerManagerConfig, ValidationError> {
        validate_name("name", name)?;
        let kind = match opt_str(f, "type")?.as_deref() {
            None | Some("openshift") => ContainerManagerType::Openshift,
            Some("kubernetes") => ContainerManagerType::Kubernetes,
            Some("trivial") => ContainerManagerType::Trivial,
            Some(other) => {
                return Err(ValidationError::new(
                    "type",
                    format!(
                        "{other:?} is not a container manager type; use openshift, kubernetes or trivial"
                    ),
                ));
            }
        };
        let options = opt_object(f, "options")?.unwrap_or_default();
        match kind {
            ContainerManagerType::Trivial => {
                check_option_keys(&options, &[], "trivial container managers")?;
            }
            ContainerManagerType::Openshift | ContainerManagerType::Kubernetes => {
                check_option_keys(
                    &options,
                    &[
                        "server_url",
                        "token",
                        "ca",
                        "certificate",
                        "certificate_key",
                        "certificate_path",
                        "certificate_key_path",
                        "ca_path",
                        "insecure_skip_tls_verify",
                        "node_ready_timeout_seconds",
                    ],
                    "openshift/kubernetes container managers",
                )?;
                let url = option_str(&options, "server_url")?.ok_or_else(|| {
                    ValidationError::new(
                        "options.server_url",
                        "is required (URL of the Kubernetes/OpenShift API server)",
                    )
                })?;
                validate_url("options.server_url", &url)?;
                if let Some(t) = option_str(&options, "token")? {
                    validate_token("options.token", &t)?;
                }
                let has_cert = check_tls_options(&options)?;
                if has_cert && !url.starts_with("https://") {
                    return Err(ValidationError::new(
                        "options.server_url",
                        "a client certificate needs an https:// server_url",
                    ));
                }
                if let Some(v) = options.get("node_ready_timeout_seconds")
                    && !v.as_u64().is_some_and(|n| (1..=86_400).contains(&n))
                {
                    return Err(ValidationError::new(
                        "options.node_ready_timeout_seconds",
                        format!(
                            "must be a whole number of seconds from 1 to 86400, got {}",
                            describe(v)
                        ),
                    ));
                }
                if let Some(v) = options.get("insecure_skip_tls_verify")
                    && !v.is_boolean()
                {
                    return Err(ValidationError::new(
                        "options.insecure_skip_tls_verify",
                        format!("must be true or false, got {}", describe(v)),
                    ));
                }
            }
        }
        Ok(ContainerManagerConfig {
            name: name.to_string(),
            kind,
            options: options.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bodies() {
        assert!(parse_body(b"").unwrap().is_empty());
        assert!(parse_body(b"  \n").unwrap().is_empty());
        let e = parse_body(b"[1]").unwrap_err();
        assert!(e.message.contains("an array"), "{e}");
        assert!(parse_body(b"\"x\"").is_err());
        assert!(
            parse_body(b"{bad")
                .unwrap_err()
                .message
                .contains("valid JSON")
        );
    }

    #[test]
    fn host_request() {
        let r = HostCreateRequest::from_json(&obj(json!({"ssh_priv_key": "AAA", "cluster": "c1"})))
            .unwrap();
        assert_eq!(r.remote_user, "root");
        assert_eq!(r.cluster.as_deref(), Some("c1"));
        let e = HostCreateRequest::from_json(&obj(json!({"cpus": "four"}))).unwrap_err();
        assert_eq!(e.field, "cpus");
        let e = HostCreateRequest::from_json(&obj(json!({"remote_user": "a b"}))).unwrap_err();
        assert_eq!(e.field, "remote_user");
        let e = HostCreateRequest::from_json(&obj(json!({"address": "1.2.3.999"}))).unwrap_err();
        assert_eq!(e.field, "address");
        assert!(!format!("{r:?}").contains("AAA"));
    }

    #[test]
    fn networks() {
        let n = NetworkRequest::from_json("n", &Map::new()).unwrap();
        assert_eq!(n.kind, NetworkType::FlannelEtcd);
        assert!(NetworkRequest::from_json("n", &obj(json!({"type": "flannel_server"}))).is_err());
        assert!(
            NetworkRequest::from_json(
                "n",
                &obj(json!({"type": "flannel_server", "options": {"address": "10.0.0.1:8080"}}))
            )
            .is_ok()
        );
        let e = NetworkRequest::from_json(
            "n",
            &obj(json!({"type": "flannel_server", "options": {"address": "10.0.0.1"}})),
        )
        .unwrap_err();
        assert_eq!(e.field, "options.address");
        // The seeds' name for client/server flannel: the same rules, kept as given.
        let e =
            NetworkRequest::from_json("n", &obj(json!({"type": "flanneld_service"}))).unwrap_err();
        assert_eq!(e.field, "options.address");
        assert!(
            e.message.contains("flanneld_service networks"),
            "{}",
            e.message
        );
        let n = NetworkRequest::from_json(
            "n",
            &obj(json!({"type": "flanneld_service", "options": {"address": "10.0.0.1:8080"}})),
        )
        .unwrap();
        assert_eq!(n.kind, NetworkType::FlanneldService);
        assert_eq!(
            serde_json::to_value(&n).unwrap()["type"],
            "flanneld_service"
        );
        let e = NetworkRequest::from_json("n", &obj(json!({"type": "flannel_sever"}))).unwrap_err();
        assert!(e.message.contains("flanneld_service"), "{}", e.message);
        let e =
            NetworkRequest::from_json("n", &obj(json!({"options": {"adress": "x"}}))).unwrap_err();
        assert_eq!(e.field, "options.adress");
    }

    #[test]
    fn container_managers() {
        let e = ContainerManagerRequest::from_json("k", &Map::new()).unwrap_err();
        assert_eq!(e.field, "options.server_url");
        let c = ContainerManagerRequest::from_json(
            "k",
            &obj(json!({"type": "kubernetes", "options": {"server_url": "https://k:6443", "token": "t"}})),
        )
        .unwrap();
        assert_eq!(c.kind, ContainerManagerType::Kubernetes);
        assert!(!format!("{c:?}").contains("\"t\""));
        assert!(ContainerManagerRequest::from_json("t", &obj(json!({"type": "trivial"}))).is_ok());
        assert!(ContainerManagerRequest::from_json("t", &obj(json!({"type": "nomad"}))).is_err());
        assert!(
            ContainerManagerRequest::from_json(
                "k",
                &obj(json!({"options": {"server_url": "https://k", "certificate_path": "/a"}}))
            )
            .is_err()
        );
    }

    #[test]
    fn injection_into_host_files_is_refused() {
        for (opts, field) in [
            (json!({"key": "/a\"\nEVIL=\"$(id)\""}), "options.key"),
            (
                json!({"server_url": "http://e:2379\"\nX=1"}),
                "options.server_url",
            ),
            (
                json!({"server_url": "http://e:2379", "ca_path": "ca.pem"}),
                "options.ca_path",
            ),
            (
                json!({"server_url": "https://e:2379", "ca_path": "/etc/ssl/private/k"}),
                "options.ca_path",
            ),
            (
                json!({"server_url": "https://e:2379", "certificate_path": "c.pem"}),
                "options.certificate_path",
            ),
        ] {
            let e = NetworkRequest::from_json("n", &obj(json!({"options": opts}))).unwrap_err();
            assert_eq!(e.field, field, "{opts}");
        }
        let ok = NetworkRequest::from_json(
            "n",
            &obj(
                json!({"options": {"server_url": "https://e:2379", "ca_path": "etcd-ca.pem",
                                    "certificate_path": "c.pem", "certificate_key_path": "k.pem"}}),
            ),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn container_manager_files_are_content_or_trusted_names() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        let cm = |opts: Value| {
            let mut o = json!({"server_url": "https://k:6443"});
            o.as_object_mut()
                .unwrap()
                .extend(opts.as_object().unwrap().clone());
            ContainerManagerRequest::from_json(
                "k",
                &obj(json!({"type": "kubernetes", "options": o})),
            )
        };
        assert!(cm(json!({"ca": cert, "certificate": cert, "certificate_key": key})).is_ok());
        assert!(cm(json!({"ca_path": "kube-ca.pem"})).is_ok());
        for (opts, field) in [
            (
                json!({"ca_path": "/etc/ssl/private/server.key"}),
                "options.ca_path",
            ),
            (json!({"ca_path": "../../etc/passwd"}), "options.ca_path"),
            (json!({"ca": "/dev/zero"}), "options.ca"),
            (json!({"ca": cert, "ca_path": "a.pem"}), "options.ca_path"),
            (json!({"certificate": cert}), "options.certificate"),
            (
                json!({"certificate": cert, "certificate_key": cert}),
                "options.certificate_key",
            ),
            (json!({"token": "a\nb"}), "options.token"),
        ] {
            let e = cm(opts.clone()).unwrap_err();
            assert_eq!(e.field, field, "{opts}");
        }
    }

    #[test]
    fn reput_never_compares_secrets() {
        let base = |opts: Value| ContainerManagerConfig {
            name: "k".into(),
            kind: ContainerManagerType::Kubernetes,
            options: opts.as_object().unwrap().clone().into_iter().collect(),
        };
        let with_token = base(json!({"server_url": "https://k", "token": "t"}));
        let other_token = base(json!({"server_url": "https://k", "token": "u"}));
        let plain = base(json!({"server_url": "https://k"}));
        // Same and different secrets answer alike.
        assert!(!container_manager_reput_matches(&with_token, &with_token));
        assert!(!container_manager_reput_matches(&with_token, &other_token));
        assert!(!container_manager_reput_matches(&with_token, &plain));
        assert!(container_manager_reput_matches(&plain, &plain));
    }

    #[test]
    fn membership() {
        let m =
            MembershipRequest::from_json(&obj(json!({"old": [], "new": ["10.0.0.1"]}))).unwrap();
        assert_eq!(m.new, vec!["10.0.0.1"]);
        assert_eq!(
            MembershipRequest::from_json(&obj(json!({"new": []})))
                .unwrap_err()
                .field,
            "old"
        );
        assert_eq!(
            MembershipRequest::from_json(&obj(json!({"old": [], "new": [1]})))
                .unwrap_err()
                .field,
            "new[0]"
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("options".to_string()),
                        Just("address".to_string()),
                        Just("server_url".to_string()),
                        Just("old".to_string()),
                        Just("new".to_string()),
                        Just("cluster".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn validators_never_panic(v in arb_json()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(f) = parse_body(&bytes) {
                let _ = HostCreateRequest::from_json(&f);
                let _ = ClusterRequest::from_json(&f);
                let _ = MembershipRequest::from_json(&f);
                let _ = NetworkRequest::from_json("n", &f);
                let _ = ContainerManagerRequest::from_json("n", &f);
            }
        }

        #[test]
        fn accepted_networks_round_trip(v in arb_json()) {
            if let Some(f) = v.as_object() && let Ok(n) = NetworkRequest::from_json("n", f) {
                // What we store re-validates to itself.
                let again = serde_json::to_value(&n).unwrap();
                let n2 = NetworkRequest::from_json("n", again.as_object().unwrap()).unwrap();
                prop_assert_eq!(n2, n);
            }
        }

        #[test]
        fn parse_body_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_body(&bytes);
        }
    }
}
