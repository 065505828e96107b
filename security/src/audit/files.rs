//! File names of an audit directory and the few filesystem steps that need
//! care: private permissions and making a new file's name durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One record per line.
pub const LOG_FILE: &str = "audit.jsonl";
/// One signed checkpoint per line.
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
/// The Ed25519 signing key, PKCS#8 (DER), mode 0600.
pub const KEY_FILE: &str = "audit.key";
/// The public key, 64 hex digits and a newline, for auditors.
pub const PUBLIC_KEY_FILE: &str = "audit.pub";

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
