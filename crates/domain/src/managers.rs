//! Container managers. Secret options (`token`) are sealed in their own record and shown as
//! `<redacted>`; the stored configuration record never holds them in clear.

use std::collections::BTreeMap;

use model::{Cluster, ContainerManagerConfig, SECRET_OPTION_KEYS};
use store::records::{
    self, container_manager_key, container_manager_reference_key, container_manager_secrets_key,
    get_container_manager_secrets, get_json, list_json, list_names, put_container_manager_secrets,
    put_json,
};
use store::{Compare, Store};

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::txn::{Plan, pin, transact};

/// Splits secret options out of a configuration: (record to store, secrets to seal).
fn split_secrets(
    cfg: &ContainerManagerConfig,
) -> (ContainerManagerConfig, BTreeMap<String, serde_json::Value>) {
    let mut public = cfg.clone();
    let mut secrets = BTreeMap::new();
    for key in SECRET_OPTION_KEYS {
        if let Some(v) = public.options.remove(*key) {
            secrets.insert(key.to_string(), v);
        }
    }
    (public, secrets)
}

/// Reads a configuration with its secrets opened (for comparison and for the workers).
pub async fn load_full(
    store: &dyn Store,
    sealer: &store::secrets::Sealer,
    name: &str,
) -> DomainResult<Option<ContainerManagerConfig>> {
    let Some(v) = get_json::<ContainerManagerConfig>(store, &container_manager_key(name)).await?
    else {
        return Ok(None);
    };
    let mut cfg = v.value;
    cfg.options
        .extend(get_container_manager_secrets(store, sealer, name).await?);
    Ok(Some(cfg))
}

/// Every container manager's name.
pub async fn list(d: &Domain) -> DomainResult<Vec<String>> {
    Ok(list_names(d.store.as_ref(), records::CONTAINER_MANAGERS).await?)
}

/// One container manager, secrets redacted.
pub async fn get(d: &Domain, name: &str) -> DomainResult<ContainerManagerConfig> {
    load_full(d.store.as_ref(), &d.sealer, name)
        .await?
        .map(|cfg| cfg.redacted())
        .ok_or_else(|| DomainError::not_found(format!("container manager {name} does not exist")))
}

/// Creates a container manager whose client can be built (an unusable configuration is the
/// operator's to fix, and better told now than when the first host joins). An existing one is
/// answered without a write when the request repeats it without secrets; any other re-PUT,
/// including one that carries a secret, is a conflict. Answers the redacted configuration.
pub async fn put(d: &Domain, cfg: ContainerManagerConfig) -> DomainResult<ContainerManagerConfig> {
    kube::manager_for(&cfg).map_err(|e| DomainError::invalid(format!("options: {e}")))?;
    let store = d.store.as_ref();
    let name = cfg.name.clone();
    let key = &container_manager_key(&name);
    let cfg = &cfg;
    let out = transact(store, &format!("container manager {name}"), || async move {
        if let Some(existing) = load_full(store, &d.sealer, &cfg.name).await? {
            // Secrets are never compared (that would let a caller confirm a guessed token):
            // see `container_manager_reput_matches`.
            return if model::request::container_manager_reput_matches(&existing, cfg) {
                Ok(Plan::Done(existing))
            } else {
                Err(DomainError::conflict(format!(
                    "container manager {} already exists with a different configuration; delete it first to change it",
                    cfg.name
                )))
            };
        }
        let (public, secrets) = split_secrets(cfg);
        let mut ops = vec![put_json(key, &public)];
        if !secrets.is_empty() {
            ops.push(put_container_manager_secrets(&d.sealer, &cfg.name, &secrets));
        }
        Ok(Plan::write(vec![Compare::Absent(key.clone())], ops, cfg.clone()))
    })
    .await?;
    tracing::info!(container_manager = %name, "container manager saved");
    Ok(out.redacted())
}

/// Deletes a container manager no cluster uses.
pub async fn delete(d: &Domain, name: &str) -> DomainResult<()> {
    let store = d.store.as_ref();
    let key = &container_manager_key(name);
    transact(store, &format!("container manager {name}"), || async move {
        let Some(existing) = store.get(key).await? else {
            return Err(DomainError::not_found(format!(
                "container manager {name} does not exist"
            )));
        };
        // Read before the clusters: a cluster that starts using the manager after this read
        // rewrites the marker, and the compare below then fails.
        let marker = container_manager_reference_key(name);
        let marked = store.get(&marker).await?.map(|kv| kv.mod_revision);
        let clusters = list_json::<Cluster>(store, records::CLUSTERS).await?;
        let users: Vec<&str> = clusters
            .iter()
            .filter(|c| c.value.container_manager == name)
            .map(|c| c.value.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(DomainError::conflict(format!(
                "container manager {name} is used by cluster(s) {}; change their container_manager first",
                users.join(", ")
            )));
        }
        Ok(Plan::write(
            vec![
                Compare::ModRevision(key.clone(), existing.mod_revision),
                pin(&marker, marked),
            ],
            vec![
                records::delete(key),
                records::delete(&container_manager_secrets_key(name)),
                records::delete(&marker),
            ],
            (),
        ))
    })
    .await?;
    tracing::info!(container_manager = %name, "container manager deleted");
    Ok(())
}
