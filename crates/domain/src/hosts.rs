//! Hosts: create (by an operator or by the host itself), read, delete, credentials, status,
//! trusted SSH host keys, and [`apply`], the one way a host's state changes.

use std::net::IpAddr;

use model::{
    Cluster, Fields, Host, HostCreateRequest, HostCreds, HostStatus, HostStatusHost, Membership,
    NodeView, TrustedHostKey, canonical_address, now_timestamp,
};
use store::records::{
    self, Versioned, cluster_key, get_host_creds, get_json, host_creds_key, host_key,
    host_key_record_key, list_json, membership_key, node_key, put_host_creds, put_json,
};
use store::{Compare, Store, StoreResult};

use crate::Domain;
use crate::clusters::{self, manager_kind};
use crate::error::{DomainError, DomainResult};
use crate::jobs::Job;
use crate::lifecycle::{self, Event, ManagerKind, Outcome};
use crate::txn::{Plan, pin, transact};

/// Reads a host or answers not found.
pub async fn load(store: &dyn Store, address: &str) -> DomainResult<Versioned<Host>> {
    get_json::<Host>(store, &host_key(address))
        .await?
        .ok_or_else(|| DomainError::not_found(format!("host {address} does not exist")))
}

/// Every host.
pub async fn list(d: &Domain) -> DomainResult<Vec<Host>> {
    let hosts = list_json::<Host>(d.store.as_ref(), records::HOSTS).await?;
    Ok(hosts.into_iter().map(|v| v.value).collect())
}

/// One host.
pub async fn get(d: &Domain, address: &str) -> DomainResult<Host> {
    Ok(load(d.store.as_ref(), address).await?.value)
}

/// The name of the cluster `address` belongs to (one point read of its membership record).
pub async fn membership(store: &dyn Store, address: &str) -> StoreResult<Option<String>> {
    Ok(get_json::<Membership>(store, &membership_key(address))
        .await?
        .map(|m| m.value.cluster))
}

/// The cluster `address` belongs to, if any.
pub async fn cluster_of(store: &dyn Store, address: &str) -> StoreResult<Option<Cluster>> {
    let Some(name) = membership(store, address).await? else {
        return Ok(None);
    };
    Ok(get_json::<Cluster>(store, &cluster_key(&name))
        .await?
        .map(|c| c.value))
}

/// Peer address as a host address: IPv4-mapped IPv6 peers become plain IPv4.
fn peer_address(peer: IpAddr) -> String {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// A registration made with a registration token rather than an operator's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationScope {
    /// The token's id (its record is checked, and a single-use one consumed, in the same
    /// transaction as the host's creation).
    pub token_id: String,
    /// The only cluster the token lets a host join (it joins that one when it names none).
    pub cluster: Option<String>,
}

/// Self-registration (`PUT /host`): the address comes from the body, or else from the TCP
/// peer (the host calling at first boot). With a registration token (`scope`), the host may
/// only join the token's cluster, and the token must still hold when the host is written.
pub async fn register(
    d: &Domain,
    peer: IpAddr,
    mut req: HostCreateRequest,
    scope: Option<RegistrationScope>,
) -> DomainResult<Host> {
    let address = match &req.address {
        Some(a) => a.clone(),
        None => canonical_address("address", &peer_address(peer))?,
    };
    if let Some(RegistrationScope {
        cluster: Some(only),
        ..
    }) = &scope
    {
        match &req.cluster {
            None => req.cluster = Some(only.clone()),
            Some(c) if c == only => {}
            Some(c) => {
                return Err(DomainError::Forbidden(format!(
                    "this registration token only registers hosts into cluster {only}, not {c}"
                )));
            }
        }
    }
    create_scoped(d, address, req, scope.map(|s| s.token_id)).await
}

/// Creates a host (status `investigating`, creds sealed), joins the named cluster in the same
/// transaction, and queues its investigation. An existing host with the same key (and already
/// in the named cluster) is answered as stored, without a write.
pub async fn create(d: &Domain, address: String, req: HostCreateRequest) -> DomainResult<Host> {
    create_scoped(d, address, req, None).await
}

/// [`create`], checking (and consuming, when single-use) registration token `token_id` in the
/// same transaction.
async fn create_scoped(
    d: &Domain,
    address: String,
    req: HostCreateRequest,
    token_id: Option<String>,
) -> DomainResult<Host> {
    let key_b64 = req.ssh_priv_key.clone().unwrap_or_default();
    remote::keys::check_private_key_b64(&key_b64)
        .map_err(|e| DomainError::invalid(format!("ssh_priv_key: {e}")))?;
    let store = d.store.as_ref();
    let (address, req, key_b64, token_id) = (&address, &req, &key_b64, &token_id);
    let (host, created) = transact(store, &format!("host {address}"), || async move {
        let (token_compares, token_ops) = match token_id {
            Some(id) => crate::registration::guard_ops(store, id).await?,
            None => (vec![], vec![]),
        };
        let cluster = match &req.cluster {
            Some(name) => Some(get_json::<Cluster>(store, &cluster_key(name)).await?.ok_or_else(
                || DomainError::conflict(format!("cluster {name} does not exist; create it first")),
            )?),
            None => None,
        };
        if let Some(existing) = get_json::<Host>(store, &host_key(address)).await? {
            let creds = get_host_creds(store, &d.sealer, address).await?;
            if creds.is_none_or(|c| c.ssh_priv_key != *key_b64) {
                return Err(DomainError::conflict(format!(
                    "host {address} already exists with a different ssh_priv_key; delete it first to replace it"
                )));
            }
            if let Some(c) = &cluster
                && !c.value.hostset.contains(address)
            {
                return Err(DomainError::conflict(format!(
                    "host {address} already exists and is not a member of cluster {}",
                    c.value.name
                )));
            }
            return Ok(Plan::Done((existing.value, false)));
        }
        let host = Host::new(address.clone());
        let creds = HostCreds {
            address: address.clone(),
            ssh_priv_key: key_b64.clone(),
            remote_user: req.remote_user.clone(),
        };
        let mut compares = vec![
            Compare::Absent(host_key(address)),
            Compare::Absent(host_creds_key(address)),
        ];
        let mut ops = vec![
            put_json(&host_key(address), &host),
            put_host_creds(&d.sealer, &creds),
        ];
        compares.extend(token_compares);
        ops.extend(token_ops);
        if let Some(mut c) = cluster {
            let mkey = membership_key(address);
            compares.push(Compare::ModRevision(cluster_key(&c.value.name), c.mod_revision));
            // A leftover membership (the host was deleted while one was being written) would
            // mean another cluster: absent is the only acceptable state for a new host.
            compares.push(Compare::Absent(mkey.clone()));
            c.value.hostset.push(address.clone());
            ops.push(put_json(&cluster_key(&c.value.name), &c.value));
            ops.push(put_json(
                &mkey,
                &Membership {
                    cluster: c.value.name.clone(),
                },
            ));
        }
        Ok(Plan::write(compares, ops, (host, true)))
    })
    .await?;
    if created {
        tracing::info!(address = %address, "host registered; investigation queued");
        d.jobs.push(Job::Investigate {
            address: address.clone(),
        });
    }
    Ok(host)
}

/// Deletes a host, its credentials and trusted key, and takes it out of its cluster (and its
/// node out of the cluster's manager) in the same transaction.
pub async fn delete(d: &Domain, address: &str) -> DomainResult<()> {
    let store = d.store.as_ref();
    let removals = transact(store, &format!("host {address}"), || async move {
        let host = load(store, address).await?;
        let mkey = membership_key(address);
        let m = get_json::<Membership>(store, &mkey).await?;
        let mut compares = vec![
            Compare::ModRevision(host_key(address), host.mod_revision),
            pin(&mkey, m.as_ref().map(|m| m.mod_revision)),
        ];
        let mut ops = vec![
            records::delete(&host_key(address)),
            records::delete(&host_creds_key(address)),
            records::delete(&host_key_record_key(address)),
        ];
        let mut removals = vec![];
        if let Some(m) = m {
            ops.push(records::delete(&mkey));
            let ckey = cluster_key(&m.value.cluster);
            if let Some(mut c) = get_json::<Cluster>(store, &ckey).await? {
                compares.push(Compare::ModRevision(ckey.clone(), c.mod_revision));
                removals = clusters::node_removal_ops(
                    store,
                    &c.value,
                    std::slice::from_ref(&address.to_string()),
                )
                .await?;
                c.value.hostset.retain(|a| a != address);
                ops.push(put_json(&ckey, &c.value));
            }
        }
        ops.extend(removals.iter().cloned());
        Ok(Plan::write(compares, ops, removals))
    })
    .await?;
    clusters::queue_node_removals(d, &removals);
    tracing::info!(address = %address, "host deleted");
    Ok(())
}

/// A host's credentials (the private key: the most privileged read of the API).
pub async fn creds(d: &Domain, address: &str) -> DomainResult<HostCreds> {
    let creds = get_host_creds(d.store.as_ref(), &d.sealer, address)
        .await?
        .ok_or_else(|| DomainError::not_found(format!("host {address} has no credentials")))?;
    tracing::info!(address = %address, "host credentials read");
    Ok(creds)
}

/// A host's status: its own state and, when its cluster has a container manager, the
/// manager's view of its node (as the workers last saw it; the trivial manager's is computed).
pub async fn status(d: &Domain, address: &str) -> DomainResult<HostStatus> {
    let store = d.store.as_ref();
    let host = load(store, address).await?.value;
    let cluster = cluster_of(store, address).await?;
    let container_manager = match &cluster {
        None => None,
        Some(c) => match manager_kind(store, c).await? {
            ManagerKind::None => None,
            ManagerKind::Trivial => Some(NodeView {
                container_manager: c.container_manager.clone(),
                node: address.to_string(),
                registered: true,
                ready: true,
                unschedulable: false,
                managed: true,
                reason: "trivial container manager".into(),
                kubelet_version: String::new(),
                checked_at: now_timestamp(),
            }),
            ManagerKind::Nodes => Some(
                get_json::<NodeView>(store, &node_key(address))
                    .await?
                    .map(|v| v.value)
                    .unwrap_or_else(|| NodeView {
                        container_manager: c.container_manager.clone(),
                        node: address.to_string(),
                        reason: "the node has not been observed yet".into(),
                        ..NodeView::default()
                    }),
            ),
        },
    };
    let (kind, view) = match container_manager {
        Some(v) => (
            "container_manager",
            serde_json::to_value(v).map_err(|e| DomainError::Internal(e.to_string()))?,
        ),
        None => ("host_only", serde_json::json!({})),
    };
    Ok(HostStatus {
        kind: kind.to_string(),
        host: HostStatusHost {
            status: host.status,
            last_check: host.last_check,
            status_reason: host.status_reason,
        },
        container_manager: view,
    })
}

/// The SSH host key trusted for a host.
pub async fn hostkey(d: &Domain, address: &str) -> DomainResult<TrustedHostKey> {
    let store = d.store.as_ref();
    load(store, address).await?;
    get_json::<TrustedHostKey>(store, &host_key_record_key(address))
        .await?
        .map(|v| v.value)
        .ok_or_else(|| {
            DomainError::not_found(format!(
                "no SSH host key is recorded for host {address} yet (it is recorded at first contact)"
            ))
        })
}

/// Re-trusts a host whose SSH host key changed: with `{"key": "ssh-ed25519 AAAA..."}` exactly
/// that key, with no key whatever the host presents at the next contact. A `failed` host is
/// investigated again.
pub async fn trust_hostkey(d: &Domain, address: &str, fields: &Fields) -> DomainResult<Host> {
    let key = match fields.get("key") {
        None => None,
        Some(serde_json::Value::String(k)) => {
            let parsed = remote::keys::parse_public_key(k)
                .map_err(|e| DomainError::invalid(format!("key: {e}")))?;
            Some(TrustedHostKey {
                address: address.to_string(),
                key: parsed.openssh,
                fingerprint: parsed.fingerprint,
                trusted_at: now_timestamp(),
            })
        }
        Some(other) => {
            return Err(DomainError::invalid(format!(
                "key: must be a string, got {}",
                model::describe(other)
            )));
        }
    };
    let store = d.store.as_ref();
    let key = &key;
    let outcome = transact(store, &format!("host {address}"), || async move {
        let host = load(store, address).await?;
        let outcome = lifecycle::apply(&host.value, &Event::HostKeyRetrusted, &now_timestamp())
            .map_err(|e| DomainError::Conflict(e.to_string()))?;
        let rk = host_key_record_key(address);
        let mut ops = vec![match key {
            Some(k) => put_json(&rk, k),
            None => records::delete(&rk),
        }];
        if outcome.host != host.value {
            ops.push(put_json(&host_key(address), &outcome.host));
        }
        let cmp = Compare::ModRevision(host_key(address), host.mod_revision);
        Ok(Plan::write(vec![cmp], ops, outcome))
    })
    .await?;
    tracing::info!(address = %address, explicit = key.is_some(), "host key re-trusted");
    if outcome.investigate {
        d.jobs.push(Job::Investigate {
            address: address.to_string(),
        });
    }
    Ok(outcome.host)
}

/// Records the SSH host key a host presented on first contact, only if none is recorded yet
/// (two workers racing cannot overwrite each other's choice).
pub async fn record_first_key(store: &dyn Store, key: &TrustedHostKey) -> DomainResult<()> {
    let rk = host_key_record_key(&key.address);
    store
        .txn(vec![Compare::Absent(rk.clone())], vec![put_json(&rk, key)])
        .await?;
    Ok(())
}

/// Applies a lifecycle event to the stored host in one compare-and-swap (retried when someone
/// else wrote in between). `None` when the host no longer exists. Jobs the outcome asks for are
/// the caller's to queue (workers queue on their own queue).
pub async fn apply(
    store: &dyn Store,
    address: &str,
    event: Event,
) -> DomainResult<Option<Outcome>> {
    apply_after_first_contact(store, address, event, None).await
}

/// [`apply`] for the first event after a worker's first SSH contact with a host: the host key
/// it presented (`first_key`) is recorded in the same transaction, only if none is recorded
/// yet (as [`record_first_key`]), so first contact costs one store write instead of two.
/// Nothing is recorded when the host no longer exists.
pub async fn apply_after_first_contact(
    store: &dyn Store,
    address: &str,
    event: Event,
    first_key: Option<&TrustedHostKey>,
) -> DomainResult<Option<Outcome>> {
    apply_to(store, address, event, first_key, None).await
}

/// [`apply`] starting from `seen`, the host record as the caller read it a moment ago (the
/// watcher reads it to decide whether a check is due): the first attempt decides from it
/// instead of reading it again, and its compare-and-swap on `seen`'s revision guards against a
/// change in between (then, as for any conflict, the record is read afresh). An attempt from
/// `seen` that would write nothing is not trusted either: it is decided again from a fresh read.
pub async fn apply_seen(
    store: &dyn Store,
    seen: Versioned<Host>,
    event: Event,
) -> DomainResult<Option<Outcome>> {
    let address = seen.value.address.clone();
    apply_to(store, &address, event, None, Some(seen)).await
}

async fn apply_to(
    store: &dyn Store,
    address: &str,
    event: Event,
    first_key: Option<&TrustedHostKey>,
    seen: Option<Versioned<Host>>,
) -> DomainResult<Option<Outcome>> {
    let event = &event;
    let seen = std::sync::Mutex::new(seen);
    let seen = &seen;
    let (outcome, key_recorded) = transact(store, &format!("host {address}"), || async move {
        // Taken once: a retry after a conflict always reads.
        let given = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        let from_seen = given.is_some();
        let current = match given {
            Some(h) => h,
            None => match get_json::<Host>(store, &host_key(address)).await? {
                Some(h) => h,
                None => return Ok(Plan::Done((None, false))),
            },
        };
        let outcome = lifecycle::apply(&current.value, event, &now_timestamp())
            .map_err(|e| DomainError::NotReady(e.to_string()))?;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        if let Some(key) = first_key {
            let rk = host_key_record_key(address);
            // Another worker may have recorded one first: its choice stands.
            if store.get(&rk).await?.is_none() {
                compares.push(Compare::Absent(rk.clone()));
                ops.push(put_json(&rk, key));
            }
        }
        let key_recorded = !ops.is_empty();
        if outcome.host != current.value {
            ops.push(put_json(&host_key(address), &outcome.host));
        }
        if ops.is_empty() {
            if from_seen {
                // "Nothing to write" holds only if `seen` is still what is stored: a
                // read-only transaction checks its revision, and when it fails the next
                // attempt decides from a fresh read.
                return Ok(Plan::write(
                    vec![Compare::ModRevision(
                        host_key(address),
                        current.mod_revision,
                    )],
                    vec![],
                    (Some(outcome), false),
                ));
            }
            return Ok(Plan::Done((Some(outcome), false)));
        }
        // Also when only the key is written: a host deleted meanwhile gets no key record.
        compares.push(Compare::ModRevision(
            host_key(address),
            current.mod_revision,
        ));
        Ok(Plan::write(compares, ops, (Some(outcome), key_recorded)))
    })
    .await?;
    if let Some(key) = first_key.filter(|_| key_recorded) {
        tracing::info!(address, fingerprint = %key.fingerprint, "host key trusted on first use");
    }
    Ok(outcome)
}

/// Records the boot id and check time of a host seen during a rolling operation (not a state
/// change: the operation's own record tracks the host).
pub async fn record_contact(store: &dyn Store, address: &str, boot_id: &str) -> DomainResult<()> {
    transact(store, &format!("host {address}"), || async move {
        let Some(current) = get_json::<Host>(store, &host_key(address)).await? else {
            return Ok(Plan::Done(()));
        };
        let mut h = current.value;
        h.boot_id = boot_id.to_string();
        h.last_check = now_timestamp();
        Ok(Plan::write(
            vec![Compare::ModRevision(
                host_key(address),
                current.mod_revision,
            )],
            vec![put_json(&host_key(address), &h)],
            (),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::HostFacts;
    use model::{FailureKind, HostState};
    use std::sync::Arc;

    fn key(fingerprint: &str) -> TrustedHostKey {
        TrustedHostKey {
            address: "10.0.0.1".into(),
            key: format!("ssh-ed25519 AAAA{fingerprint}"),
            fingerprint: fingerprint.into(),
            trusted_at: now_timestamp(),
        }
    }

    async fn store_with_host() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let host = Host::new("10.0.0.1".into());
        store
            .txn(vec![], vec![put_json(&host_key("10.0.0.1"), &host)])
            .await
            .unwrap();
        (store, dir)
    }

    async fn trusted(store: &dyn Store) -> Option<String> {
        get_json::<TrustedHostKey>(store, &host_key_record_key("10.0.0.1"))
            .await
            .unwrap()
            .map(|k| k.value.fingerprint)
    }

    #[tokio::test]
    async fn first_contact_records_the_key_with_the_facts_in_one_write() {
        let (store, _dir) = store_with_host().await;
        let s = store.as_ref();
        let before = s.revision().await.unwrap();
        let facts = Event::FactsGathered(HostFacts {
            os: "fedora".into(),
            ..HostFacts::default()
        });
        let out = apply_after_first_contact(s, "10.0.0.1", facts, Some(&key("SHA256:one")))
            .await
            .unwrap()
            .expect("host exists");
        assert_eq!(out.host.status, HostState::Bootstrapping);
        assert_eq!(trusted(s).await.as_deref(), Some("SHA256:one"));
        assert_eq!(s.revision().await.unwrap(), before + 1, "one write");
        assert_eq!(load(s, "10.0.0.1").await.unwrap().value.os, "fedora");
    }

    #[tokio::test]
    async fn a_key_recorded_first_by_another_worker_stands() {
        let (store, _dir) = store_with_host().await;
        let s = store.as_ref();
        record_first_key(s, &key("SHA256:theirs")).await.unwrap();
        let failed = Event::Failed(FailureKind::Facts, "gathering facts: timed out".into());
        let out = apply_after_first_contact(s, "10.0.0.1", failed, Some(&key("SHA256:mine")))
            .await
            .unwrap()
            .expect("host exists");
        assert_eq!(out.host.status, HostState::Failed);
        assert_eq!(out.host.status_reason, "gathering facts: timed out");
        assert_eq!(trusted(s).await.as_deref(), Some("SHA256:theirs"));
    }

    #[tokio::test]
    async fn a_failure_on_first_contact_still_records_the_key() {
        let (store, _dir) = store_with_host().await;
        let s = store.as_ref();
        let failed = Event::Failed(FailureKind::Facts, "gathering facts: exit 1".into());
        apply_after_first_contact(s, "10.0.0.1", failed, Some(&key("SHA256:one")))
            .await
            .unwrap();
        assert_eq!(
            load(s, "10.0.0.1").await.unwrap().value.status,
            HostState::Failed
        );
        assert_eq!(trusted(s).await.as_deref(), Some("SHA256:one"));
    }

    /// A host the watcher checks: bootstrapped and settled.
    async fn settle(s: &dyn Store) {
        let mut h = load(s, "10.0.0.1").await.unwrap().value;
        h.status = HostState::Disassociated;
        h.bootstrapped = true;
        s.txn(vec![], vec![put_json(&host_key("10.0.0.1"), &h)])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_check_applied_to_the_record_it_read_writes_once() {
        let (store, _dir) = store_with_host().await;
        let s = store.as_ref();
        settle(s).await;
        let seen = load(s, "10.0.0.1").await.unwrap();
        let before = s.revision().await.unwrap();
        let failed = Event::CheckFailed(FailureKind::Unreachable, "unreachable: timed out".into());
        let out = apply_seen(s, seen, failed)
            .await
            .unwrap()
            .expect("host exists");
        assert_eq!(out.host.status, HostState::Failed);
        assert_eq!(s.revision().await.unwrap(), before + 1, "one write");
        assert_eq!(load(s, "10.0.0.1").await.unwrap().value, out.host);
    }

    #[tokio::test]
    async fn a_check_applied_to_a_stale_record_is_decided_again_from_the_stored_one() {
        let (store, _dir) = store_with_host().await;
        let s = store.as_ref();
        settle(s).await;
        let seen = load(s, "10.0.0.1").await.unwrap();
        // Between the read and the write, someone else changes the host.
        let mut changed = seen.value.clone();
        changed.os = "rhel".into();
        s.txn(vec![], vec![put_json(&host_key("10.0.0.1"), &changed)])
            .await
            .unwrap();
        let failed = Event::CheckFailed(FailureKind::Unreachable, "unreachable: timed out".into());
        let out = apply_seen(s, seen, failed)
            .await
            .unwrap()
            .expect("host exists");
        let stored = load(s, "10.0.0.1").await.unwrap().value;
        assert_eq!(stored.os, "rhel", "the other writer's change is kept");
        assert_eq!(stored.status, HostState::Failed);
        assert_eq!(stored.status_reason, "unreachable: timed out");
        assert_eq!(stored, out.host);
        // Deleted in between: nothing is written back.
        let seen = load(s, "10.0.0.1").await.unwrap();
        s.txn(
            vec![],
            vec![store::Op::Delete {
                key: host_key("10.0.0.1"),
            }],
        )
        .await
        .unwrap();
        let ev = Event::CheckFailed(FailureKind::Unreachable, "unreachable: timed out".into());
        assert!(apply_seen(s, seen, ev).await.unwrap().is_none());
        assert!(
            get_json::<Host>(s, &host_key("10.0.0.1"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_deleted_host_gets_no_key_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let facts = Event::FactsGathered(HostFacts::default());
        let out = apply_after_first_contact(&store, "10.0.0.1", facts, Some(&key("SHA256:one")))
            .await
            .unwrap();
        assert!(out.is_none());
        assert_eq!(trusted(&store).await, None);
    }
}
