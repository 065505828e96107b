//! The CA directory on disk: file names, modes, atomic replacement and the
//! lock that serialises `converge ca`/`cert` commands.
//!
//! Private keys are created with mode 0600 from the first byte (no window in
//! which another user could read them) and the directory is 0700. Files a
//! running server reads (the CRL) are replaced by write-temp-then-rename, so
//! a reader sees the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::CaError;

/// The CA's private key, PKCS#8 PEM, mode 0600.
pub const KEY_FILE: &str = "ca.key";
/// The CA certificate, PEM: what the TLS server trusts for client certificates.
pub const CERT_FILE: &str = "ca.pem";
/// One JSON object per issued certificate (see [`Entry`](super::Entry)).
pub const INDEX_FILE: &str = "index.jsonl";
/// The current CRL, PEM, rewritten on every revocation and renewal.
pub const CRL_FILE: &str = "crl.pem";
/// Settings and counters (CRL number, CRL lifetime, URN namespace).
pub const STATE_FILE: &str = "state.toml";
/// Held while a command changes the directory.
pub const LOCK_FILE: &str = "lock";

/// Mode of private keys.
pub(crate) const PRIVATE: u32 = 0o600;
/// Mode of certificates, the CRL and the index (the directory itself is 0700).
pub(crate) const PUBLIC: u32 = 0o644;
/// Mode of the CA directory.
pub(crate) const DIR: u32 = 0o700;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) and makes `dir` itself mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    set_mode(dir, DIR)
}

/// Writes a file that must not exist yet.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = options(mode)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => CaError::FileExists(path.to_path_buf()),
            _ => CaError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Replaces `path` atomically: a temporary file in the same directory,
/// synced, then renamed over it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = temp_path(path);
    // A temporary left by a crash is ours to discard.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    // The rename is durable once the directory entry is.
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Refuses a private key that group or others can read (as ssh does).
pub(crate) fn check_private(path: &Path) -> Result<(), CaError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyExposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// The directory lock: a file created exclusively, removed on drop.
///
/// Two concurrent `cert issue` runs would otherwise both rewrite the index
/// and one certificate would vanish from it (and from any later CRL).
#[derive(Debug)]
pub(crate) struct Lock {
    path: PathBuf,
}

impl Lock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, CaError> {
        let path = dir.join(LOCK_FILE);
        let mut file =
            options(PUBLIC)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => CaError::Locked(path.clone()),
                    _ => CaError::Io {
                        path: path.clone(),
                        source: e,
                    },
                })?;
        // The pid helps an admin decide whether a stale lock is safe to remove.
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { path })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn options(mode: u32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CaError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
