//! Staging: the durable store between the SCIM endpoint and replay. It holds the desired state of every
//! resource, the journal (outbox) of acknowledged changes and the ledger (replay's cursors, links,
//! failures, the audit trail, reconciliation runs). Below it is only the protocol model, `crate::scim`.
//!
//! The rest of the crate reaches staging through the traits of [`store`] ([`ResourceStore`] and
//! [`Ledger`]). The embedded backend is SQLite: [`SqliteStaging`] (this file, `read`, `writer`) where one
//! writer thread owns the write connection and commits concurrent requests together (group commit) while
//! readers use a small pool, and [`ledger::SqliteLedger`] for the rest; `sqlite` binds them to the traits.

mod checkpoint;
mod files;
pub mod journal;
pub mod ledger;
mod members;
mod migrations;
pub mod query;
mod read;
mod sqlite;
pub mod store;
mod tenants;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::scim::Rules;
use crate::scim::error::ScimError;
use crate::scim::patch::PatchOp;
use crate::scim::schema::Kind;

pub use files::{DaemonLock, private_file, running_daemon};
pub use journal::{ChangeSeq, ResourceId, ResourceRef, TenantId};
pub use migrations::MigrationError;
pub use read::{ListQuery, Page};
pub use store::{AuditLog, Ledger, OperatorLog, ReplayLog, ResourceStore, RunLog, Stores, open_ledger};
/// `rotate_token` works on an embedded staging file directly: tests and benchmarks seed a tenant with it
/// before a daemon starts. Everything else about tenants goes through [`OperatorLog`].
pub use tenants::{Tenant, TenantInfo, generate_token, hash_token, rotate_token, validate_tenant_name};

/// A resource as staged.
#[derive(Debug, Clone)]
pub struct Stored {
    pub kind: Kind,
    pub id: String,
    /// The normalised document without `id`, `meta` and (for groups) `members`.
    pub doc: Map<String, Value>,
    /// Group members, when they were asked for.
    pub members: Option<Vec<Member>>,
    /// The stored body as is, when a list asked for it unparsed (`ListQuery::raw`); `doc` is then empty.
    pub body: Option<String>,
    pub version: i64,
    pub created: String,
    pub last_modified: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub kind: Kind,
    pub display: Option<String>,
}

/// A change to stage. Bodies are already normalised and validated by the SCIM layer; PATCH operations are
/// applied here, by the single writer, so that read-modify-write cannot interleave.
#[derive(Debug)]
pub enum Change {
    Create { kind: Kind, doc: Map<String, Value> },
    Replace { kind: Kind, id: String, doc: Map<String, Value>, if_match: Option<String> },
    Patch { kind: Kind, id: String, ops: Vec<PatchOp>, if_match: Option<String> },
    Delete { kind: Kind, id: String, if_match: Option<String> },
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Change::Create { kind, .. }
            | Change::Replace { kind, .. }
            | Change::Patch { kind, .. }
            | Change::Delete { kind, .. } => *kind,
        }
    }

    pub fn op(&self) -> journal::Op {
        match self {
            Change::Create { .. } => journal::Op::Create,
            Change::Replace { .. } => journal::Op::Replace,
            Change::Patch { .. } => journal::Op::Patch,
            Change::Delete { .. } => journal::Op::Delete,
        }
    }
}

#[derive(Debug)]
pub struct Committed {
    /// The journal entry, or None for a change that changed nothing (nothing was journaled).
    pub seq: Option<ChangeSeq>,
    /// The resource after the change; None after a delete.
    pub resource: Option<Stored>,
}

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The request itself is wrong (conflict, not found, invalid value): answered to the client as is.
    #[error(transparent)]
    Rejected(#[from] ScimError),
    #[error("staging database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("cannot open staging database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the staging directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// The batch could not be committed; nothing of it was stored (the rusqlite error went to the log).
    #[error("staging commit failed: {0}")]
    Commit(String),
    /// Nothing can be stored right now (disk full, read-only file system, I/O error); clients retry.
    #[error("the staging database cannot store changes right now: {0}")]
    Unavailable(String),
    /// Another process serves this staging database.
    #[error(
        "another scim-bridge{} is serving the staging database {staging}; stop it first (it holds {lock})",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { staging: PathBuf, pid: Option<u32>, lock: PathBuf },
    /// A row that only this program writes cannot be read back: the file was damaged or edited by hand.
    #[error("the staging database holds a corrupt row: {0}")]
    Corrupt(String),
    #[error("the staging writer has stopped")]
    Closed,
    /// A thread or task of staging could not be started or died (a bug, or the system is out of resources).
    #[error("staging worker failed: {0}")]
    Worker(String),
    /// A lock was poisoned by a panic in another thread.
    #[error("a staging lock was poisoned by an earlier panic")]
    Poisoned,
}

pub(crate) struct WriteRequest {
    tenant: TenantId,
    request_id: String,
    rules: Rules,
    change: Change,
    reply: oneshot::Sender<Result<Committed, StagingError>>,
}

/// Handle to the staging store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStaging {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<WriterMsg>,
    readers: Mutex<Vec<Connection>>,
    commits: tokio::sync::watch::Receiver<u64>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop_checkpoints: Arc<std::sync::atomic::AtomicBool>,
    /// Writes and deletes per (tenant, kind), counted by the writer: they tell when position marks are stale.
    generations: Generations,
    marks: Mutex<read::MarksCache>,
}

pub(crate) type Generations = Arc<Mutex<std::collections::HashMap<(TenantId, Kind), read::Generation>>>;

/// Settings of the staging store.
#[derive(Debug, Clone)]
pub struct StagingOptions {
    /// Most changes committed in one transaction.
    pub max_batch: usize,
}

impl Default for StagingOptions {
    fn default() -> Self {
        StagingOptions { max_batch: 512 }
    }
}

/// Opens the staging database, creating it (private to its owner) and bringing its schema up to date.
fn open_migrated(path: &Path) -> Result<Connection, StagingError> {
    files::private_file(path)?;
    let mut conn = open_connection(path)?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

/// Switches to WAL. The switch takes an exclusive lock without consulting the busy handler, so a second
/// process opening the same new file at the same moment gets SQLITE_BUSY at once: retry for as long as the
/// busy timeout would have waited.
fn enable_wal(conn: &Connection) -> Result<(), StagingError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StagingError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StagingError::Open { path: path.to_owned(), source })?;
    // First, so that a second process opening the same new file waits instead of failing on the switch to
    // WAL below.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL on every commit, which is
    // what makes "acknowledged" mean "durable" (contract point 1).
    enable_wal(&conn)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // After a checkpoint, the WAL file is cut back to this size instead of staying at its largest.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // No connection checkpoints on its own commits (the writer's requests, replay's steps would wait for
    // it): the daemon's checkpointer thread does (see `checkpoint`), and SQLite checkpoints when the last
    // connection closes.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Refuse to run without the durability the contract promises (a filesystem without shared memory
    // support would silently leave WAL off).
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(StagingError::Open {
            path: path.to_owned(),
            source: rusqlite::Error::InvalidParameterName(format!(
                "the staging database must run with journal_mode=WAL and synchronous=FULL, got {mode} and {sync}"
            )),
        });
    }
    Ok(conn)
}

impl SqliteStaging {
    /// Opens (creating if needed) the staging database, migrates it and starts the writer thread.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened, or the schema is newer than this build.
    pub fn open(path: &Path, options: StagingOptions) -> Result<SqliteStaging, StagingError> {
        let conn = open_migrated(path)?;
        // A larger cache keeps the indexes' hot pages in memory as the tables grow.
        conn.pragma_update(None, "cache_size", -65536)?;
        let stop_checkpoints = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = std::thread::Builder::new()
            .name("staging-checkpoint".into())
            .spawn({
                let (c, db, stop) = (open_connection(path)?, path.to_owned(), stop_checkpoints.clone());
                move || checkpoint::run(c, db, stop)
            })
            .map_err(|e| StagingError::Worker(e.to_string()))?;
        let (tx, rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let max_batch = options.max_batch.max(1);
        let (commits_tx, commits) = tokio::sync::watch::channel(0u64);
        let generations: Generations = Arc::default();
        let handle = std::thread::Builder::new()
            .name("staging-writer".into())
            .spawn({
                let generations = generations.clone();
                move || writer::run(conn, rx, max_batch, commits_tx, generations)
            })
            .map_err(|e| StagingError::Worker(e.to_string()))?;
        Ok(SqliteStaging {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: tx,
                readers: Mutex::new(Vec::new()),
                commits,
                writer_thread: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some(checkpointer)),
                stop_checkpoints,
                generations,
                marks: Mutex::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The database file and its write-ahead log, in bytes.
    fn file_bytes(&self) -> i64 {
        let path = self.path();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        [path, Path::new(&wal)].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len() as i64).sum()
    }

    /// Writes and deletes so far of a tenant's resources of one kind.
    fn generation(&self, tenant: TenantId, kind: Kind) -> read::Generation {
        self.inner.generations.lock().map(|g| g.get(&(tenant, kind)).copied().unwrap_or_default()).unwrap_or_default()
    }

    /// Changes whenever the writer commits a batch: replay waits on it instead of polling.
    pub(in crate::staging) fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// Stages a change. Returns only after the change and its journal entry are committed and fsynced.
    ///
    /// # Errors
    /// `Rejected` for a request that cannot apply (answered to the client); `Db`/`Closed` otherwise.
    pub(in crate::staging) async fn write(
        &self,
        tenant: TenantId,
        request_id: &str,
        rules: Rules,
        change: Change,
    ) -> Result<Committed, StagingError> {
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest { tenant, request_id: request_id.to_owned(), rules, change, reply };
        self.inner.writer.send(WriterMsg::Write(req)).await.map_err(|_| StagingError::Closed)?;
        rx.await.map_err(|_| StagingError::Closed)?
    }

    /// Whether staging takes a durable write now: the writer commits its heartbeat row, in turn with the
    /// changes queued before. For readiness.
    ///
    /// # Errors
    /// Why the write failed, or that the writer did not answer within `timeout` (a backlog, a stuck disk).
    pub(in crate::staging) async fn probe_write(&self, timeout: std::time::Duration) -> Result<(), String> {
        self.probe(timeout).await?
    }

    /// Whether the writer thread answers within `timeout`, whatever the outcome of its write (a full disk
    /// is not cured by a restart; a stuck writer may be). For the service manager's watchdog.
    pub(in crate::staging) async fn writer_answers(&self, timeout: std::time::Duration) -> bool {
        self.probe(timeout).await.is_ok()
    }

    /// The writer's answer to a heartbeat write (outer error: no answer in time).
    async fn probe(&self, timeout: std::time::Duration) -> Result<Result<(), String>, String> {
        let (reply, rx) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, self.inner.writer.send(WriterMsg::Probe(reply))).await;
        match sent {
            Err(_) => return Err(format!("the staging writer did not take a write within {} ms", timeout.as_millis())),
            Ok(Err(_)) => return Err("the staging writer has stopped".into()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(format!("a staging write did not commit within {} ms", timeout.as_millis())),
            Ok(Err(_)) => Err("the staging writer has stopped".into()),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Runs a read on a pooled connection on the blocking thread pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StagingError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StagingError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().map_err(|_| StagingError::Poisoned)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = open_connection(&inner.path)?;
                    c.pragma_update(None, "query_only", "ON")?;
                    c
                }
            };
            let out = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 16
            {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StagingError::Worker(e.to_string()))?
    }

    /// Stops the writer after it has committed everything queued before this call; later writes fail
    /// with `Closed`. Waits for the writer thread to finish.
    pub(in crate::staging) async fn close(&self) {
        if self.inner.writer.send(WriterMsg::Stop).await.is_err() {
            return;
        }
        let handle = self.inner.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.stop_checkpoints.store(true, std::sync::atomic::Ordering::Relaxed);
        let handle = self.inner.checkpointer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Opens the embedded SQLite staging database at `path`: its resource side (with the writer thread) and its
/// ledger.
///
/// # Errors
/// The directory or file cannot be created or opened, or the schema is newer than this build.
pub fn open(path: &Path, options: StagingOptions) -> Result<Stores, StagingError> {
    let resources = SqliteStaging::open(path, options)?;
    let ledger = ledger::SqliteLedger::open(path)?;
    Ok(Stores { resources: Arc::new(resources), ledger: Arc::new(ledger) })
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) enum WriterMsg {
    Write(WriteRequest),
    /// A durable write of the heartbeat row, answered with why it failed, if it did.
    Probe(oneshot::Sender<Result<(), String>>),
    Stop,
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open_connection(&dir.path().join("s.db")).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }
}
