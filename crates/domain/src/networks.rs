//! Networks. The `default` network always exists (seeded at start-up) and cannot be deleted;
//! a network a cluster uses cannot be deleted either.

use model::{Cluster, DEFAULT_NETWORK, Network};
use store::Compare;
use store::records::{
    self, get_json, list_json, list_names, network_key, network_reference_key, put_json,
};

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::txn::{Plan, pin, transact};

/// Writes the `default` network if it is missing (run at start-up; safe from several servers).
pub async fn seed_default(store: &dyn store::Store) -> store::StoreResult<()> {
    let key = network_key(DEFAULT_NETWORK);
    store
        .txn(
            vec![Compare::Absent(key.clone())],
            vec![put_json(&key, &Network::default_network())],
        )
        .await?;
    Ok(())
}

/// Every network's name.
pub async fn list(d: &Domain) -> DomainResult<Vec<String>> {
    Ok(list_names(d.store.as_ref(), records::NETWORKS).await?)
}

/// One network.
pub async fn get(d: &Domain, name: &str) -> DomainResult<Network> {
    get_json::<Network>(d.store.as_ref(), &network_key(name))
        .await?
        .map(|v| v.value)
        .ok_or_else(|| DomainError::not_found(format!("network {name} does not exist")))
}

/// Creates a network; an identical existing one is answered without a write, a different one
/// is a conflict.
pub async fn put(d: &Domain, network: Network) -> DomainResult<Network> {
    // Files named in the options must be in the operator's trusted directory.
    kube::trusted::check_network(&network)?;
    let store = d.store.as_ref();
    let name = network.name.clone();
    let key = &network_key(&name);
    let network = &network;
    transact(store, &format!("network {name}"), || async move {
        if let Some(existing) = get_json::<Network>(store, key).await? {
            return if existing.value == *network {
                Ok(Plan::Done(existing.value))
            } else {
                Err(DomainError::conflict(format!(
                    "network {} already exists with a different configuration; delete it first to change it",
                    network.name
                )))
            };
        }
        Ok(Plan::write(
            vec![Compare::Absent(key.clone())],
            vec![put_json(key, network)],
            network.clone(),
        ))
    })
    .await
}

/// Deletes a network no cluster uses.
pub async fn delete(d: &Domain, name: &str) -> DomainResult<()> {
    if name == DEFAULT_NETWORK {
        return Err(DomainError::conflict(
            "the default network cannot be deleted",
        ));
    }
    let store = d.store.as_ref();
    let key = &network_key(name);
    transact(store, &format!("network {name}"), || async move {
        let Some(existing) = store.get(key).await? else {
            return Err(DomainError::not_found(format!(
                "network {name} does not exist"
            )));
        };
        // Read before the clusters: a cluster that starts using the network after this read
        // rewrites the marker, and the compare below then fails.
        let marker = network_reference_key(name);
        let marked = store.get(&marker).await?.map(|kv| kv.mod_revision);
        let clusters = list_json::<Cluster>(store, records::CLUSTERS).await?;
        let users: Vec<&str> = clusters
            .iter()
            .filter(|c| c.value.network == name)
            .map(|c| c.value.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(DomainError::conflict(format!(
                "network {name} is used by cluster(s) {}; change their network first",
                users.join(", ")
            )));
        }
        Ok(Plan::write(
            vec![
                Compare::ModRevision(key.clone(), existing.mod_revision),
                pin(&marker, marked),
            ],
            vec![records::delete(key), records::delete(&marker)],
            (),
        ))
    })
    .await?;
    tracing::info!(network = %name, "network deleted");
    Ok(())
}
