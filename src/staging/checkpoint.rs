//! Checkpoints on a thread of their own. SQLite would checkpoint on the writer's commits (every 1,000
//! pages), copying the WAL into the database and syncing it while the requests of that batch wait; here
//! the writer only appends to the WAL and syncs it, and this thread copies pages back in the background
//! (PASSIVE: it never blocks the writer). When readers keep the WAL from being reset and it grows past
//! [`WAL_LIMIT`], a TRUNCATE checkpoint cuts it back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

/// A checkpoint starts when the WAL holds this much.
const CHECKPOINT_AT: u64 = 8 * 1024 * 1024;
/// Past this, the WAL is checkpointed and truncated.
pub const WAL_LIMIT: u64 = 64 * 1024 * 1024;
/// How often the WAL's size is looked at.
const EVERY: Duration = Duration::from_millis(200);

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

pub(super) fn run(conn: Connection, db: PathBuf, stop: Arc<AtomicBool>) {
    let wal = wal_path(&db);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(EVERY);
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_AT {
            continue;
        }
        let mode = if size > WAL_LIMIT { "TRUNCATE" } else { "PASSIVE" };
        // (busy, frames in the log, frames checkpointed)
        let done = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((busy, frames, copied)) if mode == "TRUNCATE" => {
                tracing::info!(
                    wal_bytes = size,
                    frames,
                    copied,
                    truncated = busy == 0,
                    "staging WAL checkpointed and truncated"
                )
            }
            Ok((_, frames, copied)) => tracing::debug!(wal_bytes = size, frames, copied, "staging WAL checkpointed"),
            Err(e) => tracing::warn!(wal_bytes = size, error = %e, "staging WAL checkpoint failed"),
        }
    }
    tracing::debug!("staging checkpointer stopped");
}
