//! The store side of hosts as container-manager nodes: the node views the workers record, and
//! the end of a pending node removal.

use model::NodeView;
use store::records::{self, get_json, membership_key, node_key, node_removal_key, put_json};
use store::{Compare, Store};

use crate::error::DomainResult;
use crate::txn::{Plan, transact};

/// Stores the latest view of a host's node (a view is advisory: the last writer wins).
pub async fn save_view(store: &dyn Store, address: &str, view: &NodeView) -> DomainResult<()> {
    store
        .txn(vec![], vec![put_json(&node_key(address), view)])
        .await?;
    Ok(())
}

/// Ends a node removal once the manager has answered: deletes the request (only the version
/// `rev` that was acted on: the host may have rejoined and left again meanwhile) and the stale
/// node view, unless the host is in a cluster again.
pub async fn finish_removal(
    store: &dyn Store,
    address: &str,
    rev: store::Revision,
) -> DomainResult<()> {
    let key = node_removal_key(address);
    let mkey = membership_key(address);
    let (key, mkey) = (&key, &mkey);
    transact(
        store,
        &format!("the node removal of {address}"),
        || async move {
            let member = get_json::<model::Membership>(store, mkey).await?;
            let mut compares = vec![Compare::ModRevision(key.clone(), rev)];
            let mut ops = vec![records::delete(key)];
            match member {
                Some(m) => compares.push(Compare::ModRevision(mkey.clone(), m.mod_revision)),
                None => {
                    compares.push(Compare::Absent(mkey.clone()));
                    ops.push(records::delete(&node_key(address)));
                }
            }
            Ok(Plan::write(compares, ops, ()))
        },
    )
    .await
}
