//! The rules of Commissaire over the store, between the HTTP layer and the workers.
//!
//! Every rule of the API about hosts, clusters, membership, networks, container managers and
//! rolling-operation records lives here, and every host status change goes through the
//! [`lifecycle`] state machine. Each operation is one read-modify-write
//! ([`txn::transact`]) whose compares cover every record a rule depends on, so the rules hold
//! for concurrent requests and for any number of servers sharing one store:
//!
//! * a host is a member of at most one cluster — the `memberships/<address>` record is written
//!   with the cluster's `hostset` and compared (absent) by every join;
//! * a cluster never names a host that does not exist — a join compares the host's revision,
//!   a host delete compares its membership record and rewrites the cluster;
//! * a host's status agrees with its cluster's container manager — joins and leaves rewrite
//!   the host in the same transaction as the cluster.
//!
//! Failures are [`DomainError`]s, which the HTTP layer maps to status codes in one place.
#![warn(missing_docs)]

pub mod audit;
pub mod clusters;
pub mod error;
pub mod hosts;
pub mod jobs;
pub mod lifecycle;
pub mod managers;
pub mod networks;
pub mod nodes;
pub mod operations;
pub mod registration;
pub mod txn;

use std::sync::Arc;

use store::SharedStore;
use store::secrets::Sealer;

pub use error::{DomainError, DomainResult};
pub use jobs::{Job, JobQueue};

/// What domain operations of the API need: the store, the sealer for secrets, and the job
/// queue that wakes the workers after a write.
#[derive(Clone)]
pub struct Domain {
    /// The store.
    pub store: SharedStore,
    /// Seals and opens secrets.
    pub sealer: Arc<Sealer>,
    /// Jobs for the workers.
    pub jobs: Arc<JobQueue>,
}

impl Domain {
    /// Bundles the parts.
    pub fn new(store: SharedStore, sealer: Arc<Sealer>, jobs: Arc<JobQueue>) -> Self {
        Domain {
            store,
            sealer,
            jobs,
        }
    }

    /// Whether the store is etcd (flannel can then use it as its backend).
    pub fn store_is_etcd(&self) -> bool {
        self.store.backend_name() == "etcd"
    }
}
