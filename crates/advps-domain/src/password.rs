//! Root passwords: drawn from the operating system's random source, long
//! enough, and always holding upper case, lower case and digits so that
//! guests with complexity rules accept them.

use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rand::Rng;

pub const PASSWORD_LEN: usize = 20;

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";

/// A fresh password of [`PASSWORD_LEN`] characters. Look-alike characters
/// (0/O, 1/l/I) are left out: these passwords are often read off a screen.
pub fn generate() -> String {
    let mut rng = OsRng;
    let all: Vec<u8> = [UPPER, LOWER, DIGITS].concat();
    let mut chars: Vec<u8> = vec![
        UPPER[rng.gen_range(0..UPPER.len())],
        LOWER[rng.gen_range(0..LOWER.len())],
        DIGITS[rng.gen_range(0..DIGITS.len())],
    ];
    while chars.len() < PASSWORD_LEN {
        chars.push(all[rng.gen_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    String::from_utf8(chars).expect("ASCII alphabet")
}

/// Whether a password meets the rules above (used by tests and checks).
pub fn is_strong(password: &str) -> bool {
    password.len() >= 16
        && password.bytes().any(|b| b.is_ascii_uppercase())
        && password.bytes().any(|b| b.is_ascii_lowercase())
        && password.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_strong_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = generate();
            assert!(is_strong(&p), "{p}");
            assert!(seen.insert(p));
        }
        assert!(!is_strong("short1A"));
        assert!(!is_strong("alllowercaseletters1"));
    }
}
