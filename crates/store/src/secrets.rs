//! Sealing of secrets at rest (SSH private keys, container-manager tokens).
//!
//! A 32-byte master key lives outside the store, in a key file (created with mode 0600 on first
//! start, or given by path). From it HKDF-SHA256 derives the record key; each record is sealed
//! with AES-256-GCM under a fresh random 96-bit nonce, with the record's store key as associated
//! data so a sealed value cannot be moved to another record. Layout: `version || nonce || ct`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HKDF_INFO: &[u8] = b"commissaire secrets v1";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read, created or parsed.
    #[error("secrets key file {path}: {reason}")]
    KeyFile {
        /// The key file's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A sealed value did not decrypt: wrong master key, tampering, or a value from another key.
    #[error("sealed secret under {key} cannot be opened (wrong secrets key file, or damaged data)")]
    Open {
        /// Store key of the record.
        key: String,
    },
}

/// Seals and opens secrets with a key derived from the master key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// Builds a sealer from the 32-byte master key.
    pub fn from_master_key(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, master);
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand(HKDF_INFO, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key = Key::<Aes256Gcm>::from(*okm);
        Sealer {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// Reads the master key from `path` (64 hex characters), creating the file with a new
    /// random key and mode 0600 if it does not exist. Refuses a key file readable by others.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(key.as_mut());
            let mut text = Zeroizing::new(hex::encode(key.as_ref()));
            text.push('\n');
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(format!("cannot create: {e}")))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| err(format!("cannot write: {e}")))?;
            return Ok(Self::from_master_key(&key));
        }
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "is readable by group or others (mode {:o}); run chmod 600 on it",
                meta.permissions().mode() & 0o777
            )));
        }
        let mut text = fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut bytes = hex::decode(text.trim())
            .map_err(|_| err("must hold 64 hexadecimal characters (a 32-byte key)".to_string()))?;
        text.zeroize();
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| err("must hold 64 hexadecimal characters (a 32-byte key)".to_string()))?;
        bytes.zeroize();
        let key = Zeroizing::new(key);
        Ok(Self::from_master_key(&key))
    }

    /// Seals `plaintext` for the record stored under `store_key`.
    pub fn seal(&self, store_key: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: store_key.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a value sealed for `store_key`.
    pub fn open(&self, store_key: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let bad = || SecretError::Open {
            key: store_key.to_string(),
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(bad());
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().map_err(|_| bad())?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: store_key.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let s = Sealer::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = s.seal("secrets/hosts/a", b"PRIVATE KEY");
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
        assert_eq!(
            &*s.open("secrets/hosts/a", &sealed).unwrap(),
            b"PRIVATE KEY"
        );
        // Bound to its record: cannot be replayed under another key.
        assert!(s.open("secrets/hosts/b", &sealed).is_err());
        // Same key file → same key after a restart.
        let s2 = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            &*s2.open("secrets/hosts/a", &sealed).unwrap(),
            b"PRIVATE KEY"
        );
        // Another key file cannot open it.
        let other = Sealer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open("secrets/hosts/a", &sealed).is_err());
        // Tampering is detected.
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(s.open("secrets/hosts/a", &t).is_err());
        assert!(s.open("secrets/hosts/a", b"").is_err());
    }

    #[test]
    fn rejects_loose_permissions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "00".repeat(32)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Sealer::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Sealer::load_or_create(&path).is_ok());
        fs::write(&path, "nothex").unwrap();
        assert!(Sealer::load_or_create(&path).is_err());
    }
}
