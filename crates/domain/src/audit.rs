//! The audit log: one [`AuditRecord`] per change and per refused attempt, kept in the store
//! under `audit/` (so every server sharing a store writes one log) and bounded: once more
//! than [`MAX_RECORDS`] are stored, the oldest are deleted.
//!
//! Record keys are `audit/<microseconds since 1970, 16 hex digits>-<random>`, so the key
//! order is the time order and listing needs no sort.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use model::AuditRecord;
use rand::Rng;
use store::records::{self, AUDIT, list_json, put_json};
use store::{Compare, Store};

use crate::error::{DomainError, DomainResult};

/// How many records are kept (about: each server prunes every [`PRUNE_EVERY`] appends).
pub const MAX_RECORDS: usize = 10_000;
/// Appends between two prunes by one server.
pub const PRUNE_EVERY: u64 = 200;
/// Deletes per pruning transaction (etcd allows 128 operations in one by default).
const DELETES_PER_TXN: usize = 100;
/// Most records one read answers.
pub const MAX_LIMIT: usize = MAX_RECORDS;

/// Appends since this process last pruned.
static APPENDS: AtomicU64 = AtomicU64::new(0);

/// A new record's id and time for `now`.
pub fn new_id(now: DateTime<Utc>) -> (String, String) {
    let micros = now.timestamp_micros().max(0) as u64;
    let id = format!("{micros:016x}-{:08x}", rand::rng().random::<u32>());
    (id, now.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// Stores one record (its `id` from [`new_id`]), pruning the oldest records now and then.
pub async fn append(store: &dyn Store, record: &AuditRecord) -> DomainResult<()> {
    let key = format!("{AUDIT}{}", record.id);
    store
        .txn(
            vec![Compare::Absent(key.clone())],
            vec![put_json(&key, record)],
        )
        .await?;
    if APPENDS.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        prune(store, MAX_RECORDS).await?;
    }
    Ok(())
}

/// Deletes the oldest records beyond `keep`; answers how many went.
pub async fn prune(store: &dyn Store, keep: usize) -> DomainResult<usize> {
    // Keys only: pruning needs to know which records exist, not what they say.
    let all = store.list_keys(AUDIT).await?;
    if all.len() <= keep {
        return Ok(0);
    }
    let excess = &all[..all.len() - keep];
    for chunk in excess.chunks(DELETES_PER_TXN) {
        // Unconditional deletes: a record is never rewritten, and deleting one another server
        // already pruned is harmless.
        store
            .txn(vec![], chunk.iter().map(|k| records::delete(k)).collect())
            .await?;
    }
    Ok(excess.len())
}

/// What `GET /api/v0/audit` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this user's records.
    pub user: Option<String>,
    /// Only records about this target (`host/10.0.0.1`), or under it when it ends in `/`.
    pub target: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (the newest), oldest first.
    pub limit: usize,
}

impl AuditFilter {
    /// Parses the query string's `user`, `target`, `since`, `until` (RFC 3339) and `limit`;
    /// anything else, or a bad value, is refused naming the parameter.
    pub fn from_query(q: &std::collections::HashMap<String, String>) -> DomainResult<Self> {
        let time = |k: &str, v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    DomainError::invalid(format!(
                        "{k}: must be an RFC 3339 time such as 2026-11-30T06:00:00Z"
                    ))
                })
        };
        let mut f = AuditFilter {
            limit: 1000,
            ..Default::default()
        };
        for (k, v) in q {
            match k.as_str() {
                "user" => f.user = Some(v.clone()),
                "target" => f.target = Some(v.trim_start_matches('/').to_string()),
                "since" => f.since = Some(time(k, v)?),
                "until" => f.until = Some(time(k, v)?),
                "limit" => {
                    f.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            DomainError::invalid(format!(
                                "limit: must be a number from 1 to {MAX_LIMIT}"
                            ))
                        })?;
                }
                other => {
                    return Err(DomainError::invalid(format!(
                        "{other}: unknown parameter (parameters: user, target, since, until, limit)"
                    )));
                }
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let time = DateTime::parse_from_rfc3339(&r.time)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        self.user
            .as_ref()
            .is_none_or(|u| r.user.as_ref() == Some(u))
            && self.target.as_ref().is_none_or(|t| {
                r.target
                    .as_ref()
                    .is_some_and(|rt| rt == t || (t.ends_with('/') && rt.starts_with(t.as_str())))
            })
            && self.since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| time.is_some_and(|t| t < u))
    }
}

/// The records matching `filter`, oldest first (the newest `filter.limit` of them).
pub async fn list(store: &dyn Store, filter: &AuditFilter) -> DomainResult<Vec<AuditRecord>> {
    let all = list_json::<AuditRecord>(store, AUDIT).await?;
    let mut out: Vec<AuditRecord> = all
        .into_iter()
        .map(|v| v.value)
        .filter(|r| filter.matches(r))
        .collect();
    if out.len() > filter.limit {
        out.drain(..out.len() - filter.limit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, user: &str, target: &str) -> AuditRecord {
        let now = DateTime::from_timestamp(1_800_000_000 + i64::from(n), 0).unwrap();
        let (id, time) = new_id(now);
        AuditRecord {
            id,
            time,
            user: Some(user.into()),
            role: Some(model::Role::Admin),
            source: None,
            method: "PUT".into(),
            route: format!("/api/v0/{target}"),
            target: Some(target.into()),
            status: 201,
            outcome: "allowed".into(),
            request_id: None,
        }
    }

    #[tokio::test]
    async fn bounded_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for n in 0..30 {
            let user = if n % 2 == 0 { "alice" } else { "bob" };
            append(&store, &record(n, user, &format!("host/10.0.0.{n}")))
                .await
                .unwrap();
        }
        assert_eq!(prune(&store, 20).await.unwrap(), 10);
        let all = list(
            &store,
            &AuditFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 20);
        assert_eq!(
            all[0].target.as_deref(),
            Some("host/10.0.0.10"),
            "oldest went first"
        );
        let q = |pairs: &[(&str, &str)]| {
            AuditFilter::from_query(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let alice = list(&store, &q(&[("user", "alice")]).unwrap())
            .await
            .unwrap();
        assert_eq!(alice.len(), 10);
        let one = list(&store, &q(&[("target", "host/10.0.0.12")]).unwrap())
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        let hosts = list(&store, &q(&[("target", "host/"), ("limit", "3")]).unwrap())
            .await
            .unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(
            hosts[2].target.as_deref(),
            Some("host/10.0.0.29"),
            "the newest"
        );
        let since = all[15].time.clone();
        let late = list(&store, &q(&[("since", &since)]).unwrap())
            .await
            .unwrap();
        assert_eq!(late.len(), 5);
        for bad in [
            &[("limit", "0")][..],
            &[("since", "yesterday")],
            &[("secret", "x")],
        ] {
            assert!(q(bad).is_err());
        }
    }
}
