//! Raw → validated: defaults applied, URLs and durations parsed, cross-field
//! rules checked; every error names the file (or variable) and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::*;
use crate::net::check_upstream_url;

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

pub(super) fn validate(raw: RawConfig, path: &Path, env: &Env) -> Result<Config, ConfigError> {
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
    let listen = v.loopback_addr(
        rs.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "server.listen",
    )?;
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

    let allowed_uids = match &rs.allowed_uids {
        Some(l) => access(&v, "server.allowed_uids", &l.0)?,
        None => Access::Uids(vec![crate::fsutil::current_uid()]),
    };

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
        if let (Access::Uids(server), Some(Access::Uids(own))) = (&allowed_uids, &prof.allowed_uids)
            && let Some(u) = own.iter().find(|u| !server.contains(u))
        {
            return Err(v.err(
                format!("profiles.{name}.allowed_uids"),
                format!(
                    "uid {u} is not in server.allowed_uids; a profile's list can only narrow it"
                ),
            ));
        }
        profiles.insert(name, prof);
    }

    reject_shared_token_files(&v, &profiles)?;

    let imds = rs.imds.unwrap_or(true);
    let imds_profile = imds_profile(&v, rs.imds_profile, &profiles)?;
    let metrics_listen = rs
        .metrics_listen
        .as_deref()
        .map(|s| metrics_addr(&v, s, listen))
        .transpose()?;
    let log = validate_log(&v, raw.log.unwrap_or_default())?;
    let audit = validate_audit(&v, raw.audit.unwrap_or_default())?;

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
            desktop_notifications: rs.desktop_notifications.unwrap_or(true),
            allowed_uids,
            ecs_token_group_readable: rs.ecs_token_group_readable.unwrap_or(false),
            metrics_listen,
        },
        profiles,
        log,
        audit,
    })
}

/// `server.metrics_listen`: any IP (it serves no credentials), not the main
/// listener's own address.
fn metrics_addr(v: &V<'_>, s: &str, listen: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let key = "server.metrics_listen";
    let addr: SocketAddr = s.parse().map_err(|_| {
        v.err(
            key,
            format!("invalid address {s:?}; expected IP:PORT such as \"127.0.0.1:9912\" or \"0.0.0.0:9912\""),
        )
    })?;
    if addr.port() != 0 && addr == listen {
        return Err(v.err(
            key,
            format!(
                "{addr} is server.listen itself; /metrics is already served there, use another port"
            ),
        ));
    }
    Ok(addr)
}

/// `[log]`: `format` is `text` or `json`; `level` must parse as a filter.
fn validate_log(v: &V<'_>, raw: RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(v.err(
                "log.format",
                format!("unknown format {other:?}; use \"text\" or \"json\""),
            ));
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".into());
    if let Err(e) = crate::telemetry::check_spec(&level) {
        return Err(v.err(
            "log.level",
            format!("invalid level {level:?} ({e}); use e.g. \"info\", \"debug\" or \"warn,credbroker=debug\""),
        ));
    }
    Ok(LogConfig { format, level })
}

/// `[audit]`: `log` is `"off"` (default), `"journal"` or an absolute path;
/// `max_size` (file only) a byte count or `"<n>KiB|MiB|GiB"`, at least 4 KiB.
fn validate_audit(v: &V<'_>, raw: RawAudit) -> Result<crate::audit::AuditLog, ConfigError> {
    use crate::audit::{AuditLog, DEFAULT_MAX_BYTES};
    let max_bytes = match &raw.max_size {
        None => DEFAULT_MAX_BYTES,
        Some(s) => parse_size(s).filter(|n| *n >= 4096).ok_or_else(|| {
            v.err(
                "audit.max_size",
                format!("invalid size {s}; use bytes (at least 4096) or e.g. \"16MiB\""),
            )
        })?,
    };
    let log = match raw.log.as_deref() {
        None | Some("off") => AuditLog::Off,
        Some("journal") => AuditLog::Journal,
        Some(p) if Path::new(p).is_absolute() && !p.ends_with('/') => AuditLog::File {
            path: PathBuf::from(p),
            max_bytes,
        },
        Some(other) => {
            return Err(v.err(
                "audit.log",
                format!("{other:?} is not \"off\", \"journal\" or an absolute file path"),
            ));
        }
    };
    if raw.max_size.is_some() && !matches!(log, AuditLog::File { .. }) {
        return Err(v.err(
            "audit.max_size",
            "applies to an audit log file only; set audit.log to a path or remove it",
        ));
    }
    Ok(log)
}

/// Bytes of a size as written. Hand-written: four suffixes do not need a
/// crate.
fn parse_size(s: &RawSize) -> Option<u64> {
    let text = match s {
        RawSize::Bytes(n) => return Some(*n),
        RawSize::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `allowed_uids`: `"any"`, or uids, user names and `"self"`.
fn access(v: &V<'_>, key: &str, items: &[String]) -> Result<Access, ConfigError> {
    if items.is_empty() {
        return Err(v.err(key, "empty; use [\"self\"] (the default) or [\"any\"]"));
    }
    if items.iter().any(|i| i == "any") {
        if items.len() > 1 {
            return Err(v.err(key, "\"any\" allows every user; list it alone"));
        }
        return Ok(Access::Any);
    }
    let mut uids = Vec::new();
    for item in items {
        let uid = match item.as_str() {
            "self" => crate::fsutil::current_uid(),
            s => match s.parse::<u32>() {
                Ok(u) => u,
                Err(_) => crate::peer::uid_of(s).ok_or_else(|| {
                    v.err(
                        key,
                        format!("no user named {s:?} in /etc/passwd (use a numeric uid, \"self\" or \"any\")"),
                    )
                })?,
            },
        };
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    Ok(Access::Uids(uids))
}

/// `server.imds_profile`: named, else `default`, else the only profile.
fn imds_profile(
    v: &V<'_>,
    named: Option<String>,
    profiles: &BTreeMap<String, ProfileConfig>,
) -> Result<String, ConfigError> {
    match named {
        Some(p) if profiles.contains_key(&p) => Ok(p),
        Some(p) => Err(v.err(
            "server.imds_profile",
            format!(
                "no profile named {p:?} (profiles: {})",
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
        None if profiles.contains_key("default") => Ok("default".into()),
        None if profiles.len() == 1 => Ok(profiles.keys().next().cloned().unwrap_or_default()),
        None => Err(v.err(
            "server.imds_profile",
            "required when there are several profiles and none is named \"default\"",
        )),
    }
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
    let allowed_uids = p
        .allowed_uids
        .as_ref()
        .map(|l| access(v, &k("allowed_uids"), &l.0))
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
    let sign_in = validate_sign_in(v, name, &rl)?;
    let login = validate_login(v, name, rl, &state_dir)?;
    let aws = validate_aws(v, name, ra, &login, &state_dir)?;
    if login.guest_until_login() && matches!(aws, AwsConfig::Sts(_)) {
        return Err(v.err(
            k("login.guest_until_login"),
            "needs aws.flow = \"cognito\" or \"cognito-basic\": guests are identities of a Cognito identity pool that allows unauthenticated identities",
        ));
    }
    let region = profile_region(v, name, p.region, &aws, &login)?;
    Ok(ProfileConfig {
        name: name.to_owned(),
        region,
        endpoint_url,
        role_name,
        imds_listen,
        allowed_uids,
        refresh_before,
        login,
        sign_in,
        aws,
        state_dir,
    })
}

/// `region`, else the identity pool's or user pool's region.
fn profile_region(
    v: &V<'_>,
    name: &str,
    region: Option<String>,
    aws: &AwsConfig,
    login: &LoginConfig,
) -> Result<String, ConfigError> {
    let key = format!("profiles.{name}.region");
    let region = match region {
        Some(r) => r,
        None => aws
            .pool()
            .and_then(|p| p.identity_pool_id.split(':').next())
            .or(match login {
                LoginConfig::UserPool(u) => u.user_pool_id.split('_').next(),
                _ => None,
            })
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| v.err(&key, "required (e.g. \"us-east-1\")"))?,
    };
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(v.err(&key, format!("invalid region {region:?}")));
    }
    Ok(region)
}

/// `login.prompt` and `login.redirect_uri` (OIDC, and user pools with a
/// hosted UI), `login.auth_flow` and `login.domain` (user pools): settings of
/// `credbroker login` only.
fn validate_sign_in(v: &V<'_>, name: &str, rl: &RawLogin) -> Result<SignIn, ConfigError> {
    let kind = rl.kind.as_deref().unwrap_or("");
    match kind {
        "oidc" => {
            reject_keys(
                v,
                name,
                &[
                    ("domain", rl.domain.is_some()),
                    ("identity_provider", rl.identity_provider.is_some()),
                ],
                kind,
            )?;
            Ok(SignIn {
                prompt: sign_in_prompt(v, name, rl, SignIn::default().prompt)?,
                redirect_uri: sign_in_redirect(v, name, rl)?,
                auth_flow: PoolAuthFlow::default(),
                hosted_ui: None,
            })
        }
        "cognito-user-pool" => validate_pool_sign_in(v, name, rl),
        _ => {
            reject_keys(
                v,
                name,
                &[
                    ("prompt", rl.prompt.is_some()),
                    ("redirect_uri", rl.redirect_uri.is_some()),
                    ("auth_flow", rl.auth_flow.is_some()),
                    ("domain", rl.domain.is_some()),
                    ("identity_provider", rl.identity_provider.is_some()),
                ],
                kind,
            )?;
            Ok(SignIn::default())
        }
    }
}

/// A user pool's sign-in: `login.auth_flow` (password sign-in), and
/// `login.domain` with the keys only the hosted UI uses.
fn validate_pool_sign_in(v: &V<'_>, name: &str, rl: &RawLogin) -> Result<SignIn, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.login.{s}");
    let auth_flow = match rl.auth_flow.as_deref() {
        None | Some("srp") => PoolAuthFlow::Srp,
        Some("password") => PoolAuthFlow::Password,
        Some(other) => {
            return Err(v.err(
                k("auth_flow"),
                format!("unknown auth_flow {other:?}; expected \"srp\" (USER_SRP_AUTH, the default) or \"password\" (USER_PASSWORD_AUTH)"),
            ));
        }
    };
    let Some(raw_domain) = rl.domain.as_deref() else {
        for (key, present) in [
            ("prompt", rl.prompt.is_some()),
            ("redirect_uri", rl.redirect_uri.is_some()),
            ("scopes", rl.scopes.is_some()),
            ("identity_provider", rl.identity_provider.is_some()),
        ] {
            if present {
                return Err(v.err(
                    k(key),
                    "used only with login.domain (browser sign-in through the user pool's hosted UI)",
                ));
            }
        }
        return Ok(SignIn {
            auth_flow,
            ..SignIn::default()
        });
    };
    let domain = pool_domain(v, &k("domain"), raw_domain, rl.user_pool_id.as_deref())?;
    let redirect_uri = sign_in_redirect(v, name, rl)?.ok_or_else(|| {
        v.err(
            k("redirect_uri"),
            "required with login.domain: Cognito accepts only a callback URL registered in the \
             app client, exactly; register e.g. http://localhost:8765/callback there and set \
             the same URL here",
        )
    })?;
    hosted_ui_redirect(v, &k("redirect_uri"), &redirect_uri, rl)?;
    let scopes = rl.scopes.as_ref().map(|l| l.0.clone());
    for scope in scopes.iter().flatten() {
        let why = if scope.is_empty() || scope.contains(char::is_whitespace) {
            "a scope is one non-empty word"
        } else if scope == "offline_access" {
            "Cognito refuses offline_access (invalid_scope); its code grant returns a refresh token without it"
        } else {
            continue;
        };
        return Err(v.err(k("scopes"), format!("{scope:?}: {why}")));
    }
    if let Some(idp) = &rl.identity_provider
        && (idp.is_empty() || idp.len() > 128 || idp.chars().any(char::is_control))
    {
        return Err(v.err(
            k("identity_provider"),
            format!("invalid identity provider name {idp:?}"),
        ));
    }
    Ok(SignIn {
        prompt: sign_in_prompt(v, name, rl, None)?,
        redirect_uri: Some(redirect_uri),
        auth_flow,
        hosted_ui: Some(HostedUi {
            domain,
            scopes,
            identity_provider: rl.identity_provider.clone(),
        }),
    })
}

/// A hosted UI's callback URL: Cognito takes plain http only for
/// `localhost`, and compares the URL character by character, so it must be
/// written exactly as it is sent.
fn hosted_ui_redirect(v: &V<'_>, key: &str, url: &Url, rl: &RawLogin) -> Result<(), ConfigError> {
    let raw = rl.redirect_uri.as_deref().unwrap_or_default();
    if url.host_str() != Some("localhost") {
        return Err(v.err(
            key,
            format!("{raw:?}: Cognito accepts a plain-http callback URL only on localhost; use http://localhost:PORT/callback"),
        ));
    }
    if url.as_str() != raw {
        return Err(v.err(
            key,
            format!("write it as {:?}: Cognito compares callback URLs exactly, and that is how it is sent", url.as_str()),
        ));
    }
    Ok(())
}

/// `login.domain`: a URL (https, or http on loopback for tests), or a bare
/// Cognito domain prefix, expanded to
/// `https://<prefix>.auth.<region>.amazoncognito.com` with the pool's region.
fn pool_domain(v: &V<'_>, key: &str, raw: &str, pool: Option<&str>) -> Result<Url, ConfigError> {
    let url = if raw.contains("://") {
        v.upstream_url(raw, key)?
    } else {
        // Cognito's rules for a prefix: 1-63 lowercase letters, digits and
        // inner hyphens, without the reserved words.
        let prefix_ok = !raw.is_empty()
            && raw.len() <= 63
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-')
            && !["aws", "amazon", "cognito"].iter().any(|w| raw.contains(w));
        if !prefix_ok {
            return Err(v.err(
                key,
                format!("invalid domain {raw:?}: a URL such as \"https://auth.example.com\", or a Cognito domain prefix (lowercase letters, digits, inner hyphens; not containing aws, amazon or cognito)"),
            ));
        }
        let region = pool
            .and_then(|p| p.split_once('_'))
            .map(|(r, _)| r)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                v.err(
                    key,
                    "a bare domain prefix needs login.user_pool_id (its region names the domain)",
                )
            })?;
        v.upstream_url(
            &format!("https://{raw}.auth.{region}.amazoncognito.com"),
            key,
        )?
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(v.err(
            key,
            format!("{raw:?} has a path or query; give only the domain (the /oauth2/... paths are added)"),
        ));
    }
    Ok(url)
}

/// `login.prompt`: `default` when unset, `None` for `""`.
fn sign_in_prompt(
    v: &V<'_>,
    name: &str,
    rl: &RawLogin,
    default: Option<String>,
) -> Result<Option<String>, ConfigError> {
    match rl.prompt.as_deref() {
        None => Ok(default),
        Some("") => Ok(None),
        Some(p)
            if p.split(' ')
                .all(|w| ["none", "login", "consent", "select_account"].contains(&w)) =>
        {
            Ok(Some(p.to_owned()))
        }
        Some(p) => Err(v.err(
            format!("profiles.{name}.login.prompt"),
            format!("invalid prompt {p:?}: \"consent\", \"login\", \"select_account\", \"none\" or \"\" (send none)"),
        )),
    }
}

/// `login.redirect_uri`, validated as a loopback redirect.
fn sign_in_redirect(v: &V<'_>, name: &str, rl: &RawLogin) -> Result<Option<Url>, ConfigError> {
    rl.redirect_uri
        .as_deref()
        .map(|u| loopback_redirect(v, u, &format!("profiles.{name}.login.redirect_uri")))
        .transpose()
}

/// RFC 8252 §7.3: `http://127.0.0.1:PORT/path` (or `[::1]`, `localhost`).
fn loopback_redirect(v: &V<'_>, raw: &str, key: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| v.err(key, format!("invalid URL {raw:?}: {e}")))?;
    if url.scheme() != "http" || !crate::net::is_loopback_host(&url) {
        return Err(v.err(
            key,
            format!("{raw:?} is not a loopback redirect; use http://127.0.0.1:PORT/callback (RFC 8252 §7.3)"),
        ));
    }
    if url.port().is_none() {
        return Err(v.err(
            key,
            format!("{raw:?} names no port; add one, e.g. http://127.0.0.1:8765/callback"),
        ));
    }
    Ok(url)
}

/// `[profiles.NAME.login]`.
fn validate_login(
    v: &V<'_>,
    name: &str,
    rl: RawLogin,
    state_dir: &Path,
) -> Result<LoginConfig, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.login.{s}");
    let kind = v.required(
        rl.kind.clone(),
        &k("kind"),
        "(\"oidc\", \"cognito-user-pool\" or \"none\")",
    )?;
    let default_rt = state_dir.join("refresh-token");
    match kind.as_str() {
        "oidc" => validate_oidc(v, name, rl, default_rt).map(LoginConfig::Oidc),
        "cognito-user-pool" => {
            validate_user_pool(v, name, rl, default_rt).map(LoginConfig::UserPool)
        }
        "none" => Ok(LoginConfig::None),
        other => Err(v.err(
            k("kind"),
            format!("unknown kind {other:?}; expected \"oidc\", \"cognito-user-pool\" or \"none\""),
        )),
    }
}

fn validate_oidc(
    v: &V<'_>,
    name: &str,
    rl: RawLogin,
    default_rt: PathBuf,
) -> Result<OidcConfig, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.login.{s}");
    let issuer = rl
        .issuer
        .as_deref()
        .map(|u| v.upstream_url(u, &k("issuer")))
        .transpose()?;
    let token_endpoint = rl
        .token_endpoint
        .as_deref()
        .map(|u| v.upstream_url(u, &k("token_endpoint")))
        .transpose()?;
    if issuer.is_none() && token_endpoint.is_none() {
        return Err(v.err(
            k("issuer"),
            "required for kind = \"oidc\" (or set login.token_endpoint)",
        ));
    }
    reject_keys(
        v,
        name,
        &[
            ("user_pool_id", rl.user_pool_id.is_some()),
            ("username", rl.username.is_some()),
            ("rotation", rl.rotation.is_some()),
            ("auth_flow", rl.auth_flow.is_some()),
        ],
        "oidc",
    )?;
    Ok(OidcConfig {
        issuer,
        token_endpoint,
        client_id: v.required(rl.client_id, &k("client_id"), "for kind = \"oidc\"")?,
        client_secret_file: rl.client_secret_file,
        refresh_token_file: rl.refresh_token_file.unwrap_or(default_rt),
        token_store: store_kind(v, rl.token_store.as_deref(), &k("token_store"))?,
        guest_until_login: rl.guest_until_login.unwrap_or(false),
        scopes: rl.scopes.map(|l| l.0),
    })
}

/// `login.token_store`.
fn store_kind(v: &V<'_>, s: Option<&str>, key: &str) -> Result<StoreKind, ConfigError> {
    match s {
        None | Some("file") => Ok(StoreKind::File),
        Some("keyring") => Ok(StoreKind::Keyring),
        Some(other) => Err(v.err(
            key.to_owned(),
            format!(
                "unknown token store {other:?}; expected \"file\" or \"keyring\" (the OS keychain)"
            ),
        )),
    }
}

fn validate_user_pool(
    v: &V<'_>,
    name: &str,
    rl: RawLogin,
    default_rt: PathBuf,
) -> Result<UserPoolConfig, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.login.{s}");
    let pool = v.required(
        rl.user_pool_id,
        &k("user_pool_id"),
        "for kind = \"cognito-user-pool\"",
    )?;
    if !pool.contains('_') {
        return Err(v.err(
            k("user_pool_id"),
            format!(
                "invalid user pool id {pool:?}; expected REGION_ID such as \"us-east-1_AbCdEf123\""
            ),
        ));
    }
    if rl.client_secret_file.is_some() && rl.username.is_none() {
        return Err(v.err(
            k("username"),
            "required with login.client_secret_file (Cognito computes SECRET_HASH from the username)",
        ));
    }
    reject_keys(
        v,
        name,
        &[
            ("issuer", rl.issuer.is_some()),
            ("token_endpoint", rl.token_endpoint.is_some()),
        ],
        "cognito-user-pool",
    )?;
    Ok(UserPoolConfig {
        user_pool_id: pool,
        client_id: v.required(
            rl.client_id,
            &k("client_id"),
            "for kind = \"cognito-user-pool\"",
        )?,
        client_secret_file: rl.client_secret_file,
        username: rl.username,
        refresh_token_file: rl.refresh_token_file.unwrap_or(default_rt),
        token_store: store_kind(v, rl.token_store.as_deref(), &k("token_store"))?,
        guest_until_login: rl.guest_until_login.unwrap_or(false),
        rotation: rl.rotation,
    })
}

/// `[profiles.NAME.aws]`: the flow and exactly the settings it uses.
fn validate_aws(
    v: &V<'_>,
    name: &str,
    ra: RawAws,
    login: &LoginConfig,
    state_dir: &Path,
) -> Result<AwsConfig, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.aws.{s}");
    let flow_s = v.required(
        ra.flow.clone(),
        &k("flow"),
        "(\"cognito\", \"cognito-basic\" or \"sts\")",
    )?;
    let flow = match flow_s.as_str() {
        "cognito" => AwsFlow::Cognito,
        "cognito-basic" => AwsFlow::CognitoBasic,
        "sts" => AwsFlow::Sts,
        other => {
            return Err(v.err(
                k("flow"),
                format!(
                    "unknown flow {other:?}; expected \"cognito\", \"cognito-basic\" or \"sts\""
                ),
            ));
        }
    };
    if let Some(a) = &ra.account_id
        && (a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(v.err(
            k("account_id"),
            format!("invalid account id {a:?}; expected 12 digits"),
        ));
    }
    let role_arn = ra
        .role_arn
        .as_deref()
        .map(|arn| role_arn(v, &k("role_arn"), arn))
        .transpose()?;
    match flow {
        AwsFlow::Sts => {
            if matches!(login, LoginConfig::None) {
                return Err(v.err(format!("profiles.{name}.login.kind"), "\"none\" (guest) needs a Cognito identity pool: use aws.flow = \"cognito\" or \"cognito-basic\""));
            }
            if ra.identity_pool_id.is_some() {
                return Err(v.err(
                    k("identity_pool_id"),
                    "only used with aws.flow = \"cognito\" or \"cognito-basic\"",
                ));
            }
            let arn = v.required(role_arn, &k("role_arn"), "when aws.flow = \"sts\"")?;
            Ok(AwsConfig::Sts(validate_role(v, name, &ra, arn)?))
        }
        AwsFlow::CognitoBasic => {
            let arn = v.required(
                role_arn,
                &k("role_arn"),
                "when aws.flow = \"cognito-basic\"",
            )?;
            let pool = validate_pool(v, name, &ra, login, state_dir, &flow_s, None)?;
            Ok(AwsConfig::CognitoBasic(
                pool,
                validate_role(v, name, &ra, arn)?,
            ))
        }
        AwsFlow::Cognito => {
            if ra.duration.is_some() {
                return Err(v.err(k("duration"), "not used with aws.flow = \"cognito\" (GetCredentialsForIdentity always issues 1 h credentials)"));
            }
            if ra.session_policy_file.is_some() {
                return Err(v.err(
                    k("session_policy_file"),
                    "only used with STS (aws.flow = \"sts\" or \"cognito-basic\")",
                ));
            }
            let pool = validate_pool(v, name, &ra, login, state_dir, &flow_s, role_arn)?;
            Ok(AwsConfig::Cognito(pool))
        }
    }
}

fn role_arn(v: &V<'_>, key: &str, arn: &str) -> Result<String, ConfigError> {
    if !arn.starts_with("arn:") || !arn.contains(":role/") {
        return Err(v.err(
            key,
            format!("invalid role ARN {arn:?}; expected arn:aws:iam::ACCOUNT:role/NAME"),
        ));
    }
    Ok(arn.to_owned())
}

fn validate_pool(
    v: &V<'_>,
    name: &str,
    ra: &RawAws,
    login: &LoginConfig,
    state_dir: &Path,
    flow_s: &str,
    custom_role_arn: Option<String>,
) -> Result<CognitoPool, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.aws.{s}");
    let id = v.required(
        ra.identity_pool_id.clone(),
        &k("identity_pool_id"),
        &format!("when aws.flow = \"{flow_s}\""),
    )?;
    if !id.contains(':') {
        return Err(v.err(
            k("identity_pool_id"),
            format!("invalid identity pool id {id:?}; expected REGION:GUID"),
        ));
    }
    let login_provider = match (ra.login_provider.clone(), login) {
        (Some(lp), _) => Some(lp),
        (None, LoginConfig::Oidc(o)) => match &o.issuer {
            Some(iss) => Some(strip_scheme(iss)),
            None => {
                return Err(v.err(k("login_provider"), "required when login.issuer is not set (the Cognito Logins key, usually the issuer without https://)"));
            }
        },
        (None, LoginConfig::UserPool(u)) => {
            let region = u.user_pool_id.split('_').next().unwrap_or_default();
            Some(format!(
                "cognito-idp.{region}.amazonaws.com/{}",
                u.user_pool_id
            ))
        }
        (None, LoginConfig::None) => None,
    };
    Ok(CognitoPool {
        identity_pool_id: id,
        account_id: ra.account_id.clone(),
        login_provider,
        custom_role_arn,
        identity_id_file: state_dir.join("identity-id"),
    })
}

/// The STS side: session name, duration, policy.
fn validate_role(
    v: &V<'_>,
    name: &str,
    ra: &RawAws,
    role_arn: String,
) -> Result<StsRole, ConfigError> {
    let k = |s: &str| format!("profiles.{name}.aws.{s}");
    let session_name = ra
        .session_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
    if session_name.len() < 2
        || session_name.len() > 64
        || !session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@_-".contains(&b))
    {
        return Err(v.err(
            k("session_name"),
            format!("invalid session name {session_name:?}: 2-64 of letters, digits and =,.@_-"),
        ));
    }
    let duration = ra
        .duration
        .as_ref()
        .map(|d| v.duration(d, &k("duration")))
        .transpose()?;
    if duration.is_some_and(|d| d > Duration::from_secs(12 * 3600)) {
        return Err(v.err(k("duration"), "at most 12h (STS limit)"));
    }
    let session_policy = ra
        .session_policy_file
        .as_ref()
        .map(|f| read_policy(v, &k("session_policy_file"), f))
        .transpose()?;
    Ok(StsRole {
        role_arn,
        account_id: ra.account_id.clone(),
        session_name,
        duration,
        session_policy_file: ra.session_policy_file.clone(),
        session_policy,
    })
}

fn read_policy(v: &V<'_>, key: &str, f: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(f)
        .map_err(|e| v.err(key, format!("cannot read {}: {e}", f.display())))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| v.err(key, format!("{} is not valid JSON: {e}", f.display())))?;
    Ok(text)
}

/// Two profiles may share a refresh-token file (one IdP login feeding two
/// roles): the daemon then runs **one** login for both, so the rotating
/// token is refreshed once, never twice (reuse detection would revoke the
/// grant). That needs the same login settings; different ones on one file
/// are refused, naming both profiles. Paths are compared lexically (`.` and
/// `..` folded), since the files need not exist yet.
fn reject_shared_token_files(
    v: &V<'_>,
    profiles: &BTreeMap<String, ProfileConfig>,
) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<PathBuf, (&str, &LoginConfig)> = BTreeMap::new();
    for (name, p) in profiles {
        let Some(rt) = p.login.refresh_token_file() else {
            continue;
        };
        match seen.get(&normalize(rt)) {
            Some((first, login)) if !login.same_login(&p.login) => {
                return Err(v.err(
                    format!("profiles.{name}.login"),
                    format!(
                        "shares the refresh-token file {} with profile {first:?} but not its login \
                         settings; one token file is one login: use the same [login] settings, or \
                         give this profile its own refresh_token_file",
                        rt.display()
                    ),
                ));
            }
            Some(_) => {}
            None => {
                seen.insert(normalize(rt), (name, &p.login));
            }
        }
    }
    Ok(())
}

/// A refresh-token path in the form used to tell whether two profiles share
/// one file.
pub fn token_file_key(path: &Path) -> PathBuf {
    normalize(path)
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
