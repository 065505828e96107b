//! File names of an audit directory and the few filesystem steps that need
//! care: private permissions, making a new file's name durable, and the
//! writer lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::AuditError;

/// One record per line.
pub const LOG_FILE: &str = "audit.jsonl";
/// One signed checkpoint per line.
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
/// The Ed25519 signing key, PKCS#8 (DER), mode 0600.
pub const KEY_FILE: &str = "audit.key";
/// The public key, 64 hex digits and a newline, for auditors.
pub const PUBLIC_KEY_FILE: &str = "audit.pub";
/// Locked (`flock`, exclusive) by the one process that writes the log; holds
/// its pid for error messages. Never removed: removing a lock file while
/// another process waits on it would let two writers in.
pub const WRITER_LOCK_FILE: &str = "writer.lock";

/// While waiting for the writer lock, how long to sleep between tries.
const LOCK_RETRY: Duration = Duration::from_millis(25);

/// The exclusive right to append to one audit directory, held from before
/// the signing key is loaded until the writer stops. Two writers would each
/// chain from the tip they read and fork the log; this makes the second one
/// fail instead. Released when dropped (or when the process dies: the
/// kernel drops `flock` locks with the last descriptor).
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock, retrying for up to `wait` (a `converge` CLI command
    /// holds it for a few milliseconds when no server runs).
    pub(crate) fn acquire(dir: &Path, wait: Duration) -> Result<WriterLock, AuditError> {
        let started = Instant::now();
        loop {
            match Self::try_acquire(dir) {
                Err(AuditError::Locked { .. }) if started.elapsed() < wait => {
                    std::thread::sleep(LOCK_RETRY.min(wait.saturating_sub(started.elapsed())));
                }
                other => return other,
            }
        }
    }

    /// Takes the lock or fails at once with [`AuditError::Locked`].
    pub(crate) fn try_acquire(dir: &Path) -> Result<WriterLock, AuditError> {
        let path = dir.join(WRITER_LOCK_FILE);
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut o = OpenOptions::new();
        // Not truncated before the lock is ours: the holder's pid is in it.
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut file = o.open(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: the pid only makes the message more useful.
                let _ = (&file).take(32).read_to_string(&mut text);
                return Err(AuditError::Locked {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(WriterLock { _file: file })
    }
}

/// Creates `dir` (and parents) if missing; a directory this creates is 0700
/// because records name identities and addresses.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Opens `path` for reading and appending, creating it 0600 if missing.
/// Returns whether it was created (then the directory entry is synced).
pub(crate) fn open_append(path: &Path) -> io::Result<(File, bool)> {
    let existed = path.exists();
    let mut o = OpenOptions::new();
    o.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(path)?;
    if !existed {
        f.sync_all()?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
    }
    Ok((f, !existed))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename,
/// fsync of the directory) with mode `mode` on unix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash may have other permissions; `mode` applies only on create.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes renames and new names in `dir` durable (a no-op where directories
/// cannot be opened as files).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
