//! Secret handling: every token the daemon holds is a [`SecretString`], whose
//! `Debug` prints a redaction marker and whose memory is zeroed on drop.
//! Reading the value needs an explicit [`ExposeSecret::expose_secret`] call,
//! which makes every place a secret leaves memory easy to find in review.

pub use secrecy::{ExposeSecret, SecretString};

/// The last four characters of an access key id, for logs and status
/// ("…ABCD"): enough to tell keys apart, useless to an attacker.
pub fn key_suffix(access_key_id: &str) -> String {
    let n = access_key_id.chars().count();
    access_key_id.chars().skip(n.saturating_sub(4)).collect()
}

/// Build a secret from an owned string.
pub fn secret(s: impl Into<String>) -> SecretString {
    SecretString::from(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_last_four() {
        assert_eq!(key_suffix("ASIAEXAMPLE1234"), "1234");
        assert_eq!(key_suffix("ab"), "ab");
    }

    #[test]
    fn debug_is_redacted() {
        let s = secret("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
