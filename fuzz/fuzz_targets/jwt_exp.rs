//! id_token time parsing: `upstream::IdToken::from_jwt` reads `exp` and `iat`
//! from an unverified JWT payload (base64url JSON) that comes from the IdP.
//!
//! Each input is tried twice: as the raw token, and (to reach the JSON parser
//! quickly) as the payload of `header.<base64url(input)>.sig`.
//!
//! Properties:
//! * never panics, whatever the token (a hostile or broken IdP controls it);
//! * a payload that is JSON without `exp` gives no expiry; an integer `exp`
//!   up to year 9999 gives exactly that second, a larger one gives that
//!   second or none (never a different time);
//! * with integer `iat` ≤ `exp` in that range, `lifetime` is `exp − iat`;
//! * `fresh_at(now)` is exactly "more than min(`ID_TOKEN_MIN_TTL`,
//!   lifetime/2) left", and monotone: fresh at a later time ⇒ fresh at any
//!   earlier one.
#![no_main]

use std::time::{Duration, SystemTime};

use base64::Engine;
use credbroker::upstream::{ID_TOKEN_MIN_TTL, IdToken};
use libfuzzer_sys::fuzz_target;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// 9999-12-31T23:59:59Z.
const LAST_SANE_SECOND: u64 = 253_402_300_799;

fn wrap(payload: &[u8]) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        B64.encode(br#"{"alg":"RS256","typ":"JWT","kid":"fuzz"}"#),
        B64.encode(payload)
    )
}

/// A claim as the payload states it, decoded independently of the code
/// under test: `Some(None)` absent, `Some(Some(n))` an integer in
/// 1..=2^53 (exact in f64), `None` anything else (not asserted).
fn claim(v: &serde_json::Value, key: &str) -> Option<Option<u64>> {
    match v.get(key) {
        None => Some(None),
        Some(e) => match e.as_u64() {
            Some(n) if (1..=1 << 53).contains(&n) => Some(Some(n)),
            _ => None,
        },
    }
}

fn at(n: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(n)
}

fn check(token: String) {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let t = IdToken::from_jwt(token);
    if let Some(v) = &payload {
        let exp = claim(v, "exp");
        match exp {
            Some(None) => assert_eq!(t.expires_at, None, "expiry without exp"),
            Some(Some(n)) if n <= LAST_SANE_SECOND => {
                assert_eq!(t.expires_at, Some(at(n)), "exp {n} parsed wrongly")
            }
            Some(Some(n)) => assert!(
                t.expires_at.is_none_or(|e| e == at(n)),
                "exp {n} parsed as {:?}",
                t.expires_at
            ),
            None => {}
        }
        if let (Some(Some(e)), Some(Some(i))) = (exp, claim(v, "iat"))
            && e <= LAST_SANE_SECOND
            && i <= e
        {
            assert_eq!(t.lifetime, Some(Duration::from_secs(e - i)), "lifetime");
        }
    }
    let needed = t
        .lifetime
        .map_or(ID_TOKEN_MIN_TTL, |l| ID_TOKEN_MIN_TTL.min(l / 2));
    let base = at(1_800_000_000);
    let mut probes = vec![
        SystemTime::UNIX_EPOCH,
        base,
        base + Duration::from_secs(3600),
    ];
    if let Some(e) = t.expires_at {
        probes.push(e);
        probes.extend(e.checked_sub(needed));
        probes.extend(e.checked_sub(needed + Duration::from_nanos(1)));
    }
    probes.sort();
    let mut was_fresh = true;
    for now in probes {
        let fresh = t.fresh_at(now);
        let want = t
            .expires_at
            .and_then(|e| e.duration_since(now).ok())
            .is_some_and(|left| left > needed);
        assert_eq!(fresh, want, "fresh_at({now:?}) for exp {:?}", t.expires_at);
        assert!(was_fresh || !fresh, "fresh again at a later time");
        was_fresh = fresh;
    }
}

fuzz_target!(|data: &[u8]| {
    check(String::from_utf8_lossy(data).into_owned());
    check(wrap(data));
});
