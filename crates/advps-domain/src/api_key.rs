//! API keys: `sk_test_` or `sk_live_` followed by 32 base62 characters drawn
//! from the operating system's random source (about 190 bits).
//!
//! Only a SHA-256 digest of a key is ever stored. A salted slow hash would buy
//! nothing here: the keys are random and long, so the digest cannot be
//! reversed by guessing, and a fast digest lets every request be checked
//! cheaply. The digest is looked up by index and then compared again in
//! constant time, so no timing difference depends on how much of it matched.

use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Mode;

/// Length of the random part of a key.
pub const SECRET_LEN: usize = 32;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the key does not start with sk_test_ or sk_live_")]
    Prefix,
    #[error("the key must have 32 base62 characters after its prefix")]
    Body,
}

/// A freshly made key: the plain text (shown once) and what is stored.
pub struct GeneratedKey {
    pub plaintext: String,
    pub mode: Mode,
    pub hash: String,
    pub last4: String,
}

impl std::fmt::Debug for GeneratedKey {
    // Never print the plain text, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("mode", &self.mode)
            .field("last4", &self.last4)
            .finish_non_exhaustive()
    }
}

/// Makes a new key for `mode`.
pub fn generate(mode: Mode) -> GeneratedKey {
    let mut rng = OsRng;
    let secret: String = (0..SECRET_LEN)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let plaintext = format!("{}{}", mode.key_prefix(), secret);
    GeneratedKey {
        hash: hash(&plaintext),
        last4: last4(&plaintext),
        mode,
        plaintext,
    }
}

/// Checks a presented key's shape and tells its mode, before any lookup, so
/// that junk never reaches the database.
pub fn parse_mode(presented: &str) -> Result<Mode, ApiKeyError> {
    let (mode, body) = if let Some(body) = presented.strip_prefix(Mode::Test.key_prefix()) {
        (Mode::Test, body)
    } else if let Some(body) = presented.strip_prefix(Mode::Live.key_prefix()) {
        (Mode::Live, body)
    } else {
        return Err(ApiKeyError::Prefix);
    };
    if body.len() != SECRET_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiKeyError::Body);
    }
    Ok(mode)
}

/// Lower-case hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares two digests in constant time.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The last four characters of a key, kept to help people tell keys apart.
pub fn last4(key: &str) -> String {
    key[key.len().saturating_sub(4)..].to_string()
}

/// How a key is shown after creation: `sk_test_…WXYZ`.
pub fn display(mode: Mode, last4: &str) -> String {
    format!("{}…{}", mode.key_prefix(), last4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for mode in [Mode::Test, Mode::Live] {
            let key = generate(mode);
            assert_eq!(key.plaintext.len(), mode.key_prefix().len() + SECRET_LEN);
            assert_eq!(parse_mode(&key.plaintext), Ok(mode));
            assert_eq!(key.hash, hash(&key.plaintext));
            assert!(key.plaintext.ends_with(&key.last4));
            assert!(!format!("{key:?}").contains(&key.plaintext));
        }
        assert_ne!(
            generate(Mode::Test).plaintext,
            generate(Mode::Test).plaintext
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(parse_mode(""), Err(ApiKeyError::Prefix));
        assert_eq!(
            parse_mode("sk_prod_0123456789abcdef0123456789abcdef"),
            Err(ApiKeyError::Prefix)
        );
        assert_eq!(parse_mode("sk_test_short"), Err(ApiKeyError::Body));
        assert_eq!(
            parse_mode("sk_test_0123456789abcdef0123456789abcde!"),
            Err(ApiKeyError::Body)
        );
        assert_eq!(
            parse_mode("sk_test_0123456789abcdef0123456789abcdef0"),
            Err(ApiKeyError::Body)
        );
        assert_eq!(
            parse_mode("sk_test_0123456789abcdef0123456789abcdé"),
            Err(ApiKeyError::Body)
        );
    }

    #[test]
    fn digest_comparison() {
        let h = hash("sk_test_x");
        assert!(hashes_match(&h, &hash("sk_test_x")));
        assert!(!hashes_match(&h, &hash("sk_test_y")));
        assert!(!hashes_match(&h, &h[..10]));
    }
}
