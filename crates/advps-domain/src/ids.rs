//! Identifiers that advps makes: request ids, key ids and task ids.

use rand::rngs::OsRng;
use rand::Rng;

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `req_<unix epoch milliseconds>_<9 lower-case alphanumerics>`.
///
/// Request ids are labels, not secrets: they come from the thread's
/// generator (seeded from the OS) rather than a system call each.
pub fn request_id(epoch_ms: i64) -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..9)
        .map(|_| LOWER_ALNUM[rng.gen_range(0..LOWER_ALNUM.len())] as char)
        .collect();
    format!("req_{epoch_ms}_{tail}")
}

/// An API key's public id, shown by `advps keys list` and used to revoke it.
pub fn key_id() -> String {
    format!("key_{}", random_from(LOWER_ALNUM, 16))
}

/// A task id: a random UUID, as the reference's `uuid-generated-task-id` suggests.
pub fn task_id() -> String {
    let bytes: [u8; 16] = OsRng.gen();
    let mut b = bytes;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether a request id has the documented shape.
pub fn is_request_id(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("req_") else {
        return false;
    };
    let Some((ms, tail)) = rest.split_once('_') else {
        return false;
    };
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && tail.len() == 9
        && tail.bytes().all(|b| LOWER_ALNUM.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_the_documented_shape() {
        let id = request_id(1_706_611_200_000);
        assert!(id.starts_with("req_1706611200000_"), "{id}");
        assert!(is_request_id(&id));
        assert!(is_request_id("req_1706611200000_abc123def"));
        assert!(!is_request_id("req_1706611200000_ABC123DEF"));
        assert!(!is_request_id("req_x_abc123def"));
    }

    #[test]
    fn task_ids_are_v4_uuids() {
        let id = task_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(task_id(), task_id());
    }
}

/// A live service id: six upper-case letters, like `KYOFMI`.
pub fn live_service_id() -> String {
    random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 6)
}

#[cfg(test)]
mod live_id_tests {
    #[test]
    fn live_service_ids_are_six_capitals() {
        let id = super::live_service_id();
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_uppercase()));
    }
}
