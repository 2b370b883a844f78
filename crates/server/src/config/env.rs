//! The environment-variable layer of the configuration: `COMMISSAIRE_<KEY>` for every
//! config-file key (`listen-port` → `COMMISSAIRE_LISTEN_PORT`). Precedence is command line >
//! environment > config file > default: the variables are merged into the file's values
//! before the flags are applied, so they are checked by exactly the same rules as the file.
//!
//! Values are text, converted to the type the key takes: numbers for ports, counts and
//! seconds; `true`/`false` (also `1`/`0`, `yes`/`no`) for switches; a comma-separated list for
//! `self-auths`; for `authentication-plugins` and `storage-handlers` the flag form
//! (`NAME:k=v,k=v`, several separated by `;`) or the config file's JSON. An empty variable
//! counts as unset, so `COMMISSAIRE_X= commissaire-server` does not override anything.
//! Variables with the prefix that name no key are ignored: other tools (and the test suite)
//! use the prefix too.

use serde_json::{Map, Value};

use super::{KNOWN_KEYS, parse_plugin_arg};

/// Prefix of the configuration's environment variables.
pub const PREFIX: &str = "COMMISSAIRE_";

/// The variable that sets config-file key `key`.
pub fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('-', "_").to_ascii_uppercase())
}

fn bad(var: &str, value: &str, what: &str) -> String {
    format!("{var}={value:?}: {what}")
}

/// Converts one variable's text into the JSON value the config file would hold for `key`.
fn to_value(key: &str, var: &str, text: &str) -> Result<Value, String> {
    let t = text.trim();
    Ok(match key {
        "listen-port" | "max-connections" | "max-event-subscribers" => Value::from(
            t.parse::<u64>()
                .map_err(|_| bad(var, text, "must be a whole number"))?,
        ),
        "watcher-interval" | "header-read-timeout" | "idle-timeout" => {
            let n: f64 = t
                .parse()
                .map_err(|_| bad(var, text, "must be a number of seconds"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| bad(var, text, "must be a finite number of seconds"))?
        }
        "debug" | "insecure-no-auth" => Value::Bool(match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad(var, text, "must be true or false")),
        }),
        "self-auths" => Value::Array(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        "authentication-plugins" | "storage-handlers" => {
            if t.starts_with('[') || t.starts_with('{') {
                serde_json::from_str(t)
                    .map_err(|e| bad(var, text, &format!("is not valid JSON ({e})")))?
            } else {
                let mut items = Vec::new();
                for part in t.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let p = parse_plugin_arg(var, part)?;
                    let mut obj = Map::new();
                    obj.insert("name".into(), Value::String(p.name));
                    obj.extend(p.options);
                    items.push(Value::Object(obj));
                }
                Value::Array(items)
            }
        }
        // The original's dictConfig object, as the config file would hold it.
        "logging" if t.starts_with('{') => serde_json::from_str(t)
            .map_err(|e| bad(var, text, &format!("is not valid JSON ({e})")))?,
        _ => Value::String(text.to_string()),
    })
}

/// Merges the `COMMISSAIRE_*` variables among `vars` into the config file's values `file`
/// (a variable replaces the file's value for the same key, whichever spelling the file used).
pub fn merge<I, K, V>(file: &mut Map<String, Value>, vars: I) -> Result<(), String>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    for key in KNOWN_KEYS {
        let name = var_name(key);
        let Some((_, text)) = vars.iter().find(|(k, _)| *k == name) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let value = to_value(key, &name, text)?;
        file.retain(|k, _| k.replace('_', "-") != *key);
        file.insert((*key).to_string(), value);
    }
    Ok(())
}

/// [`merge`] with this process's environment (variables that are not UTF-8 are skipped: no
/// configuration variable can be one).
pub fn merge_process_env(file: &mut Map<String, Value>) -> Result<(), String> {
    merge(
        file,
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};
    use serde_json::json;

    fn load(file: Value, vars: &[(&str, &str)], cli: Cli) -> Result<Config, String> {
        let Value::Object(mut m) = file else { panic!() };
        merge(&mut m, vars.iter().copied())?;
        Config::from_parts(m, cli)
    }

    #[test]
    fn every_key_has_a_variable() {
        assert_eq!(var_name("listen-port"), "COMMISSAIRE_LISTEN_PORT");
        assert_eq!(
            var_name("tls-clientverifyfile"),
            "COMMISSAIRE_TLS_CLIENTVERIFYFILE"
        );
        for key in KNOWN_KEYS {
            assert!(var_name(key).starts_with(PREFIX));
        }
    }

    #[test]
    fn cli_beats_env_beats_file() {
        let file =
            json!({"listen_port": 9001, "listen-interface": "127.0.0.2", "max-connections": 7});
        let c = load(file.clone(), &[], Cli::default()).unwrap();
        assert_eq!((c.listen_port, c.max_connections), (9001, 7));
        let vars = [
            ("COMMISSAIRE_LISTEN_PORT", "9002"),
            ("COMMISSAIRE_MAX_CONNECTIONS", "8"),
        ];
        let c = load(file.clone(), &vars, Cli::default()).unwrap();
        assert_eq!((c.listen_port, c.max_connections), (9002, 8));
        assert_eq!(c.listen_interface, "127.0.0.2");
        let cli = Cli {
            listen_port: Some(9003),
            ..Cli::default()
        };
        let c = load(file, &vars, cli).unwrap();
        assert_eq!((c.listen_port, c.max_connections), (9003, 8));
    }

    #[test]
    fn typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let vars = [
            ("COMMISSAIRE_DEBUG", "yes"),
            ("COMMISSAIRE_INSECURE_NO_AUTH", "0"),
            ("COMMISSAIRE_WATCHER_INTERVAL", "2.5"),
            ("COMMISSAIRE_IDLE_TIMEOUT", "30"),
            ("COMMISSAIRE_SELF_AUTHS", "/api/v0/status, /metrics"),
            ("COMMISSAIRE_LOG_FORMAT", "json"),
            ("COMMISSAIRE_DATA_DIR", d.as_str()),
            ("COMMISSAIRE_TEMPLATES_DIR", d.as_str()),
            (
                "COMMISSAIRE_AUTHENTICATION_PLUGINS",
                "httpbasicauth:filepath=/etc/u.json",
            ),
            (
                "COMMISSAIRE_STORAGE_HANDLERS",
                r#"[{"name": "etcd", "server_url": "http://127.0.0.1:2379"}]"#,
            ),
            ("COMMISSAIRE_SCREENSHOTS", "not a config key: ignored"),
            ("COMMISSAIRE_LOGGING", ""),
        ];
        let c = load(json!({"logging": "warn"}), &vars, Cli::default()).unwrap();
        assert!(c.debug && !c.insecure_no_auth);
        assert_eq!(c.watcher_interval, std::time::Duration::from_millis(2500));
        assert_eq!(c.idle_timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.self_auths, ["/api/v0/status", "/metrics"]);
        assert_eq!(c.log_format, crate::config::LogFormat::Json);
        assert_eq!(c.data_dir, dir.path());
        assert_eq!(c.templates_dir.as_deref(), Some(dir.path()));
        assert_eq!(c.authentication_plugins.len(), 1);
        assert_eq!(c.authentication_plugins[0].name, "httpbasicauth");
        assert_eq!(
            c.authentication_plugins[0].options["filepath"],
            "/etc/u.json"
        );
        assert!(c.etcd.is_some());
        // Empty means unset: the file's value stays.
        assert_eq!(c.logging.as_deref(), Some("warn"));
        // The original's dictConfig object works from the environment too.
        let c = load(
            json!({}),
            &[(
                "COMMISSAIRE_LOGGING",
                r#"{"version": 1, "root": {"level": "DEBUG"}}"#,
            )],
            Cli::default(),
        )
        .unwrap();
        assert_eq!(c.logging.as_deref(), Some("debug"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("COMMISSAIRE_LISTEN_PORT", "eighty"),
            ("COMMISSAIRE_DEBUG", "maybe"),
            ("COMMISSAIRE_IDLE_TIMEOUT", "soon"),
            ("COMMISSAIRE_STORAGE_HANDLERS", "[not json"),
            (
                "COMMISSAIRE_AUTHENTICATION_PLUGINS",
                "httpbasicauth:filepath",
            ),
        ] {
            let e = load(json!({}), &[(var, value)], Cli::default()).unwrap_err();
            assert!(e.contains(var), "{var}: {e}");
        }
        // Range checks are the file's, naming the key.
        let e = load(
            json!({}),
            &[("COMMISSAIRE_LISTEN_PORT", "70000")],
            Cli::default(),
        )
        .unwrap_err();
        assert!(e.contains("listen-port"), "{e}");
    }
}
