//! The Commissaire store: the single source of truth.
//!
//! Everything an operator sees (hosts, clusters, networks, container managers, rolling-operation
//! records, sealed host credentials) is a JSON value under a readable key such as
//! `hosts/10.0.0.1`. [`Store`] is the one small interface every backend implements:
//! point reads, prefix lists, multi-key transactions guarded by compare-on-revision, and a watch
//! that replays every change after a given revision. Two backends exist:
//!
//! * [`sqlite::SqliteStore`] — embedded, one file under the data directory (the default);
//! * [`etcd::EtcdStore`] — etcd v3, keys under a prefix (default `/commissaire/`).
//!
//! Read-modify-write always goes through [`Store::txn`] with a [`Compare`] on the revision read,
//! so two servers sharing one etcd never lose each other's updates.
#![warn(missing_docs)]

pub mod etcd;
pub mod records;
pub mod secrets;
pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A store revision: grows by one with every successful write transaction.
pub type Revision = i64;

/// An etcd lease: keys written with it vanish when its holder stops renewing it.
pub type LeaseId = i64;

/// One stored key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Key relative to the store's prefix, e.g. `hosts/10.0.0.1`.
    pub key: String,
    /// The stored bytes (model JSON, or a sealed secret).
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
}

/// A condition a transaction checks before writing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key must not exist.
    Absent(String),
    /// The key must exist with exactly this modification revision.
    ModRevision(String, Revision),
}

/// One write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace `key` with `value`.
    Put {
        /// Key relative to the store's prefix.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// Create or replace `key` with `value`, bound to a lease: the key is deleted when the
    /// lease expires (etcd only; see [`Store::lease_grant`]).
    PutLeased {
        /// Key relative to the store's prefix.
        key: String,
        /// New value.
        value: Vec<u8>,
        /// The lease.
        lease: LeaseId,
    },
    /// Remove `key` (no effect and no event if it does not exist).
    Delete {
        /// Key relative to the store's prefix.
        key: String,
    },
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// `true` when every compare held and the writes were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (the new one when writes were applied).
    pub revision: Revision,
}

/// Whether a change created/replaced a key or removed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Revision of the transaction that made the change.
    pub revision: Revision,
    /// Key relative to the store's prefix.
    pub key: String,
    /// Put or delete.
    pub kind: EventKind,
    /// For a put: `true` when the key did not exist before this revision.
    pub created: bool,
    /// For a put: the new value. For a delete: the value the key had before (when known).
    pub value: Option<Vec<u8>>,
}

/// A stream of changes. Each item holds every event of one revision, in write order; items come
/// in increasing revision order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>, StoreError>> + Send>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. The API answers 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for history that the backend no longer keeps.
    #[error("revision {requested} is no longer available (history kept from revision {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// A stored value could not be decoded (corrupt or foreign data).
    #[error("stored value under {key} is unreadable: {reason}")]
    Corrupt {
        /// Key of the bad record.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Any other backend failure (disk full, I/O error, protocol error).
    #[error("store error: {0}")]
    Backend(String),
}

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The interface every store backend implements.
///
/// Keys are relative (`hosts/10.0.0.1`); each backend maps them to its own namespace. All
/// operations are bounded in time: a backend that cannot answer returns
/// [`StoreError::Unavailable`] instead of hanging.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Lists every key starting with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>>;

    /// Lists every key starting with `prefix`, sorted by key, without the values: for callers
    /// that only need to know which records exist (a worker picking its share of the hosts),
    /// so that a large fleet's records are neither transferred nor decoded.
    async fn list_keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect())
    }

    /// Applies `ops` atomically if every compare in `compares` holds; otherwise writes nothing.
    /// A transaction with no ops that succeeds does not create a new revision.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnOutcome>;

    /// The current store revision.
    async fn revision(&self) -> StoreResult<Revision>;

    /// Streams every change to keys under `prefix` with a revision `>= from`, then live changes.
    /// `from = None` starts with the next change after the call.
    async fn watch(&self, prefix: &str, from: Option<Revision>) -> StoreResult<EventStream>;

    /// Checks that the backend answers (used by `/api/v0/status`).
    async fn health(&self) -> StoreResult<()>;

    /// A short name for logs and status output (`sqlite`, `etcd`).
    fn backend_name(&self) -> &'static str;

    /// Grants a lease that expires `ttl_seconds` after its last renewal. Only stores shared
    /// between processes have leases (etcd); the embedded store answers an error, since a
    /// single process needs none. (No default: a wrapper must forward these, or leases would
    /// silently stop working behind it.)
    async fn lease_grant(&self, ttl_seconds: i64) -> StoreResult<LeaseId>;

    /// Renews a lease; `Ok(false)` when it has already expired (its keys are gone).
    async fn lease_keep_alive(&self, lease: LeaseId) -> StoreResult<bool>;

    /// Revokes a lease at once (its keys are deleted).
    async fn lease_revoke(&self, lease: LeaseId) -> StoreResult<()>;
}

/// Convenience writes built on [`Store::txn`].
#[async_trait]
pub trait StoreExt: Store {
    /// Unconditionally writes one key; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        let out = self
            .txn(
                vec![],
                vec![Op::Put {
                    key: key.to_string(),
                    value,
                }],
            )
            .await?;
        Ok(out.revision)
    }

    /// Writes one key only if its modification revision is still `expected`
    /// (`None`: only if it does not exist). Returns whether the write happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        let cmp = match expected {
            Some(rev) => Compare::ModRevision(key.to_string(), rev),
            None => Compare::Absent(key.to_string()),
        };
        let out = self
            .txn(
                vec![cmp],
                vec![Op::Put {
                    key: key.to_string(),
                    value,
                }],
            )
            .await?;
        Ok(out.succeeded)
    }

    /// Deletes one key; returns whether it existed. Guarded by the key's revision so the
    /// answer is exact even with concurrent writers.
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        // Bounded: each retry means another writer changed the key in between.
        for _ in 0..16 {
            let Some(kv) = self.get(key).await? else {
                return Ok(false);
            };
            let out = self
                .txn(
                    vec![Compare::ModRevision(key.to_string(), kv.mod_revision)],
                    vec![Op::Delete {
                        key: key.to_string(),
                    }],
                )
                .await?;
            if out.succeeded {
                return Ok(true);
            }
        }
        Err(StoreError::Backend(format!(
            "{key} kept changing while being deleted"
        )))
    }
}

/// A shared handle on whichever backend is configured.
pub type SharedStore = std::sync::Arc<dyn Store>;

impl<T: Store + ?Sized> StoreExt for T {}
