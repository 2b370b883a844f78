//! Store access the workers share: compare-and-swap updates of host records, trusted host
//! keys, and the SSH target of a host built from its sealed credentials.

use base64::Engine;
use model::{Cluster, Host, HostState, now_timestamp};
use store::records::{
    self, TrustedHostKey, get_host_creds, get_json, host_key, host_key_record_key, list_json,
    put_json,
};
use store::secrets::Sealer;
use store::{Compare, Store, StoreError, StoreResult};
use zeroize::Zeroizing;

/// Bound on compare-and-swap retries of one host update.
const ATTEMPTS: usize = 100;

/// Applies `change` to the stored host with compare-and-swap, retrying when someone else
/// wrote in between. `change` returns `false` to leave the record as it is. Returns the host
/// as stored afterwards, or `None` if it no longer exists (deleted meanwhile).
pub async fn update_host<F>(
    store: &dyn Store,
    address: &str,
    mut change: F,
) -> StoreResult<Option<Host>>
where
    F: FnMut(&mut Host) -> bool + Send,
{
    let key = host_key(address);
    for _ in 0..ATTEMPTS {
        let Some(current) = get_json::<Host>(store, &key).await? else {
            return Ok(None);
        };
        let mut host = current.value.clone();
        if !change(&mut host) || host == current.value {
            return Ok(Some(current.value));
        }
        let out = store
            .txn(
                vec![Compare::ModRevision(key.clone(), current.mod_revision)],
                vec![put_json(&key, &host)],
            )
            .await?;
        if out.succeeded {
            return Ok(Some(host));
        }
    }
    Err(StoreError::Backend(format!(
        "host {address} kept changing while being updated"
    )))
}

/// Marks a host `failed` with `reason`.
pub async fn fail_host(
    store: &dyn Store,
    address: &str,
    reason: &str,
) -> StoreResult<Option<Host>> {
    tracing::warn!(address, reason, "host failed");
    update_host(store, address, |h| {
        h.status = HostState::Failed;
        h.status_reason = reason.to_string();
        true
    })
    .await
}

/// The host key trusted for `address`, if one was recorded.
pub async fn trusted_key(store: &dyn Store, address: &str) -> StoreResult<Option<TrustedHostKey>> {
    Ok(
        get_json::<TrustedHostKey>(store, &host_key_record_key(address))
            .await?
            .map(|v| v.value),
    )
}

/// Records the key a host presented on first contact (only if none is recorded yet, so two
/// workers racing cannot overwrite each other's choice).
pub async fn record_first_key(
    store: &dyn Store,
    address: &str,
    key: &remote::HostKey,
) -> StoreResult<()> {
    let rk = host_key_record_key(address);
    let rec = TrustedHostKey {
        address: address.to_string(),
        key: key.openssh.clone(),
        fingerprint: key.fingerprint.clone(),
        trusted_at: now_timestamp(),
    };
    store
        .txn(vec![Compare::Absent(rk.clone())], vec![put_json(&rk, &rec)])
        .await?;
    tracing::info!(address, fingerprint = %key.fingerprint, "host key trusted on first use");
    Ok(())
}

/// The cluster `address` belongs to, if any.
pub async fn cluster_of(store: &dyn Store, address: &str) -> StoreResult<Option<Cluster>> {
    Ok(list_json::<Cluster>(store, records::CLUSTERS)
        .await?
        .into_iter()
        .map(|c| c.value)
        .find(|c| c.hostset.iter().any(|a| a == address)))
}

/// Why a host's SSH target could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No credentials are stored for the host.
    #[error("no SSH credentials are stored for this host")]
    NoCreds,
    /// The stored key is not valid base64 text.
    #[error("the stored ssh_priv_key is not the base64 of a key file")]
    BadKey,
}

/// Builds the SSH target of a host from its sealed credentials and trusted host key.
pub async fn target(
    store: &dyn Store,
    sealer: &Sealer,
    address: &str,
) -> Result<remote::Target, TargetError> {
    let creds = get_host_creds(store, sealer, address)
        .await?
        .ok_or(TargetError::NoCreds)?;
    let cleaned: Zeroizing<String> = Zeroizing::new(
        creds
            .ssh_priv_key
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|_| TargetError::BadKey)?,
    );
    let text = Zeroizing::new(String::from_utf8(raw.to_vec()).map_err(|_| TargetError::BadKey)?);
    let known = trusted_key(store, address).await?.map(|k| k.key);
    Ok(remote::Target {
        address: address.to_string(),
        port: 22,
        user: creds.remote_user.clone(),
        private_key: text,
        known_host_key: known,
    })
}

/// Explains a remote failure in words for `status_reason`.
pub fn describe_remote_error(address: &str, e: &remote::RemoteError) -> String {
    match e {
        remote::RemoteError::HostKeyChanged { expected, got } => format!(
            "SSH host key changed: trusted {expected}, host presented {got}; verify the host, then re-trust it with PUT /api/v0/host/{address}/hostkey"
        ),
        other => other.to_string(),
    }
}
