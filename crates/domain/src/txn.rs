//! The one read-modify-write helper: read records, decide, and write only if nothing read has
//! changed since (compare on revisions), retrying with bounded, jittered backoff when another
//! writer got there first. Every rule that spans records is checked by the compares of one
//! transaction, so it holds for any number of servers on one store.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use store::{Compare, Op, Store};

use crate::error::{DomainError, DomainResult};

/// How many times a read-modify-write is tried before giving up with
/// [`DomainError::Contended`].
pub const ATTEMPTS: usize = 500;

/// What one attempt decided.
#[derive(Debug)]
pub enum Plan<T> {
    /// Nothing to write; this is the answer.
    Done(T),
    /// Apply `ops` if every compare holds; the answer is then `result`. Otherwise read again.
    Write {
        /// Conditions on what was read.
        compares: Vec<Compare>,
        /// The writes, in the order their events should be seen.
        ops: Vec<Op>,
        /// The answer once written.
        result: T,
    },
}

impl<T> Plan<T> {
    /// A write plan.
    pub fn write(compares: Vec<Compare>, ops: Vec<Op>, result: T) -> Self {
        Plan::Write {
            compares,
            ops,
            result,
        }
    }
}

/// Runs `attempt` (read, decide) and applies its plan, until the plan is applied or needs no
/// write. `what` names the contended thing in the error.
pub async fn transact<T, F, Fut>(store: &dyn Store, what: &str, mut attempt: F) -> DomainResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = DomainResult<Plan<T>>>,
{
    for n in 0..ATTEMPTS {
        match attempt().await? {
            Plan::Done(v) => return Ok(v),
            Plan::Write {
                compares,
                ops,
                result,
            } => {
                if store.txn(compares, ops).await?.succeeded {
                    return Ok(result);
                }
            }
        }
        backoff(n).await;
    }
    Err(DomainError::Contended(format!(
        "{what} is being changed by many clients at once; try again"
    )))
}

/// Applies `change` to the JSON record under `key` with compare-and-swap, retrying when
/// someone else wrote in between. `change` returns `false` to leave the record as it is.
/// Answers the record as stored afterwards, or `None` if it does not exist.
pub async fn update_record<T, F>(
    store: &dyn Store,
    key: &str,
    mut change: F,
) -> DomainResult<Option<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + Sync,
    F: FnMut(&mut T) -> bool + Send,
{
    // The same loop as [`transact`], written out because `change` is borrowed mutably by
    // each attempt.
    for n in 0..ATTEMPTS {
        let Some(cur) = store::records::get_json::<T>(store, key).await? else {
            return Ok(None);
        };
        let mut v = cur.value.clone();
        if !change(&mut v) || v == cur.value {
            return Ok(Some(cur.value));
        }
        let out = store
            .txn(
                vec![pin(key, Some(cur.mod_revision))],
                vec![store::records::put_json(key, &v)],
            )
            .await?;
        if out.succeeded {
            return Ok(Some(v));
        }
        backoff(n).await;
    }
    Err(DomainError::Contended(format!(
        "{key} is being changed by many writers at once"
    )))
}

/// Sleeps a little before retrying a lost compare-and-swap, so that contending writers spread
/// out instead of colliding again at once.
async fn backoff(attempt: usize) {
    let max_ms = (1 + attempt as u64).min(20);
    let ms = rand::rng().random_range(0..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The compare that pins a record as read: its revision, or its absence.
pub fn pin(key: &str, rev: Option<store::Revision>) -> Compare {
    match rev {
        Some(r) => Compare::ModRevision(key.to_string(), r),
        None => Compare::Absent(key.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_increments_are_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let tries = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for _ in 0..20 {
            let (store, tries) = (store.clone(), tries.clone());
            tasks.push(tokio::spawn(async move {
                let s = store.as_ref();
                transact(s, "counter", || async {
                    tries.fetch_add(1, Ordering::Relaxed);
                    let kv = s.get("n").await?;
                    let n: u64 = kv
                        .as_ref()
                        .map(|kv| String::from_utf8_lossy(&kv.value).parse().unwrap())
                        .unwrap_or(0);
                    Ok(Plan::write(
                        vec![pin("n", kv.map(|kv| kv.mod_revision))],
                        vec![Op::Put {
                            key: "n".into(),
                            value: (n + 1).to_string().into_bytes(),
                        }],
                        (),
                    ))
                })
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let kv = store.get("n").await.unwrap().unwrap();
        assert_eq!(kv.value, b"20");
        assert!(tries.load(Ordering::Relaxed) >= 20);
    }
}
