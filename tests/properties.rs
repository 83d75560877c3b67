//! Property tests (proptest) for the pure parts that decide *when* and *what*
//! the broker serves: the refresh schedule, the retry backoff, the wire
//! timestamp format, the rendered credential bodies, config validation of
//! arbitrary profile names and durations, and the kernel's `sock_diag`
//! answer that names a caller (truncated, foreign, with unknown attributes).
//!
//! These run in plain `cargo test` (stable), so they still guard these
//! functions on a machine without the nightly toolchain `cargo fuzz` needs.
//! `PROPTEST_CASES=10000 cargo test --test properties` runs them longer.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use credbroker::config::{self, Env};
use credbroker::creds::{AwsCredentials, Served, rfc3339};
use credbroker::refresher::{BACKOFF_BASE, BACKOFF_CAP, MIN_INTERVAL, backoff, refresh_at};
use credbroker::secret::secret;
use proptest::prelude::*;

// === strategies ===

/// A wall-clock time between 2001 and 2096, to the nanosecond.
fn wall_time() -> impl Strategy<Value = SystemTime> {
    (1_000_000_000u64..4_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

/// Up to 48 h, to the nanosecond, with the edges (0, tiny, around 10 s)
/// drawn often.
fn span() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..20_000_000_000).prop_map(Duration::from_nanos),
        (0u64..48 * 3600 * 1_000_000_000).prop_map(Duration::from_nanos),
        (0u64..48 * 3600).prop_map(Duration::from_secs),
    ]
}

/// Jitter as `random_unit` yields it, plus the clamped edges.
fn jitter() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0, -2.0f64..3.0]
}

// === refresh schedule ===

proptest! {
    #[test]
    fn refresh_at_is_before_the_lead_and_not_before_now(
        now in wall_time(),
        lifetime in span(),
        refresh_before in span(),
        j in jitter(),
    ) {
        let expiry = now + lifetime;
        let at = refresh_at(now, expiry, refresh_before, j);
        let lead = refresh_before.min(lifetime / 2);
        prop_assert!(at <= expiry - lead, "at {at:?} after expiry - lead {:?}", expiry - lead);
        prop_assert!(at >= now);
        // Never sooner than MIN_INTERVAL when the lifetime leaves room for it
        // (and never sooner than half the lifetime otherwise).
        prop_assert!(at >= now + MIN_INTERVAL.min(lifetime / 2));
        if lifetime >= 2 * MIN_INTERVAL {
            prop_assert!(at >= now + MIN_INTERVAL);
        }
        // Jitter moves it earlier by at most a tenth of the lead, and at most
        // a minute (unless the MIN_INTERVAL floor applies).
        let spread = (lead / 10).min(Duration::from_secs(60));
        prop_assert!(at >= (expiry - lead - spread).max(now + MIN_INTERVAL.min(lifetime / 2)));
    }

    #[test]
    fn refresh_at_with_expired_credentials_is_now(
        now in wall_time(),
        past in span(),
        refresh_before in span(),
        j in jitter(),
    ) {
        let expiry = now - past;
        prop_assert_eq!(refresh_at(now, expiry, refresh_before, j), now);
    }

    #[test]
    fn refresh_at_is_monotonic_in_expiry(
        now in wall_time(),
        a in span(),
        b in prop_oneof![
            span().prop_map(Err),
            (0u64..2_000).prop_map(Ok), // a nearby expiry: rounding must not reorder
        ],
        refresh_before in span(),
        j in jitter(),
    ) {
        let b = match b {
            Ok(ns) => a + Duration::from_nanos(ns),
            Err(other) => other,
        };
        let (short, long) = if a <= b { (a, b) } else { (b, a) };
        let early = refresh_at(now, now + short, refresh_before, j);
        let late = refresh_at(now, now + long, refresh_before, j);
        prop_assert!(early <= late, "expiry +{short:?} → {early:?}, +{long:?} → {late:?}");
    }

    #[test]
    fn more_jitter_never_refreshes_later(
        now in wall_time(),
        lifetime in span(),
        refresh_before in span(),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let expiry = now + lifetime;
        prop_assert!(
            refresh_at(now, expiry, refresh_before, hi) <= refresh_at(now, expiry, refresh_before, lo)
        );
    }
}

// === backoff ===

/// The documented cap for retry `failures` (1-based; 0 counts as 1),
/// computed independently: BASE · 2^(failures−1), at most CAP.
fn backoff_ceiling(failures: u32) -> Duration {
    let exp = failures.max(1) - 1;
    let nanos = if exp >= 64 {
        u128::MAX
    } else {
        BACKOFF_BASE.as_nanos().saturating_mul(1u128 << exp)
    };
    Duration::from_nanos(nanos.min(BACKOFF_CAP.as_nanos()) as u64)
}

proptest! {
    #[test]
    fn backoff_is_between_half_and_the_ceiling(failures in any::<u32>(), j in jitter()) {
        let d = backoff_ceiling(failures);
        let got = backoff(failures, j);
        prop_assert!(got >= d / 2, "backoff({failures}) = {got:?} < {:?}", d / 2);
        prop_assert!(got <= d, "backoff({failures}) = {got:?} > {d:?}");
        prop_assert!(got <= BACKOFF_CAP);
        prop_assert!(got > Duration::ZERO);
    }

    #[test]
    fn backoff_bounds_never_decrease(failures in 0u32..u32::MAX, j in jitter()) {
        // The ceiling (jitter 1), the floor (jitter 0) and any fixed jitter
        // are non-decreasing in the number of failures.
        prop_assert!(backoff(failures, 1.0) <= backoff(failures + 1, 1.0));
        prop_assert!(backoff(failures, 0.0) <= backoff(failures + 1, 0.0));
        prop_assert!(backoff(failures, j) <= backoff(failures + 1, j));
    }
}

#[test]
fn backoff_reaches_the_cap_and_stays() {
    assert_eq!(backoff(1, 1.0), BACKOFF_BASE);
    assert_eq!(backoff(1, 0.0), BACKOFF_BASE / 2);
    // 2^8 s = 256 s < 300 s ≤ 2^9 s.
    assert_eq!(backoff(9, 1.0), Duration::from_secs(256));
    for f in [10, 11, 17, 18, 1000, u32::MAX] {
        assert_eq!(backoff(f, 1.0), BACKOFF_CAP, "failures {f}");
        assert_eq!(backoff(f, 0.0), BACKOFF_CAP / 2, "failures {f}");
    }
}

// === rfc3339 ===

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`), to check the formatter independently.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `YYYY-MM-DDTHH:MM:SSZ` strictly; `None` unless it matches
/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$` with in-range fields.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    // Reject day overflow (e.g. 02-30) by checking the round trip of the date.
    if days_from_civil(y, mo, 1) + d - 1 != days
        || (mo < 12 && days >= days_from_civil(y, mo + 1, 1))
    {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// 9999-12-31T23:59:59Z, the last second with a four-digit year.
const LAST_4_DIGIT_SECOND: u64 = 253_402_300_799;

proptest! {
    #[test]
    fn rfc3339_is_whole_utc_seconds(secs in 0u64..=LAST_4_DIGIT_SECOND, nanos in 0u32..1_000_000_000) {
        let t = UNIX_EPOCH + Duration::new(secs, nanos);
        let s = rfc3339(t);
        prop_assert_eq!(parse_rfc3339(&s), Some(secs), "{} for {}.{:09}", s, secs, nanos);
    }

    #[test]
    fn rfc3339_never_writes_a_malformed_or_later_time(secs in any::<u32>().prop_map(|x| u64::from(x) * 70_000), before in any::<bool>()) {
        // Beyond 9999 and before 1970 the output is still well-formed and never
        // later than the input (expiry must not be overstated).
        let t = if before {
            UNIX_EPOCH - Duration::from_secs(secs)
        } else {
            UNIX_EPOCH + Duration::from_secs(secs)
        };
        let s = rfc3339(t);
        let parsed = parse_rfc3339(&s);
        prop_assert!(parsed.is_some(), "malformed {s}");
        let shown = UNIX_EPOCH + Duration::from_secs(parsed.unwrap_or_default());
        prop_assert!(before || shown <= t, "{s} is later than {t:?}");
    }
}

#[test]
fn rfc3339_edges() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::new(LAST_4_DIGIT_SECOND, 999_999_999)),
        "9999-12-31T23:59:59Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
}

// === rendered credential bodies ===

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9/+=]{1,64}",
        "\\PC{1,40}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

proptest! {
    #[test]
    fn rendered_bodies_are_json_with_the_required_fields(
        key in any_text(),
        secret_key in any_text(),
        token in any_text(),
        exp in wall_time(),
        now in wall_time(),
        account in proptest::option::of("[0-9]{12}"),
        role in proptest::option::of(any_text()),
    ) {
        let c = AwsCredentials {
            guest: false,
            access_key_id: key.clone(),
            secret_access_key: secret(secret_key.clone()),
            session_token: secret(token.clone()),
            expiration: exp,
            account_id: account.clone(),
            role_arn: role.clone(),
        };
        let s = Served::render(&c, now);
        let want_exp = rfc3339(exp);
        let want_upd = rfc3339(now);
        for (name, body, imds) in [("imds", &s.imds, true), ("imds_extended", &s.imds_extended, true), ("ecs", &s.ecs, false)] {
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| TestCaseError::fail(format!("{name}: not JSON: {e}")))?;
            prop_assert_eq!(v["AccessKeyId"].as_str(), Some(key.as_str()), "{}", name);
            prop_assert_eq!(v["SecretAccessKey"].as_str(), Some(secret_key.as_str()), "{}", name);
            prop_assert_eq!(v["Token"].as_str(), Some(token.as_str()), "{}", name);
            prop_assert_eq!(v["Expiration"].as_str(), Some(want_exp.as_str()), "{}", name);
            if imds {
                prop_assert_eq!(v["Code"].as_str(), Some("Success"), "{}", name);
                prop_assert_eq!(v["Type"].as_str(), Some("AWS-HMAC"), "{}", name);
                prop_assert_eq!(v["LastUpdated"].as_str(), Some(want_upd.as_str()), "{}", name);
            } else {
                prop_assert!(v.get("Code").is_none());
                prop_assert_eq!(v["RoleArn"].as_str(), role.as_deref());
            }
            let want_account = if name == "imds" { None } else { account.as_deref() };
            prop_assert_eq!(v.get("AccountId").and_then(|a| a.as_str()), want_account, "{}", name);
        }
        let n = key.chars().count();
        prop_assert_eq!(&s.key_suffix, &key.chars().skip(n.saturating_sub(4)).collect::<String>());
        prop_assert_eq!(s.expiration, exp);
    }
}

// === config: arbitrary profile names and durations ===

/// A TOML basic string for `s` (quotes, backslashes and control characters
/// escaped), so the text always parses and validation is what is tested.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn profile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{0,70}",
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("a.b".to_owned()),
        Just("Dev".to_owned()),
        "\\PC{0,20}",
        any::<String>(),
    ]
}

/// A duration as it may appear in TOML: a string (valid or not) or an integer.
fn duration_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            0u64..100_000,
            prop::sample::select(vec!["s", "m", "h", "ms", "ns", "d", "w", "y", "min", ""])
        )
            .prop_map(|(n, u)| toml_str(&format!("{n}{u}"))),
        "[0-9]{1,3}h [0-9]{1,3}m".prop_map(|s| toml_str(&s)),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,12}".prop_map(|s| toml_str(&s)),
        Just(toml_str("99999999999999999999999h")),
    ]
}

fn props_env() -> Env {
    Env::from([
        ("HOME".to_owned(), "/home/u".to_owned()),
        ("XDG_RUNTIME_DIR".to_owned(), "/run/user/1000".to_owned()),
    ])
}

proptest! {
    #[test]
    fn config_with_arbitrary_names_and_durations_is_ok_or_names_the_key(
        name in profile_name(),
        refresh_before in proptest::option::of(duration_value()),
        duration in proptest::option::of(duration_value()),
        sts in any::<bool>(),
        imds_profile in proptest::option::of(profile_name()),
    ) {
        let q = toml_str(&name);
        let mut text = String::new();
        if let Some(p) = &imds_profile {
            text.push_str(&format!("[server]\nimds_profile = {}\n", toml_str(p)));
        }
        text.push_str(&format!("[profiles.{q}]\nregion = \"eu-west-1\"\n"));
        if let Some(d) = &refresh_before {
            text.push_str(&format!("refresh_before = {d}\n"));
        }
        text.push_str(&format!(
            "[profiles.{q}.login]\nkind = \"oidc\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n[profiles.{q}.aws]\n"
        ));
        if sts {
            text.push_str("flow = \"sts\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n");
        } else {
            text.push_str("flow = \"cognito-basic\"\nidentity_pool_id = \"eu-west-1:g\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n");
        }
        if let Some(d) = &duration {
            text.push_str(&format!("duration = {d}\n"));
        }
        match config::load_str(&text, Path::new("props.toml"), &props_env()) {
            Ok(c) => {
                prop_assert_eq!(c.profiles.len(), 1);
                let p = c.profiles.values().next().map(|p| (p.refresh_before, p.aws.role().and_then(|r| r.duration)));
                let (rb, d) = p.unwrap_or_default();
                prop_assert!(rb > Duration::ZERO);
                prop_assert!(d.is_none_or(|d| d > Duration::ZERO && d <= Duration::from_secs(12 * 3600)));
            }
            Err(e) => {
                let key = e.key.clone().unwrap_or_default();
                prop_assert!(
                    key.starts_with("profiles.") || key.starts_with("server."),
                    "error without a profiles./server. key: {e}\n--- config\n{text}"
                );
                prop_assert_eq!(&e.origin, "props.toml");
            }
        }
    }
}

#[test]
fn example_config_display_round_trips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/credbroker.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = props_env();
    let c = config::load_str(&text, &path, &env).unwrap();
    let shown = c.to_string();
    let again = config::load_str(&shown, &path, &env).unwrap();
    assert_eq!(again.to_string(), shown);
}

// === sock_diag answers (peer::parse_response) ===

#[cfg(target_os = "linux")]
mod sock_diag {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use credbroker::peer::{PeerCred, parse_response};
    use netlink_packet_core::{DefaultNla, NetlinkHeader, NetlinkMessage};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
    use netlink_packet_sock_diag::inet::nlas::Nla;
    use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader, SocketId};
    use proptest::prelude::*;

    /// A loopback client address, IPv4 (127/8) or IPv6 (::1).
    fn peer() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 3]>(), 1u16..).prop_map(|(b, port)| {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, b[0], b[1], b[2])), port)
            }),
            (1u16..).prop_map(|port| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)),
        ]
    }

    /// Attributes the kernel may add that we never asked for.
    fn unknown_nlas() -> impl Strategy<Value = Vec<Nla>> {
        prop::collection::vec(
            (20u16..1000, prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(kind, value)| Nla::Other(DefaultNla::new(kind, value))),
            0..4,
        )
    }

    /// The kernel's answer about socket `about`, of address family `family`.
    fn answer(about: SocketAddr, family: u8, uid: u32, inode: u32, nlas: Vec<Nla>) -> Vec<u8> {
        let response = InetResponse {
            header: InetResponseHeader {
                family,
                state: 1, // TCP_ESTABLISHED
                timer: None,
                socket_id: SocketId {
                    source_port: about.port(),
                    destination_port: 9911,
                    source_address: about.ip(),
                    destination_address: about.ip(),
                    interface_id: 0,
                    cookie: [7; 8],
                },
                recv_queue: 0,
                send_queue: 0,
                uid,
                inode,
            },
            nlas: nlas.into(),
        };
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn family_of(a: SocketAddr) -> u8 {
        if a.is_ipv4() { AF_INET } else { AF_INET6 }
    }

    proptest! {
        /// The owner the kernel names is the owner we report, whatever
        /// attributes come with it.
        #[test]
        fn an_answer_about_our_peer_names_its_owner(
            p in peer(), uid in any::<u32>(), inode in any::<u32>(), nlas in unknown_nlas()
        ) {
            let buf = answer(p, family_of(p), uid, inode, nlas);
            prop_assert_eq!(parse_response(&buf, p), Ok(Some(PeerCred { uid, inode })));
        }

        /// Any cut of a valid answer is an error: never an owner, never a panic.
        #[test]
        fn a_truncated_answer_is_an_error(
            p in peer(), uid in any::<u32>(), nlas in unknown_nlas(), cut in any::<prop::sample::Index>()
        ) {
            let buf = answer(p, family_of(p), uid, 1, nlas);
            let n = cut.index(buf.len());
            prop_assert!(parse_response(&buf[..n], p).is_err());
        }

        /// An answer about another socket, or of the other address family,
        /// never names an owner.
        #[test]
        fn an_answer_about_another_socket_is_refused(
            p in peer(), other in peer(), uid in any::<u32>(), nlas in unknown_nlas()
        ) {
            prop_assume!(other != p);
            let buf = answer(other, family_of(other), uid, 1, nlas.clone());
            prop_assert!(parse_response(&buf, p).is_err());
            let flipped = if p.is_ipv4() { AF_INET6 } else { AF_INET };
            let buf = answer(p, flipped, uid, 1, nlas);
            prop_assert!(parse_response(&buf, p).is_err());
        }

        /// Arbitrary bytes, and valid headers with garbage after them: no
        /// panic, and no owner unless the bytes are a well-formed answer
        /// about this very socket.
        #[test]
        fn garbage_never_names_an_owner(p in peer(), junk in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some(_)) = parse_response(&junk, p) {
                prop_assert!(false, "an owner read from garbage");
            }
            let mut buf = answer(p, family_of(p), 1, 1, vec![]);
            let len = buf.len().min(16);
            buf.truncate(len);
            buf.extend_from_slice(&junk);
            if let Ok(Some(c)) = parse_response(&buf, p) {
                prop_assert!(false, "an owner read from a header and junk: {c:?}");
            }
        }
    }
}
