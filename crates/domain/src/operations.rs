//! Rolling-operation records: start, read, cancel, pause and resume a cluster's restart,
//! upgrade or deploy. Only the record is written here; clusterexec runs it.

use model::{
    Cluster, Fields, Operation, OperationKind, OperationOptions, OperationStatus, now_timestamp,
};
use store::Store;
use store::records::{cluster_key, get_json, operation_key, put_json};

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::jobs::Job;
use crate::txn::{Plan, pin, transact};

/// The active operation of a cluster, if any (at most one runs at a time).
pub async fn active(store: &dyn Store, cluster: &str) -> DomainResult<Option<Operation>> {
    for kind in OperationKind::ALL {
        if let Some(op) =
            get_json::<Operation>(store, &operation_key(cluster, kind.as_str())).await?
            && op.value.status.is_active()
        {
            return Ok(Some(op.value));
        }
    }
    Ok(None)
}

async fn load(
    store: &dyn Store,
    cluster: &str,
    kind: OperationKind,
) -> DomainResult<(Operation, i64)> {
    let key = operation_key(cluster, kind.as_str());
    match get_json::<Operation>(store, &key).await? {
        Some(v) => Ok((v.value, v.mod_revision)),
        None => {
            let exists = store.get(&cluster_key(cluster)).await?.is_some();
            Err(DomainError::not_found(if exists {
                format!("no {kind} has been started on cluster {cluster}")
            } else {
                format!("cluster {cluster} does not exist")
            }))
        }
    }
}

/// The cluster's operation record of this kind.
pub async fn get(d: &Domain, cluster: &str, kind: OperationKind) -> DomainResult<Operation> {
    Ok(load(d.store.as_ref(), cluster, kind).await?.0)
}

/// Starts a run over the cluster's current members (refused while any operation runs on it).
pub async fn start(
    d: &Domain,
    name: &str,
    kind: OperationKind,
    fields: &Fields,
) -> DomainResult<Operation> {
    let store = d.store.as_ref();
    let op = transact(store, &format!("cluster {name}"), || async move {
        let cluster = get_json::<Cluster>(store, &cluster_key(name))
            .await?
            .ok_or_else(|| DomainError::not_found(format!("cluster {name} does not exist")))?;
        let (options, version) = OperationOptions::from_json(
            kind,
            fields,
            !cluster.value.container_manager.is_empty(),
        )?;
        if let Some(active) = active(store, name).await? {
            return Err(DomainError::conflict(format!(
                "a {} is already {} on cluster {name}; wait for it, or cancel it with DELETE /api/v0/cluster/{name}/{}",
                active.kind,
                if active.status == OperationStatus::Paused {
                    "paused"
                } else {
                    "running"
                },
                active.kind
            )));
        }
        let op = Operation::new(
            name,
            kind,
            version.clone(),
            options,
            cluster.value.hostset.clone(),
            now_timestamp(),
        );
        // Guarded by the cluster's revision (members fixed) and by every operation record of
        // the cluster (no other run started meanwhile).
        let mut compares = vec![pin(&cluster_key(name), Some(cluster.mod_revision))];
        for k in OperationKind::ALL {
            let okey = operation_key(name, k.as_str());
            let rev = store.get(&okey).await?.map(|kv| kv.mod_revision);
            compares.push(pin(&okey, rev));
        }
        let ops = vec![put_json(&operation_key(name, kind.as_str()), &op)];
        Ok(Plan::write(compares, ops, op))
    })
    .await?;
    tracing::info!(cluster = %name, kind = %kind, hosts = op.order.len(), "operation started");
    d.jobs.push(Job::RunOperation {
        cluster: name.to_string(),
        kind,
    });
    Ok(op)
}

/// What a control request does to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop after the hosts in flight.
    Cancel,
    /// Start no new hosts until resumed.
    Pause,
    /// Continue a paused run.
    Resume,
}

/// Cancels, pauses or resumes a running operation.
pub async fn control(
    d: &Domain,
    name: &str,
    kind: OperationKind,
    control: Control,
) -> DomainResult<Operation> {
    let store = d.store.as_ref();
    let key = &operation_key(name, kind.as_str());
    let op = transact(
        store,
        &format!("the {kind} of cluster {name}"),
        || async move {
            let (mut op, rev) = load(store, name, kind).await?;
            if !op.status.is_active() {
                return Err(DomainError::conflict(format!(
                    "the {kind} of cluster {name} already ended ({:?}); start a new one instead",
                    op.status
                )));
            }
            let before = op.clone();
            match control {
                Control::Cancel => op.cancel_requested = true,
                Control::Pause => op.status = OperationStatus::Paused,
                Control::Resume => op.status = OperationStatus::InProcess,
            }
            if op == before {
                return Ok(Plan::Done(op));
            }
            Ok(Plan::write(
                vec![pin(key, Some(rev))],
                vec![put_json(key, &op)],
                op,
            ))
        },
    )
    .await?;
    tracing::info!(cluster = %name, kind = %kind, control = ?control, "operation control");
    Ok(op)
}
