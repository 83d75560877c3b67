//! The file as written: every field optional, unknown keys rejected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// The file as written: every field optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version (1); reserved for migrations.
    pub version: Option<u32>,
    /// `[server]`.
    pub server: Option<RawServer>,
    /// `[profiles.<name>]`.
    pub profiles: Option<BTreeMap<String, RawProfile>>,
    /// `[log]`.
    pub log: Option<RawLog>,
    /// `[audit]`.
    pub audit: Option<RawAudit>,
}

/// `[audit]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAudit {
    pub log: Option<String>,
    pub max_size: Option<RawSize>,
}

impl fmt::Display for RawSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawSize::Bytes(n) => write!(f, "{n}"),
            RawSize::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// A size: a number of bytes, or a string such as `"16MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawServer {
    pub listen: Option<String>,
    pub ecs_token_file: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub imds: Option<bool>,
    pub imds_v1: Option<bool>,
    pub imds_profile: Option<String>,
    pub allowed_hosts: Option<StringList>,
    pub strict_permissions: Option<bool>,
    pub allowed_uids: Option<StringList>,
    pub ecs_token_group_readable: Option<bool>,
    pub metrics_listen: Option<String>,
    pub desktop_notifications: Option<bool>,
}

/// `[profiles.<name>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawProfile {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub role_name: Option<String>,
    pub imds_listen: Option<String>,
    pub allowed_uids: Option<StringList>,
    pub refresh_before: Option<RawDuration>,
    pub state_dir: Option<PathBuf>,
    pub login: Option<RawLogin>,
    pub aws: Option<RawAws>,
}

/// `[profiles.<name>.login]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawLogin {
    pub kind: Option<String>,
    pub issuer: Option<String>,
    pub token_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub user_pool_id: Option<String>,
    pub username: Option<String>,
    pub refresh_token_file: Option<PathBuf>,
    pub scopes: Option<StringList>,
    pub prompt: Option<String>,
    pub redirect_uri: Option<String>,
    pub rotation: Option<bool>,
    pub token_store: Option<String>,
    pub guest_until_login: Option<bool>,
    pub auth_flow: Option<String>,
    pub domain: Option<String>,
    pub identity_provider: Option<String>,
}

/// `[profiles.<name>.aws]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAws {
    pub flow: Option<String>,
    pub identity_pool_id: Option<String>,
    pub account_id: Option<String>,
    pub login_provider: Option<String>,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub duration: Option<RawDuration>,
    pub session_policy_file: Option<PathBuf>,
}

/// A list of strings: a TOML array, or a comma-separated string (the form an
/// environment override takes, e.g. `CREDBROKER__SERVER__ALLOWED_HOSTS=a:1,b`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written: `"30m"`, `"1h 30m"`, or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30m\" or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(format!("{v}s")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(format!("{v}s")))
            }
        }
        d.deserialize_any(V)
    }
}
