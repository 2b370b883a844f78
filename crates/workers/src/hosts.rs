//! Store access the workers share: trusted host keys, the SSH target of a host built from its
//! sealed credentials, and the failure kind of a remote error. Host state changes go through
//! `domain::hosts::apply` (the lifecycle state machine).

use model::{FailureKind, TrustedHostKey, now_timestamp};
use store::records::{get_host_creds, get_json, host_key_record_key};
use store::secrets::Sealer;
use store::{Store, StoreError, StoreResult};

/// The host key trusted for `address`, if one was recorded.
pub async fn trusted_key(store: &dyn Store, address: &str) -> StoreResult<Option<TrustedHostKey>> {
    Ok(
        get_json::<TrustedHostKey>(store, &host_key_record_key(address))
            .await?
            .map(|v| v.value),
    )
}

/// The trusted-key record of the key a host presented on first contact, trusted now.
pub fn first_use_record(address: &str, key: &remote::HostKey) -> TrustedHostKey {
    TrustedHostKey {
        address: address.to_string(),
        key: key.openssh.clone(),
        fingerprint: key.fingerprint.clone(),
        trusted_at: now_timestamp(),
    }
}

/// Records the key a host presented on first contact (only if none is recorded yet, so two
/// workers racing cannot overwrite each other's choice).
pub async fn record_first_key(
    store: &dyn Store,
    address: &str,
    key: &remote::HostKey,
) -> StoreResult<()> {
    let rec = first_use_record(address, key);
    domain::hosts::record_first_key(store, &rec)
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    tracing::info!(address, fingerprint = %key.fingerprint, "host key trusted on first use");
    Ok(())
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
    let text = remote::keys::decode_private_key_b64(&creds.ssh_priv_key)
        .map_err(|_| TargetError::BadKey)?;
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

/// The failure kind of a remote error met while connecting: a changed host key and refused
/// credentials need an operator; anything else means the host could not be reached.
pub fn connect_failure(e: &remote::RemoteError) -> FailureKind {
    match e {
        remote::RemoteError::HostKeyChanged { .. } => FailureKind::HostKeyChanged,
        remote::RemoteError::Auth(_) | remote::RemoteError::BadKey(_) => FailureKind::Credentials,
        _ => FailureKind::Unreachable,
    }
}
