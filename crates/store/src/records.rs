//! Typed access to the records Commissaire keeps: where each model lives in the key space, how
//! it is encoded, and how secrets are sealed on the way in and opened on the way out.
//!
//! Key layout (relative to the store prefix, as in the original's etcd layout):
//! `hosts/<address>`, `clusters/<name>`, `cluster/<name>/restart|upgrade|deploy`,
//! `networks/<name>`, `container_managers/<name>`, `secrets/hosts/<address>` (sealed
//! [`HostCreds`]), `secrets/container_managers/<name>` (sealed secret options), `nodes/<address>`
//! and `node_removals/<address>` (container-manager state of hosts), `memberships/<address>`
//! (the cluster a host belongs to), `registration_tokens/<id>` (digests of registration tokens)
//! and `audit/<id>` (the audit log).

use std::collections::BTreeMap;

use model::HostCreds;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::secrets::Sealer;
use crate::{KeyValue, Op, Revision, Store, StoreError, StoreResult};

/// Prefix of host records.
pub const HOSTS: &str = "hosts/";
/// Prefix of cluster records.
pub const CLUSTERS: &str = "clusters/";
/// Prefix of network records.
pub const NETWORKS: &str = "networks/";
/// Prefix of container-manager records.
pub const CONTAINER_MANAGERS: &str = "container_managers/";
/// Prefix of every sealed secret; nothing under it is ever shown or streamed.
pub const SECRETS: &str = "secrets/";
/// Prefix of trusted SSH host keys (`host_keys/<address>`), recorded on first contact.
pub const HOST_KEYS: &str = "host_keys/";
/// Prefix of rolling-operation records (`cluster/<name>/<kind>`).
pub const OPERATIONS: &str = "cluster/";
/// Prefix of container managers' views of host nodes (`nodes/<address>`, a [`model::NodeView`]).
pub const NODES: &str = "nodes/";
/// Prefix of membership records (`memberships/<address>`, a [`model::Membership`]): the one
/// cluster a host belongs to. Written in the same transaction as the cluster's `hostset`, and
/// compared by every transaction that adds a member, so a host can never be in two clusters.
pub const MEMBERSHIPS: &str = "memberships/";
/// Prefix of pending node removals (`node_removals/<address>`, a [`model::NodeRemoval`]),
/// written with the change that takes a host out of its cluster and deleted once done.
pub const NODE_REMOVALS: &str = "node_removals/";
/// Prefix of reference markers (`references/networks/<name>`,
/// `references/container_managers/<name>`): rewritten by every transaction that makes a cluster
/// start using the network or container manager, and compared by the transaction that deletes
/// it, so that a delete that checked "no cluster uses it" fails if a cluster started using it
/// in between. Not shown by the API.
pub const REFERENCES: &str = "references/";
/// Prefix of registration tokens (`registration_tokens/<id>`): the token's digest, scope and
/// expiry, never the token itself.
pub const REGISTRATION_TOKENS: &str = "registration_tokens/";
/// Prefix of audit records (`audit/<sortable id>`), bounded and pruned oldest first.
pub const AUDIT: &str = "audit/";
/// The kinds of rolling operation, as they appear in keys and URLs.
pub const OPERATION_KINDS: &[&str] = &["restart", "upgrade", "deploy"];

/// Key of the reference marker of a network.
pub fn network_reference_key(name: &str) -> String {
    format!("{REFERENCES}networks/{name}")
}
/// Key of the reference marker of a container manager.
pub fn container_manager_reference_key(name: &str) -> String {
    format!("{REFERENCES}container_managers/{name}")
}

/// Key of a host record.
pub fn host_key(address: &str) -> String {
    format!("{HOSTS}{address}")
}
/// Key of a host's sealed credentials.
pub fn host_creds_key(address: &str) -> String {
    format!("{SECRETS}hosts/{address}")
}
/// Key of a host's trusted SSH host key record.
pub fn host_key_record_key(address: &str) -> String {
    format!("{HOST_KEYS}{address}")
}

/// Key of a host's membership record.
pub fn membership_key(address: &str) -> String {
    format!("{MEMBERSHIPS}{address}")
}

/// Key of the container manager's view of a host's node.
pub fn node_key(address: &str) -> String {
    format!("{NODES}{address}")
}
/// Key of a pending removal of a host's node.
pub fn node_removal_key(address: &str) -> String {
    format!("{NODE_REMOVALS}{address}")
}

/// Key of a cluster record.
pub fn cluster_key(name: &str) -> String {
    format!("{CLUSTERS}{name}")
}
/// Key of one of a cluster's operation records.
pub fn operation_key(cluster: &str, kind: &str) -> String {
    format!("{OPERATIONS}{cluster}/{kind}")
}
/// Key of a network record.
pub fn network_key(name: &str) -> String {
    format!("{NETWORKS}{name}")
}
/// Key of a container-manager record.
pub fn container_manager_key(name: &str) -> String {
    format!("{CONTAINER_MANAGERS}{name}")
}
/// Key of a container manager's sealed secret options.
pub fn container_manager_secrets_key(name: &str) -> String {
    format!("{SECRETS}container_managers/{name}")
}

/// A decoded record with the revision it was read at (for compare-and-swap).
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its modification revision.
    pub mod_revision: Revision,
}

/// Decodes one stored JSON record.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> StoreResult<Versioned<T>> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        mod_revision: kv.mod_revision,
    })
}

/// Reads and decodes one JSON record.
pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> StoreResult<Option<Versioned<T>>> {
    store.get(key).await?.map(|kv| decode(&kv)).transpose()
}

/// Reads and decodes every JSON record under `prefix`, in key order.
pub async fn list_json<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> StoreResult<Vec<Versioned<T>>> {
    store.list(prefix).await?.iter().map(decode).collect()
}

/// Lists the names (key suffixes) of records directly under `prefix`.
pub async fn list_names(store: &dyn Store, prefix: &str) -> StoreResult<Vec<String>> {
    Ok(store
        .list_keys(prefix)
        .await?
        .into_iter()
        .filter_map(|key| key.strip_prefix(prefix).map(str::to_string))
        .filter(|n| !n.contains('/'))
        .collect())
}

/// A put of a JSON record.
pub fn put_json<T: Serialize>(key: &str, value: &T) -> Op {
    Op::Put {
        key: key.to_string(),
        value: serde_json::to_vec(value).expect("models always serialize"),
    }
}

/// A delete.
pub fn delete(key: &str) -> Op {
    Op::Delete {
        key: key.to_string(),
    }
}

/// Seals host credentials into a put for their secrets key.
pub fn put_host_creds(sealer: &Sealer, creds: &HostCreds) -> Op {
    let key = host_creds_key(&creds.address);
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(creds).expect("creds serialize"));
    Op::Put {
        value: sealer.seal(&key, &plain),
        key,
    }
}

/// Reads and opens a host's credentials.
pub async fn get_host_creds(
    store: &dyn Store,
    sealer: &Sealer,
    address: &str,
) -> StoreResult<Option<HostCreds>> {
    let key = host_creds_key(address);
    let Some(kv) = store.get(&key).await? else {
        return Ok(None);
    };
    let plain = sealer
        .open(&key, &kv.value)
        .map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|_| StoreError::Corrupt {
            key,
            reason: "sealed credentials are not valid JSON".into(),
        })
}

/// Seals a container manager's secret options (e.g. `token`).
pub fn put_container_manager_secrets(
    sealer: &Sealer,
    name: &str,
    secrets: &BTreeMap<String, serde_json::Value>,
) -> Op {
    let key = container_manager_secrets_key(name);
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(secrets).expect("json serializes"));
    Op::Put {
        value: sealer.seal(&key, &plain),
        key,
    }
}

/// Reads and opens a container manager's secret options (empty when there are none).
pub async fn get_container_manager_secrets(
    store: &dyn Store,
    sealer: &Sealer,
    name: &str,
) -> StoreResult<BTreeMap<String, serde_json::Value>> {
    let key = container_manager_secrets_key(name);
    let Some(kv) = store.get(&key).await? else {
        return Ok(BTreeMap::new());
    };
    let plain = sealer
        .open(&key, &kv.value)
        .map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    serde_json::from_slice(&plain).map_err(|_| StoreError::Corrupt {
        key,
        reason: "sealed options are not valid JSON".into(),
    })
}
