//! Clusters and their membership.
//!
//! Membership is kept twice, always in the same transaction: the cluster's `hostset` (the
//! original's shape, what the API shows) and one `memberships/<address>` record per member.
//! Every change that adds a member compares that record's absence and the host's revision, so
//! a host can never end up in two clusters, nor a cluster name a deleted host, whatever the
//! concurrency. Joins and leaves rewrite the host's state in the same transaction
//! ([`lifecycle::Event::Join`], [`lifecycle::Event::Leave`]); the cluster is written first so
//! the change feed shows `updated Cluster` before `updated Host`.

use std::collections::{HashMap, HashSet};

use model::{
    Cluster, ClusterRequest, ClusterView, ContainerManagerConfig, ContainerManagerType,
    DEFAULT_NETWORK, Host, HostState, Membership, MembershipRequest, Network, NetworkType,
    NodeRemoval, now_timestamp,
};
use store::records::{
    self, OPERATION_KINDS, Versioned, cluster_key, container_manager_key,
    container_manager_reference_key, get_json, host_key, list_names, membership_key, network_key,
    network_reference_key, node_removal_key, operation_key, put_json,
};
use store::{Compare, Op, Store, StoreResult};

use crate::error::{DomainError, DomainResult};
use crate::jobs::Job;
use crate::lifecycle::{self, Event, ManagerKind};
use crate::txn::{Plan, pin, transact};
use crate::{Domain, operations};

/// Reads a cluster or answers not found.
pub async fn load(store: &dyn Store, name: &str) -> DomainResult<Versioned<Cluster>> {
    get_json::<Cluster>(store, &cluster_key(name))
        .await?
        .ok_or_else(|| DomainError::not_found(format!("cluster {name} does not exist")))
}

/// The kind of a cluster's container manager (a missing manager record counts as none).
pub async fn manager_kind(store: &dyn Store, cluster: &Cluster) -> StoreResult<ManagerKind> {
    Ok(manager_record(store, cluster)
        .await?
        .map_or(ManagerKind::None, |m| m.1))
}

/// The cluster's container-manager record (its revision, for compares) and kind.
async fn manager_record(
    store: &dyn Store,
    cluster: &Cluster,
) -> StoreResult<Option<(store::Revision, ManagerKind)>> {
    if cluster.container_manager.is_empty() {
        return Ok(None);
    }
    Ok(get_json::<ContainerManagerConfig>(
        store,
        &container_manager_key(&cluster.container_manager),
    )
    .await?
    .map(|cm| {
        let kind = match cm.value.kind {
            ContainerManagerType::Trivial => ManagerKind::Trivial,
            _ => ManagerKind::Nodes,
        };
        (cm.mod_revision, kind)
    }))
}

/// Writes that record node removals for hosts leaving `cluster`, when its container manager
/// has nodes. They go in the same transaction as the change itself, so the node worker learns
/// of every departure even across a crash; [`queue_node_removals`] wakes it afterwards.
pub async fn node_removal_ops(
    store: &dyn Store,
    cluster: &Cluster,
    leaving: &[String],
) -> StoreResult<Vec<Op>> {
    if leaving.is_empty() || manager_kind(store, cluster).await? != ManagerKind::Nodes {
        return Ok(vec![]);
    }
    let now = now_timestamp();
    Ok(leaving
        .iter()
        .map(|a| {
            put_json(
                &node_removal_key(a),
                &NodeRemoval {
                    address: a.clone(),
                    container_manager: cluster.container_manager.clone(),
                    requested_at: now.clone(),
                },
            )
        })
        .collect())
}

/// Hands the removals written by [`node_removal_ops`] to the node worker.
pub fn queue_node_removals(d: &Domain, ops: &[Op]) {
    for op in ops {
        if let Op::Put { key, .. } = op
            && let Some(address) = key.strip_prefix(records::NODE_REMOVALS)
        {
            d.jobs.push(Job::RemoveNode {
                address: address.to_string(),
            });
        }
    }
}

/// One record per member (`None` where it is missing), in member order: point reads for small
/// clusters, one range read over `prefix` for big ones (it beats many point reads).
async fn member_records<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    cluster: &Cluster,
    prefix: &str,
) -> DomainResult<Vec<Option<T>>> {
    if cluster.hostset.len() <= 16 {
        let mut out = Vec::with_capacity(cluster.hostset.len());
        for a in &cluster.hostset {
            out.push(
                get_json::<T>(store, &format!("{prefix}{a}"))
                    .await?
                    .map(|v| v.value),
            );
        }
        return Ok(out);
    }
    let mut all: HashMap<String, T> = store
        .list(prefix)
        .await?
        .iter()
        .map(|kv| {
            let v = records::decode::<T>(kv)?.value;
            Ok((
                kv.key.strip_prefix(prefix).unwrap_or(&kv.key).to_string(),
                v,
            ))
        })
        .collect::<StoreResult<_>>()?;
    Ok(cluster.hostset.iter().map(|a| all.remove(a)).collect())
}

/// The API view of a cluster: computed status from its members' states and, when its manager
/// has nodes, a summary of their node views.
pub async fn view(store: &dyn Store, cluster: &Cluster) -> DomainResult<ClusterView> {
    let states: Vec<Option<HostState>> = member_records::<Host>(store, cluster, records::HOSTS)
        .await?
        .into_iter()
        .map(|h| h.map(|h| h.status))
        .collect();
    let mut v = ClusterView::compute(cluster, &states);
    if manager_kind(store, cluster).await? == ManagerKind::Nodes {
        let views = member_records::<model::NodeView>(store, cluster, records::NODES).await?;
        v.nodes = Some(model::ClusterNodesSummary::compute(&views));
    }
    Ok(v)
}

/// Every cluster's name.
pub async fn list(d: &Domain) -> DomainResult<Vec<String>> {
    Ok(list_names(d.store.as_ref(), records::CLUSTERS).await?)
}

/// One cluster's view.
pub async fn get(d: &Domain, name: &str) -> DomainResult<ClusterView> {
    let store = d.store.as_ref();
    view(store, &load(store, name).await?.value).await
}

/// Checks that a cluster on `network` can work on this store, and answers the network
/// record's revision (compared by the write: the network cannot vanish under it).
async fn check_network(d: &Domain, name: &str) -> DomainResult<Option<store::Revision>> {
    let stored = get_json::<Network>(d.store.as_ref(), &network_key(name)).await?;
    let (network, rev) = match stored {
        Some(n) => (n.value, Some(n.mod_revision)),
        None if name == DEFAULT_NETWORK => (Network::default_network(), None),
        None => {
            return Err(DomainError::invalid(format!(
                "network: network {name} does not exist; create it first"
            )));
        }
    };
    if network.kind == NetworkType::FlannelEtcd
        && !network.options.contains_key("server_url")
        && !d.store_is_etcd()
    {
        return Err(DomainError::invalid(format!(
            "network: network {name} is flannel_etcd without options.server_url, and this server \
             runs on the embedded store, which flannel cannot use; create a flannel_server network \
             (PUT /api/v0/network/NAME {{\"type\": \"flannel_server\", \"options\": {{\"address\": \"HOST:PORT\"}}}}) \
             and name it here, give the network a server_url, or run the server on etcd"
        )));
    }
    Ok(rev)
}

/// Creates a cluster, or updates the fields given (members and operations are kept).
pub async fn put(d: &Domain, name: &str, req: ClusterRequest) -> DomainResult<ClusterView> {
    let store = d.store.as_ref();
    let req = &req;
    let cluster = transact(store, &format!("cluster {name}"), || async move {
        let existing = get_json::<Cluster>(store, &cluster_key(name)).await?;
        let is_new = existing.is_none();
        let mut compares = vec![pin(
            &cluster_key(name),
            existing.as_ref().map(|c| c.mod_revision),
        )];
        let mut cluster = match existing {
            Some(c) => c.value,
            None => Cluster {
                name: name.to_string(),
                status: String::new(),
                network: DEFAULT_NETWORK.to_string(),
                container_manager: String::new(),
                hostset: vec![],
            },
        };
        let before = cluster.clone();
        if let Some(n) = &req.network {
            cluster.network = n.clone();
        }
        if let Some(cm) = &req.container_manager {
            cluster.container_manager = cm.clone();
        }
        if !is_new && cluster == before {
            return Ok(Plan::Done(cluster));
        }
        // Starting to use a network or container manager rewrites its reference marker, so a
        // concurrent delete that found no user fails its compare (see `records::REFERENCES`).
        let mut ops = vec![];
        if (is_new || cluster.network != before.network)
            && let Some(rev) = check_network(d, &cluster.network).await?
        {
            compares.push(Compare::ModRevision(network_key(&cluster.network), rev));
            ops.push(reference_marker(
                &network_reference_key(&cluster.network),
                name,
            ));
        }
        if !cluster.container_manager.is_empty()
            && cluster.container_manager != before.container_manager
        {
            match manager_record(store, &cluster).await? {
                Some((rev, _)) => {
                    compares.push(Compare::ModRevision(
                        container_manager_key(&cluster.container_manager),
                        rev,
                    ));
                    ops.push(reference_marker(
                        &container_manager_reference_key(&cluster.container_manager),
                        name,
                    ));
                }
                None => {
                    return Err(DomainError::invalid(format!(
                        "container_manager: container manager {} does not exist; create it first",
                        cluster.container_manager
                    )));
                }
            }
        }
        ops.push(put_json(&cluster_key(name), &cluster));
        tracing::info!(cluster = %name, created = is_new, "cluster saved");
        Ok(Plan::write(compares, ops, cluster))
    })
    .await?;
    view(store, &cluster).await
}

/// The write that marks a network or container manager as (re)referenced: its value names the
/// cluster that did it last, for whoever reads the store by hand.
fn reference_marker(key: &str, cluster: &str) -> Op {
    put_json(key, &serde_json::json!({ "cluster": cluster }))
}

/// Deletes a cluster and its operation records; its members leave it (and their nodes its
/// manager). Refused while an operation runs.
///
/// The transaction deletes the cluster, its operation records and writes the node removals
/// only, so that it stays within etcd's limit on operations per transaction for clusters of
/// any size; the members' membership records and states are then released one host at a time
/// ([`release_member`]). Until then a membership naming a cluster that no longer exists counts
/// as none (joins take it over), so nothing is ever stuck.
pub async fn delete(d: &Domain, name: &str) -> DomainResult<()> {
    let store = d.store.as_ref();
    let (removals, members) = transact(store, &format!("cluster {name}"), || async move {
        let c = load(store, name).await?;
        if let Some(active) = operations::active(store, name).await? {
            return Err(DomainError::conflict(format!(
                "cluster {name} has a {} in progress; cancel it first (DELETE /api/v0/cluster/{name}/{})",
                active.kind, active.kind
            )));
        }
        let compares = vec![Compare::ModRevision(cluster_key(name), c.mod_revision)];
        let mut ops = vec![records::delete(&cluster_key(name))];
        for kind in OPERATION_KINDS {
            ops.push(records::delete(&operation_key(name, kind)));
        }
        let removals = node_removal_ops(store, &c.value, &c.value.hostset).await?;
        ops.extend(removals.iter().cloned());
        Ok(Plan::write(compares, ops, (removals, c.value.hostset)))
    })
    .await?;
    queue_node_removals(d, &removals);
    for a in &members {
        if let Err(e) = release_member(store, name, a).await {
            // The membership names a cluster that no longer exists: harmless, and cleaned at
            // the next start.
            tracing::warn!(cluster = %name, address = %a, error = %e, "cannot release a member of a deleted cluster yet");
        }
    }
    tracing::info!(cluster = %name, "cluster deleted");
    Ok(())
}

/// After cluster `name` was deleted: drops `address`'s membership record if it still names
/// that cluster (and the cluster is still gone), and makes the host leave it.
pub async fn release_member(store: &dyn Store, name: &str, address: &str) -> DomainResult<()> {
    transact(store, &format!("host {address}"), || async move {
        let mkey = membership_key(address);
        let Some(m) = get_json::<Membership>(store, &mkey).await? else {
            return Ok(Plan::Done(()));
        };
        if m.value.cluster != name {
            return Ok(Plan::Done(()));
        }
        let mut compares = vec![
            Compare::ModRevision(mkey.clone(), m.mod_revision),
            Compare::Absent(cluster_key(name)),
        ];
        let mut ops = vec![records::delete(&mkey)];
        if let Some(h) = get_json::<Host>(store, &host_key(address)).await? {
            let left = lifecycle::apply(&h.value, &Event::Leave, &now_timestamp())
                .map_err(|e| DomainError::Internal(e.to_string()))?;
            compares.push(Compare::ModRevision(host_key(address), h.mod_revision));
            if left.host != h.value {
                ops.push(put_json(&host_key(address), &left.host));
            }
        }
        Ok(Plan::write(compares, ops, ()))
    })
    .await
}

/// The member addresses.
pub async fn members(d: &Domain, name: &str) -> DomainResult<Vec<String>> {
    Ok(load(d.store.as_ref(), name).await?.value.hostset)
}

/// `[address]` if the host is a member, else not found.
pub async fn member(d: &Domain, name: &str, address: &str) -> DomainResult<Vec<String>> {
    let c = load(d.store.as_ref(), name).await?;
    if c.value.hostset.iter().any(|a| a == address) {
        Ok(vec![address.to_string()])
    } else {
        Err(DomainError::not_found(format!(
            "host {address} is not a member of cluster {name}"
        )))
    }
}

/// What a membership change decided for one transaction.
struct Change {
    compares: Vec<Compare>,
    ops: Vec<Op>,
    investigate: Vec<String>,
}

/// Compares and writes that add `joining` to cluster `name`: each host must exist, be in no
/// cluster (its membership record absent) and be ready to join; it is rewritten by the
/// lifecycle's join rule. Missing hosts answer not found; hosts in another cluster a conflict;
/// hosts not ready one not-ready error naming them all.
async fn join_ops(
    store: &dyn Store,
    name: &str,
    kind: ManagerKind,
    joining: &[String],
) -> DomainResult<Change> {
    let mut change = Change {
        compares: vec![],
        ops: vec![],
        investigate: vec![],
    };
    let mut not_ready = vec![];
    let now = now_timestamp();
    for a in joining {
        let Some(h) = get_json::<Host>(store, &host_key(a)).await? else {
            return Err(DomainError::not_found(format!("host {a} does not exist")));
        };
        let mkey = membership_key(a);
        // A membership naming a cluster that was deleted (and not yet released) is taken
        // over: compared on its revision and on that cluster's absence.
        let mut membership_cmp = vec![Compare::Absent(mkey.clone())];
        if let Some(m) = get_json::<Membership>(store, &mkey).await?
            && m.value.cluster != name
        {
            let other = cluster_key(&m.value.cluster);
            if store.get(&other).await?.is_some() {
                return Err(DomainError::conflict(format!(
                    "host {a} is already a member of cluster {}; remove it from there first",
                    m.value.cluster
                )));
            }
            membership_cmp = vec![
                Compare::ModRevision(mkey.clone(), m.mod_revision),
                Compare::Absent(other),
            ];
        }
        match lifecycle::apply(&h.value, &Event::Join(kind), &now) {
            Err(_) => not_ready.push(format!("{a} (status: {})", h.value.status)),
            Ok(outcome) => {
                change
                    .compares
                    .push(Compare::ModRevision(host_key(a), h.mod_revision));
                change.compares.extend(membership_cmp);
                change.ops.push(put_json(&host_key(a), &outcome.host));
                change.ops.push(put_json(
                    &mkey,
                    &Membership {
                        cluster: name.to_string(),
                    },
                ));
                if outcome.investigate {
                    change.investigate.push(a.clone());
                }
            }
        }
    }
    if !not_ready.is_empty() {
        return Err(DomainError::NotReady(format!(
            "hosts not ready to join cluster {name} (only active or disassociated hosts may join): {}",
            not_ready.join(", ")
        )));
    }
    Ok(change)
}

/// Compares and writes that take `leaving` out of cluster `name`: membership records deleted,
/// hosts rewritten by the lifecycle's leave rule.
async fn leave_ops(
    store: &dyn Store,
    name: &str,
    leaving: &[String],
) -> DomainResult<(Vec<Compare>, Vec<Op>)> {
    let mut compares = vec![];
    let mut ops = vec![];
    let now = now_timestamp();
    for a in leaving {
        let mkey = membership_key(a);
        let m = get_json::<Membership>(store, &mkey).await?;
        compares.push(pin(&mkey, m.as_ref().map(|m| m.mod_revision)));
        if m.is_some_and(|m| m.value.cluster == name) {
            ops.push(records::delete(&mkey));
        }
        if let Some(h) = get_json::<Host>(store, &host_key(a)).await? {
            let outcome = lifecycle::apply(&h.value, &Event::Leave, &now)
                .map_err(|e| DomainError::Internal(e.to_string()))?;
            compares.push(Compare::ModRevision(host_key(a), h.mod_revision));
            if outcome.host != h.value {
                ops.push(put_json(&host_key(a), &outcome.host));
            }
        }
    }
    Ok((compares, ops))
}

fn queue_investigations(d: &Domain, addresses: Vec<String>) {
    for address in addresses {
        d.jobs.push(Job::Investigate { address });
    }
}

/// Idempotent join of one host (`PUT /cluster/{n}/hosts/{a}`).
pub async fn join(d: &Domain, name: &str, address: &str) -> DomainResult<Vec<String>> {
    let store = d.store.as_ref();
    let investigate = transact(store, &format!("cluster {name}"), || async move {
        let c = load(store, name).await?;
        if c.value.hostset.iter().any(|a| a == address) {
            crate::hosts::load(store, address).await?;
            return Ok(Plan::Done(vec![]));
        }
        let kind = manager_kind(store, &c.value).await?;
        let change = join_ops(store, name, kind, &[address.to_string()]).await?;
        let mut compares = vec![Compare::ModRevision(cluster_key(name), c.mod_revision)];
        compares.extend(change.compares);
        let mut cluster = c.value;
        cluster.hostset.push(address.to_string());
        let mut ops = vec![put_json(&cluster_key(name), &cluster)];
        ops.extend(change.ops);
        Ok(Plan::write(compares, ops, change.investigate))
    })
    .await?;
    tracing::info!(cluster = %name, address = %address, "host joined cluster");
    queue_investigations(d, investigate);
    Ok(vec![address.to_string()])
}

/// Idempotent leave of one host (`DELETE /cluster/{n}/hosts/{a}`).
pub async fn leave(d: &Domain, name: &str, address: &str) -> DomainResult<()> {
    let store = d.store.as_ref();
    let removals = transact(store, &format!("cluster {name}"), || async move {
        let c = load(store, name).await?;
        if !c.value.hostset.iter().any(|a| a == address) {
            return Ok(Plan::Done(vec![]));
        }
        let leaving = [address.to_string()];
        let mut compares = vec![Compare::ModRevision(cluster_key(name), c.mod_revision)];
        let (cmp, host_ops) = leave_ops(store, name, &leaving).await?;
        compares.extend(cmp);
        let removals = node_removal_ops(store, &c.value, &leaving).await?;
        let mut cluster = c.value;
        cluster.hostset.retain(|a| a != address);
        let mut ops = vec![put_json(&cluster_key(name), &cluster)];
        ops.extend(host_ops);
        ops.extend(removals.iter().cloned());
        Ok(Plan::write(compares, ops, removals))
    })
    .await?;
    if !removals.is_empty() {
        queue_node_removals(d, &removals);
    }
    tracing::info!(cluster = %name, address = %address, "host left cluster");
    Ok(())
}

/// Replaces the member list if it still equals `old` (`PUT /cluster/{n}/hosts`). New members
/// join and departing ones leave by the same rules as single joins and leaves. Linear in the
/// size of the lists.
pub async fn set_members(
    d: &Domain,
    name: &str,
    req: MembershipRequest,
) -> DomainResult<ClusterView> {
    let store = d.store.as_ref();
    let old: HashSet<&str> = req.old.iter().map(String::as_str).collect();
    let mut seen = HashSet::with_capacity(req.new.len());
    let new: Vec<String> = req
        .new
        .iter()
        .filter(|a| seen.insert(a.as_str()))
        .cloned()
        .collect();
    let (old, new) = (&old, &new);
    let (cluster, investigate, removals) =
        transact(store, &format!("cluster {name}"), || async move {
            let c = load(store, name).await?;
            let current: HashSet<&str> = c.value.hostset.iter().map(String::as_str).collect();
            if current != *old {
                return Err(DomainError::conflict(format!(
                    "the members of cluster {name} are not the given old list (current: [{}]); read them again",
                    c.value.hostset.join(", ")
                )));
            }
            if c.value.hostset == *new {
                return Ok(Plan::Done((c.value, vec![], vec![])));
            }
            let wanted: HashSet<&str> = new.iter().map(String::as_str).collect();
            let joining: Vec<String> = new
                .iter()
                .filter(|a| !current.contains(a.as_str()))
                .cloned()
                .collect();
            let leaving: Vec<String> = c
                .value
                .hostset
                .iter()
                .filter(|a| !wanted.contains(a.as_str()))
                .cloned()
                .collect();
            let kind = manager_kind(store, &c.value).await?;
            let change = join_ops(store, name, kind, &joining).await?;
            let (leave_cmp, leave_host_ops) = leave_ops(store, name, &leaving).await?;
            let removals = node_removal_ops(store, &c.value, &leaving).await?;
            let mut compares = vec![Compare::ModRevision(cluster_key(name), c.mod_revision)];
            compares.extend(change.compares);
            compares.extend(leave_cmp);
            let mut cluster = c.value;
            cluster.hostset = new.clone();
            let mut ops = vec![put_json(&cluster_key(name), &cluster)];
            ops.extend(change.ops);
            ops.extend(leave_host_ops);
            ops.extend(removals.iter().cloned());
            Ok(Plan::write(
                compares,
                ops,
                (cluster, change.investigate, removals),
            ))
        })
        .await?;
    queue_node_removals(d, &removals);
    queue_investigations(d, investigate);
    view(store, &cluster).await
}

/// Writes the `memberships/` records of stores created before they existed (or repairs them
/// after a crash of an older version): every member of every cluster gets one, unless it
/// already belongs to another cluster, which is logged. Safe to run from several servers.
pub async fn backfill_memberships(store: &dyn Store) -> DomainResult<usize> {
    let mut written = 0;
    for kv in store.list(records::MEMBERSHIPS).await? {
        let m = records::decode::<Membership>(&kv)?.value;
        let address = kv.key.strip_prefix(records::MEMBERSHIPS).unwrap_or(&kv.key);
        if store.get(&cluster_key(&m.cluster)).await?.is_none() {
            // Left behind by a cluster delete that stopped before releasing its members.
            release_member(store, &m.cluster, address).await?;
        }
    }
    for c in records::list_json::<Cluster>(store, records::CLUSTERS).await? {
        for a in &c.value.hostset {
            let mkey = membership_key(a);
            match get_json::<Membership>(store, &mkey).await? {
                Some(m) if m.value.cluster != c.value.name => tracing::warn!(
                    address = %a, cluster = %c.value.name, other = %m.value.cluster,
                    "host is listed by two clusters; it belongs to the one its membership names"
                ),
                Some(_) => {}
                None => {
                    let out = store
                        .txn(
                            vec![
                                Compare::Absent(mkey.clone()),
                                Compare::ModRevision(cluster_key(&c.value.name), c.mod_revision),
                            ],
                            vec![put_json(
                                &mkey,
                                &Membership {
                                    cluster: c.value.name.clone(),
                                },
                            )],
                        )
                        .await?;
                    written += usize::from(out.succeeded);
                }
            }
        }
    }
    Ok(written)
}
