//! IMDSv2 session tokens: 32 random bytes (base64url) handed out by
//! `PUT /latest/api/token`, valid for the requested TTL (1..=21600 s).
//!
//! The table stores only the SHA-256 of each token, so the lookup's timing
//! depends on a hash the caller cannot steer, not on the secret. It is bounded
//! ([`MAX_TOKENS`]): expired entries are purged on insert, and when it is
//! still full the token closest to expiry is evicted (as EC2 and the
//! rolesanywhere helper do), so a local flood cannot exhaust memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::metrics::TokenMetrics;

/// Most tokens kept at once.
pub const MAX_TOKENS: usize = 1024;
/// Longest TTL a client may ask for (EC2: six hours).
pub const MAX_TTL: u32 = 21_600;

/// Issued IMDSv2 tokens (hash → expiry).
#[derive(Debug)]
pub struct TokenTable {
    inner: Mutex<HashMap<[u8; 32], SystemTime>>,
    cap: usize,
    metrics: TokenMetrics,
}

impl Default for TokenTable {
    fn default() -> Self {
        Self::with_capacity(MAX_TOKENS)
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenTable {
    /// A table holding at most `cap` tokens.
    pub fn with_capacity(cap: usize) -> Self {
        TokenTable {
            inner: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            metrics: TokenMetrics::default(),
        }
    }

    /// A default-sized table counting into `metrics`.
    pub fn with_metrics(metrics: TokenMetrics) -> Self {
        TokenTable {
            metrics,
            ..Self::default()
        }
    }

    /// Issue a token valid for `ttl` seconds from `now`.
    pub fn issue(&self, now: SystemTime, ttl: u32) -> Option<String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).ok()?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let expiry = now + Duration::from_secs(u64::from(ttl));
        let mut map = self.inner.lock().ok()?;
        if map.len() >= self.cap {
            let before = map.len();
            map.retain(|_, exp| *exp > now);
            self.metrics.expired.inc_by((before - map.len()) as u64);
        }
        while map.len() >= self.cap {
            let oldest = map.iter().min_by_key(|(_, exp)| **exp).map(|(k, _)| *k)?;
            map.remove(&oldest);
            self.metrics.capacity.inc();
        }
        map.insert(digest(token.as_bytes()), expiry);
        self.metrics.issued.inc();
        Some(token)
    }

    /// Is `token` one we issued and still valid at `now`?
    pub fn is_valid(&self, token: &[u8], now: SystemTime) -> bool {
        let key = digest(token);
        self.inner
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
            .is_some_and(|exp| exp > now)
    }

    /// Number of tokens held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = TokenTable::with_capacity(3);
        let a = table.issue(t0, 10).unwrap();
        assert_eq!(a.len(), 43);
        assert!(table.is_valid(a.as_bytes(), t0 + Duration::from_secs(9)));
        assert!(!table.is_valid(a.as_bytes(), t0 + Duration::from_secs(10)));
        assert!(!table.is_valid(b"forged", t0));
        let b = table.issue(t0, 100).unwrap();
        let c = table.issue(t0, 200).unwrap();
        let d = table.issue(t0, 300).unwrap();
        assert_eq!(table.len(), 3);
        // The one closest to expiry (a) was evicted.
        assert!(!table.is_valid(a.as_bytes(), t0));
        for t in [&b, &c, &d] {
            assert!(table.is_valid(t.as_bytes(), t0));
        }
        // Expired entries are purged before anything live is evicted.
        let e = table.issue(t0 + Duration::from_secs(150), 10).unwrap();
        assert!(!table.is_valid(b.as_bytes(), t0 + Duration::from_secs(150)));
        assert!(table.is_valid(c.as_bytes(), t0 + Duration::from_secs(150)));
        assert!(table.is_valid(e.as_bytes(), t0 + Duration::from_secs(150)));
    }

    #[test]
    fn issues_and_evictions_are_counted() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let m = TokenMetrics::default();
        let table = TokenTable {
            metrics: m.clone(),
            ..TokenTable::with_capacity(2)
        };
        table.issue(t0, 10).unwrap();
        table.issue(t0, 100).unwrap();
        table.issue(t0, 100).unwrap(); // full: the first is evicted
        assert_eq!(
            (m.issued.get(), m.capacity.get(), m.expired.get()),
            (3, 1, 0)
        );
        table.issue(t0 + Duration::from_secs(200), 10).unwrap(); // both expired: purged
        assert_eq!(
            (m.issued.get(), m.capacity.get(), m.expired.get()),
            (4, 1, 2)
        );
    }
}
