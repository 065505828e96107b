//! Signed checkpoints: the record count and the RFC 9162 tree head of the
//! first `count` records, signed with the server's Ed25519 key, and that key.
//!
//! The key is a PKCS#8 file created on first use (mode 0600, written
//! atomically); its public half is written next to it as hex so that an
//! auditor can verify a copy of the log without the private key. Keeping
//! that public key somewhere the server cannot write is what makes the
//! signatures worth checking (docs/SECURITY.md, "Audit log").

use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Deserialize;

use super::digest::{hex, unhex_into, BadHex, Digest};
use super::files;

/// What a checkpoint asserts: the log's first `count` records have tree
/// head `root`; signed at `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    pub count: u64,
    pub root: Digest,
    /// Unix milliseconds.
    pub time_ms: i64,
}

impl Checkpoint {
    pub fn new(count: u64, root: Digest, time_ms: i64) -> Self {
        Self {
            count,
            root,
            time_ms,
        }
    }

    /// The signed bytes: a versioned text, so that auditors can check a
    /// signature with any Ed25519 tool.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "converge-audit-checkpoint/v1\n{}\n{}\n{}\n",
            self.count, self.root, self.time_ms
        )
        .into_bytes()
    }
}

/// A checkpoint and its Ed25519 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signature: [u8; 64],
}

impl SignedCheckpoint {
    /// Whether `key` signed this checkpoint.
    pub fn verify(&self, key: &PublicKey) -> bool {
        UnparsedPublicKey::new(&signature::ED25519, &key.0)
            .verify(&self.checkpoint.signed_message(), &self.signature)
            .is_ok()
    }

    /// The stored line, without the newline.
    pub fn encode(&self) -> String {
        let c = &self.checkpoint;
        let mut s = String::with_capacity(256);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{{\"count\":{},\"root\":\"{}\",\"time_ms\":{},\"signature\":\"{}\"}}",
            c.count,
            c.root,
            c.time_ms,
            hex(&self.signature)
        );
        s
    }

    /// Parses a stored line; like records, only the canonical spelling is
    /// accepted. The signature is not checked here.
    pub fn decode(line: &[u8]) -> Result<Self, String> {
        let raw: CheckpointLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let root: Digest = raw.root.parse().map_err(|e: BadHex| format!("root: {e}"))?;
        let mut signature = [0u8; 64];
        unhex_into(&raw.signature, &mut signature).map_err(|e| format!("signature: {e}"))?;
        let cp = SignedCheckpoint {
            checkpoint: Checkpoint::new(raw.count, root, raw.time_ms),
            signature,
        };
        if cp.encode().as_bytes() != line {
            return Err("not in canonical form (edited)".into());
        }
        Ok(cp)
    }
}

/// An Ed25519 public key (32 bytes), written and read as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Reads a `.pub` file: 64 lowercase hex digits, optionally followed by
    /// a newline.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        text.trim_end_matches('\n')
            .parse()
            .map_err(|_| KeyError::BadPublicKey {
                path: path.to_owned(),
            })
    }
}

impl FromStr for PublicKey {
    type Err = BadHex;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut k = [0u8; 32];
        unhex_into(s, &mut k)?;
        Ok(PublicKey(k))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The server's checkpoint signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half.
        write!(f, "SigningKey({})", self.public_key())
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not an Ed25519 PKCS#8 private key", path.display())]
    BadPrivateKey { path: PathBuf },
    #[error("{}: not an Ed25519 public key (64 lowercase hex digits)", path.display())]
    BadPublicKey { path: PathBuf },
    #[error("{}: this public key does not belong to the signing key {}", path.display(), key.display())]
    PublicKeyMismatch { path: PathBuf, key: PathBuf },
    #[error("no secure random numbers to generate a key")]
    Random,
}

impl SigningKey {
    /// A fresh key and its PKCS#8 encoding.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Random)?;
        Ok((Self { pair }, doc.as_ref().to_vec()))
    }

    /// Loads the key at `key_path`, or creates it (mode 0600) if missing.
    /// Then makes sure `pub_path` holds its public key: written if
    /// missing, an error if it holds another key.
    pub fn load_or_create(key_path: &Path, pub_path: &Path) -> Result<Self, KeyError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        let key = match std::fs::read(key_path) {
            Ok(der) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map(|pair| Self { pair })
                .map_err(|_| KeyError::BadPrivateKey {
                    path: key_path.to_owned(),
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (key, der) = Self::generate()?;
                files::write_atomic(key_path, &der, 0o600).map_err(io_err(key_path))?;
                tracing::info!(path = %key_path.display(), public_key = %key.public_key(),
                    "created the audit checkpoint signing key");
                key
            }
            Err(e) => return Err(io_err(key_path)(e)),
        };
        match PublicKey::from_file(pub_path) {
            Ok(p) if p == key.public_key() => {}
            Ok(_) => {
                return Err(KeyError::PublicKeyMismatch {
                    path: pub_path.to_owned(),
                    key: key_path.to_owned(),
                })
            }
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let text = format!("{}\n", key.public_key());
                files::write_atomic(pub_path, text.as_bytes(), 0o644).map_err(io_err(pub_path))?;
            }
            Err(e) => return Err(e),
        }
        Ok(key)
    }

    pub fn public_key(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }

    pub fn sign(&self, checkpoint: Checkpoint) -> SignedCheckpoint {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.pair.sign(&checkpoint.signed_message()).as_ref());
        SignedCheckpoint {
            checkpoint,
            signature,
        }
    }
}

/// The stored checkpoint line as parsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    count: u64,
    root: String,
    time_ms: i64,
    signature: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn sign_encode_decode_verify() {
        let (key, _) = SigningKey::generate().unwrap();
        let cp = key.sign(Checkpoint::new(3, Digest::of(&[b"x"]), 1_000));
        assert!(cp.verify(&key.public_key()));
        let line = cp.encode();
        let back = SignedCheckpoint::decode(line.as_bytes()).unwrap();
        assert_eq!(back, cp);
        let mut forged = cp;
        forged.checkpoint.count = 4;
        assert!(!forged.verify(&key.public_key()));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!cp.verify(&other.public_key()));
    }

    #[test]
    fn key_files_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = (dir.path().join("a.key"), dir.path().join("a.pub"));
        let first = SigningKey::load_or_create(&k, &p).unwrap();
        let again = SigningKey::load_or_create(&k, &p).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(PublicKey::from_file(&p).unwrap(), first.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(
            &p,
            format!("{}\n", SigningKey::generate().unwrap().0.public_key()),
        )
        .unwrap();
        assert!(matches!(
            SigningKey::load_or_create(&k, &p),
            Err(KeyError::PublicKeyMismatch { .. })
        ));
    }
}
