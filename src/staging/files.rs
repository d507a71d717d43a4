//! The staging files on disk: a private directory and database file (they hold personal data and token
//! hashes), and the lock that lets one daemon own them for its lifetime.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::StagingError;

/// Creates a missing directory readable by its owner only (0700; a stricter umask still applies).
///
/// # Errors
/// The directory cannot be created.
pub fn private_dir(dir: &Path) -> Result<(), StagingError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StagingError::Dir { path: dir.to_owned(), source })
}

/// Makes sure a database file exists before SQLite opens it, created 0600 (owner only, a stricter umask
/// still applies) in a private directory. SQLite gives its `-wal` and `-shm` files the permissions of the
/// database file, so they are private too. An existing file keeps its mode.
///
/// # Errors
/// The directory or the file cannot be created.
pub fn private_file(path: &Path) -> Result<(), StagingError> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| StagingError::Dir { path: path.to_owned(), source })
}

fn lock_path(staging: &Path) -> PathBuf {
    let mut p = staging.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Held by `serve` for its whole life: an exclusive `flock` on a file beside the staging database, so that
/// a second daemon on the same file refuses to start instead of replaying the journal a second time. The
/// kernel releases it when the process ends, however it ends. Commands that only read or queue work
/// (status, journal, retry, token) do not take it.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock of the staging database at `staging`, writing this process's id into the lock file.
    ///
    /// # Errors
    /// `Locked`, naming the holder's pid, when another process holds it; or the file cannot be created.
    pub fn acquire(staging: &Path) -> Result<DaemonLock, StagingError> {
        let path = lock_path(staging);
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StagingError::Dir { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StagingError::Locked {
                    staging: staging.to_owned(),
                    pid: text.trim().parse().ok(),
                    lock: path,
                });
            }
            Err(TryLockError::Error(source)) => return Err(StagingError::Dir { path, source }),
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|source| StagingError::Dir { path: path.clone(), source })?;
        Ok(DaemonLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the daemon serving the staging database at `staging`, if one runs: the holder of its lock as
/// the kernel lists it in /proc/locks (matched by the lock file's inode), so that a stale pid in the file
/// is never taken for a running daemon, and nothing is locked to find out.
pub fn running_daemon(staging: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(lock_path(staging)).ok()?;
    // The file as /proc/locks names it: the device's major and minor number in hex, then the inode (an
    // inode number alone repeats across file systems).
    let dev = meta.dev();
    let (major, minor) = (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff));
    let file = (major, minor, meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        let f: Vec<&str> = line.split_whitespace().collect();
        let held = f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"WRITE");
        let mut id = f.get(5)?.split(':');
        let (maj, min, ino) = (id.next()?, id.next()?, id.next()?);
        let named = (u64::from_str_radix(maj, 16).ok()?, u64::from_str_radix(min, 16).ok()?, ino.parse::<u64>().ok()?);
        if held && named == file { f.get(4).and_then(|p| p.parse().ok()) } else { None }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/staging.db");
        private_file(&db).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("staging.db");
        let first = DaemonLock::acquire(&db).unwrap();
        let e = DaemonLock::acquire(&db).unwrap_err();
        assert!(matches!(&e, StagingError::Locked { pid: Some(p), .. } if *p == std::process::id()), "{e}");
        assert!(e.to_string().contains(&std::process::id().to_string()), "{e}");
        assert_eq!(running_daemon(&db), Some(std::process::id()));
        drop(first);
        assert_eq!(running_daemon(&db), None, "the pid left in the file is not taken for a daemon");
        DaemonLock::acquire(&db).unwrap();
    }
}
