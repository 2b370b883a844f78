//! The embedded store: one SQLite file (WAL, `synchronous=FULL`) under the data directory.
//!
//! The layout mirrors etcd so both backends behave the same: a `kv` table with create/modify
//! revisions, a global revision that grows by one per write transaction, and a `log` table of
//! every change that makes `watch` from an old revision possible. The log keeps the last
//! [`LOG_RETENTION`] revisions. Writes are serialized on one connection owned by a writer
//! thread, which commits the transactions that queue up meanwhile as one batch (group commit:
//! one fsync for many writers, each still answered only once its write is durable); reads use
//! a small pool of their own connections, which WAL lets run beside the writer, on tokio's
//! blocking pool (SQLite calls block).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Compare, Event, EventKind, EventStream, KeyValue, Op, Revision, Store, StoreError, StoreResult,
    TxnOutcome,
};

/// Number of revisions of change history kept for `watch` (and the SSE change feed).
pub const LOG_RETENTION: i64 = 100_000;
/// Compaction runs when the revision is a multiple of this.
const COMPACT_EVERY: i64 = 1_000;
/// Most write transactions committed together. Bounds the time the first of a batch waits
/// for the others to be applied; a few hundred small transactions take milliseconds.
const MAX_BATCH: usize = 256;
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
    // Write transactions for the writer thread (`None` only while the store is dropped).
    requests: Option<std_mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    // Commits made by the writer thread (see `SqliteStore::commits`).
    commits: Arc<AtomicU64>,
    readers: Mutex<Vec<Connection>>,
    changes: broadcast::Sender<Arc<Vec<Event>>>,
    // Held for the life of the store so a second process cannot open the same file.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread; waiting for it closes the write
        // connection before the file lock is released, so the next owner of the data
        // directory (e.g. a restarted server) can open it at once.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
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
        let (requests, queue) = std_mpsc::channel();
        let feed = changes.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, queue, feed, &counted))
            .map_err(backend)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                requests: Some(requests),
                writer: Some(writer),
                commits,
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

    /// Commits (each one fsync of the write-ahead log) made since the store was opened. With
    /// concurrent writers this is less than the number of write transactions: those queued
    /// while a commit is under way are committed together by the next one.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
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

/// One write transaction waiting for the writer thread, with where to send its outcome.
struct WriteRequest {
    compares: Vec<Compare>,
    ops: Vec<Op>,
    reply: oneshot::Sender<StoreResult<TxnOutcome>>,
}

/// What one transaction of a batch did, before the batch is committed.
enum Applied {
    /// A compare did not hold: nothing written.
    CompareFailed,
    /// Every compare held but nothing changed (no ops, or deletes of missing keys): no new
    /// revision.
    Unchanged,
    /// Written as the next revision, with these changes.
    Changed(Vec<Event>),
}

/// The writer thread: takes the transactions waiting in `requests` (as many as have queued
/// up while the previous batch was being committed, at most [`MAX_BATCH`]) and commits them
/// together (group commit), so concurrent writers share one fsync instead of queueing for
/// one each. Every transaction still gets its own revision, its compares are evaluated
/// against the writes of the transactions before it in the batch, and it is answered only
/// once the batch is durable. Ends when every sender is gone (the store was dropped).
fn writer_loop(
    mut conn: Connection,
    requests: std_mpsc::Receiver<WriteRequest>,
    changes: broadcast::Sender<Arc<Vec<Event>>>,
    commits: &AtomicU64,
) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|r| ((r.compares, r.ops), r.reply))
            .unzip();
        match apply_batch(&mut conn, &commands) {
            Ok((results, committed)) => {
                if committed {
                    commits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("commissaire_store_commits_total").increment(1);
                }
                metrics::counter!("commissaire_store_write_txns_total")
                    .increment(results.len() as u64);
                for (result, reply) in results.into_iter().zip(replies) {
                    let answer = result.map(|(outcome, events)| {
                        if !events.is_empty() {
                            // Sent by this one thread, batch after batch, so watchers see
                            // revisions in order.
                            let _ = changes.send(Arc::new(events));
                        }
                        outcome
                    });
                    // The caller may have gone away (its request was cancelled); the write
                    // stands either way, as it would have without the queue.
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let reason = e.to_string();
                let unavailable = matches!(e, StoreError::Unavailable(_));
                for reply in replies {
                    let _ = reply.send(Err(if unavailable {
                        StoreError::Unavailable(reason.clone())
                    } else {
                        StoreError::Backend(reason.clone())
                    }));
                }
            }
        }
    }
}

/// Applies a batch of transactions in one SQLite transaction and commits it once.
///
/// Each transaction runs inside its own savepoint: one whose compares fail, that changes
/// nothing, or that meets an error is rolled back to its savepoint and the others are
/// unaffected, exactly as if they had been committed one by one in this order. The outer
/// `Err` means the batch as a whole was not committed (nothing of it was written); with `Ok`,
/// the flag tells whether anything was (a batch that changed nothing is not committed).
#[allow(clippy::type_complexity)]
fn apply_batch(
    conn: &mut Connection,
    batch: &[(Vec<Compare>, Vec<Op>)],
) -> StoreResult<(Vec<StoreResult<(TxnOutcome, Vec<Event>)>>, bool)> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let start = current_revision(&tx)?;
    let mut rev = start;
    let mut results = Vec::with_capacity(batch.len());
    for (compares, ops) in batch {
        let sp = tx.savepoint().map_err(backend)?;
        let applied = apply_txn(&sp, compares, ops, rev);
        let result = match applied {
            Ok(Applied::Changed(events)) => {
                sp.commit().map_err(backend)?;
                rev += 1;
                Ok((
                    TxnOutcome {
                        succeeded: true,
                        revision: rev,
                    },
                    events,
                ))
            }
            other => {
                // Undo whatever this transaction wrote; the batch goes on without it.
                sp.finish().map_err(backend)?;
                other.map(|a| {
                    (
                        TxnOutcome {
                            succeeded: !matches!(a, Applied::CompareFailed),
                            revision: rev,
                        },
                        vec![],
                    )
                })
            }
        };
        // Some failures (I/O, disk full) make SQLite roll back the whole transaction: then
        // nothing of this batch can be committed, not even the transactions applied before
        // this one (none of them has been answered yet).
        if tx.is_autocommit() {
            return Err(match result {
                Err(e) => e,
                Ok(_) => backend("the write transaction was rolled back by SQLite"),
            });
        }
        results.push(result);
    }
    if rev == start {
        // Nothing changed: no commit, no fsync.
        tx.rollback().map_err(backend)?;
        return Ok((results, false));
    }
    tx.execute("UPDATE meta SET value=?1 WHERE name='revision'", [rev])
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok((results, true))
}

/// Checks one transaction's compares and applies its ops as revision `rev + 1`, on a
/// connection inside a savepoint that the caller releases or rolls back.
fn apply_txn(
    conn: &Connection,
    compares: &[Compare],
    ops: &[Op],
    rev: Revision,
) -> StoreResult<Applied> {
    let mod_rev_of = |key: &str| -> StoreResult<Option<Revision>> {
        conn.prepare_cached("SELECT mod_rev FROM kv WHERE key=?1")
            .map_err(backend)?
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(backend)
    };
    for cmp in compares {
        let holds = match cmp {
            Compare::Absent(k) => mod_rev_of(k)?.is_none(),
            Compare::ModRevision(k, want) => mod_rev_of(k)? == Some(*want),
        };
        if !holds {
            return Ok(Applied::CompareFailed);
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
                let created: Option<Revision> = conn
                    .prepare_cached("SELECT create_rev FROM kv WHERE key=?1")
                    .map_err(backend)?
                    .query_row([key], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                // A key put twice in one transaction keeps the first put's creation.
                let created_now = created.is_none() || created == Some(new_rev);
                let create_rev = created.unwrap_or(new_rev);
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO kv(key, value, create_rev, mod_rev) VALUES(?1,?2,?3,?4)",
                )
                .map_err(backend)?
                .execute(params![key, value, create_rev, new_rev])
                .map_err(backend)?;
                conn.prepare_cached(
                    "INSERT INTO log(rev, idx, key, kind, created, value) VALUES(?1,?2,?3,0,?4,?5)",
                )
                .map_err(backend)?
                .execute(params![new_rev, idx, key, created_now as i64, value])
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
                let prev: Option<Vec<u8>> = conn
                    .prepare_cached("SELECT value FROM kv WHERE key=?1")
                    .map_err(backend)?
                    .query_row([key], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if let Some(prev) = prev {
                    conn.prepare_cached("DELETE FROM kv WHERE key=?1")
                        .map_err(backend)?
                        .execute([key])
                        .map_err(backend)?;
                    conn.prepare_cached(
                        "INSERT INTO log(rev, idx, key, kind, created, value) VALUES(?1,?2,?3,1,0,?4)",
                    )
                    .map_err(backend)?
                    .execute(params![new_rev, idx, key, prev])
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
        return Ok(Applied::Unchanged);
    }
    if new_rev % COMPACT_EVERY == 0 && new_rev > LOG_RETENTION {
        let upto = new_rev - LOG_RETENTION;
        conn.execute("DELETE FROM log WHERE rev <= ?1", [upto])
            .map_err(backend)?;
        conn.execute("UPDATE meta SET value=?1 WHERE name='compacted'", [upto])
            .map_err(backend)?;
    }
    Ok(Applied::Changed(events))
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
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            compares,
            ops,
            reply,
        };
        let stopped = || StoreError::Backend("sqlite: the writer thread has stopped".into());
        self.inner
            .requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
