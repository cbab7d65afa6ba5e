//! Encryption at rest for secrets advps must be able to read back (root
//! passwords): XChaCha20-Poly1305 under a 256-bit key kept in a file of its
//! own, created with mode 0600 on first start.
//!
//! Stored form: `v1:` + base64(24-byte nonce ‖ ciphertext). The version
//! prefix leaves room to rotate keys later.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use secrecy::ExposeSecret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the secret key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("stored secret cannot be decrypted (wrong key or damaged value)")]
    Decrypt,
}

#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Cipher {
        Cipher {
            aead: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The key a deployment is configured with: `secret_key` (base64 of 32
    /// bytes) when set — every instance on one database needs the same key —
    /// else the key file, made on first use.
    pub fn for_config(config: &crate::Config) -> Result<Cipher, SecretError> {
        match config.secret_key.as_ref().map(|key| key.expose_secret()) {
            Some(encoded) => {
                let bad = |message: &str| SecretError::KeyFile {
                    path: "secret_key".into(),
                    message: message.to_string(),
                };
                let bytes = B64.decode(encoded.trim()).map_err(|_| bad("not base64"))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| bad("the key must be 32 bytes"))?;
                Ok(Cipher::from_key(&key))
            }
            None => Cipher::load_or_create(&config.secret_key_path()),
        }
    }

    /// Reads the key file, or creates it with a fresh random key.
    pub fn load_or_create(path: &Path) -> Result<Cipher, SecretError> {
        let fail = |message: String| SecretError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // A key file loosened by hand is made private again (by
                // path: no descriptor of it is opened for this).
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| fail(e.to_string()))?;
                }
                let bytes = B64
                    .decode(text.trim())
                    .map_err(|_| fail("not base64".into()))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| fail("the key must be 32 bytes".into()))?;
                Ok(Cipher::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                match options.open(path) {
                    Ok(mut file) => {
                        file.write_all(B64.encode(key).as_bytes())
                            .and_then(|_| file.sync_all())
                            .map_err(|e| fail(e.to_string()))?;
                        Ok(Cipher {
                            aead: XChaCha20Poly1305::new(&key),
                        })
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Cipher::load_or_create(path)
                    }
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("v1:{}", B64.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, SecretError> {
        let raw = stored
            .strip_prefix("v1:")
            .and_then(|b| B64.decode(b).ok())
            .ok_or(SecretError::Decrypt)?;
        if raw.len() < 24 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let plain = self
            .aead
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let cipher = Cipher::load_or_create(&path).unwrap();
        let stored = cipher.encrypt("Xk9mP2nQr7vLw3Zt");
        assert!(!stored.contains("Xk9mP2nQr7vLw3Zt"));
        assert_ne!(
            stored,
            cipher.encrypt("Xk9mP2nQr7vLw3Zt"),
            "fresh nonce each time"
        );
        // The same file gives the same key after a restart.
        let again = Cipher::load_or_create(&path).unwrap();
        assert_eq!(again.decrypt(&stored).unwrap(), "Xk9mP2nQr7vLw3Zt");
        let mut damaged = stored.clone();
        damaged.pop();
        damaged.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(again.decrypt(&damaged).is_err());
        let other = Cipher::from_key(&[7u8; 32]);
        assert!(other.decrypt(&stored).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
