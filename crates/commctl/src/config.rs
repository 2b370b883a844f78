//! commctl's configuration: the JSON file (`-c/--config`, else `$COMMCTL_CONFIG`, else
//! `~/.commissaire.json`), overridden by command-line flags.
//!
//! ```json
//! {
//!   "endpoint": ["https://commissaire1:8000", "https://commissaire2:8000"],
//!   "username": "admin",
//!   "password": "secret",
//!   "ca_path": "/etc/commissaire/ca.pem",
//!   "client_cert": "~/.commissaire/client.pem",
//!   "client_key": "~/.commissaire/client-key.pem",
//!   "connect_timeout": 10,
//!   "timeout": 60
//! }
//! ```
//!
//! `kubeconfig` (a path) replaces `username`/`password` with the bearer token of the
//! kubeconfig's current context user. `token` (an API token of the server's `apitokenauth`
//! plugin) is sent as `Authorization: Bearer` and wins over both.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{CliError, CliResult};

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "COMMCTL_CONFIG";
/// Configuration file looked for in the home directory.
pub const DEFAULT_FILE_NAME: &str = ".commissaire.json";
/// Endpoint used when neither the file nor a flag gives one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8000";

/// Keys the configuration file may hold (`-` and `_` are equivalent).
pub const KNOWN_KEYS: [&str; 10] = [
    "endpoint",
    "username",
    "password",
    "token",
    "kubeconfig",
    "ca_path",
    "client_cert",
    "client_key",
    "connect_timeout",
    "timeout",
];

/// Seconds allowed for connecting to one endpoint when neither the file nor a flag says.
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 10.0;
/// Seconds allowed for one request once connected when neither the file nor a flag says.
pub const DEFAULT_TIMEOUT: f64 = 60.0;

/// The configuration file's content.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileConfig {
    /// Server URLs, tried in order when a connection fails.
    pub endpoints: Vec<String>,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// API token sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Kubeconfig whose current user's token is sent as `Authorization: Bearer`.
    pub kubeconfig: Option<PathBuf>,
    /// PEM bundle of the CA(s) that signed the server's certificate.
    pub ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one.
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub client_key: Option<PathBuf>,
    /// Seconds allowed for connecting to one endpoint.
    pub connect_timeout: Option<f64>,
    /// Seconds allowed for one request.
    pub timeout: Option<f64>,
    /// Unknown keys found in the file (reported as warnings).
    pub unknown_keys: Vec<String>,
}

fn expand_tilde(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if p == "~" && home.is_some() => home.unwrap().to_path_buf(),
        _ => PathBuf::from(p),
    }
}

fn opt_seconds(m: &Map<String, Value>, key: &str, file: &str) -> CliResult<Option<f64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(CliError::general(format!(
                        "{file}: \"{key}\" must be a number of seconds, got {other}"
                    )));
                }
            };
            crate::cli::parse_seconds(&text)
                .map(Some)
                .map_err(|e| CliError::general(format!("{file}: \"{key}\": {e}")))
        }
    }
}

fn opt_string(m: &Map<String, Value>, key: &str, file: &str) -> CliResult<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CliError::general(format!(
            "{file}: \"{key}\" must be a string, got {other}"
        ))),
    }
}

impl FileConfig {
    /// Parses the file's JSON text. `file` names it in errors; `home` expands `~/` in paths.
    pub fn parse(text: &str, file: &str, home: Option<&Path>) -> CliResult<FileConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| CliError::general(format!("{file}: is not valid JSON: {e}")))?;
        let Value::Object(raw) = v else {
            return Err(CliError::general(format!(
                "{file}: must hold a JSON object like {{\"endpoint\": \"http://127.0.0.1:8000\"}}"
            )));
        };
        let mut m = Map::new();
        let mut unknown_keys = Vec::new();
        for (k, v) in raw {
            let norm = k.replace('-', "_");
            if !KNOWN_KEYS.contains(&norm.as_str()) {
                unknown_keys.push(k);
                continue;
            }
            m.insert(norm, v);
        }
        let endpoints = match m.get("endpoint") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            return Err(CliError::general(format!(
                                "{file}: \"endpoint\" must be a URL or a list of URLs, found {other} in the list"
                            )));
                        }
                    }
                }
                out
            }
            Some(other) => {
                return Err(CliError::general(format!(
                    "{file}: \"endpoint\" must be a URL or a list of URLs, got {other}"
                )));
            }
        };
        for e in &endpoints {
            check_endpoint(e).map_err(|m| CliError::general(format!("{file}: {m}")))?;
        }
        let path = |key: &str| -> CliResult<Option<PathBuf>> {
            Ok(opt_string(&m, key, file)?.map(|s| expand_tilde(&s, home)))
        };
        Ok(FileConfig {
            endpoints,
            username: opt_string(&m, "username", file)?,
            password: opt_string(&m, "password", file)?,
            token: opt_string(&m, "token", file)?,
            kubeconfig: path("kubeconfig")?,
            ca_path: path("ca_path")?,
            client_cert: path("client_cert")?,
            client_key: path("client_key")?,
            connect_timeout: opt_seconds(&m, "connect_timeout", file)?,
            timeout: opt_seconds(&m, "timeout", file)?,
            unknown_keys,
        })
    }
}

/// Checks that an endpoint is an http(s) URL.
pub fn check_endpoint(e: &str) -> Result<(), String> {
    if e.starts_with("http://") || e.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "endpoint {e:?} must be an http:// or https:// URL, e.g. http://127.0.0.1:8000"
        ))
    }
}

/// Which file to read: the explicit path, else `$COMMCTL_CONFIG`, else `~/.commissaire.json`
/// if it exists. The flag's and the variable's files must exist.
pub fn locate(
    explicit: Option<&Path>,
    env_value: Option<&str>,
    home: Option<&Path>,
) -> CliResult<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(CliError::general(format!(
                "configuration file {} (from --config) does not exist",
                p.display()
            )));
        }
        return Ok(Some(p.to_path_buf()));
    }
    if let Some(e) = env_value.filter(|e| !e.is_empty()) {
        let p = PathBuf::from(e);
        if !p.exists() {
            return Err(CliError::general(format!(
                "configuration file {} (from ${CONFIG_ENV}) does not exist",
                p.display()
            )));
        }
        return Ok(Some(p));
    }
    Ok(home
        .map(|h| h.join(DEFAULT_FILE_NAME))
        .filter(|p| p.exists()))
}

/// Reads and parses the configuration file, if there is one.
pub fn load(explicit: Option<&Path>) -> CliResult<FileConfig> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let env_value = std::env::var(CONFIG_ENV).ok();
    let Some(path) = locate(explicit, env_value.as_deref(), home.as_deref())? else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::general(format!("reading {}: {e}", path.display())))?;
    let cfg = FileConfig::parse(&text, &path.display().to_string(), home.as_deref())?;
    for k in &cfg.unknown_keys {
        eprintln!(
            "commctl: warning: {}: unknown key {k:?} ignored (known: {})",
            path.display(),
            KNOWN_KEYS.join(", ")
        );
    }
    Ok(cfg)
}

/// Values given on the command line; each one wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--endpoint` (repeatable).
    pub endpoints: Vec<String>,
    /// `--username`.
    pub username: Option<String>,
    /// `--password-stdin`, already read.
    pub password: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--token` (already read when given as `@FILE`).
    pub token: Option<String>,
    /// `--ca-path`.
    pub ca_path: Option<PathBuf>,
    /// `--client-cert`.
    pub client_cert: Option<PathBuf>,
    /// `--client-key`.
    pub client_key: Option<PathBuf>,
    /// `--connect-timeout` (seconds).
    pub connect_timeout: Option<f64>,
    /// `--timeout` (seconds).
    pub timeout: Option<f64>,
}

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// HTTP basic; the password is asked for on a terminal when `None`.
    Basic {
        /// User.
        username: String,
        /// Password, if known yet.
        password: Option<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even in debug output.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, password } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "<hidden>"))
                .finish(),
            Auth::Bearer(_) => f.write_str("Bearer(<hidden>)"),
        }
    }
}

/// Everything needed to talk to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server URLs without trailing `/`, tried in order.
    pub endpoints: Vec<String>,
    /// Authentication.
    pub auth: Auth,
    /// CA bundle for the server's certificate.
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Limit for connecting to one endpoint (then the next one is tried).
    pub connect_timeout: std::time::Duration,
    /// Limit for one request once connected.
    pub timeout: std::time::Duration,
}

/// Merges the file and the flags. Reads the kubeconfig when one is used.
pub fn resolve(file: FileConfig, flags: Overrides) -> CliResult<Settings> {
    let mut endpoints = if flags.endpoints.is_empty() {
        file.endpoints
    } else {
        flags.endpoints
    };
    for e in &endpoints {
        check_endpoint(e).map_err(CliError::usage)?;
    }
    if endpoints.is_empty() {
        endpoints.push(DEFAULT_ENDPOINT.to_string());
    }
    let endpoints = endpoints
        .into_iter()
        .map(|e| e.trim_end_matches('/').to_string())
        .collect();
    // A user named on the command line wins over a kubeconfig from the file.
    let kubeconfig = flags.kubeconfig.clone().or(if flags.username.is_some() {
        None
    } else {
        file.kubeconfig.clone()
    });
    // A token on the command line wins; the file's token wins over the file's other
    // credentials, unless the command line names a user or a kubeconfig.
    let token = flags
        .token
        .clone()
        .or(if flags.username.is_none() && flags.kubeconfig.is_none() {
            file.token.clone()
        } else {
            None
        });
    let auth = if let Some(t) = token {
        Auth::Bearer(t)
    } else if let Some(kc) = kubeconfig {
        Auth::Bearer(kubeconfig_token(&kc)?)
    } else if let Some(username) = flags.username.clone().or(file.username.clone()) {
        let password = flags.password.clone().or(if flags.username.is_some() {
            // --username without --password-stdin: the file's password belongs to the
            // file's user only.
            if file.username.as_deref() == flags.username.as_deref() {
                file.password.clone()
            } else {
                None
            }
        } else {
            file.password.clone()
        });
        Auth::Basic { username, password }
    } else {
        Auth::None
    };
    let client_cert = flags.client_cert.or(file.client_cert);
    let client_key = flags.client_key.or(file.client_key);
    let client_identity = match (client_cert, client_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (Some(c), None) => Some((c.clone(), c)),
        (None, Some(_)) => {
            return Err(CliError::general(
                "client_key is set but client_cert is not: give both (or one PEM file holding both as client_cert)",
            ));
        }
        (None, None) => None,
    };
    Ok(Settings {
        endpoints,
        auth,
        ca_path: flags.ca_path.or(file.ca_path),
        client_identity,
        connect_timeout: std::time::Duration::from_secs_f64(
            flags
                .connect_timeout
                .or(file.connect_timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        ),
        timeout: std::time::Duration::from_secs_f64(
            flags.timeout.or(file.timeout).unwrap_or(DEFAULT_TIMEOUT),
        ),
    })
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<KubeNamedContext>,
    #[serde(default)]
    users: Vec<KubeNamedUser>,
}

#[derive(Deserialize)]
struct KubeNamedContext {
    name: String,
    context: KubeContext,
}

#[derive(Deserialize)]
struct KubeContext {
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
struct KubeNamedUser {
    name: String,
    #[serde(default)]
    user: KubeUser,
}

#[derive(Deserialize, Default)]
struct KubeUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
}

/// The bearer token of a kubeconfig text's current-context user.
pub fn kubeconfig_token_from_str(text: &str, file: &str) -> CliResult<String> {
    let kc: KubeConfig = serde_norway::from_str(text)
        .map_err(|e| CliError::general(format!("kubeconfig {file}: cannot be read: {e}")))?;
    if kc.current_context.is_empty() {
        return Err(CliError::general(format!(
            "kubeconfig {file}: has no current-context"
        )));
    }
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == kc.current_context)
        .ok_or_else(|| {
            CliError::general(format!(
                "kubeconfig {file}: current-context {:?} is not among its contexts",
                kc.current_context
            ))
        })?;
    let user = kc
        .users
        .iter()
        .find(|u| u.name == ctx.context.user)
        .ok_or_else(|| {
            CliError::general(format!(
                "kubeconfig {file}: user {:?} of context {:?} is not among its users",
                ctx.context.user, ctx.name
            ))
        })?;
    if let Some(t) = user.user.token.as_deref().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    if let Some(tf) = &user.user.token_file {
        let t = std::fs::read_to_string(tf).map_err(|e| {
            CliError::general(format!("kubeconfig {file}: reading tokenFile {tf}: {e}"))
        })?;
        return Ok(t.trim().to_string());
    }
    Err(CliError::general(format!(
        "kubeconfig {file}: user {:?} has no token (commctl only uses token authentication from a kubeconfig)",
        user.name
    )))
}

/// The bearer token of a kubeconfig file's current-context user.
pub fn kubeconfig_token(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::general(format!("reading kubeconfig {}: {e}", path.display())))?;
    kubeconfig_token_from_str(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_string_or_list() {
        let c = FileConfig::parse(r#"{"endpoint": "http://a:8000"}"#, "f", None).unwrap();
        assert_eq!(c.endpoints, vec!["http://a:8000"]);
        let c = FileConfig::parse(
            r#"{"endpoint": ["http://a:8000", "https://b"], "username": "u", "password": "p"}"#,
            "f",
            None,
        )
        .unwrap();
        assert_eq!(c.endpoints, vec!["http://a:8000", "https://b"]);
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
    }

    #[test]
    fn bad_files_are_explained() {
        let e = FileConfig::parse("{", "cfg.json", None).unwrap_err();
        assert!(e.message.contains("cfg.json: is not valid JSON"), "{e}");
        let e = FileConfig::parse("[]", "cfg.json", None).unwrap_err();
        assert!(e.message.contains("JSON object"), "{e}");
        let e = FileConfig::parse(r#"{"endpoint": 5}"#, "f", None).unwrap_err();
        assert!(e.message.contains("\"endpoint\" must be a URL"), "{e}");
        let e = FileConfig::parse(r#"{"endpoint": ["http://a", 1]}"#, "f", None).unwrap_err();
        assert!(e.message.contains("found 1 in the list"), "{e}");
        let e = FileConfig::parse(r#"{"endpoint": "a:8000"}"#, "f", None).unwrap_err();
        assert!(e.message.contains("http:// or https://"), "{e}");
        let e = FileConfig::parse(r#"{"username": 3}"#, "f", None).unwrap_err();
        assert!(e.message.contains("\"username\" must be a string"), "{e}");
    }

    #[test]
    fn unknown_keys_are_collected_and_dashes_accepted() {
        let c = FileConfig::parse(
            r#"{"endpiont": "x", "ca-path": "~/ca.pem", "client_cert": "/c.pem"}"#,
            "f",
            Some(Path::new("/home/me")),
        )
        .unwrap();
        assert_eq!(c.unknown_keys, vec!["endpiont"]);
        assert_eq!(c.ca_path, Some(PathBuf::from("/home/me/ca.pem")));
        assert_eq!(c.client_cert, Some(PathBuf::from("/c.pem")));
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig {
            endpoints: vec!["http://file:1".into()],
            username: Some("fileuser".into()),
            password: Some("filepw".into()),
            ..Default::default()
        };
        let s = resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!(s.endpoints, vec!["http://file:1"]);
        assert_eq!(
            s.auth,
            Auth::Basic {
                username: "fileuser".into(),
                password: Some("filepw".into())
            }
        );
        let s = resolve(
            file.clone(),
            Overrides {
                endpoints: vec!["http://flag:2/".into(), "http://flag:3".into()],
                username: Some("other".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.endpoints, vec!["http://flag:2", "http://flag:3"]);
        // The file's password is not sent for another user.
        assert_eq!(
            s.auth,
            Auth::Basic {
                username: "other".into(),
                password: None
            }
        );
        let s = resolve(
            file,
            Overrides {
                password: Some("stdinpw".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.auth,
            Auth::Basic {
                username: "fileuser".into(),
                password: Some("stdinpw".into())
            }
        );
    }

    #[test]
    fn defaults_when_nothing_is_configured() {
        let s = resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(s.endpoints, vec![DEFAULT_ENDPOINT]);
        assert_eq!(s.auth, Auth::None);
        assert_eq!(s.client_identity, None);
        let e = resolve(
            FileConfig::default(),
            Overrides {
                endpoints: vec!["ftp://x".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.code, crate::error::EXIT_USAGE);
    }

    #[test]
    fn timeouts_default_then_file_then_flag() {
        use std::time::Duration;
        let s = resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(60));
        let file =
            FileConfig::parse(r#"{"connect_timeout": 2.5, "timeout": 30}"#, "f", None).unwrap();
        let s = resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!(s.connect_timeout, Duration::from_millis(2500));
        assert_eq!(s.timeout, Duration::from_secs(30));
        let s = resolve(
            file,
            Overrides {
                connect_timeout: Some(1.0),
                timeout: Some(5.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.connect_timeout, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_secs(5));
        for bad in [
            r#"{"timeout": "10"}"#,
            r#"{"connect-timeout": 0}"#,
            r#"{"timeout": -1}"#,
        ] {
            let e = FileConfig::parse(bad, "f", None).unwrap_err();
            assert!(e.message.contains("seconds"), "{bad}: {e}");
        }
    }

    #[test]
    fn client_identity_pairs() {
        let s = resolve(
            FileConfig {
                client_cert: Some("/c".into()),
                ..Default::default()
            },
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.client_identity, Some(("/c".into(), "/c".into())));
        let e = resolve(
            FileConfig {
                client_key: Some("/k".into()),
                ..Default::default()
            },
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("client_cert"));
    }

    #[test]
    fn locate_order() {
        let dir = tempfile::tempdir().unwrap();
        let home_file = dir.path().join(DEFAULT_FILE_NAME);
        assert_eq!(locate(None, None, Some(dir.path())).unwrap(), None);
        std::fs::write(&home_file, "{}").unwrap();
        assert_eq!(
            locate(None, None, Some(dir.path())).unwrap(),
            Some(home_file.clone())
        );
        let other = dir.path().join("other.json");
        std::fs::write(&other, "{}").unwrap();
        assert_eq!(
            locate(None, Some(other.to_str().unwrap()), Some(dir.path())).unwrap(),
            Some(other.clone())
        );
        let missing = dir.path().join("missing.json");
        let e = locate(Some(&missing), None, Some(dir.path())).unwrap_err();
        assert!(e.message.contains("does not exist"), "{e}");
        let e = locate(None, Some(missing.to_str().unwrap()), None).unwrap_err();
        assert!(e.message.contains("COMMCTL_CONFIG"), "{e}");
    }

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: k
  cluster: {server: "https://k:6443"}
contexts:
- name: dev
  context: {cluster: k, user: devuser}
- name: prod
  context: {cluster: k, user: produser}
users:
- name: devuser
  user: {token: dev-token}
- name: produser
  user:
    token: prod-token
"#;

    #[test]
    fn kubeconfig_current_context_token() {
        assert_eq!(
            kubeconfig_token_from_str(KUBECONFIG, "kc").unwrap(),
            "prod-token"
        );
        let no_token = KUBECONFIG.replace("token: prod-token", "client-certificate: /x");
        let e = kubeconfig_token_from_str(&no_token, "kc").unwrap_err();
        assert!(e.message.contains("has no token"), "{e}");
        let bad_ctx = KUBECONFIG.replace("current-context: prod", "current-context: nope");
        let e = kubeconfig_token_from_str(&bad_ctx, "kc").unwrap_err();
        assert!(e.message.contains("not among its contexts"), "{e}");
    }

    #[test]
    fn kubeconfig_wins_over_file_user_but_not_flag_user() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, KUBECONFIG).unwrap();
        let file = FileConfig {
            username: Some("u".into()),
            password: Some("p".into()),
            kubeconfig: Some(kc),
            ..Default::default()
        };
        let s = resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!(s.auth, Auth::Bearer("prod-token".into()));
        let s = resolve(
            file,
            Overrides {
                username: Some("u".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.auth,
            Auth::Basic {
                username: "u".into(),
                password: Some("p".into())
            }
        );
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let a = Auth::Basic {
            username: "u".into(),
            password: Some("hunter2".into()),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
    }
}
