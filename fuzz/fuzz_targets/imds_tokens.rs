//! The IMDSv2 session-token table (`server::tokens::TokenTable`): sequences of
//! issue / validate operations with a moving clock and a small capacity.
//!
//! Input: byte 0 = capacity (1..=16); then 3-byte operations
//! `[op, a, b]` with `n = u16::from_le_bytes([a, b])`:
//! op % 4 = 0 issue (ttl = n % 21600 + 1), 1 validate issued token n,
//! 2 validate a forged token (the next `n % 64` bytes), 3 advance the clock n s.
//!
//! Properties:
//! * it never holds more than its capacity;
//! * it never validates a token it did not issue;
//! * a token it validates was issued and has not expired;
//! * a freshly issued token is valid at once, and no token is issued twice;
//! * once a token is invalid it stays invalid (the clock only moves forward).
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use credbroker::server::tokens::{MAX_TTL, TokenTable};
use libfuzzer_sys::fuzz_target;

struct Issued {
    token: String,
    expiry: SystemTime,
    dead: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some((&cap, mut rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(cap % 16) + 1;
    let table = TokenTable::with_capacity(cap);
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut issued: Vec<Issued> = Vec::new();
    let mut known: HashSet<Vec<u8>> = HashSet::new();
    while let [op, a, b, tail @ ..] = rest {
        rest = tail;
        let n = u16::from_le_bytes([*a, *b]);
        match op % 4 {
            0 => {
                let ttl = u32::from(n) % MAX_TTL + 1;
                let Some(token) = table.issue(now, ttl) else {
                    continue;
                };
                assert!(table.is_valid(token.as_bytes(), now), "fresh token invalid");
                assert!(
                    known.insert(token.as_bytes().to_vec()),
                    "token issued twice"
                );
                issued.push(Issued {
                    token,
                    expiry: now + Duration::from_secs(u64::from(ttl)),
                    dead: false,
                });
            }
            1 => {
                if issued.is_empty() {
                    continue;
                }
                let i = usize::from(n) % issued.len();
                let t = &mut issued[i];
                if table.is_valid(t.token.as_bytes(), now) {
                    assert!(t.expiry > now, "expired token validated");
                    assert!(!t.dead, "a token came back to life");
                } else {
                    t.dead = true;
                }
            }
            2 => {
                let len = (usize::from(n) % 64).min(rest.len());
                let (forged, tail) = rest.split_at(len);
                rest = tail;
                if !known.contains(forged) {
                    assert!(!table.is_valid(forged, now), "forged token validated");
                }
            }
            _ => now += Duration::from_secs(u64::from(n)),
        }
        assert!(
            table.len() <= cap,
            "{} tokens held, capacity {cap}",
            table.len()
        );
    }
});
