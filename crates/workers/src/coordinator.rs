//! Who does what when several processes share one store: membership of each worker kind and
//! exclusive ownership of long-running work, through etcd leases — never wall clocks.
//!
//! Each process registers `workers/<kind>/<id>` for the kinds it runs, bound to its lease
//! (renewed every third of its TTL). A rolling operation is owned through
//! `owners/<operation key>`, also bound to the owner's lease: when the owner dies its lease
//! expires, the key vanishes, and another process's next scan claims it. Hosts are shared out
//! between the live watchers by rendezvous hashing over the registered set, so each host has
//! exactly one watcher and a departure moves only the departed watcher's hosts.
//!
//! On the embedded store there is one process: [`Coordinator::local`] owns everything.

use std::sync::Arc;
use std::time::Duration;

use domain::{DomainError, DomainResult};
use sha2::{Digest, Sha256};
use store::{Compare, LeaseId, Op, SharedStore};
use tokio::sync::{RwLock, watch};

use crate::driver::WorkerKind;

/// Prefix of worker registrations (`workers/<kind>/<id>`).
pub const WORKERS: &str = "workers/";
/// Prefix of ownership keys (`owners/<key of the owned record>`).
pub const OWNERS: &str = "owners/";

/// This process's place among the processes sharing the store.
pub struct Coordinator {
    id: String,
    shared: Option<Shared>,
}

struct Shared {
    store: SharedStore,
    kinds: Vec<WorkerKind>,
    ttl: i64,
    /// `None` until a lease could be granted (the store may be down at start).
    lease: RwLock<Option<LeaseId>>,
}

impl Coordinator {
    /// The single-process case: every claim succeeds, every shard is ours.
    pub fn local(id: impl Into<String>) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            id: id.into(),
            shared: None,
        })
    }

    /// Joins the processes sharing `store` (etcd) as `id`, running `kinds`, with a lease of
    /// `ttl_seconds`. The lease is renewed until `shutdown`, then revoked (so others take over
    /// at once after a clean stop). If the store is down, the lease is granted once it answers;
    /// until then this process claims nothing.
    pub async fn etcd(
        store: SharedStore,
        id: impl Into<String>,
        kinds: Vec<WorkerKind>,
        ttl_seconds: i64,
        mut shutdown: watch::Receiver<bool>,
    ) -> Arc<Coordinator> {
        let ttl = ttl_seconds.max(2);
        let c = Arc::new(Coordinator {
            id: id.into(),
            shared: Some(Shared {
                store,
                kinds,
                ttl,
                lease: RwLock::new(None),
            }),
        });
        if let Err(e) = c.renew().await {
            tracing::warn!(error = %e, "cannot take a lease yet; retrying");
        }
        let me = c.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis((ttl as u64 * 1000) / 3);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => {
                        if let Some(s) = &me.shared
                            && let Some(lease) = *s.lease.read().await
                        {
                            let _ = s.store.lease_revoke(lease).await;
                        }
                        return;
                    }
                    _ = tokio::time::sleep(every) => {
                        if let Err(e) = me.renew().await {
                            tracing::warn!(error = %e, "cannot renew this process's lease; retrying");
                        }
                    }
                }
            }
        });
        c
    }

    /// This process's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether several processes may share the work (leases are in use).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    async fn register(&self, lease: LeaseId) -> DomainResult<()> {
        let Some(s) = &self.shared else {
            return Ok(());
        };
        let ops = s
            .kinds
            .iter()
            .map(|k| Op::PutLeased {
                key: format!("{WORKERS}{}/{}", k.as_str(), self.id),
                value: self.id.clone().into_bytes(),
                lease,
            })
            .collect();
        s.store.txn(vec![], ops).await?;
        Ok(())
    }

    async fn renew(&self) -> DomainResult<()> {
        let Some(s) = &self.shared else {
            return Ok(());
        };
        let current = *s.lease.read().await;
        if let Some(lease) = current {
            if s.store.lease_keep_alive(lease).await? {
                return Ok(());
            }
            // Expired (etcd unreachable for longer than the TTL): what we owned is gone and
            // may be someone else's by now. Start over with a new lease.
            tracing::warn!("this process's lease expired; registering again with a new one");
        }
        let fresh = s.store.lease_grant(s.ttl).await?;
        self.register(fresh).await?;
        *s.lease.write().await = Some(fresh);
        Ok(())
    }

    /// Claims exclusive ownership of the record under `key` for as long as this process
    /// lives. `true` when it is ours (newly or already).
    pub async fn claim(&self, key: &str) -> DomainResult<bool> {
        let Some(s) = &self.shared else {
            return Ok(true);
        };
        let okey = format!("{OWNERS}{key}");
        for _ in 0..8 {
            match s.store.get(&okey).await? {
                Some(kv) => return Ok(kv.value == self.id.as_bytes()),
                None => {
                    let Some(lease) = *s.lease.read().await else {
                        return Ok(false);
                    };
                    let out = s
                        .store
                        .txn(
                            vec![Compare::Absent(okey.clone())],
                            vec![Op::PutLeased {
                                key: okey.clone(),
                                value: self.id.clone().into_bytes(),
                                lease,
                            }],
                        )
                        .await?;
                    if out.succeeded {
                        return Ok(true);
                    }
                }
            }
        }
        Err(DomainError::Contended(format!(
            "ownership of {key} keeps changing"
        )))
    }

    /// Whether `key` is still ours (our lease may have expired meanwhile).
    pub async fn still_owner(&self, key: &str) -> DomainResult<bool> {
        let Some(s) = &self.shared else {
            return Ok(true);
        };
        Ok(s.store
            .get(&format!("{OWNERS}{key}"))
            .await?
            .is_some_and(|kv| kv.value == self.id.as_bytes()))
    }

    /// Gives up ownership of `key` (when the owned work is finished).
    pub async fn release(&self, key: &str) -> DomainResult<()> {
        let Some(s) = &self.shared else {
            return Ok(());
        };
        let okey = format!("{OWNERS}{key}");
        if let Some(kv) = s.store.get(&okey).await?
            && kv.value == self.id.as_bytes()
        {
            s.store
                .txn(
                    vec![Compare::ModRevision(okey.clone(), kv.mod_revision)],
                    vec![Op::Delete { key: okey }],
                )
                .await?;
        }
        Ok(())
    }

    /// The live processes running `kind` (this one included when it runs it).
    pub async fn members(&self, kind: WorkerKind) -> DomainResult<Vec<String>> {
        let Some(s) = &self.shared else {
            return Ok(vec![self.id.clone()]);
        };
        let prefix = format!("{WORKERS}{}/", kind.as_str());
        let mut ids: Vec<String> = s
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_string))
            .collect();
        if s.kinds.contains(&kind) && !ids.contains(&self.id) {
            // Our registration is being renewed: we are still one of them.
            ids.push(self.id.clone());
        }
        Ok(ids)
    }
}

/// The member that owns `key` by rendezvous (highest random weight) hashing: each member's
/// weight for a key is a hash of both; the heaviest wins. Removing a member moves only its own
/// keys.
pub fn rendezvous<'a>(members: &'a [String], key: &str) -> Option<&'a String> {
    members.iter().max_by_key(|m| {
        let mut h = Sha256::new();
        h.update(m.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_keys_and_moves_only_the_departed_members_keys() {
        let members: Vec<String> = (1..=3).map(|i| format!("w{i}")).collect();
        let keys: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let mut counts = std::collections::HashMap::new();
        for k in &keys {
            *counts
                .entry(rendezvous(&members, k).unwrap().clone())
                .or_insert(0) += 1;
        }
        for m in &members {
            assert!(counts[m] > 60, "{m} got {} of 300", counts[m]);
        }
        let two = vec![members[0].clone(), members[1].clone()];
        for k in &keys {
            let before = rendezvous(&members, k).unwrap();
            let after = rendezvous(&two, k).unwrap();
            if before != &members[2] {
                assert_eq!(before, after, "{k} moved although its owner stayed");
            }
        }
        assert_eq!(rendezvous(&[], "k"), None);
    }

    #[tokio::test]
    async fn the_local_coordinator_owns_everything() {
        let c = Coordinator::local("me");
        assert!(c.claim("cluster/c/restart").await.unwrap());
        assert!(c.still_owner("cluster/c/restart").await.unwrap());
        assert_eq!(c.members(WorkerKind::Watcher).await.unwrap(), ["me"]);
        assert!(!c.is_shared());
    }
}
