//! The `storage-handlers` key: one handler or the original's list of handlers, each claiming
//! models by name or fnmatch glob (`"models": ["*"]`, `["Host"]`, `["Cluster*"]`).
//!
//! Every model lives in one store here, because a host, its cluster membership and its
//! credentials are written in one transaction: a list is accepted when all of its handlers
//! are etcd handlers with the same connection settings (then their `models` only decide which
//! models are claimed, and the claims are checked as the original checked them), and refused
//! when it would split the models across stores or names a handler type this server does not
//! have (a CloudForms source, for one).

use std::collections::BTreeMap;

use super::{EtcdHandler, PluginConfig, as_str, as_str_list, err};

const KEY: &str = "storage-handlers";

/// The original's model class names that `models` patterns are matched against (secret models
/// such as `HostCreds` are never matched by patterns, as in the original).
pub const MODELS: &[&str] = &[
    "Cluster",
    "ClusterDeploy",
    "ClusterRestart",
    "ClusterUpgrade",
    "ContainerManagerConfig",
    "Host",
    "HostStatus",
    "Network",
];

/// An fnmatch pattern (`*`, `?`, `[seq]`, `[!seq]`), as the original's `models` lists use.
fn glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| err(KEY, format!("models pattern {pattern:?}: {e}")))
}

/// One handler entry after parsing.
struct Entry {
    /// The handler's type as written (`commissaire.storage.etcd`, `etcd`).
    module: String,
    handler: EtcdHandler,
    models: Vec<String>,
}

fn parse_entry(h: PluginConfig) -> Result<Entry, String> {
    // `type` is the plugin module when both are given (then `name` is the handler's label).
    let module = match h.options.get("type") {
        Some(t) => as_str(KEY, t)?,
        None => h.name.clone(),
    };
    let short = module.rsplit('.').next().unwrap_or(&module);
    if short != "etcd" {
        return Err(err(
            KEY,
            format!(
                "storage handler {module:?} is not available: this server has the etcd handler (and, without any handler, its embedded store); remove {module:?} from the list"
            ),
        ));
    }
    let mut handler = EtcdHandler {
        server_urls: vec!["http://127.0.0.1:2379".to_string()],
        certificate_path: None,
        certificate_key_path: None,
        certificate_ca_path: None,
    };
    let mut models = vec!["*".to_string()];
    for (k, v) in h.options {
        match k.as_str() {
            "server_url" => {
                let s = as_str(KEY, &v)?;
                let urls: Vec<String> = s.split(',').map(|u| u.trim().to_string()).collect();
                for u in &urls {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        return Err(err(
                            KEY,
                            format!("server_url {u:?} must start with http:// or https://"),
                        ));
                    }
                }
                handler.server_urls = urls;
            }
            "certificate_path" => handler.certificate_path = Some(as_str(KEY, &v)?.into()),
            "certificate_key_path" => handler.certificate_key_path = Some(as_str(KEY, &v)?.into()),
            "certificate_ca_path" => handler.certificate_ca_path = Some(as_str(KEY, &v)?.into()),
            "models" => {
                let list = as_str_list(KEY, &v)?;
                // The seeds' examples write `"models": []` for their only handler; like an
                // absent list it means every model.
                if !list.is_empty() {
                    models = list;
                }
            }
            "name" | "type" => {}
            other => {
                return Err(err(
                    KEY,
                    format!(
                        "{other:?} is not an etcd handler option (server_url, certificate_path, certificate_key_path, certificate_ca_path, models)"
                    ),
                ));
            }
        }
    }
    if handler.certificate_path.is_some() != handler.certificate_key_path.is_some() {
        return Err(err(
            KEY,
            "certificate_path and certificate_key_path must be given together",
        ));
    }
    Ok(Entry {
        module,
        handler,
        models,
    })
}

/// Validates the configured handlers: the etcd store to use (`None`: the embedded store) and
/// the warnings to log.
pub fn parse(handlers: Vec<PluginConfig>) -> Result<(Option<EtcdHandler>, Vec<String>), String> {
    let entries = handlers
        .into_iter()
        .map(parse_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = entries.first() else {
        return Ok((None, vec![]));
    };
    if let Some(other) = entries.iter().find(|e| e.handler != first.handler) {
        return Err(err(
            KEY,
            format!(
                "handlers {:?} and {:?} point at different etcd stores; every model must live in one store, because a host, its cluster membership and its credentials are written in one transaction",
                first.module, other.module
            ),
        ));
    }
    // Claims, checked as the original did: every pattern matches a model, and no model is
    // claimed twice.
    let mut claimed: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        for p in &e.models {
            let re = glob(p)?;
            let matched: Vec<&str> = MODELS.iter().copied().filter(|m| re.is_match(m)).collect();
            if matched.is_empty() {
                return Err(err(
                    KEY,
                    format!(
                        "models pattern {p:?} of handler {} matches no model (models: {})",
                        i + 1,
                        MODELS.join(", ")
                    ),
                ));
            }
            for m in matched {
                if let Some(j) = claimed.insert(m, i)
                    && j != i
                {
                    return Err(err(
                        KEY,
                        format!("model {m} is claimed by handlers {} and {}", j + 1, i + 1),
                    ));
                }
            }
        }
    }
    let mut warnings = Vec::new();
    let unclaimed: Vec<&str> = MODELS
        .iter()
        .copied()
        .filter(|m| !claimed.contains_key(m))
        .collect();
    if !unclaimed.is_empty() {
        warnings.push(format!(
            "configuration key \"storage-handlers\": no handler claims {}; they are kept in the same etcd store (every model lives in one store)",
            unclaimed.join(", ")
        ));
    }
    Ok((Some(first.handler.clone()), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn h(v: Value) -> PluginConfig {
        let Value::Object(mut o) = v else { panic!() };
        let name = o.remove("name").unwrap().as_str().unwrap().to_string();
        PluginConfig {
            name,
            options: o.into_iter().collect::<Map<_, _>>(),
        }
    }

    #[test]
    fn lists_globs_and_refusals() {
        let (e, w) = parse(vec![h(json!({"name": "commissaire.storage.etcd", "server_url": "http://10.0.0.1:2379", "models": []}))]).unwrap();
        assert_eq!(e.unwrap().server_urls, ["http://10.0.0.1:2379"]);
        assert!(w.is_empty());
        // Two etcd handlers on one store share the models out: accepted.
        let (_, w) = parse(vec![
            h(json!({"name": "etcd", "models": ["Cluster*", "Network"]})),
            h(json!({"name": "commissaire.storage.etcd", "models": ["Host", "HostStatus", "ContainerManagerConfig"]})),
        ])
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let (_, w) = parse(vec![h(json!({"name": "etcd", "models": ["Host"]}))]).unwrap();
        assert!(w[0].contains("Cluster, ClusterDeploy"), "{w:?}");
        // CPD-61's example: etcd for everything, CloudForms for hosts.
        let e = parse(vec![
            h(json!({"name": "commissaire.storage.etcd", "models": ["*"]})),
            h(json!({"name": "commissaire.storage.cloudforms", "server_url": "https://example.org/api/", "models": ["Host"]})),
        ])
        .unwrap_err();
        assert!(
            e.contains("\"commissaire.storage.cloudforms\" is not available"),
            "{e}"
        );
        let e = parse(vec![
            h(json!({"name": "etcd", "server_url": "http://a:2379", "models": ["Host"]})),
            h(json!({"name": "etcd", "server_url": "http://b:2379", "models": ["Cluster"]})),
        ])
        .unwrap_err();
        assert!(e.contains("one transaction"), "{e}");
        let e = parse(vec![h(json!({"name": "etcd", "models": ["Hots"]}))]).unwrap_err();
        assert!(e.contains("\"Hots\" of handler 1 matches no model"), "{e}");
        let e = parse(vec![
            h(json!({"name": "etcd", "models": ["*"]})),
            h(json!({"name": "etcd", "models": ["Host"]})),
        ])
        .unwrap_err();
        assert!(
            e.contains("model Host is claimed by handlers 1 and 2"),
            "{e}"
        );
        // `type` is the module when a `name` labels the handler.
        let (e, _) = parse(vec![h(json!({"name": "main", "type": "etcd"}))]).unwrap();
        assert!(e.is_some());
        assert!(glob("Cluster[!D]*").unwrap().is_match("ClusterRestart"));
        assert!(!glob("Cluster[!D]*").unwrap().is_match("ClusterDeploy"));
        assert!(glob("H?st").unwrap().is_match("Host"));
    }
}
