//! Configuration: a TOML file, then `CREDBROKER__SECTION__KEY` environment
//! overrides (via the `config` crate), deserialized into [`RawConfig`] (every
//! field optional, unknown keys rejected) and validated into [`Config`]
//! (defaults applied, URLs and durations parsed, cross-field rules checked).
//!
//! Every error names the file (or environment variable) and the key, e.g.
//! `/home/u/.config/credbroker/config.toml: profiles.dev.aws.identity_pool_id:
//! required when aws.flow = "cognito"`. Secrets are never inline in the
//! config: only paths to files that hold them.
//!
//! Files: `raw` (the serde layer), `validate` (raw → [`Config`]), `display`
//! (the `check-config` form, which reloads as the same config), `diff`
//! (what a reload changes).

mod diff;
mod display;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

pub use crate::peer::Access;
pub use crate::telemetry::LogFormat;
pub use diff::{ConfigDiff, ProfileChange};
pub use raw::{
    RawAudit, RawAws, RawConfig, RawDuration, RawLog, RawLogin, RawProfile, RawServer, RawSize,
    StringList,
};
pub use validate::{AWS_ENDPOINT_VARS, token_file_key};

/// Default listener: loopback, the port the rolesanywhere helper made familiar.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";
/// Default IMDS role name served under `security-credentials/`.
pub const DEFAULT_ROLE_NAME: &str = "credbroker";
/// Default lead time (capped at half the lifetime by the refresher). 60 min:
/// the largest advisory window of any SDK (Rust and Java v2 start refreshing
/// 60 min early for credentials living 90 min or more), so an SDK's first
/// early refresh already finds new credentials; with 1 h sessions the cap
/// makes it 30 min, beyond botocore's IMDS stretch (17–25 min, protocol.md
/// 1.6) and every mandatory window (botocore 10 min at most). The table is in
/// docs/compatibility.md ("Refresh windows"), checked by
/// `refresher::tests::default_lead_clears_every_sdk_window`.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60 * 60);
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

// === validated layer ===

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Listener and serving options.
    pub server: ServerConfig,
    /// Profiles by name (at least one).
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Logging.
    pub log: LogConfig,
    /// The audit trail (`[audit]`). Applied at start; a change needs a restart.
    pub audit: crate::audit::AuditLog,
}

/// Validated `[log]`. Applied at start; a change needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// An `EnvFilter` spec (`info`, `warn,credbroker=debug`, …); a non-empty
    /// `RUST_LOG` overrides it. The fixed caps of [`crate::telemetry`] apply
    /// either way.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone, PartialEq)]
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
    /// A desktop notification when a profile needs a sign-in (builds with
    /// the `desktop-notify` feature, a session D-Bus reachable).
    pub desktop_notifications: bool,
    /// Which local users may read credentials (the caller's uid comes from
    /// the kernel, see [`crate::peer`]). Default: the daemon's own user.
    pub allowed_uids: Access,
    /// Let the ECS token file's group read it (0640, its directory 0750): a
    /// sidecar's app container in that group reads the token the daemon made.
    pub ecs_token_group_readable: bool,
    /// A second listener serving only `/metrics`, `/healthz` and `/readyz`
    /// (no credentials, so any address is allowed, e.g. a pod IP).
    pub metrics_listen: Option<SocketAddr>,
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
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
    /// Narrows `server.allowed_uids` for this profile.
    pub allowed_uids: Option<Access>,
    /// How long before expiry to refresh (capped at half the lifetime).
    pub refresh_before: Duration,
    /// Per-profile state directory (refresh token, identity id).
    pub state_dir: PathBuf,
    /// How the IdP token is obtained.
    pub login: LoginConfig,
    /// How `credbroker login` signs in (not used by the daemon; a change
    /// restarts nothing).
    pub sign_in: SignIn,
    /// How AWS credentials are obtained.
    pub aws: AwsConfig,
}

/// The identity side of a profile.
#[derive(Debug, Clone, PartialEq)]
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
    /// The same login as `other`: equal settings, with the refresh-token
    /// files compared as [`token_file_key`]s (so `/s/./rt` is `/s/rt`).
    pub fn same_login(&self, other: &LoginConfig) -> bool {
        let norm = |l: &LoginConfig| {
            let mut l = l.clone();
            match &mut l {
                LoginConfig::Oidc(o) => {
                    o.refresh_token_file = token_file_key(&o.refresh_token_file)
                }
                LoginConfig::UserPool(u) => {
                    u.refresh_token_file = token_file_key(&u.refresh_token_file)
                }
                LoginConfig::None => {}
            }
            l
        };
        norm(self) == norm(other)
    }

    /// `login.guest_until_login`: guest (unauthenticated) credentials while
    /// no refresh token exists; the sign-in is then linked to that identity.
    pub fn guest_until_login(&self) -> bool {
        match self {
            LoginConfig::Oidc(o) => o.guest_until_login,
            LoginConfig::UserPool(u) => u.guest_until_login,
            LoginConfig::None => false,
        }
    }

    /// Where the refresh token is kept (`login.token_store`), if this kind
    /// has one.
    pub fn token_store(&self) -> Option<StoreKind> {
        match self {
            LoginConfig::Oidc(o) => Some(o.token_store),
            LoginConfig::UserPool(u) => Some(u.token_store),
            LoginConfig::None => None,
        }
    }

    /// The refresh-token file, if this kind has one. With
    /// `token_store = "keyring"` no file is written: the path then only
    /// names the sign-in (profiles naming one path share it) and the
    /// keychain entry (its account).
    pub fn refresh_token_file(&self) -> Option<&Path> {
        match self {
            LoginConfig::Oidc(o) => Some(&o.refresh_token_file),
            LoginConfig::UserPool(u) => Some(&u.refresh_token_file),
            LoginConfig::None => None,
        }
    }
}

/// Interactive sign-in settings (`credbroker login` only: changing them
/// restarts nothing in the daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// `prompt` sent in the authorization request (`login.prompt`, default
    /// `consent`: several IdPs drop `offline_access` without it); `None`
    /// sends none (`login.prompt = ""`).
    pub prompt: Option<String>,
    /// A fixed loopback redirect URI (`login.redirect_uri`) for IdPs that
    /// need an exact registered one; else `http://127.0.0.1:<ephemeral>/callback`.
    pub redirect_uri: Option<Url>,
    /// `login.auth_flow` (user pools): SRP (the default) or password.
    pub auth_flow: PoolAuthFlow,
    /// `login.domain` (user pools): browser sign-in through the pool's
    /// hosted UI (managed login); `None` signs in with a password.
    pub hosted_ui: Option<HostedUi>,
}

/// A user pool's hosted UI (`login.domain` and the keys only it uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedUi {
    /// `https://<prefix>.auth.<region>.amazoncognito.com` or a custom
    /// domain; `/oauth2/authorize` and `/oauth2/token` are under it.
    pub domain: Url,
    /// `login.scopes` as written (`openid` is added when missing; never
    /// `offline_access`, which Cognito refuses: its code grant always
    /// returns a refresh token).
    pub scopes: Option<Vec<String>>,
    /// `login.identity_provider`: go straight to this federated IdP
    /// (`identity_provider=` in the authorize request) instead of the
    /// hosted UI's chooser.
    pub identity_provider: Option<String>,
}

impl Default for SignIn {
    fn default() -> Self {
        SignIn {
            prompt: Some("consent".into()),
            redirect_uri: None,
            auth_flow: PoolAuthFlow::default(),
            hosted_ui: None,
        }
    }
}

/// `login.token_store`: where a sign-in's refresh token is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// `refresh_token_file` (0600, atomic writes): the default, and the only
    /// choice on headless hosts and in containers.
    #[default]
    File,
    /// The OS keychain (Secret Service, Keychain, Credential Manager).
    Keyring,
}

impl StoreKind {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Keyring => "keyring",
        }
    }
}

/// Validated OIDC login.
#[derive(Debug, Clone, PartialEq)]
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
    /// Where the refresh token is kept.
    pub token_store: StoreKind,
    /// Serve the identity pool's guest credentials while no refresh token
    /// exists (`login.guest_until_login`, Cognito flows only).
    pub guest_until_login: bool,
    /// Scopes to request on refresh (none sent when unset).
    pub scopes: Option<Vec<String>>,
}

/// Validated Cognito user-pool login.
#[derive(Debug, Clone, PartialEq)]
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
    /// Where the refresh token is kept.
    pub token_store: StoreKind,
    /// Serve the identity pool's guest credentials while no refresh token
    /// exists (`login.guest_until_login`, Cognito flows only).
    pub guest_until_login: bool,
    /// `login.rotation`: the app client rotates refresh tokens (`Some(true)`:
    /// refresh with `GetTokensFromRefreshToken`), does not (`Some(false)`:
    /// `InitiateAuth` `REFRESH_TOKEN_AUTH` only), or unknown (`None`: the
    /// latter, switching to the former when the pool refuses it).
    pub rotation: Option<bool>,
}

/// `login.auth_flow` of a user pool: how `credbroker login` signs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoolAuthFlow {
    /// `USER_PASSWORD_AUTH` (the password goes to Cognito over TLS; the app
    /// client needs `ALLOW_USER_PASSWORD_AUTH`, which is off by default).
    Password,
    /// `USER_SRP_AUTH` (the password never leaves the machine): the
    /// default, as in the AWS SDKs and Amplify, and on by default in new
    /// app clients.
    #[default]
    Srp,
}

impl PoolAuthFlow {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolAuthFlow::Srp => "srp",
            PoolAuthFlow::Password => "password",
        }
    }
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

/// Validated AWS side of a profile: one variant per `aws.flow`, each with
/// exactly the settings that flow uses (nothing to re-check at run time).
#[derive(Debug, Clone, PartialEq)]
pub enum AwsConfig {
    /// Cognito enhanced flow: GetId + GetCredentialsForIdentity.
    Cognito(CognitoPool),
    /// Cognito basic flow: GetId + GetOpenIdToken + STS AssumeRoleWithWebIdentity.
    CognitoBasic(CognitoPool, StsRole),
    /// STS AssumeRoleWithWebIdentity with the IdP id_token.
    Sts(StsRole),
}

/// A Cognito identity pool and the identity in it.
#[derive(Debug, Clone, PartialEq)]
pub struct CognitoPool {
    /// `REGION:GUID`.
    pub identity_pool_id: String,
    /// AWS account id (GetId `AccountId`; served as `AccountId`).
    pub account_id: Option<String>,
    /// Key of the `Logins` map; `None` for a guest (unauthenticated) identity.
    pub login_provider: Option<String>,
    /// `CustomRoleArn` (enhanced flow; the basic flow's role is its [`StsRole`]).
    pub custom_role_arn: Option<String>,
    /// Where the identity id is cached.
    pub identity_id_file: PathBuf,
}

/// A role assumed with a web identity.
#[derive(Debug, Clone, PartialEq)]
pub struct StsRole {
    /// The role.
    pub role_arn: String,
    /// Served as `AccountId` (configured, else from the role ARN).
    pub account_id: Option<String>,
    /// Role session name.
    pub session_name: String,
    /// Requested session duration.
    pub duration: Option<Duration>,
    /// Inline session policy file (its content is read at load).
    pub session_policy_file: Option<PathBuf>,
    /// The session policy document (read and JSON-checked at load).
    pub session_policy: Option<String>,
}

impl AwsConfig {
    /// The flow.
    pub fn flow(&self) -> AwsFlow {
        match self {
            AwsConfig::Cognito(_) => AwsFlow::Cognito,
            AwsConfig::CognitoBasic(..) => AwsFlow::CognitoBasic,
            AwsConfig::Sts(_) => AwsFlow::Sts,
        }
    }

    /// The flow as written in the file (`cognito`, `cognito-basic`, `sts`).
    pub fn flow_name(&self) -> &'static str {
        self.flow().as_str()
    }

    /// The identity pool (Cognito flows).
    pub fn pool(&self) -> Option<&CognitoPool> {
        match self {
            AwsConfig::Cognito(p) | AwsConfig::CognitoBasic(p, _) => Some(p),
            AwsConfig::Sts(_) => None,
        }
    }

    /// The assumed role (STS and basic flows).
    pub fn role(&self) -> Option<&StsRole> {
        match self {
            AwsConfig::CognitoBasic(_, r) | AwsConfig::Sts(r) => Some(r),
            AwsConfig::Cognito(_) => None,
        }
    }

    /// The role the credentials are for, when the config names one.
    pub fn role_arn(&self) -> Option<&str> {
        match self {
            AwsConfig::Cognito(p) => p.custom_role_arn.as_deref(),
            AwsConfig::CognitoBasic(_, r) | AwsConfig::Sts(r) => Some(&r.role_arn),
        }
    }

    /// Where the Cognito identity id is cached (Cognito flows).
    pub fn identity_id_file(&self) -> Option<&Path> {
        self.pool().map(|p| p.identity_id_file.as_path())
    }

    /// The account id to serve: configured, else from the role ARN.
    pub fn configured_account_id(&self) -> Option<String> {
        self.pool()
            .and_then(|p| p.account_id.clone())
            .or_else(|| self.role().and_then(|r| r.account_id.clone()))
            .or_else(|| self.role_arn().and_then(account_from_arn))
    }

    /// Who the credentials belong to, for [`ConfigDiff`]: everything but the
    /// session tuning (name, duration, policy).
    pub fn identity(&self) -> (AwsFlow, Option<&CognitoPool>, Option<&str>) {
        (self.flow(), self.pool(), self.role_arn())
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
    validate::validate(raw, path, env)
}

/// The `config` crate appends its own location to messages; we add ours.
fn strip_config_suffix(msg: &str) -> String {
    msg.split(" for key `").next().unwrap_or(msg).to_owned()
}
