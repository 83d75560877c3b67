//! Configuration: a TOML file, then `CREDBROKER__SECTION__KEY` environment
//! overrides (via the `config` crate), deserialized into [`RawConfig`] (every
//! field optional, unknown keys rejected) and validated into [`Config`]
//! (defaults applied, URLs and durations parsed, cross-field rules checked).
//!
//! Every error names the file (or environment variable) and the key, e.g.
//! `/home/u/.config/credbroker/config.toml: profiles.dev.aws.identity_pool_id:
//! required when aws.flow = "cognito"`. Secrets are never inline in the
//! config: only paths to files that hold them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::net::check_upstream_url;

/// Default listener: loopback, the port the rolesanywhere helper made familiar.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";
/// Default IMDS role name served under `security-credentials/`.
pub const DEFAULT_ROLE_NAME: &str = "credbroker";
/// Default lead time: botocore keeps using IMDS credentials up to ~25 min past
/// their expiry when fewer remain (protocol.md 1.6), so we rotate 30 min early.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(30 * 60);
/// Default STS role session name.
pub const DEFAULT_SESSION_NAME: &str = "credbroker";

/// The process environment as a map (injected so tests never touch the real one).
pub type Env = HashMap<String, String>;

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{message}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file path, or `environment variable NAME`.
    pub origin: String,
    /// Dotted key, when the error is about one key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

// === raw (serde) layer ===

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

// === validated layer ===

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Listener and serving options.
    pub server: ServerConfig,
    /// Profiles by name (at least one).
    pub profiles: BTreeMap<String, ProfileConfig>,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Loopback address to bind.
    pub listen: SocketAddr,
    /// File holding the ECS `Authorization` token (created 0600 if missing).
    pub ecs_token_file: PathBuf,
    /// Where the daemon writes `daemon.json` (its live address) for the CLI.
    pub runtime_dir: PathBuf,
    /// Serve the IMDS routes.
    pub imds: bool,
    /// Accept token-less (IMDSv1) GETs.
    pub imds_v1: bool,
    /// The profile IMDS (and `/v1/credentials`) serves.
    pub imds_profile: String,
    /// Extra `Host` header values to accept (e.g. `169.254.169.254`).
    pub allowed_hosts: Vec<String>,
    /// Refuse (rather than warn about) secret files that group or others can read.
    pub strict_permissions: bool,
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// Profile name (letters, digits, `-`, `_`; a TOML bare key, no `.`).
    pub name: String,
    /// AWS region for all upstream calls.
    pub region: String,
    /// Endpoint override for every AWS service of this profile.
    pub endpoint_url: Option<Url>,
    /// IMDS role name.
    pub role_name: String,
    /// A loopback address serving this profile's IMDS on its own port.
    pub imds_listen: Option<SocketAddr>,
    /// How long before expiry to refresh (capped at half the lifetime).
    pub refresh_before: Duration,
    /// Per-profile state directory (refresh token, identity id).
    pub state_dir: PathBuf,
    /// How the IdP token is obtained.
    pub login: LoginConfig,
    /// How AWS credentials are obtained.
    pub aws: AwsConfig,
}

/// The identity side of a profile.
#[derive(Debug, Clone)]
pub enum LoginConfig {
    /// OAuth2 `refresh_token` grant at an OpenID provider.
    Oidc(OidcConfig),
    /// Cognito user pool `InitiateAuth REFRESH_TOKEN_AUTH`.
    UserPool(UserPoolConfig),
    /// Unauthenticated (guest) Cognito identity.
    None,
}

impl LoginConfig {
    /// The configured kind, as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            LoginConfig::Oidc(_) => "oidc",
            LoginConfig::UserPool(_) => "cognito-user-pool",
            LoginConfig::None => "none",
        }
    }
    /// The refresh-token file, if this kind has one.
    pub fn refresh_token_file(&self) -> Option<&Path> {
        match self {
            LoginConfig::Oidc(o) => Some(&o.refresh_token_file),
            LoginConfig::UserPool(u) => Some(&u.refresh_token_file),
            LoginConfig::None => None,
        }
    }
}

/// Validated OIDC login.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Issuer (discovery base), if configured.
    pub issuer: Option<Url>,
    /// Explicit token endpoint (skips discovery).
    pub token_endpoint: Option<Url>,
    /// OAuth2 client id.
    pub client_id: String,
    /// File with the client secret (confidential clients; HTTP Basic).
    pub client_secret_file: Option<PathBuf>,
    /// File with the refresh token (rotated tokens are written back).
    pub refresh_token_file: PathBuf,
    /// Scopes to request on refresh (none sent when unset).
    pub scopes: Option<Vec<String>>,
}

/// Validated Cognito user-pool login.
#[derive(Debug, Clone)]
pub struct UserPoolConfig {
    /// `us-east-1_XXXX`.
    pub user_pool_id: String,
    /// App client id.
    pub client_id: String,
    /// File with the app client secret (enables `SECRET_HASH`).
    pub client_secret_file: Option<PathBuf>,
    /// Username for `SECRET_HASH` (required with a client secret).
    pub username: Option<String>,
    /// File with the refresh token.
    pub refresh_token_file: PathBuf,
}

/// Which AWS exchange a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFlow {
    /// Cognito enhanced flow: GetId + GetCredentialsForIdentity.
    Cognito,
    /// Cognito basic flow: GetId + GetOpenIdToken + STS AssumeRoleWithWebIdentity.
    CognitoBasic,
    /// STS AssumeRoleWithWebIdentity with the IdP id_token.
    Sts,
}

impl AwsFlow {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            AwsFlow::Cognito => "cognito",
            AwsFlow::CognitoBasic => "cognito-basic",
            AwsFlow::Sts => "sts",
        }
    }
}

/// Validated AWS side of a profile.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The exchange.
    pub flow: AwsFlow,
    /// Cognito identity pool id (cognito flows).
    pub identity_pool_id: Option<String>,
    /// AWS account id (GetId `AccountId`; served as `AccountId`).
    pub account_id: Option<String>,
    /// Key of the `Logins` map (cognito flows).
    pub login_provider: Option<String>,
    /// Role to assume (sts, cognito-basic) or `CustomRoleArn` (cognito).
    pub role_arn: Option<String>,
    /// STS role session name.
    pub session_name: String,
    /// Requested STS session duration.
    pub duration: Option<Duration>,
    /// Inline session policy file (content read at start-up).
    pub session_policy_file: Option<PathBuf>,
    /// The session policy document (read and JSON-checked at start-up).
    pub session_policy: Option<String>,
    /// Where the Cognito identity id is cached.
    pub identity_id_file: PathBuf,
}

impl AwsConfig {
    /// The flow as written in the file (`cognito`, `cognito-basic`, `sts`).
    pub fn flow_name(&self) -> &'static str {
        self.flow.as_str()
    }

    /// The account id to serve: configured, else from the role ARN.
    pub fn configured_account_id(&self) -> Option<String> {
        self.account_id
            .clone()
            .or_else(|| self.role_arn.as_deref().and_then(account_from_arn))
    }
}

/// The account id field (5th) of an ARN.
pub fn account_from_arn(arn: &str) -> Option<String> {
    let acct = arn.split(':').nth(4)?;
    (acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit())).then(|| acct.to_owned())
}

// === paths ===

/// Default directories, from the XDG variables (with their usual fallbacks).
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `$XDG_CONFIG_HOME/credbroker`.
    pub config: PathBuf,
    /// `$XDG_STATE_HOME/credbroker`.
    pub state: PathBuf,
    /// `$XDG_RUNTIME_DIR/credbroker`; without it `$XDG_CACHE_HOME/credbroker`
    /// (a per-user directory no other user can create first), and only
    /// without a home `/tmp/credbroker-<uid>` (whose owner and mode the
    /// daemon and the CLI check before use).
    pub runtime: PathBuf,
}

impl Dirs {
    /// Resolve from an environment map.
    pub fn from_env(env: &Env) -> Self {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home_var = get("HOME").filter(|h| h != Path::new("/"));
        let home = home_var.clone().unwrap_or_else(|| PathBuf::from("/"));
        Dirs {
            config: get("XDG_CONFIG_HOME")
                .unwrap_or_else(|| home.join(".config"))
                .join("credbroker"),
            state: get("XDG_STATE_HOME")
                .unwrap_or_else(|| home.join(".local/state"))
                .join("credbroker"),
            runtime: match (get("XDG_RUNTIME_DIR"), get("XDG_CACHE_HOME"), home_var) {
                (Some(d), _, _) => d.join("credbroker"),
                (None, Some(c), _) => c.join("credbroker"),
                (None, None, Some(h)) => h.join(".cache/credbroker"),
                (None, None, None) => {
                    PathBuf::from(format!("/tmp/credbroker-{}", crate::fsutil::current_uid()))
                }
            },
        }
    }
}

/// The config file path: `--config`, else `CREDBROKER_CONFIG`, else the XDG default.
pub fn config_path(flag: Option<&Path>, env: &Env) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = env.get("CREDBROKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    Dirs::from_env(env).config.join("config.toml")
}

// === loading ===

const ENV_PREFIX: &str = "CREDBROKER";

/// Load and validate the config at `path`, with `CREDBROKER__*` overrides from `env`.
pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        key: None,
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "config file not found (pass -c FILE or set CREDBROKER_CONFIG)".into()
        } else {
            format!("cannot read the config file: {e}")
        },
    })?;
    load_str(&text, path, env)
}

/// Parse and validate config `text` as if read from `path` (no file I/O
/// except `session_policy_file`, which is read when set).
pub fn load_str(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CREDBROKER__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides.clone())),
        )
        .build()
        .map_err(|e| ConfigError {
            origin: origin.clone(),
            key: None,
            message: e.to_string(),
        })?;
    let raw: RawConfig = serde_path_to_error::deserialize(built).map_err(|e| {
        let key = e.path().to_string();
        let env_name = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
        let origin = if overrides.contains_key(&env_name) {
            format!("environment variable {env_name}")
        } else {
            origin.clone()
        };
        ConfigError {
            origin,
            key: (key != ".").then_some(key),
            message: strip_config_suffix(&e.into_inner().to_string()),
        }
    })?;
    validate(raw, path, env)
}

/// The `config` crate appends its own location to messages; we add ours.
fn strip_config_suffix(msg: &str) -> String {
    msg.split(" for key `").next().unwrap_or(msg).to_owned()
}

struct V<'a> {
    origin: String,
    env: &'a Env,
    dirs: Dirs,
}

impl V<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: Some(key.into()),
            message: message.into(),
        }
    }
    fn required<T>(&self, v: Option<T>, key: &str, why: &str) -> Result<T, ConfigError> {
        v.ok_or_else(|| self.err(key, format!("required {why}")))
    }
    fn duration(&self, v: &RawDuration, key: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(v.0.trim()).map_err(|e| {
            self.err(
                key,
                format!(
                    "invalid duration {:?} ({e}); use e.g. \"30m\", \"1h\", \"90s\"",
                    v.0
                ),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }
    fn loopback_addr(&self, s: &str, key: &str) -> Result<SocketAddr, ConfigError> {
        let addr: SocketAddr = s.parse().map_err(|_| {
            self.err(
                key,
                format!("invalid address {s:?}; expected IP:PORT such as \"127.0.0.1:9911\""),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(self.err(
                key,
                format!(
                    "{addr} is not a loopback address; credbroker serves credentials on loopback only (127.0.0.0/8 or [::1])"
                ),
            ));
        }
        Ok(addr)
    }

    fn upstream_url(&self, v: &str, key: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(v).map_err(|e| self.err(key, format!("invalid URL {v:?}: {e}")))?;
        check_upstream_url(&url).map_err(|m| self.err(key, m))?;
        Ok(url)
    }
}

/// A profile name: a TOML bare key (so `[profiles.NAME]` needs no quoting and
/// `CREDBROKER__PROFILES__NAME__KEY` works), also safe in URL paths and file
/// names.
fn valid_profile_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s != "."
        && s != ".."
}

/// The AWS endpoint variables the SDK honours; checked like config URLs.
pub const AWS_ENDPOINT_VARS: [&str; 4] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_COGNITO_IDENTITY",
    "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER",
];

fn validate(raw: RawConfig, path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let v = V {
        origin: path.display().to_string(),
        env,
        dirs: Dirs::from_env(env),
    };
    if let Some(ver) = raw.version
        && ver != 1
    {
        return Err(v.err(
            "version",
            format!("unsupported version {ver}; this build reads 1"),
        ));
    }
    for var in AWS_ENDPOINT_VARS {
        if let Some(val) = v.env.get(var).filter(|s| !s.is_empty()) {
            let bad = |m: String| ConfigError {
                origin: format!("environment variable {var}"),
                key: None,
                message: m,
            };
            let url = Url::parse(val).map_err(|e| bad(format!("invalid URL {val:?}: {e}")))?;
            check_upstream_url(&url).map_err(bad)?;
        }
    }

    let rs = raw.server.unwrap_or_default();
    let listen = v.loopback_addr(rs.listen.as_deref().unwrap_or(DEFAULT_LISTEN), "server.listen")?;
    let runtime_dir = rs.runtime_dir.unwrap_or_else(|| v.dirs.runtime.clone());
    let ecs_token_file = rs
        .ecs_token_file
        .unwrap_or_else(|| runtime_dir.join("ecs-token"));
    let allowed_hosts = rs.allowed_hosts.map(|l| l.0).unwrap_or_default();
    for (i, h) in allowed_hosts.iter().enumerate() {
        if h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            return Err(v.err(
                format!("server.allowed_hosts[{i}]"),
                format!("invalid host {h:?}; expected host or host:port"),
            ));
        }
    }

    let raw_profiles = raw.profiles.unwrap_or_default();
    if raw_profiles.is_empty() {
        return Err(v.err(
            "profiles",
            "at least one [profiles.<name>] section is required",
        ));
    }
    let mut profiles = BTreeMap::new();
    for (name, p) in raw_profiles {
        let prof = validate_profile(&v, &name, p)?;
        profiles.insert(name, prof);
    }

    reject_shared_token_files(&v, &profiles)?;

    let imds = rs.imds.unwrap_or(true);
    let imds_profile = match rs.imds_profile {
        Some(p) => {
            if !profiles.contains_key(&p) {
                return Err(v.err(
                    "server.imds_profile",
                    format!(
                        "no profile named {p:?} (profiles: {})",
                        profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            p
        }
        None if profiles.contains_key("default") => "default".into(),
        None if profiles.len() == 1 => profiles.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(v.err(
                "server.imds_profile",
                "required when there are several profiles and none is named \"default\"",
            ));
        }
    };

    Ok(Config {
        source: path.to_path_buf(),
        server: ServerConfig {
            listen,
            ecs_token_file,
            runtime_dir,
            imds,
            imds_v1: rs.imds_v1.unwrap_or(false),
            imds_profile,
            allowed_hosts,
            strict_permissions: rs.strict_permissions.unwrap_or(false),
        },
        profiles,
    })
}

fn validate_profile(v: &V<'_>, name: &str, p: RawProfile) -> Result<ProfileConfig, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.{s}");
    if !valid_profile_name(name) {
        return Err(v.err(
            format!("profiles.{name}"),
            "profile names may use letters, digits, '-' and '_' (at most 64)",
        ));
    }
    let state_dir = p.state_dir.unwrap_or_else(|| v.dirs.state.join(name));
    let endpoint_url = p
        .endpoint_url
        .as_deref()
        .map(|u| v.upstream_url(u, &k("endpoint_url")))
        .transpose()?;
    let role_name = p.role_name.unwrap_or_else(|| DEFAULT_ROLE_NAME.into());
    if !valid_name(&role_name) {
        return Err(v.err(
            k("role_name"),
            format!("invalid role name {role_name:?}: letters, digits, '-', '_', '.' only"),
        ));
    }
    let imds_listen = p
        .imds_listen
        .as_deref()
        .map(|s| v.loopback_addr(s, &k("imds_listen")))
        .transpose()?;
    let refresh_before = match &p.refresh_before {
        Some(d) => v.duration(d, &k("refresh_before"))?,
        None => DEFAULT_REFRESH_BEFORE,
    };

    let rl = v.required(
        p.login,
        &k("login"),
        "section: [profiles.NAME.login] with kind = \"oidc\", \"cognito-user-pool\" or \"none\"",
    )?;
    let ra = v.required(
        p.aws,
        &k("aws"),
        "section: [profiles.NAME.aws] with flow = \"cognito\", \"cognito-basic\" or \"sts\"",
    )?;

    let kind = v.required(
        rl.kind.clone(),
        &k("login.kind"),
        "(\"oidc\", \"cognito-user-pool\" or \"none\")",
    )?;
    let default_rt = state_dir.join("refresh-token");
    let login = match kind.as_str() {
        "oidc" => {
            let issuer = rl
                .issuer
                .as_deref()
                .map(|u| v.upstream_url(u, &k("login.issuer")))
                .transpose()?;
            let token_endpoint = rl
                .token_endpoint
                .as_deref()
                .map(|u| v.upstream_url(u, &k("login.token_endpoint")))
                .transpose()?;
            if issuer.is_none() && token_endpoint.is_none() {
                return Err(v.err(
                    k("login.issuer"),
                    "required for kind = \"oidc\" (or set login.token_endpoint)",
                ));
            }
            reject_keys(
                v,
                name,
                &[
                    ("user_pool_id", rl.user_pool_id.is_some()),
                    ("username", rl.username.is_some()),
                ],
                "oidc",
            )?;
            LoginConfig::Oidc(OidcConfig {
                issuer,
                token_endpoint,
                client_id: v.required(
                    rl.client_id,
                    &k("login.client_id"),
                    "for kind = \"oidc\"",
                )?,
                client_secret_file: rl.client_secret_file,
                refresh_token_file: rl.refresh_token_file.unwrap_or(default_rt),
                scopes: rl.scopes.map(|l| l.0),
            })
        }
        "cognito-user-pool" => {
            let pool = v.required(
                rl.user_pool_id,
                &k("login.user_pool_id"),
                "for kind = \"cognito-user-pool\"",
            )?;
            if !pool.contains('_') {
                return Err(v.err(k("login.user_pool_id"), format!("invalid user pool id {pool:?}; expected REGION_ID such as \"us-east-1_AbCdEf123\"")));
            }
            if rl.client_secret_file.is_some() && rl.username.is_none() {
                return Err(v.err(k("login.username"), "required with login.client_secret_file (Cognito computes SECRET_HASH from the username)"));
            }
            reject_keys(
                v,
                name,
                &[
                    ("issuer", rl.issuer.is_some()),
                    ("token_endpoint", rl.token_endpoint.is_some()),
                    ("scopes", rl.scopes.is_some()),
                ],
                "cognito-user-pool",
            )?;
            LoginConfig::UserPool(UserPoolConfig {
                user_pool_id: pool,
                client_id: v.required(
                    rl.client_id,
                    &k("login.client_id"),
                    "for kind = \"cognito-user-pool\"",
                )?,
                client_secret_file: rl.client_secret_file,
                username: rl.username,
                refresh_token_file: rl.refresh_token_file.unwrap_or(default_rt),
            })
        }
        "none" => LoginConfig::None,
        other => {
            return Err(v.err(
                k("login.kind"),
                format!(
                    "unknown kind {other:?}; expected \"oidc\", \"cognito-user-pool\" or \"none\""
                ),
            ));
        }
    };

    let flow_s = v.required(
        ra.flow,
        &k("aws.flow"),
        "(\"cognito\", \"cognito-basic\" or \"sts\")",
    )?;
    let flow = match flow_s.as_str() {
        "cognito" => AwsFlow::Cognito,
        "cognito-basic" => AwsFlow::CognitoBasic,
        "sts" => AwsFlow::Sts,
        other => {
            return Err(v.err(
                k("aws.flow"),
                format!(
                    "unknown flow {other:?}; expected \"cognito\", \"cognito-basic\" or \"sts\""
                ),
            ));
        }
    };
    let needs_pool = matches!(flow, AwsFlow::Cognito | AwsFlow::CognitoBasic);
    let identity_pool_id = if needs_pool {
        let id = v.required(
            ra.identity_pool_id,
            &k("aws.identity_pool_id"),
            &format!("when aws.flow = \"{flow_s}\""),
        )?;
        if !id.contains(':') {
            return Err(v.err(
                k("aws.identity_pool_id"),
                format!("invalid identity pool id {id:?}; expected REGION:GUID"),
            ));
        }
        Some(id)
    } else {
        if ra.identity_pool_id.is_some() {
            return Err(v.err(
                k("aws.identity_pool_id"),
                "only used with aws.flow = \"cognito\" or \"cognito-basic\"",
            ));
        }
        None
    };
    if flow == AwsFlow::Sts && matches!(login, LoginConfig::None) {
        return Err(v.err(k("login.kind"), "\"none\" (guest) needs a Cognito identity pool: use aws.flow = \"cognito\" or \"cognito-basic\""));
    }
    let role_arn = match (flow, ra.role_arn) {
        (AwsFlow::Sts | AwsFlow::CognitoBasic, None) => {
            return Err(v.err(
                k("aws.role_arn"),
                format!("required when aws.flow = \"{flow_s}\""),
            ));
        }
        (_, Some(arn)) => {
            if !arn.starts_with("arn:") || !arn.contains(":role/") {
                return Err(v.err(
                    k("aws.role_arn"),
                    format!("invalid role ARN {arn:?}; expected arn:aws:iam::ACCOUNT:role/NAME"),
                ));
            }
            Some(arn)
        }
        (_, None) => None,
    };
    if let Some(a) = &ra.account_id
        && (a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(v.err(
            k("aws.account_id"),
            format!("invalid account id {a:?}; expected 12 digits"),
        ));
    }
    let region = match p.region {
        Some(r) => r,
        None => identity_pool_id
            .as_deref()
            .and_then(|s| s.split(':').next())
            .or(match &login {
                LoginConfig::UserPool(u) => u.user_pool_id.split('_').next(),
                _ => None,
            })
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| v.err(k("region"), "required (e.g. \"us-east-1\")"))?,
    };
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(v.err(k("region"), format!("invalid region {region:?}")));
    }
    let login_provider = if needs_pool {
        match (ra.login_provider, &login) {
            (Some(lp), _) => Some(lp),
            (None, LoginConfig::Oidc(o)) => match &o.issuer {
                Some(iss) => Some(strip_scheme(iss)),
                None => {
                    return Err(v.err(k("aws.login_provider"), "required when login.issuer is not set (the Cognito Logins key, usually the issuer without https://)"));
                }
            },
            (None, LoginConfig::UserPool(u)) => Some(format!(
                "cognito-idp.{}.amazonaws.com/{}",
                u.user_pool_id.split('_').next().unwrap_or(&region),
                u.user_pool_id
            )),
            (None, LoginConfig::None) => None,
        }
    } else {
        None
    };
    let session_name = ra
        .session_name
        .unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
    if session_name.len() < 2
        || session_name.len() > 64
        || !session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@_-".contains(&b))
    {
        return Err(v.err(
            k("aws.session_name"),
            format!("invalid session name {session_name:?}: 2-64 of letters, digits and =,.@_-"),
        ));
    }
    let duration = ra
        .duration
        .as_ref()
        .map(|d| v.duration(d, &k("aws.duration")))
        .transpose()?;
    if let Some(d) = duration {
        if flow == AwsFlow::Cognito {
            return Err(v.err(k("aws.duration"), "not used with aws.flow = \"cognito\" (GetCredentialsForIdentity always issues 1 h credentials)"));
        }
        if d > Duration::from_secs(12 * 3600) {
            return Err(v.err(k("aws.duration"), "at most 12h (STS limit)"));
        }
    }
    let session_policy = match &ra.session_policy_file {
        Some(f) => {
            if flow == AwsFlow::Cognito {
                return Err(v.err(
                    k("aws.session_policy_file"),
                    "only used with STS (aws.flow = \"sts\" or \"cognito-basic\")",
                ));
            }
            let text = std::fs::read_to_string(f).map_err(|e| {
                v.err(
                    k("aws.session_policy_file"),
                    format!("cannot read {}: {e}", f.display()),
                )
            })?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                v.err(
                    k("aws.session_policy_file"),
                    format!("{} is not valid JSON: {e}", f.display()),
                )
            })?;
            Some(text)
        }
        None => None,
    };
    Ok(ProfileConfig {
        name: name.to_owned(),
        region,
        endpoint_url,
        role_name,
        imds_listen,
        refresh_before,
        login,
        aws: AwsConfig {
            flow,
            identity_pool_id,
            account_id: ra.account_id,
            login_provider,
            role_arn,
            session_name,
            duration,
            session_policy_file: ra.session_policy_file,
            session_policy,
            identity_id_file: state_dir.join("identity-id"),
        },
        state_dir,
    })
}

/// Two profiles on one refresh-token file would each run their own login
/// and refresh the same rotating token at once; an IdP with reuse detection
/// then revokes the whole grant. Refused until logins are shared per token
/// store. Paths are compared lexically (`.` and `..` folded), since the files
/// need not exist yet.
fn reject_shared_token_files(
    v: &V<'_>,
    profiles: &BTreeMap<String, ProfileConfig>,
) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<PathBuf, &str> = BTreeMap::new();
    for (name, p) in profiles {
        let Some(rt) = p.login.refresh_token_file() else {
            continue;
        };
        if let Some(first) = seen.insert(normalize(rt), name) {
            return Err(v.err(
                format!("profiles.{name}.login.refresh_token_file"),
                format!(
                    "{} is also the refresh-token file of profile {first:?}; two profiles \
                     refreshing one rotating token revoke each other's grant: give each \
                     profile its own file (and its own login)",
                    rt.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `path` with `.` removed and `..` folded, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn reject_keys(
    v: &V<'_>,
    name: &str,
    keys: &[(&str, bool)],
    kind: &str,
) -> Result<(), ConfigError> {
    for (key, present) in keys {
        if *present {
            return Err(v.err(
                format!("profiles.{name}.login.{key}"),
                format!("not used with kind = \"{kind}\""),
            ));
        }
    }
    Ok(())
}

fn strip_scheme(u: &Url) -> String {
    let s = u.as_str();
    let s = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    s.trim_end_matches('/').to_owned()
}

// === redacted display (check-config) ===

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn p(p: &Path) -> String {
    q(&p.display().to_string())
}

impl fmt::Display for Config {
    /// The resolved configuration as TOML. Secrets are never inline in the
    /// config, so only paths appear; nothing here needs redaction beyond that.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# resolved from {}", self.source.display())?;
        writeln!(f, "[server]")?;
        writeln!(f, "listen = {}", q(&self.server.listen.to_string()))?;
        writeln!(f, "ecs_token_file = {}", p(&self.server.ecs_token_file))?;
        writeln!(f, "runtime_dir = {}", p(&self.server.runtime_dir))?;
        writeln!(f, "imds = {}", self.server.imds)?;
        writeln!(f, "imds_v1 = {}", self.server.imds_v1)?;
        writeln!(f, "imds_profile = {}", q(&self.server.imds_profile))?;
        let hosts: Vec<String> = self.server.allowed_hosts.iter().map(|h| q(h)).collect();
        writeln!(f, "allowed_hosts = [{}]", hosts.join(", "))?;
        writeln!(f, "strict_permissions = {}", self.server.strict_permissions)?;
        for (name, pr) in &self.profiles {
            writeln!(f, "\n[profiles.{name}]")?;
            writeln!(f, "region = {}", q(&pr.region))?;
            if let Some(u) = &pr.endpoint_url {
                writeln!(f, "endpoint_url = {}", q(u.as_str()))?;
            }
            writeln!(f, "role_name = {}", q(&pr.role_name))?;
            if let Some(a) = pr.imds_listen {
                writeln!(f, "imds_listen = {}", q(&a.to_string()))?;
            }
            writeln!(
                f,
                "refresh_before = {}",
                q(&humantime::format_duration(pr.refresh_before).to_string())
            )?;
            writeln!(f, "state_dir = {}", p(&pr.state_dir))?;
            writeln!(f, "\n[profiles.{name}.login]")?;
            writeln!(f, "kind = {}", q(pr.login.kind()))?;
            match &pr.login {
                LoginConfig::Oidc(o) => {
                    if let Some(i) = &o.issuer {
                        writeln!(f, "issuer = {}", q(i.as_str()))?;
                    }
                    if let Some(t) = &o.token_endpoint {
                        writeln!(f, "token_endpoint = {}", q(t.as_str()))?;
                    }
                    writeln!(f, "client_id = {}", q(&o.client_id))?;
                    if let Some(s) = &o.client_secret_file {
                        writeln!(f, "client_secret_file = {}", p(s))?;
                    }
                    writeln!(f, "refresh_token_file = {}", p(&o.refresh_token_file))?;
                    if let Some(s) = &o.scopes {
                        let s: Vec<String> = s.iter().map(|x| q(x)).collect();
                        writeln!(f, "scopes = [{}]", s.join(", "))?;
                    }
                }
                LoginConfig::UserPool(u) => {
                    writeln!(f, "user_pool_id = {}", q(&u.user_pool_id))?;
                    writeln!(f, "client_id = {}", q(&u.client_id))?;
                    if let Some(s) = &u.client_secret_file {
                        writeln!(f, "client_secret_file = {}", p(s))?;
                    }
                    if let Some(s) = &u.username {
                        writeln!(f, "username = {}", q(s))?;
                    }
                    writeln!(f, "refresh_token_file = {}", p(&u.refresh_token_file))?;
                }
                LoginConfig::None => {}
            }
            let a = &pr.aws;
            writeln!(f, "\n[profiles.{name}.aws]")?;
            writeln!(f, "flow = {}", q(a.flow.as_str()))?;
            for (key, val) in [
                ("identity_pool_id", &a.identity_pool_id),
                ("account_id", &a.account_id),
                ("login_provider", &a.login_provider),
                ("role_arn", &a.role_arn),
            ] {
                if let Some(val) = val {
                    writeln!(f, "{key} = {}", q(val))?;
                }
            }
            if a.flow != AwsFlow::Cognito {
                writeln!(f, "session_name = {}", q(&a.session_name))?;
            }
            if let Some(d) = a.duration {
                writeln!(
                    f,
                    "duration = {}",
                    q(&humantime::format_duration(d).to_string())
                )?;
            }
            if let Some(s) = &a.session_policy_file {
                writeln!(f, "session_policy_file = {}", p(s))?;
            }
            writeln!(f, "# identity id cache: {}", a.identity_id_file.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        let mut e = Env::new();
        e.insert("HOME".into(), "/home/u".into());
        e.insert("XDG_RUNTIME_DIR".into(), "/run/user/1000".into());
        e
    }

    fn load_str(toml: &str, env: &Env) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        load(&path, env).map_err(|mut e| {
            e.origin = e.origin.replace(&path.display().to_string(), "FILE");
            e
        })
    }

    const GOOD: &str = r#"
[profiles.default]
[profiles.default.login]
kind = "oidc"
issuer = "https://idp.example.com/"
client_id = "cli"
[profiles.default.aws]
flow = "cognito"
identity_pool_id = "eu-west-1:1234"
"#;

    #[test]
    fn defaults_are_applied() {
        let c = load_str(GOOD, &env()).unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.server.ecs_token_file,
            PathBuf::from("/run/user/1000/credbroker/ecs-token")
        );
        assert!(c.server.imds && !c.server.imds_v1);
        assert_eq!(c.server.imds_profile, "default");
        let p = &c.profiles["default"];
        assert_eq!(p.region, "eu-west-1");
        assert_eq!(p.refresh_before, DEFAULT_REFRESH_BEFORE);
        assert_eq!(p.aws.login_provider.as_deref(), Some("idp.example.com"));
        assert_eq!(
            p.login.refresh_token_file().unwrap(),
            Path::new("/home/u/.local/state/credbroker/default/refresh-token")
        );
        assert_eq!(
            p.aws.identity_id_file,
            PathBuf::from("/home/u/.local/state/credbroker/default/identity-id")
        );
    }

    #[test]
    fn env_overrides_win() {
        let mut e = env();
        e.insert("CREDBROKER__SERVER__IMDS_V1".into(), "true".into());
        e.insert("CREDBROKER__SERVER__LISTEN".into(), "127.0.0.1:0".into());
        e.insert(
            "CREDBROKER__SERVER__ALLOWED_HOSTS".into(),
            "a.local:1,b.local".into(),
        );
        let c = load_str(GOOD, &e).unwrap();
        assert!(c.server.imds_v1);
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.server.allowed_hosts, vec!["a.local:1", "b.local"]);
    }

    fn err_of(toml: &str) -> ConfigError {
        load_str(toml, &env()).unwrap_err()
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                &GOOD.replace("flow = \"cognito\"", "flw = \"cognito\""),
                "profiles.default.aws.flw",
                "unknown field",
            ),
            (
                &GOOD.replace("identity_pool_id = \"eu-west-1:1234\"", ""),
                "profiles.default.aws.identity_pool_id",
                "required",
            ),
            (
                &format!("{GOOD}\n[server]\nlisten = \"0.0.0.0:80\"\n"),
                "server.listen",
                "loopback",
            ),
            (
                &format!("{GOOD}\n[server]\nlisten = \"nope\"\n"),
                "server.listen",
                "invalid address",
            ),
            (
                &GOOD.replace(
                    "[profiles.default]",
                    "[profiles.default]\nrefresh_before = \"soon\"",
                ),
                "profiles.default.refresh_before",
                "invalid duration",
            ),
            (
                &GOOD.replace("https://idp", "http://idp"),
                "profiles.default.login.issuer",
                "plain http",
            ),
            (
                &GOOD.replace("kind = \"oidc\"", "kind = \"saml\""),
                "profiles.default.login.kind",
                "unknown kind",
            ),
            (
                &GOOD.replace("flow = \"cognito\"", "flow = \"sts\""),
                "profiles.default.aws.identity_pool_id",
                "only used",
            ),
            (
                &format!("{GOOD}\n[server]\nimds_profile = \"x\"\n"),
                "server.imds_profile",
                "no profile named",
            ),
            (
                &format!("{GOOD}\n[server]\nimds_v1 = \"maybe\"\n"),
                "server.imds_v1",
                "",
            ),
            ("", "profiles", "at least one"),
        ];
        for (toml, key, msg) in cases {
            let e = err_of(toml);
            assert_eq!(e.origin, "FILE", "{e}");
            assert_eq!(e.key.as_deref(), Some(*key), "{e}");
            assert!(e.message.contains(msg), "{e}");
            assert!(e.to_string().starts_with(&format!("FILE: {key}: ")), "{e}");
        }
    }

    #[test]
    fn env_errors_name_the_variable() {
        let mut e = env();
        e.insert("CREDBROKER__SERVER__IMDS".into(), "perhaps".into());
        let err = load_str(GOOD, &e).unwrap_err();
        assert_eq!(
            err.origin, "environment variable CREDBROKER__SERVER__IMDS",
            "{err}"
        );
        let mut e = env();
        e.insert("AWS_ENDPOINT_URL".into(), "http://10.0.0.1:5000".into());
        let err = load_str(GOOD, &e).unwrap_err();
        assert_eq!(err.origin, "environment variable AWS_ENDPOINT_URL", "{err}");
    }

    #[test]
    fn profile_names_are_bare_keys_and_display_reloads() {
        let quoted = GOOD.replace("[profiles.default", "[profiles.\"dev.eu\"");
        let e = err_of(&quoted);
        assert_eq!(e.key.as_deref(), Some("profiles.dev.eu"), "{e}");
        // The check-config output is itself a loadable config with the same meaning.
        let c = super::load_str(GOOD, Path::new("a.toml"), &env()).unwrap();
        let again = super::load_str(&c.to_string(), Path::new("b.toml"), &env()).unwrap();
        assert_eq!(
            c.to_string().lines().skip(1).collect::<Vec<_>>(),
            again.to_string().lines().skip(1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn two_profiles_on_one_refresh_token_file_are_refused() {
        let two = format!(
            "{GOOD}{}",
            GOOD.replace("profiles.default", "profiles.dev").replace(
                "kind = \"oidc\"",
                "kind = \"oidc\"\nrefresh_token_file = \"/s/./x/../rt\""
            )
        )
        .replacen(
            "kind = \"oidc\"",
            "kind = \"oidc\"\nrefresh_token_file = \"/s/rt\"",
            1,
        );
        let e = err_of(&two);
        assert_eq!(
            e.key.as_deref(),
            Some("profiles.dev.login.refresh_token_file"),
            "{e}"
        );
        assert!(e.message.contains("\"default\""), "{e}");
        // Separate files (the default: one per profile's state dir) are fine.
        let ok = format!("{GOOD}{}", GOOD.replace("profiles.default", "profiles.dev"));
        let c = load_str(&ok, &env()).unwrap();
        assert_eq!(c.profiles.len(), 2);
        assert!(!c.server.strict_permissions);
        let strict = format!("[server]\nstrict_permissions = true\n{GOOD}");
        assert!(load_str(&strict, &env()).unwrap().server.strict_permissions);
    }

    #[test]
    fn runtime_dir_falls_back_to_per_user_directories() {
        let mut e = env();
        e.remove("XDG_RUNTIME_DIR");
        assert_eq!(
            Dirs::from_env(&e).runtime,
            PathBuf::from("/home/u/.cache/credbroker")
        );
        e.insert("XDG_CACHE_HOME".into(), "/c".into());
        assert_eq!(Dirs::from_env(&e).runtime, PathBuf::from("/c/credbroker"));
        let tmp = format!("/tmp/credbroker-{}", crate::fsutil::current_uid());
        assert_eq!(Dirs::from_env(&Env::new()).runtime, PathBuf::from(&tmp));
        let mut e = Env::new();
        e.insert("HOME".into(), "/".into());
        assert_eq!(Dirs::from_env(&e).runtime, PathBuf::from(&tmp));
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = load(Path::new("/nonexistent/c.toml"), &env()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/c.toml"));
    }

    #[test]
    fn user_pool_defaults() {
        let c = load_str(
            r#"
[profiles.p1]
login = { kind = "cognito-user-pool", user_pool_id = "us-west-2_abc", client_id = "x" }
aws = { flow = "cognito-basic", identity_pool_id = "us-west-2:g", role_arn = "arn:aws:iam::123456789012:role/R", duration = "2h" }
"#,
            &env(),
        )
        .unwrap();
        let p = &c.profiles["p1"];
        assert_eq!(c.server.imds_profile, "p1");
        assert_eq!(
            p.aws.login_provider.as_deref(),
            Some("cognito-idp.us-west-2.amazonaws.com/us-west-2_abc")
        );
        assert_eq!(
            p.aws.configured_account_id().as_deref(),
            Some("123456789012")
        );
        assert_eq!(p.aws.duration, Some(Duration::from_secs(7200)));
        // The Display form reloads to the same meaning.
        let shown = c.to_string();
        assert!(shown.contains("flow = \"cognito-basic\""));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example must stay loadable.
    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/credbroker.example.toml");
        let env = Env::from([("HOME".to_owned(), "/home/u".to_owned())]);
        let c = load(&path, &env).unwrap();
        assert_eq!(c.profiles["default"].aws.flow, AwsFlow::Cognito);
    }
}
