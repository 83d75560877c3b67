//! IMDSv2 session tokens: 32 random bytes (base64url) handed out by
//! `PUT /latest/api/token`, valid for the requested TTL (1..=21600 s).
//!
//! The table stores only the SHA-256 of each token, so the lookup's timing
//! depends on a hash the caller cannot steer, not on the secret. It is bounded
//! ([`MAX_TOKENS`]) so a local flood cannot exhaust memory: expired entries
//! are purged when it is full, and if it is still full the **least recently
//! used** eighth is evicted in one pass (amortised O(1) per issue, where
//! evicting one entry per issue would scan the whole table on every PUT of a
//! fresh-token-per-fetch load). Least recently used, not closest to expiry:
//! SDKs all ask for the same TTL (6 h), so that would be the oldest issued,
//! and a long-lived process reusing its token (as SDKs do for its TTL) would
//! lose it to a burst of short-lived processes; measured by the benchmark's
//! 1,000 IMDS clients.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::metrics::TokenMetrics;

/// Most tokens kept at once.
pub const MAX_TOKENS: usize = 4096;
/// Longest TTL a client may ask for (EC2: six hours).
pub const MAX_TTL: u32 = 21_600;

/// Issued IMDSv2 tokens.
#[derive(Debug)]
pub struct TokenTable {
    inner: Mutex<Tokens>,
    cap: usize,
    metrics: TokenMetrics,
}

impl Default for TokenTable {
    fn default() -> Self {
        Self::with_capacity(MAX_TOKENS)
    }
}

/// Token hash → (expiry, last use), plus the use clock.
#[derive(Debug, Default)]
struct Tokens {
    map: HashMap<[u8; 32], Entry>,
    /// Bumped on every issue and successful check: a logical clock, so LRU
    /// order costs no clock read.
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expiry: SystemTime,
    used: u64,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenTable {
    /// A table holding at most `cap` tokens.
    pub fn with_capacity(cap: usize) -> Self {
        TokenTable {
            inner: Mutex::new(Tokens::default()),
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
        let mut t = self.inner.lock().ok()?;
        if t.map.len() >= self.cap {
            let before = t.map.len();
            t.map.retain(|_, e| e.expiry > now);
            self.metrics.expired.inc_by((before - t.map.len()) as u64);
        }
        if t.map.len() >= self.cap {
            let n = (self.cap / 8).max(t.map.len() + 1 - self.cap);
            let mut by_use: Vec<(u64, [u8; 32])> =
                t.map.iter().map(|(k, e)| (e.used, *k)).collect();
            let n = n.min(by_use.len());
            if n < by_use.len() {
                by_use.select_nth_unstable(n);
            }
            for (_, k) in by_use.iter().take(n) {
                t.map.remove(k);
            }
            self.metrics.capacity.inc_by(n as u64);
        }
        t.tick += 1;
        let used = t.tick;
        t.map
            .insert(digest(token.as_bytes()), Entry { expiry, used });
        self.metrics.issued.inc();
        Some(token)
    }

    /// Is `token` one we issued and still valid at `now`?
    pub fn is_valid(&self, token: &[u8], now: SystemTime) -> bool {
        let key = digest(token);
        let Ok(mut t) = self.inner.lock() else {
            return false;
        };
        let tick = t.tick + 1;
        match t.map.get_mut(&key) {
            Some(e) if e.expiry > now => {
                e.used = tick;
                t.tick = tick;
                true
            }
            _ => false,
        }
    }

    /// Number of tokens held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|t| t.map.len()).unwrap_or(0)
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
        // The least recently used (a) was evicted.
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
    fn a_token_in_use_outlives_a_burst_of_new_ones() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = TokenTable::with_capacity(3);
        // Same TTL for all, as SDKs ask: "closest to expiry" = oldest.
        let long_lived = table.issue(t0, 21_600).unwrap();
        for i in 0..10 {
            let now = t0 + Duration::from_secs(i);
            // The long-lived client uses its token between every new one.
            assert!(table.is_valid(long_lived.as_bytes(), now), "lost at {i}");
            let newest = table.issue(now, 21_600).unwrap();
            assert!(table.is_valid(newest.as_bytes(), now));
            assert!(table.len() <= 3);
        }
        // A forged or failed check does not refresh anything.
        assert!(!table.is_valid(b"forged", t0));
    }

    #[test]
    fn a_full_table_drops_its_least_recently_used_eighth_at_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = TokenTable::with_capacity(16);
        let toks: Vec<String> = (0..16).map(|_| table.issue(t0, 600).unwrap()).collect();
        assert!(table.is_valid(toks[0].as_bytes(), t0)); // the oldest, used again
        let new = table.issue(t0, 600).unwrap();
        // Two (16 / 8) went in one pass: the least recently used, 1 and 2.
        assert_eq!(table.len(), 15);
        assert!(!table.is_valid(toks[1].as_bytes(), t0));
        assert!(!table.is_valid(toks[2].as_bytes(), t0));
        for t in toks.iter().skip(3).chain([&toks[0], &new]) {
            assert!(table.is_valid(t.as_bytes(), t0));
        }
        // Room again: the next issues evict nothing.
        table.issue(t0, 600).unwrap();
        assert_eq!(table.len(), 16);
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
