//! AWS credentials and their wire forms.
//!
//! The refresher renders the IMDS and ECS JSON bodies **once** per credential
//! set ([`Served`]); handlers hand out cheap clones of those bytes, so serving
//! allocates nothing credential-specific and can never produce a half-filled
//! document.
//!
//! Wire contract (protocol.md 1.4, 2.3, 3.4): `Expiration` and `LastUpdated`
//! are `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds, `Z`: the Rust and JS SDKs
//! reject offsets), IMDS bodies carry `"Code":"Success"` (Go requires it).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde::Serialize;

use crate::secret::{ExposeSecret, SecretString, key_suffix};

/// One set of temporary AWS credentials, as obtained upstream.
#[derive(Clone)]
pub struct AwsCredentials {
    /// Access key id (not secret, but logged only as a suffix).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token.
    pub session_token: SecretString,
    /// When they stop working.
    pub expiration: SystemTime,
    /// Account id, when known.
    pub account_id: Option<String>,
    /// Role ARN, when known.
    pub role_arn: Option<String>,
    /// A Cognito guest (unauthenticated) identity's credentials, served
    /// until a sign-in (`login.guest_until_login`).
    pub guest: bool,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field(
                "access_key_id",
                &format_args!("…{}", key_suffix(&self.access_key_id)),
            )
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &rfc3339(self.expiration))
            .field("account_id", &self.account_id)
            .field("role_arn", &self.role_arn)
            .finish()
    }
}

impl AwsCredentials {
    /// Credentials are never empty: this is checked before they are published.
    pub fn is_complete(&self) -> bool {
        !self.access_key_id.is_empty()
            && !self.secret_access_key.expose_secret().is_empty()
            && !self.session_token.expose_secret().is_empty()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a wall-clock time (sub-seconds dropped, so the
/// written expiry is never later than the real one).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let dt = aws_smithy_types::DateTime::from_secs(secs as i64);
    dt.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsBody<'a> {
    code: &'a str,
    last_updated: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EcsBody<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_arn: Option<&'a str>,
}

/// Credentials ready to serve: the pre-rendered bodies plus what the server
/// needs to decide whether they may still be handed out.
#[derive(Clone)]
pub struct Served {
    /// When they expire.
    pub expiration: SystemTime,
    /// When they were obtained.
    pub last_updated: SystemTime,
    /// Last four characters of the access key id (status, logs).
    pub key_suffix: String,
    /// Account id, when known (instance identity document).
    pub account_id: Option<String>,
    /// A guest identity's (see [`AwsCredentials::guest`]).
    pub guest: bool,
    /// `GET …/security-credentials/<role>` body.
    pub imds: Bytes,
    /// `GET …/security-credentials-extended/<role>` body (with `AccountId`).
    pub imds_extended: Bytes,
    /// `GET /v1/credentials…` body.
    pub ecs: Bytes,
}

impl fmt::Debug for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Served")
            .field("expiration", &rfc3339(self.expiration))
            .field("key_suffix", &self.key_suffix)
            .finish_non_exhaustive()
    }
}

impl Served {
    /// Render the wire bodies for `c`, obtained at `now`.
    pub fn render(c: &AwsCredentials, now: SystemTime) -> Self {
        let exp = rfc3339(c.expiration);
        let upd = rfc3339(now);
        let imds = |account_id| ImdsBody {
            code: "Success",
            last_updated: &upd,
            kind: "AWS-HMAC",
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret_access_key.expose_secret(),
            token: c.session_token.expose_secret(),
            expiration: &exp,
            account_id,
        };
        let ecs = EcsBody {
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret_access_key.expose_secret(),
            token: c.session_token.expose_secret(),
            expiration: &exp,
            account_id: c.account_id.as_deref(),
            role_arn: c.role_arn.as_deref(),
        };
        let to_bytes = |v: Result<Vec<u8>, serde_json::Error>| Bytes::from(v.unwrap_or_default());
        Served {
            expiration: c.expiration,
            last_updated: now,
            key_suffix: key_suffix(&c.access_key_id),
            account_id: c.account_id.clone(),
            guest: c.guest,
            imds: to_bytes(serde_json::to_vec_pretty(&imds(None))),
            imds_extended: to_bytes(serde_json::to_vec_pretty(&imds(c.account_id.as_deref()))),
            ecs: to_bytes(serde_json::to_vec(&ecs)),
        }
    }

    /// May these be handed out at `now`? Only with at least `margin` left: a
    /// credential that expires in flight is as bad as an expired one.
    pub fn usable_at(&self, now: SystemTime, margin: Duration) -> bool {
        self.expiration
            .duration_since(now)
            .map(|left| left > margin)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::secret;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            guest: false,
            access_key_id: "ASIAEXAMPLE00001234".into(),
            secret_access_key: secret("sekritkey"),
            session_token: secret("sessiontok"),
            expiration: UNIX_EPOCH + Duration::from_millis(1_795_000_000_750),
            account_id: Some("123456789012".into()),
            role_arn: Some("arn:aws:iam::123456789012:role/R".into()),
        }
    }

    #[test]
    fn rfc3339_is_whole_seconds_with_z() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01Z"
        );
    }

    #[test]
    fn bodies_follow_the_wire_contract() {
        let now = UNIX_EPOCH + Duration::from_secs(1_794_999_000);
        let s = Served::render(&creds(), now);
        let imds: serde_json::Value = serde_json::from_slice(&s.imds).unwrap();
        assert_eq!(imds["Code"], "Success");
        assert_eq!(imds["Type"], "AWS-HMAC");
        assert_eq!(imds["Expiration"], "2026-11-18T11:06:40Z");
        assert_eq!(imds["LastUpdated"], "2026-11-18T10:50:00Z");
        assert_eq!(imds["Token"], "sessiontok");
        assert!(imds.get("AccountId").is_none());
        let ext: serde_json::Value = serde_json::from_slice(&s.imds_extended).unwrap();
        assert_eq!(ext["AccountId"], "123456789012");
        let ecs: serde_json::Value = serde_json::from_slice(&s.ecs).unwrap();
        assert_eq!(ecs["AccessKeyId"], "ASIAEXAMPLE00001234");
        assert_eq!(ecs["SecretAccessKey"], "sekritkey");
        assert_eq!(ecs["RoleArn"], "arn:aws:iam::123456789012:role/R");
        assert!(ecs.get("Code").is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = creds();
        let d = format!("{c:?} {:?}", Served::render(&c, SystemTime::now()));
        assert!(
            !d.contains("sekritkey") && !d.contains("sessiontok") && !d.contains("EXAMPLE0000"),
            "{d}"
        );
        assert!(d.contains("1234"));
    }

    #[test]
    fn usable_needs_margin() {
        let s = Served::render(&creds(), SystemTime::now());
        let exp = s.expiration;
        assert!(s.usable_at(exp - Duration::from_secs(20), Duration::from_secs(15)));
        assert!(!s.usable_at(exp - Duration::from_secs(10), Duration::from_secs(15)));
        assert!(!s.usable_at(exp + Duration::from_secs(1), Duration::ZERO));
    }
}
