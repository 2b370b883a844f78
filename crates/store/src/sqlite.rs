//! The embedded store: one SQLite file (WAL, `synchronous=FULL`) under the data directory.
//!
//! The layout mirrors etcd so both backends behave the same: a `kv` table with create/modify
//! revisions, a global revision that grows by one per write transaction, and a `log` table of
//! every change that makes `watch` from an old revision possible. The log keeps the last
//! [`LOG_RETENTION`] revisions. Writes are serialized on one connection; reads use a small pool
//! of their own connections, which WAL lets run beside the writer. SQLite calls block, so they
//! run on tokio's blocking pool.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Compare, Event, EventKind, EventStream, KeyValue, Op, Revision, Store, StoreError, StoreResult,
    TxnOutcome,
};

/// Number of revisions of change history kept for `watch` (and the SSE change feed).
pub const LOG_RETENTION: i64 = 100_000;
/// Compaction runs when the revision is a multiple of this.
const COMPACT_EVERY: i64 = 1_000;
const READERS: usize = 4;
/// Bytes of values read from the log at once when a watch replays history (a page ends at
/// the first revision boundary past it).
const REPLAY_PAGE_BYTES: usize = 512 * 1024;
/// Change groups a watch buffers ahead of its reader: few, since one group may hold large
/// values; the reader's own buffer is what absorbs bursts.
const WATCH_BUFFER: usize = 4;

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    changes: broadcast::Sender<Arc<Vec<Event>>>,
    // Held for the life of the store so a second process cannot open the same file.
    _lock: File,
}

/// Errors that can end a store call, and whether they mean the database is held by another
/// process.
trait SqlFailure: std::fmt::Display {
    fn busy(&self) -> bool {
        false
    }
}

impl SqlFailure for rusqlite::Error {
    fn busy(&self) -> bool {
        matches!(
            self.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
impl<T> SqlFailure for std::sync::PoisonError<T> {}
impl SqlFailure for std::io::Error {}
impl SqlFailure for tokio::task::JoinError {}
impl SqlFailure for String {}
impl SqlFailure for &str {}

fn backend(e: impl SqlFailure) -> StoreError {
    // Another process holding the database's write lock past the busy timeout is an outage
    // of the store (503, try again), not a fault of ours (500).
    if e.busy() {
        return StoreError::Unavailable(format!(
            "sqlite: {e} (another process holds the database)"
        ));
    }
    StoreError::Backend(format!("sqlite: {e}"))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path`. Fails if another process has it
    /// open.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let lock_path = path.with_extension("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open lock file {}: {e}",
                    lock_path.display()
                ))
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StoreError::Backend(format!(
                "{} is in use by another process (only one commissaire-server may use a data directory)",
                path.display()
            )));
        }
        let writer = open_connection(path)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS kv(
                     key TEXT PRIMARY KEY, value BLOB NOT NULL,
                     create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS log(
                     rev INTEGER NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL,
                     kind INTEGER NOT NULL, created INTEGER NOT NULL, value BLOB,
                     PRIMARY KEY(rev, idx)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT OR IGNORE INTO meta VALUES('revision', 0);
                 INSERT OR IGNORE INTO meta VALUES('compacted', 0);",
            )
            .map_err(backend)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (changes, _) = broadcast::channel(1024);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                changes,
                _lock: lock,
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with a reader connection on the blocking pool.
    /// Sends the logged changes of revisions `from..=to` under `prefix`, reading at most
    /// [`REPLAY_PAGE_BYTES`] at a time and waiting for the receiver between pages, so a
    /// replay of the whole history holds one page in memory, not the history. `Ok(false)`
    /// when the receiver went away.
    async fn replay(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
        tx: &mpsc::Sender<StoreResult<Vec<Event>>>,
    ) -> StoreResult<bool> {
        let mut next = from;
        while next <= to {
            let p = prefix.to_string();
            let page_start = next;
            let (groups, after) = self
                .read(move |c| {
                    // Compaction may have run since the previous page.
                    let compacted = compacted_revision(c)?;
                    if page_start <= compacted {
                        return Err(StoreError::Compacted {
                            requested: page_start,
                            oldest: compacted + 1,
                        });
                    }
                    read_log_page(c, &p, page_start, to, REPLAY_PAGE_BYTES)
                })
                .await?;
            for g in groups {
                if tx.send(Ok(g)).await.is_err() {
                    return Ok(false);
                }
            }
            next = after;
        }
        Ok(true)
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().map_err(backend)?.pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&inner.path)?,
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock().map_err(backend)?;
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(backend)?
    }
}

fn current_revision(conn: &Connection) -> StoreResult<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name='revision'", [], |r| {
        r.get(0)
    })
    .map_err(backend)
}

fn compacted_revision(conn: &Connection) -> StoreResult<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| {
        r.get(0)
    })
    .map_err(backend)
}

/// Upper bound of a prefix range: every key starting with `prefix` sorts before it.
fn prefix_end(prefix: &str) -> Option<String> {
    // Keys are UTF-8 text; appending U+10FFFF bounds every continuation of the prefix.
    if prefix.is_empty() {
        None
    } else {
        Some(format!("{prefix}\u{10FFFF}"))
    }
}

fn list_prefix(conn: &Connection, prefix: &str) -> StoreResult<Vec<KeyValue>> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(KeyValue {
            key: r.get(0)?,
            value: r.get(1)?,
            create_revision: r.get(2)?,
            mod_revision: r.get(3)?,
        })
    };
    let out = match prefix_end(prefix) {
        Some(end) => {
            let mut st = conn
                .prepare_cached(
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .map_err(backend)?;
            st.query_map(params![prefix, end], row)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
        }
        None => {
            let mut st = conn
                .prepare_cached("SELECT key, value, create_rev, mod_rev FROM kv ORDER BY key")
                .map_err(backend)?;
            st.query_map([], row)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
        }
    };
    let out = out.map_err(backend)?;
    Ok(out
        .into_iter()
        .filter(|kv| kv.key.starts_with(prefix))
        .collect())
}

/// Reads logged changes with revision in `from..=to` under `prefix`, grouped per revision.
/// Reads the logged changes of revisions `from..=to` under `prefix` in order, stopping at the
/// first revision boundary after `max_bytes` of values: the rows are streamed from SQLite, so
/// no more than that (plus one revision) is ever in memory. Returns the groups and the first
/// revision not read (`to + 1` when everything was).
fn read_log_page(
    conn: &Connection,
    prefix: &str,
    from: Revision,
    to: Revision,
    max_bytes: usize,
) -> StoreResult<(Vec<Vec<Event>>, Revision)> {
    let mut st = conn
        .prepare_cached(
            "SELECT rev, key, kind, created, value FROM log
             WHERE rev >= ?1 AND rev <= ?2 ORDER BY rev, idx",
        )
        .map_err(backend)?;
    let mut rows = st.query(params![from, to]).map_err(backend)?;
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next().map_err(backend)? {
        let revision: Revision = r.get(0).map_err(backend)?;
        if bytes >= max_bytes && out.last().is_some_and(|g| g[0].revision != revision) {
            return Ok((out, revision));
        }
        let key: String = r.get(1).map_err(backend)?;
        if !key.starts_with(prefix) {
            continue;
        }
        let kind: i64 = r.get(2).map_err(backend)?;
        let value: Option<Vec<u8>> = r.get(4).map_err(backend)?;
        bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        let ev = Event {
            revision,
            key,
            kind: if kind == 0 {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            created: r.get::<_, i64>(3).map_err(backend)? != 0,
            value,
        };
        match out.last_mut() {
            Some(group) if group[0].revision == ev.revision => group.push(ev),
            _ => out.push(vec![ev]),
        }
    }
    Ok((out, to + 1))
}

fn apply_txn(
    conn: &mut Connection,
    compares: &[Compare],
    ops: &[Op],
) -> StoreResult<(TxnOutcome, Vec<Event>)> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let rev = current_revision(&tx)?;
    let mod_rev_of = |key: &str| -> StoreResult<Option<Revision>> {
        tx.query_row("SELECT mod_rev FROM kv WHERE key=?1", [key], |r| r.get(0))
            .optional()
            .map_err(backend)
    };
    for cmp in compares {
        let holds = match cmp {
            Compare::Absent(k) => mod_rev_of(k)?.is_none(),
            Compare::ModRevision(k, want) => mod_rev_of(k)? == Some(*want),
        };
        if !holds {
            return Ok((
                TxnOutcome {
                    succeeded: false,
                    revision: rev,
                },
                vec![],
            ));
        }
    }
    let new_rev = rev + 1;
    let mut events = Vec::new();
    for op in ops {
        let idx = events.len() as i64;
        match op {
            // One process owns an embedded store: nothing to expire with a holder.
            Op::PutLeased { .. } => {
                return Err(StoreError::Backend(
                    "the sqlite store has no leases; they need etcd".into(),
                ));
            }
            Op::Put { key, value } => {
                let created: Option<Revision> = tx
                    .query_row("SELECT create_rev FROM kv WHERE key=?1", [key], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(backend)?;
                // A key put twice in one transaction keeps the first put's creation.
                let created_now = created.is_none() || created == Some(new_rev);
                let create_rev = created.unwrap_or(new_rev);
                tx.execute(
                    "INSERT OR REPLACE INTO kv(key, value, create_rev, mod_rev) VALUES(?1,?2,?3,?4)",
                    params![key, value, create_rev, new_rev],
                )
                .map_err(backend)?;
                tx.execute(
                    "INSERT INTO log(rev, idx, key, kind, created, value) VALUES(?1,?2,?3,0,?4,?5)",
                    params![new_rev, idx, key, created_now as i64, value],
                )
                .map_err(backend)?;
                events.push(Event {
                    revision: new_rev,
                    key: key.clone(),
                    kind: EventKind::Put,
                    created: created_now,
                    value: Some(value.clone()),
                });
            }
            Op::Delete { key } => {
                let prev: Option<Vec<u8>> = tx
                    .query_row("SELECT value FROM kv WHERE key=?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if let Some(prev) = prev {
                    tx.execute("DELETE FROM kv WHERE key=?1", [key])
                        .map_err(backend)?;
                    tx.execute(
                        "INSERT INTO log(rev, idx, key, kind, created, value) VALUES(?1,?2,?3,1,0,?4)",
                        params![new_rev, idx, key, prev],
                    )
                    .map_err(backend)?;
                    events.push(Event {
                        revision: new_rev,
                        key: key.clone(),
                        kind: EventKind::Delete,
                        created: false,
                        value: Some(prev),
                    });
                }
            }
        }
    }
    if events.is_empty() {
        // Nothing changed (no ops, or only deletes of missing keys): no new revision.
        tx.rollback().map_err(backend)?;
        return Ok((
            TxnOutcome {
                succeeded: true,
                revision: rev,
            },
            vec![],
        ));
    }
    tx.execute("UPDATE meta SET value=?1 WHERE name='revision'", [new_rev])
        .map_err(backend)?;
    if new_rev % COMPACT_EVERY == 0 && new_rev > LOG_RETENTION {
        let upto = new_rev - LOG_RETENTION;
        tx.execute("DELETE FROM log WHERE rev <= ?1", [upto])
            .map_err(backend)?;
        tx.execute("UPDATE meta SET value=?1 WHERE name='compacted'", [upto])
            .map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok((
        TxnOutcome {
            succeeded: true,
            revision: new_rev,
        },
        events,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT value, create_rev, mod_rev FROM kv WHERE key=?1")
                .map_err(backend)?
                .query_row([&key], |r| {
                    Ok(KeyValue {
                        key: key.clone(),
                        value: r.get(0)?,
                        create_revision: r.get(1)?,
                        mod_revision: r.get(2)?,
                    })
                })
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let prefix = prefix.to_string();
        self.read(move |c| list_prefix(c, &prefix)).await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnOutcome> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().map_err(backend)?;
            let (outcome, events) = apply_txn(&mut conn, &compares, &ops)?;
            if !events.is_empty() {
                // Sent while the writer lock is held so watchers see revisions in order.
                let _ = inner.changes.send(Arc::new(events));
            }
            Ok(outcome)
        })
        .await
        .map_err(backend)?
    }

    async fn revision(&self) -> StoreResult<Revision> {
        self.read(current_revision).await
    }

    async fn watch(&self, prefix: &str, from: Option<Revision>) -> StoreResult<EventStream> {
        // Subscribe before reading history so nothing committed in between is missed.
        let mut live = self.inner.changes.subscribe();
        let prefix = prefix.to_string();
        // Only the bounds are read now (so a compacted start is an error the caller sees);
        // the history itself is streamed page by page below, never loaded whole.
        let (start, mut last) = self
            .read(move |c| {
                let tx = c.unchecked_transaction().map_err(backend)?;
                let current = current_revision(&tx)?;
                if let Some(r) = from {
                    let compacted = compacted_revision(&tx)?;
                    if r <= compacted {
                        return Err(StoreError::Compacted {
                            requested: r,
                            oldest: compacted + 1,
                        });
                    }
                }
                tx.finish().map_err(backend)?;
                Ok((from, current))
            })
            .await?;
        let (tx, rx) = mpsc::channel::<StoreResult<Vec<Event>>>(WATCH_BUFFER);
        let store = self.clone();
        tokio::spawn(async move {
            if let Some(from) = start {
                match store.replay(&prefix, from, last, &tx).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            loop {
                match live.recv().await {
                    Ok(group) => {
                        if group[0].revision <= last {
                            continue;
                        }
                        last = group[0].revision;
                        let mine: Vec<Event> = group
                            .iter()
                            .filter(|e| e.key.starts_with(&prefix))
                            .cloned()
                            .collect();
                        if !mine.is_empty() && tx.send(Ok(mine)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the live channel: catch up from the log, page by page.
                        let current = match store.read(current_revision).await {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        };
                        match store.replay(&prefix, last + 1, current, &tx).await {
                            Ok(true) => last = current,
                            Ok(false) => return,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn health(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    // One process owns an embedded store: nothing to expire with a holder.
    async fn lease_grant(&self, _ttl_seconds: i64) -> StoreResult<crate::LeaseId> {
        Err(StoreError::Backend(
            "the sqlite store has no leases; they need etcd".into(),
        ))
    }

    async fn lease_keep_alive(&self, _lease: crate::LeaseId) -> StoreResult<bool> {
        Err(StoreError::Backend(
            "the sqlite store has no leases; they need etcd".into(),
        ))
    }

    async fn lease_revoke(&self, _lease: crate::LeaseId) -> StoreResult<()> {
        Err(StoreError::Backend(
            "the sqlite store has no leases; they need etcd".into(),
        ))
    }
}
