//! Registration tokens: what a new host presents to register itself (`PUT /api/v0/host`)
//! instead of an operator's password.
//!
//! A token is `cmsreg_<id>.<secret>`. The store keeps `registration_tokens/<id>` with the
//! SHA-256 digest of the secret (the secret is 256 random bits, so a fast digest is as good
//! as a slow one), its optional cluster, expiry and single-use flag. The secret is shown once,
//! in the answer to its creation. A registration checks the record again inside the
//! transaction that creates the host, so a token revoked, expired or used up (single-use: the
//! record is deleted in that same transaction) can never register one more host.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use model::{Fields, RegistrationToken, RegistrationTokenCreated, validate_name};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::records::{self, REGISTRATION_TOKENS, get_json, list_json, put_json};
use store::{Compare, Store};

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::txn::{Plan, transact};

/// What every registration token starts with, so it is recognised without a store lookup
/// (and by secret scanners).
pub const TOKEN_PREFIX: &str = "cmsreg_";
/// Lifetime of a token when its creator gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime a token may be given.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest description.
const MAX_DESCRIPTION: usize = 200;

/// The stored record: the public fields plus the digest of the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    public: RegistrationToken,
    /// Hex SHA-256 of the secret part.
    digest: String,
}

/// Key of a token's record.
fn token_key(id: &str) -> String {
    format!("{REGISTRATION_TOKENS}{id}")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn expired(t: &RegistrationToken, now: DateTime<Utc>) -> bool {
    DateTime::parse_from_rfc3339(&t.expires).map_or(true, |e| e.with_timezone(&Utc) <= now)
}

fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two digests in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a creation request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Only for this cluster.
    pub cluster: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Consumed by the first registration.
    pub single_use: bool,
    /// Free text.
    pub description: Option<String>,
}

impl NewToken {
    /// Parses `{"cluster", "expires_in" (seconds), "single_use", "description"}`, every field
    /// optional; anything else, or a wrong type or value, is refused naming the field.
    pub fn from_json(f: &Fields) -> DomainResult<NewToken> {
        let mut t = NewToken {
            cluster: None,
            ttl: DEFAULT_TTL,
            single_use: false,
            description: None,
        };
        for (k, v) in f {
            match k.as_str() {
                "cluster" if v.is_null() => {}
                "cluster" => {
                    let c = v.as_str().ok_or_else(|| {
                        DomainError::invalid("cluster: must be a string (a cluster name)")
                    })?;
                    validate_name("cluster", c)?;
                    t.cluster = Some(c.to_string());
                }
                "expires_in" => {
                    let s = v.as_u64().filter(|s| *s > 0).ok_or_else(|| {
                        DomainError::invalid("expires_in: must be a positive number of seconds")
                    })?;
                    if s > MAX_TTL.as_secs() {
                        return Err(DomainError::invalid(format!(
                            "expires_in: at most {} seconds (one year)",
                            MAX_TTL.as_secs()
                        )));
                    }
                    t.ttl = Duration::from_secs(s);
                }
                "single_use" => {
                    t.single_use = v
                        .as_bool()
                        .ok_or_else(|| DomainError::invalid("single_use: must be true or false"))?;
                }
                "description" if v.is_null() => {}
                "description" => {
                    let d = v
                        .as_str()
                        .ok_or_else(|| DomainError::invalid("description: must be a string"))?;
                    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
                        return Err(DomainError::invalid(format!(
                            "description: at most {MAX_DESCRIPTION} characters, no control characters"
                        )));
                    }
                    t.description = Some(d.to_string());
                }
                other => {
                    return Err(DomainError::invalid(format!(
                        "{other}: unknown field (fields: cluster, expires_in, single_use, description)"
                    )));
                }
            }
        }
        Ok(t)
    }
}

/// Creates a token for `created_by`. A named cluster must exist (409 otherwise, as for a host).
pub async fn create(
    d: &Domain,
    created_by: &str,
    new: NewToken,
) -> DomainResult<RegistrationTokenCreated> {
    let store = d.store.as_ref();
    if let Some(c) = &new.cluster
        && get_json::<model::Cluster>(store, &records::cluster_key(c))
            .await?
            .is_none()
    {
        return Err(DomainError::conflict(format!(
            "cluster {c} does not exist; create it first"
        )));
    }
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(new.ttl)
        .map_err(|_| DomainError::invalid("expires_in: too large"))?;
    let public = RegistrationToken {
        id: id.clone(),
        cluster: new.cluster,
        expires: rfc3339(now + ttl),
        single_use: new.single_use,
        created_by: created_by.to_string(),
        created: rfc3339(now),
        description: new.description,
    };
    let stored = Stored {
        public: public.clone(),
        digest: digest_hex(&secret),
    };
    let key = token_key(&id);
    let out = store
        .txn(
            vec![Compare::Absent(key.clone())],
            vec![put_json(&key, &stored)],
        )
        .await?;
    if !out.succeeded {
        // 64 random bits colliding: report rather than overwrite.
        return Err(DomainError::Contended(
            "a registration token id collided; try again".into(),
        ));
    }
    Ok(RegistrationTokenCreated {
        record: public,
        token: format!("{TOKEN_PREFIX}{id}.{secret}"),
    })
}

/// Every token still valid, oldest first. Expired ones are deleted on the way (they can
/// never be used again).
pub async fn list(d: &Domain) -> DomainResult<Vec<RegistrationToken>> {
    let store = d.store.as_ref();
    let now = Utc::now();
    let mut live = vec![];
    for v in list_json::<Stored>(store, REGISTRATION_TOKENS).await? {
        if expired(&v.value.public, now) {
            let key = token_key(&v.value.public.id);
            // Compared on its revision: nothing else changes a token, but be exact anyway.
            store
                .txn(
                    vec![Compare::ModRevision(key.clone(), v.mod_revision)],
                    vec![records::delete(&key)],
                )
                .await?;
        } else {
            live.push(v.value.public);
        }
    }
    live.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(live)
}

/// Revokes a token at once: it registers nothing from now on, even a request under way.
pub async fn revoke(d: &Domain, id: &str) -> DomainResult<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() > 64 {
        return Err(DomainError::invalid(
            "id: a registration token id is hexadecimal (as listed by GET /api/v0/registration-tokens)",
        ));
    }
    let store = d.store.as_ref();
    let key = token_key(id);
    transact(store, &format!("registration token {id}"), || {
        let key = key.clone();
        async move {
            let Some(kv) = store.get(&key).await? else {
                return Err(DomainError::not_found(format!(
                    "registration token {id} does not exist (revoked, used up or expired)"
                )));
            };
            Ok(Plan::write(
                vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                vec![records::delete(&key)],
                (),
            ))
        }
    })
    .await
}

/// Splits `cmsreg_<id>.<secret>`; `None` when the text is not shaped like a token.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    (!id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty())
    .then_some((id, secret))
}

/// Whether `token` looks like a registration token (decides which check a bearer token gets).
pub fn is_registration_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// Checks a presented token: the record exists, the secret matches and it has not expired.
/// Answers the record, or `None` for any reason the token is not good (the caller answers
/// 401 without saying which, as for a wrong password).
pub async fn authenticate(
    store: &dyn Store,
    token: &str,
) -> DomainResult<Option<RegistrationToken>> {
    let Some((id, secret)) = split(token) else {
        return Ok(None);
    };
    let Some(v) = get_json::<Stored>(store, &token_key(id)).await? else {
        return Ok(None);
    };
    if !same(&v.value.digest, &digest_hex(secret)) || expired(&v.value.public, Utc::now()) {
        return Ok(None);
    }
    Ok(Some(v.value.public))
}

/// The check a registration makes inside its transaction: the token still exists (not
/// revoked or used up) and has not expired. Returns the compares (and, for a single-use
/// token, the delete) to add to the transaction that creates the host.
pub(crate) async fn guard_ops(
    store: &dyn Store,
    id: &str,
) -> DomainResult<(Vec<Compare>, Vec<store::Op>)> {
    let key = token_key(id);
    let gone = || {
        DomainError::Unauthenticated(
            "the registration token was revoked, used up or has expired".into(),
        )
    };
    let v = get_json::<Stored>(store, &key).await?.ok_or_else(gone)?;
    if expired(&v.value.public, Utc::now()) {
        return Err(gone());
    }
    let compares = vec![Compare::ModRevision(key.clone(), v.mod_revision)];
    let ops = if v.value.public.single_use {
        vec![records::delete(&key)]
    } else {
        vec![]
    };
    Ok((compares, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_new_token() {
        let f = |v: serde_json::Value| NewToken::from_json(v.as_object().unwrap());
        let t = f(serde_json::json!({})).unwrap();
        assert_eq!(t.ttl, DEFAULT_TTL);
        assert!(!t.single_use && t.cluster.is_none());
        let t =
            f(serde_json::json!({"cluster": "c1", "expires_in": 60, "single_use": true})).unwrap();
        assert_eq!(t.cluster.as_deref(), Some("c1"));
        assert_eq!(t.ttl, Duration::from_secs(60));
        for (bad, needle) in [
            (serde_json::json!({"expires_in": 0}), "expires_in"),
            (serde_json::json!({"expires_in": "1h"}), "expires_in"),
            (serde_json::json!({"single_use": "yes"}), "single_use"),
            (serde_json::json!({"cluster": 3}), "cluster"),
            (serde_json::json!({"password": "x"}), "unknown field"),
        ] {
            let e = f(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn token_shape() {
        assert_eq!(split("cmsreg_ab12.secret"), Some(("ab12", "secret")));
        assert_eq!(split("cmsreg_.secret"), None);
        assert_eq!(split("cmsreg_zz.secret"), None);
        assert_eq!(split("cmsreg_ab12."), None);
        assert_eq!(split("other"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
