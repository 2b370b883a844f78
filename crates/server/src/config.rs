//! Server configuration: defaults, then the JSON config file, then `COMMISSAIRE_*`
//! environment variables ([`env`]), then command-line flags.
//!
//! The file is `/etc/commissaire/commissaire.conf` when it exists, or `-c PATH` (`-` reads
//! standard input); `--no-config-file` skips it. In file keys `-` and `_` are equivalent
//! (`listen-port` = `listen_port`), as they are in flags (`--listen_port` = `--listen-port`).
//! Every problem stops start-up with a message naming the key; keys of the original that are
//! accepted without (full) effect are listed in [`Config::warnings`], one message per key.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Map, Value};

pub mod env;
pub mod logging;
pub mod storage;

/// Where the server looks for its config file when `-c` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/commissaire/commissaire.conf";

/// Command-line flags of `commissaire-server`. Each config-file key has a flag.
#[derive(Debug, Default, Parser)]
#[command(
    name = "commissaire-server",
    version,
    about = "Commissaire REST server: manage Linux hosts over SSH behind /api/v0",
    // The original's argparse accepts unambiguous prefixes (`--no-config`); so do we.
    infer_long_args = true
)]
pub struct Cli {
    /// JSON config file (`-` for standard input). Default: /etc/commissaire/commissaire.conf if it exists.
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Do not read any config file.
    #[arg(long)]
    pub no_config_file: bool,
    /// Address or host name to listen on (default 127.0.0.1; a name listens on the first
    /// address it resolves to, IPv4 first).
    #[arg(short = 'i', long, value_name = "ADDRESS")]
    pub listen_interface: Option<String>,
    /// Port to listen on (default 8000).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub listen_port: Option<u16>,
    /// PEM file with the server certificate chain and private key: serve HTTPS.
    #[arg(long, value_name = "PATH")]
    pub tls_pemfile: Option<PathBuf>,
    /// PEM CA bundle: require TLS client certificates signed by it.
    #[arg(long, value_name = "PATH")]
    pub tls_clientverifyfile: Option<PathBuf>,
    /// Authentication plugin, `NAME:key=value,key=value` (repeatable; tried in order).
    #[arg(long = "authentication-plugin", value_name = "NAME:K=V,...")]
    pub authentication_plugins: Vec<String>,
    /// Path that skips authentication (repeatable).
    #[arg(long = "self-auth", value_name = "PATH")]
    pub self_auths: Vec<String>,
    /// Storage handler, `etcd:server_url=URL,certificate_path=...` (default: embedded store).
    #[arg(long = "storage-handler", value_name = "etcd:K=V,...")]
    pub storage_handlers: Vec<String>,
    /// Directory of the embedded store, the secrets key and the generated users file.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the 32-byte master key that seals secrets (default DATA_DIR/secrets.key).
    #[arg(long, value_name = "PATH")]
    pub secrets_key_file: Option<PathBuf>,
    /// Debug logging.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub debug: Option<bool>,
    /// Log filter, e.g. `info` or `info,commissaire_server=debug` (the config file also takes
    /// the original's Python dictConfig object).
    #[arg(long, value_name = "FILTER")]
    pub logging: Option<String>,
    /// Seconds between two health checks of a host (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub watcher_interval: Option<f64>,
    /// Directory whose files override the built-in bootstrap templates by name.
    #[arg(long, value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Run without any authentication (only for isolated test set-ups).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure_no_auth: Option<bool>,
    /// Directory whose files API users may name in `*_path` options (TLS material for
    /// container managers and flannel). Default: none, only PEM text is accepted.
    #[arg(long, value_name = "DIR")]
    pub trusted_files_dir: Option<PathBuf>,
    /// Seconds a client has to send a request's headers, also the longest an HTTP/1 keep-alive
    /// connection may wait for its next request (default 10).
    #[arg(long, value_name = "SECONDS")]
    pub header_read_timeout: Option<f64>,
    /// Seconds a connection may go without any byte read or written before it is closed
    /// (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Most connections served at once; more are closed on accept (default 4096).
    #[arg(long, value_name = "COUNT")]
    pub max_connections: Option<u64>,
    /// Most change-feed subscribers at once; more get 503 with Retry-After (default 256).
    #[arg(long, value_name = "COUNT")]
    pub max_event_subscribers: Option<u64>,
    /// Redis URI of the bus (`redis://host:port/db`): with an etcd store, this server runs no
    /// workers and publishes jobs there for `commissaire-service` processes.
    #[arg(long, value_name = "URI")]
    pub bus_uri: Option<String>,
    /// Prefix of the bus's stream names (default `commissaire`).
    #[arg(long, value_name = "NAME")]
    pub bus_exchange: Option<String>,
}

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One configured authentication plugin and its keyword options.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// Plugin name as given (`httpbasicauth` or `commissaire_http.authentication.httpbasicauth`).
    pub name: String,
    /// Its options (`filepath`, `users`).
    pub options: Map<String, Value>,
}

/// The etcd storage handler's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdHandler {
    /// etcd client URL(s), comma-separated in the config.
    pub server_urls: Vec<String>,
    /// Client certificate.
    pub certificate_path: Option<PathBuf>,
    /// Client key.
    pub certificate_key_path: Option<PathBuf>,
    /// CA bundle to verify etcd with.
    pub certificate_ca_path: Option<PathBuf>,
}

/// The complete, validated server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen_interface: String,
    /// Listen port.
    pub listen_port: u16,
    /// HTTPS certificate + key.
    pub tls_pemfile: Option<PathBuf>,
    /// CA bundle for mandatory client certificates.
    pub tls_clientverifyfile: Option<PathBuf>,
    /// Authentication plugins, in order.
    pub authentication_plugins: Vec<PluginConfig>,
    /// Paths that skip authentication.
    pub self_auths: Vec<String>,
    /// etcd handler, or `None` for the embedded store.
    pub etcd: Option<EtcdHandler>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Secrets master key file.
    pub secrets_key_file: PathBuf,
    /// Debug logging.
    pub debug: bool,
    /// Log filter.
    pub logging: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// No authentication at all.
    pub insecure_no_auth: bool,
    /// Time between watcher rounds.
    pub watcher_interval: std::time::Duration,
    /// Operator overrides of the bootstrap templates.
    pub templates_dir: Option<PathBuf>,
    /// The only directory API requests may make the server read files from.
    pub trusted_files_dir: Option<PathBuf>,
    /// Bound on receiving request headers (and on an idle HTTP/1 keep-alive wait).
    pub header_read_timeout: std::time::Duration,
    /// Bound on a connection without any I/O.
    pub idle_timeout: std::time::Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Change-feed subscribers at once.
    pub max_event_subscribers: usize,
    /// Redis bus, when the workers run in `commissaire-service` processes.
    pub bus_uri: Option<String>,
    /// Prefix of the bus's stream names.
    pub bus_exchange: String,
    /// Keys accepted but not (fully) used, one message each naming the key and why; logged at
    /// start-up.
    pub warnings: Vec<String>,
}

/// The default data directory: `/var/lib/commissaire` for root, else
/// `$XDG_DATA_HOME/commissaire` or `~/.local/share/commissaire`.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/commissaire");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("commissaire");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/commissaire"),
        None => PathBuf::from("commissaire-data"),
    }
}

/// Keys the config file may hold (in `-` spelling).
const KNOWN_KEYS: &[&str] = &[
    "listen-interface",
    "listen-port",
    "tls-pemfile",
    "tls-clientverifyfile",
    "authentication-plugins",
    "self-auths",
    "storage-handlers",
    "data-dir",
    "secrets-key-file",
    "debug",
    "logging",
    "log-format",
    "insecure-no-auth",
    "watcher-interval",
    "templates-dir",
    "trusted-files-dir",
    "header-read-timeout",
    "idle-timeout",
    "max-connections",
    "max-event-subscribers",
    "bus-uri",
    "bus-exchange",
];

/// Rewrites `--flag_name[=v]` to `--flag-name[=v]` so both spellings work on the command line.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if let Some(rest) = a.strip_prefix("--") {
                let (name, value) = match rest.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (rest, None),
                };
                let name = name.replace('_', "-");
                match value {
                    Some(v) => format!("--{name}={v}"),
                    None => format!("--{name}"),
                }
            } else {
                a
            }
        })
        .collect()
}

pub(crate) fn err(key: &str, msg: impl std::fmt::Display) -> String {
    format!("configuration key {key:?}: {msg}")
}

pub(crate) fn as_str(key: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| err(key, format!("must be a string, got {v}")))
}

pub(crate) fn as_bool(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| err(key, format!("must be true or false, got {v}")))
}

fn as_seconds(key: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| err(key, format!("must be a number of seconds, got {v}")))
}

fn as_count(key: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| err(key, format!("must be a whole number, got {v}")))
}

pub(crate) fn as_str_list(key: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items.iter().map(|i| as_str(key, i)).collect(),
        Value::String(s) => Ok(vec![s.clone()]),
        other => Err(err(key, format!("must be a list of strings, got {other}"))),
    }
}

/// Parses `NAME:k=v,k2=v2` (the CLI form of a plugin or storage handler). Values may contain
/// `:` (URLs); only the first `:` separates the name.
pub fn parse_plugin_arg(flag: &str, arg: &str) -> Result<PluginConfig, String> {
    let (name, rest) = match arg.split_once(':') {
        Some((n, r)) => (n, r),
        None => (arg, ""),
    };
    if name.is_empty() {
        return Err(format!("{flag} {arg:?}: the name before ':' is empty"));
    }
    let mut options = Map::new();
    for pair in rest.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "{flag} {arg:?}: {pair:?} is not key=value (use NAME:key=value,key2=value2)"
            ));
        };
        options.insert(k.replace('-', "_"), Value::String(v.to_string()));
    }
    Ok(PluginConfig {
        name: name.to_string(),
        options,
    })
}

pub(crate) fn parse_plugins(key: &str, v: &Value) -> Result<Vec<PluginConfig>, String> {
    let items = match v {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![v.clone()],
        other => {
            return Err(err(
                key,
                format!(
                    "must be a list of objects like {{\"name\": \"httpbasicauth\", \"filepath\": \"...\"}}, got {other}"
                ),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut obj) = item else {
                return Err(err(key, format!("entry {i} must be an object")));
            };
            let name = match obj.remove("name").or_else(|| obj.remove("type")) {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Err(err(key, format!("entry {i} needs a \"name\" string"))),
            };
            // Option keys use `_` spelling, as in the original (`server_url`, `filepath`).
            let options = obj
                .into_iter()
                .map(|(k, v)| (k.replace('-', "_"), v))
                .collect();
            Ok(PluginConfig { name, options })
        })
        .collect()
}

/// Validates the storage handlers (see [`storage`]): the etcd store, or `None` for the
/// embedded store, and the warnings to log.
pub(crate) fn parse_storage(
    handlers: Vec<PluginConfig>,
) -> Result<(Option<EtcdHandler>, Vec<String>), String> {
    storage::parse(handlers)
}

/// The addresses `listen-interface` stands for: itself when it is an IP address, else what the
/// host name resolves to (IPv4 first, then IPv6, each in resolver order).
pub fn resolve_listen(interface: &str) -> Result<Vec<std::net::IpAddr>, String> {
    if let Ok(ip) = interface.parse::<std::net::IpAddr>() {
        return Ok(vec![ip]);
    }
    // A bare number would resolve as an IPv4 address in numeric form (`8000` is 0.0.31.64):
    // it is a port given in the wrong place.
    if interface.chars().all(|c| c.is_ascii_digit()) {
        return Err(err(
            "listen-interface",
            format!("{interface:?} is a port number, not an address; give the port as listen-port"),
        ));
    }
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(interface, 0)).map_err(|e| {
        err(
            "listen-interface",
            format!("{interface:?} is neither an IP address nor a host name that resolves ({e})"),
        )
    })?;
    let mut ips: Vec<std::net::IpAddr> = Vec::new();
    for a in resolved {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    if ips.is_empty() {
        return Err(err(
            "listen-interface",
            format!("host name {interface:?} resolves to no address"),
        ));
    }
    Ok(ips)
}

/// Self-auth paths of the original that name no route here: accepted (they only skip
/// authentication for a path this server answers with 404) with a warning saying so.
const ORIGINAL_ONLY_PATHS: &[(&str, &str)] = &[(
    "/api/v0/secrets",
    "the original's Custodia secrets endpoint; this server keeps secrets sealed in its store and has no such route",
)];

pub(crate) fn read_file(path: &Path) -> Result<Map<String, Value>, String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read the configuration from standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!(
            "config file {} must hold a JSON object",
            path.display()
        )),
        Err(e) => Err(format!(
            "config file {} is not valid JSON: {e}",
            path.display()
        )),
    }
}

impl Config {
    /// Builds the configuration from parsed flags (reading the config file they point to) and
    /// the `COMMISSAIRE_*` environment variables.
    pub fn load(cli: Cli) -> Result<Config, String> {
        let file = if cli.no_config_file {
            Map::new()
        } else if let Some(p) = &cli.config_file {
            read_file(p)?
        } else if Path::new(DEFAULT_CONFIG_FILE).exists() {
            read_file(Path::new(DEFAULT_CONFIG_FILE))?
        } else {
            Map::new()
        };
        let mut file = file;
        env::merge_process_env(&mut file)?;
        Self::from_parts(file, cli)
    }

    /// Merges config-file values (`file`) with flags (`cli`), flags winning.
    pub fn from_parts(file: Map<String, Value>, cli: Cli) -> Result<Config, String> {
        let mut cfg = Config {
            listen_interface: "127.0.0.1".into(),
            listen_port: 8000,
            tls_pemfile: None,
            tls_clientverifyfile: None,
            authentication_plugins: vec![],
            self_auths: vec![],
            etcd: None,
            data_dir: default_data_dir(),
            secrets_key_file: PathBuf::new(),
            debug: false,
            logging: None,
            log_format: LogFormat::Text,
            insecure_no_auth: false,
            watcher_interval: std::time::Duration::from_secs(60),
            templates_dir: None,
            trusted_files_dir: None,
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 4096,
            max_event_subscribers: 256,
            bus_uri: None,
            bus_exchange: "commissaire".into(),
            warnings: vec![],
        };
        let mut header_read_timeout: Option<f64> = None;
        let mut idle_timeout: Option<f64> = None;
        let mut max_connections: Option<u64> = None;
        let mut max_event_subscribers: Option<u64> = None;
        let mut watcher_interval: Option<f64> = None;
        let mut secrets_key_file = None;
        let mut storage = vec![];
        let mut log_format = None;
        let mut dict_format = None;
        for (raw_key, v) in file {
            let key = raw_key.replace('_', "-");
            if !KNOWN_KEYS.contains(&key.as_str()) {
                return Err(err(
                    &raw_key,
                    format!("unknown key (known keys: {})", KNOWN_KEYS.join(", ")),
                ));
            }
            match key.as_str() {
                "listen-interface" => cfg.listen_interface = as_str(&raw_key, &v)?,
                "listen-port" => {
                    cfg.listen_port = v
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            err(&raw_key, format!("must be a port number 1-65535, got {v}"))
                        })?
                }
                "tls-pemfile" => cfg.tls_pemfile = Some(as_str(&raw_key, &v)?.into()),
                "tls-clientverifyfile" => {
                    cfg.tls_clientverifyfile = Some(as_str(&raw_key, &v)?.into())
                }
                "authentication-plugins" => {
                    cfg.authentication_plugins = parse_plugins(&raw_key, &v)?
                }
                "self-auths" => cfg.self_auths = as_str_list(&raw_key, &v)?,
                "storage-handlers" => storage = parse_plugins(&raw_key, &v)?,
                "data-dir" => cfg.data_dir = as_str(&raw_key, &v)?.into(),
                "secrets-key-file" => secrets_key_file = Some(PathBuf::from(as_str(&raw_key, &v)?)),
                "debug" => cfg.debug = as_bool(&raw_key, &v)?,
                "logging" => {
                    let spec = logging::parse(&raw_key, &v)?;
                    cfg.logging = Some(spec.filter);
                    dict_format = spec.format;
                    cfg.warnings.extend(spec.warning);
                }
                "log-format" => log_format = Some(as_str(&raw_key, &v)?),
                "insecure-no-auth" => cfg.insecure_no_auth = as_bool(&raw_key, &v)?,
                "watcher-interval" => {
                    watcher_interval = Some(v.as_f64().ok_or_else(|| {
                        err(&raw_key, format!("must be a number of seconds, got {v}"))
                    })?)
                }
                "templates-dir" => cfg.templates_dir = Some(as_str(&raw_key, &v)?.into()),
                "trusted-files-dir" => cfg.trusted_files_dir = Some(as_str(&raw_key, &v)?.into()),
                "header-read-timeout" => header_read_timeout = Some(as_seconds(&raw_key, &v)?),
                "idle-timeout" => idle_timeout = Some(as_seconds(&raw_key, &v)?),
                "max-connections" => max_connections = Some(as_count(&raw_key, &v)?),
                "max-event-subscribers" => max_event_subscribers = Some(as_count(&raw_key, &v)?),
                "bus-uri" => cfg.bus_uri = Some(as_str(&raw_key, &v)?),
                "bus-exchange" => cfg.bus_exchange = as_str(&raw_key, &v)?,
                _ => unreachable!("every known key is handled"),
            }
        }
        // Flags override the file.
        if let Some(v) = cli.listen_interface {
            cfg.listen_interface = v;
        }
        if let Some(v) = cli.listen_port {
            if v == 0 {
                return Err(err("listen-port", "must be a port number 1-65535, got 0"));
            }
            cfg.listen_port = v;
        }
        if cli.tls_pemfile.is_some() {
            cfg.tls_pemfile = cli.tls_pemfile;
        }
        if cli.tls_clientverifyfile.is_some() {
            cfg.tls_clientverifyfile = cli.tls_clientverifyfile;
        }
        if !cli.authentication_plugins.is_empty() {
            cfg.authentication_plugins = cli
                .authentication_plugins
                .iter()
                .map(|a| parse_plugin_arg("--authentication-plugin", a))
                .collect::<Result<_, _>>()?;
        }
        if !cli.self_auths.is_empty() {
            cfg.self_auths = cli.self_auths;
        }
        if !cli.storage_handlers.is_empty() {
            storage = cli
                .storage_handlers
                .iter()
                .map(|a| parse_plugin_arg("--storage-handler", a))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = cli.data_dir {
            cfg.data_dir = v;
        }
        if let Some(v) = cli.secrets_key_file {
            secrets_key_file = Some(v);
        }
        if let Some(v) = cli.debug {
            cfg.debug = v;
        }
        if let Some(v) = cli.logging {
            cfg.logging = Some(v);
        }
        if let Some(v) = cli.log_format {
            log_format = Some(v);
        }
        if let Some(v) = cli.insecure_no_auth {
            cfg.insecure_no_auth = v;
        }
        if let Some(v) = cli.watcher_interval {
            watcher_interval = Some(v);
        }
        if let Some(secs) = watcher_interval {
            if !(0.1..=86_400.0).contains(&secs) {
                return Err(err(
                    "watcher-interval",
                    format!("{secs} is out of range (0.1 to 86400 seconds)"),
                ));
            }
            cfg.watcher_interval = std::time::Duration::from_secs_f64(secs);
        }
        if cli.templates_dir.is_some() {
            cfg.templates_dir = cli.templates_dir;
        }
        if cli.trusted_files_dir.is_some() {
            cfg.trusted_files_dir = cli.trusted_files_dir;
        }
        if let Some(d) = &cfg.trusted_files_dir
            && !d.is_dir()
        {
            return Err(err(
                "trusted-files-dir",
                format!("{} is not a directory", d.display()),
            ));
        }
        let seconds =
            |key: &str, file: Option<f64>, flag: Option<f64>, into: &mut std::time::Duration| {
                if let Some(secs) = flag.or(file) {
                    if !(0.1..=86_400.0).contains(&secs) {
                        return Err(err(
                            key,
                            format!("{secs} is out of range (0.1 to 86400 seconds)"),
                        ));
                    }
                    *into = std::time::Duration::from_secs_f64(secs);
                }
                Ok(())
            };
        seconds(
            "header-read-timeout",
            header_read_timeout,
            cli.header_read_timeout,
            &mut cfg.header_read_timeout,
        )?;
        seconds(
            "idle-timeout",
            idle_timeout,
            cli.idle_timeout,
            &mut cfg.idle_timeout,
        )?;
        let count = |key: &str, file: Option<u64>, flag: Option<u64>, into: &mut usize| {
            if let Some(n) = flag.or(file) {
                if !(1..=1_000_000).contains(&n) {
                    return Err(err(key, format!("{n} is out of range (1 to 1000000)")));
                }
                *into = n as usize;
            }
            Ok(())
        };
        count(
            "max-connections",
            max_connections,
            cli.max_connections,
            &mut cfg.max_connections,
        )?;
        count(
            "max-event-subscribers",
            max_event_subscribers,
            cli.max_event_subscribers,
            &mut cfg.max_event_subscribers,
        )?;
        if let Some(d) = &cfg.templates_dir
            && !d.is_dir()
        {
            return Err(err(
                "templates-dir",
                format!("{} is not a directory", d.display()),
            ));
        }
        cfg.log_format = match log_format.as_deref() {
            None => dict_format.unwrap_or(LogFormat::Text),
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    "log-format",
                    format!("{other:?} is not a log format; use text or json"),
                ));
            }
        };
        if let Some(u) = cli.bus_uri {
            cfg.bus_uri = Some(u);
        }
        if let Some(x) = cli.bus_exchange {
            cfg.bus_exchange = x;
        }
        if let Some(u) = &cfg.bus_uri
            && !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+unix://"))
        {
            return Err(err(
                "bus-uri",
                format!("{u:?} is not a Redis URI (redis://host:port/db)"),
            ));
        }
        if cfg.bus_exchange.is_empty()
            || !cfg
                .bus_exchange
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(err(
                "bus-exchange",
                "must be letters, digits, '_', '-' or '.'",
            ));
        }
        let (etcd, storage_warnings) = parse_storage(storage)?;
        cfg.etcd = etcd;
        cfg.warnings.extend(storage_warnings);
        cfg.secrets_key_file = secrets_key_file.unwrap_or_else(|| cfg.data_dir.join("secrets.key"));
        resolve_listen(&cfg.listen_interface)?;
        if cfg.tls_clientverifyfile.is_some() && cfg.tls_pemfile.is_none() {
            return Err(err(
                "tls-clientverifyfile",
                "needs tls-pemfile too (client certificates only exist with TLS)",
            ));
        }
        for p in &cfg.self_auths {
            if !p.starts_with('/') {
                return Err(err(
                    "self-auths",
                    format!("{p:?} must be a path starting with '/'"),
                ));
            }
            let trimmed = p.trim_end_matches('/');
            if let Some((_, why)) = ORIGINAL_ONLY_PATHS.iter().find(|(o, _)| *o == trimmed) {
                cfg.warnings.push(format!(
                    "configuration key \"self-auths\": {p:?} is accepted but has no effect: {why}"
                ));
            }
        }
        if cfg.insecure_no_auth && !cfg.authentication_plugins.is_empty() {
            return Err(err(
                "insecure-no-auth",
                "cannot be combined with authentication-plugins; choose one",
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_and_feed_limits() {
        let c = Config::from_parts(Map::new(), Cli::default()).unwrap();
        assert_eq!(c.header_read_timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.max_event_subscribers, 256);
        assert_eq!(c.trusted_files_dir, None);
        let c = Config::from_parts(
            file(json!({"header_read_timeout": 2, "idle-timeout": 3.5, "max-connections": 10})),
            Cli {
                max_connections: Some(20),
                ..Cli::default()
            },
        )
        .unwrap();
        assert_eq!(c.header_read_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.idle_timeout, std::time::Duration::from_millis(3500));
        assert_eq!(c.max_connections, 20);
        for bad in [
            json!({"idle-timeout": 0}),
            json!({"max-connections": 0}),
            json!({"header-read-timeout": "x"}),
            json!({"trusted-files-dir": "/nonexistent/dir"}),
        ] {
            assert!(
                Config::from_parts(file(bad.clone()), Cli::default()).is_err(),
                "{bad}"
            );
        }
    }

    fn file(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["commissaire-server".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Cli::try_parse_from(normalize_args(all)).unwrap()
    }

    #[test]
    fn dash_underscore_and_precedence() {
        let c = Config::from_parts(
            file(json!({"listen_port": 9000, "listen-interface": "0.0.0.0"})),
            cli(&["--listen_interface=127.0.0.2"]),
        )
        .unwrap();
        assert_eq!(c.listen_port, 9000);
        assert_eq!(c.listen_interface, "127.0.0.2");
        let c =
            Config::from_parts(file(json!({"listen-port": 9000})), cli(&["-p", "9001"])).unwrap();
        assert_eq!(c.listen_port, 9001);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Config::from_parts(file(json!({"listen-prot": 1})), cli(&[])).unwrap_err();
        assert!(e.contains("\"listen-prot\""), "{e}");
        let e = Config::from_parts(file(json!({"listen-port": "x"})), cli(&[])).unwrap_err();
        assert!(
            e.contains("listen-port") && e.contains("port number"),
            "{e}"
        );
        let e = Config::from_parts(file(json!({"bus-uri": "amqp://x"})), cli(&[])).unwrap_err();
        assert!(e.contains("bus-uri") && e.contains("Redis"), "{e}");
        let c = Config::from_parts(
            file(json!({"bus_uri": "redis://127.0.0.1:6379/"})),
            cli(&[]),
        )
        .unwrap();
        assert_eq!(c.bus_uri.as_deref(), Some("redis://127.0.0.1:6379/"));
        let e = Config::from_parts(file(json!({"log-format": "xml"})), cli(&[])).unwrap_err();
        assert!(e.contains("log-format"), "{e}");
    }

    #[test]
    fn original_files_listen_names_and_warnings() {
        let c = Config::from_parts(
            file(
                json!({"listen-interface": "localhost", "self-auths": ["/api/v0/secrets"],
                        "logging": {"version": 1, "root": {"level": "WARNING"}}}),
            ),
            cli(&[]),
        )
        .unwrap();
        assert_eq!(
            resolve_listen(&c.listen_interface).unwrap()[0],
            std::net::IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(c.logging.as_deref(), Some("warn"));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"self-auths\""), "{:?}", c.warnings);
        let e =
            Config::from_parts(file(json!({"listen-interface": "8000"})), cli(&[])).unwrap_err();
        assert!(e.contains("listen-port"), "{e}");
        // argparse-style prefixes of the long flags.
        assert!(cli(&["--no-config"]).no_config_file);
    }

    #[test]
    fn plugins_from_file_and_cli() {
        let c = Config::from_parts(
            file(json!({"authentication-plugins": [{"name": "httpbasicauth", "filepath": "/x"}]})),
            cli(&[]),
        )
        .unwrap();
        assert_eq!(c.authentication_plugins[0].name, "httpbasicauth");
        let c = Config::from_parts(
            Map::new(),
            cli(&[
                "--authentication-plugin",
                "commissaire_http.authentication.httpbasicauth:filepath=/y",
            ]),
        )
        .unwrap();
        assert_eq!(c.authentication_plugins[0].options["filepath"], "/y");
    }

    #[test]
    fn storage_handlers() {
        let c = Config::from_parts(
            file(json!({"storage-handlers": [{"type": "etcd", "server_url": "http://127.0.0.1:2379", "models": ["*"]}]})),
            cli(&[]),
        )
        .unwrap();
        assert_eq!(c.etcd.unwrap().server_urls, vec!["http://127.0.0.1:2379"]);
        let c = Config::from_parts(
            Map::new(),
            cli(&[
                "--storage-handler",
                "etcd:server_url=https://127.0.0.1:2379,certificate_ca_path=/ca",
            ]),
        )
        .unwrap();
        assert_eq!(
            c.etcd.unwrap().certificate_ca_path.unwrap(),
            PathBuf::from("/ca")
        );
        let e = Config::from_parts(
            file(json!({"storage-handlers": [{"type": "redis"}]})),
            cli(&[]),
        )
        .unwrap_err();
        assert!(e.contains("storage-handlers"), "{e}");
    }
}
