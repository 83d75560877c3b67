//! Signing in and out, run by `credbroker login` / `logout` in the user's
//! terminal — never by the daemon, which only ever refreshes.
//!
//! * [`sign_in`]: the profile's IdP flow ([`oidc`]: device grant, or code +
//!   PKCE through the browser and a loopback [`redirect`], also at a user
//!   pool's hosted UI; [`userpool`]: a password or SRP), the id_token
//!   checked ([`id_token`]), then the refresh token stored where the daemon
//!   reads it (the profile's token store) and the cached identity id dropped
//!   (it belongs to whoever signed in before).
//! * [`sign_out`]: the refresh token revoked at the IdP (RFC 7009), then the
//!   token and the identity cache deleted, even when revocation fails.
//!
//! Telling the running daemon (so it refreshes at once, or drops the
//! credentials at once) is the CLI's job, through the admin API.

pub mod id_token;
pub mod oidc;
pub mod redirect;
pub mod userpool;

use std::path::Path;
use std::time::Duration;

use crate::config::StoreKind;
use crate::config::{LoginConfig, ProfileConfig};
use crate::fsutil;
use crate::secret::SecretString;
use crate::upstream::token_store::{self, TokenStore};

/// Exit code: the user or the IdP denied the sign-in (sysexits `EX_NOPERM`).
pub const EXIT_DENIED: u8 = 77;
/// Exit code: the code or the wait expired; try again (`EX_TEMPFAIL`).
pub const EXIT_EXPIRED: u8 = 75;
/// Exit code: the IdP answered something we cannot accept (`EX_PROTOCOL`).
pub const EXIT_PROTOCOL: u8 = 76;
/// Exit code: the token could not be stored (`EX_CANTCREAT`).
pub const EXIT_CANTCREAT: u8 = 73;
/// Exit code: cancelled with Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_CANCELLED: u8 = 130;

/// Why a sign-in failed; each kind has its exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Config or usage: 64.
    #[error("{0}")]
    Usage(String),
    /// The IdP is unreachable or failing: 69.
    #[error("{0}")]
    Unavailable(String),
    /// Denied by the user or the IdP: 77.
    #[error("{0}")]
    Denied(String),
    /// Expired before approval: 75.
    #[error("{0}")]
    Expired(String),
    /// An answer we refuse (bad id_token, no refresh token, mix-up): 76.
    #[error("{0}")]
    Protocol(String),
    /// Local failure (storing the token): 73.
    #[error("{0}")]
    Local(String),
    /// Ctrl-C: 130.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => crate::EXIT_USAGE,
            Error::Unavailable(_) => crate::EXIT_UNAVAILABLE,
            Error::Denied(_) => EXIT_DENIED,
            Error::Expired(_) => EXIT_EXPIRED,
            Error::Protocol(_) => EXIT_PROTOCOL,
            Error::Local(_) => EXIT_CANTCREAT,
            Error::Cancelled => EXIT_CANCELLED,
        }
    }
}

/// A finished sign-in. No `Debug`: it holds the refresh token.
pub struct SignedIn {
    /// The refresh token to store.
    pub refresh_token: SecretString,
    /// Who signed in (the id_token's `sub`).
    pub subject: String,
}

/// What the terminal shows while a sign-in runs.
pub trait Progress {
    /// RFC 8628: where to go and which code to enter.
    fn device_code(
        &mut self,
        uri: &str,
        complete: Option<&str>,
        user_code: &str,
        expires_in: Duration,
    );
    /// The authorization URL, and whether a browser was opened on it.
    fn browser_url(&mut self, url: &str, opened: bool);
    /// A one-line remark.
    fn note(&mut self, msg: &str);
    /// Called about once a second while waiting for the user.
    fn tick(&mut self, waited: Duration);
}

/// What a password sign-in asks the user (Cognito user pools).
pub trait Ask {
    /// The username, when `login.username` names none.
    fn username(&mut self) -> Result<String, Error>;
    /// The password (never echoed).
    fn password(&mut self, username: &str) -> Result<SecretString, Error>;
    /// An MFA code from `kind` ("authenticator app", "SMS").
    fn mfa_code(&mut self, kind: &str) -> Result<String, Error>;
}

/// Sleep `d`, ticking the indicator every second.
pub async fn wait(ui: &mut dyn Progress, d: Duration) {
    let start = tokio::time::Instant::now();
    let end = start + d;
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            return;
        }
        tokio::time::sleep((end - now).min(Duration::from_secs(1))).await;
        ui.tick(start.elapsed());
    }
}

/// How to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// RFC 8628 device grant.
    Device,
    /// Code + PKCE through a browser (`open`: launch it, else print the URL).
    Browser {
        /// Launch the system browser.
        open: bool,
    },
    /// A user pool's username and password (`InitiateAuth`), not its
    /// hosted UI.
    Password,
}

/// Whether this machine can open a browser for the user: a desktop session,
/// not inside a container, not over SSH. Else the device grant is the default
/// (aws/aws-cli#9098: a PKCE default inside Docker cannot work).
pub fn can_open_browser(env: &crate::config::Env) -> bool {
    let set = |k: &str| env.get(k).is_some_and(|v| !v.is_empty());
    let desktop = set("DISPLAY") || set("WAYLAND_DISPLAY") || cfg!(target_os = "macos");
    let ssh = set("SSH_CONNECTION") || set("SSH_TTY");
    let container = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || set("KUBERNETES_SERVICE_HOST");
    desktop && !ssh && !container
}

/// Run the profile's sign-in and store the refresh token: OIDC through
/// `method`; a user pool through its hosted UI (`Method::Browser`) or with
/// a password (`Method::Password`, answered by `ask`).
pub async fn sign_in(
    profile: &ProfileConfig,
    env: &crate::config::Env,
    method: Method,
    ui: &mut dyn Progress,
    ask: &mut dyn Ask,
) -> Result<String, Error> {
    let key = format!("profiles.{}.login", profile.name);
    let (file, done) = match &profile.login {
        LoginConfig::Oidc(cfg) => {
            let idp = oidc::Provider::discover(cfg, &key).await?;
            let done = match method {
                Method::Device => idp.device(ui).await?,
                Method::Browser { open } => idp.code(&profile.sign_in, open, ui).await?,
                Method::Password => {
                    return Err(Error::Usage(format!(
                        "{key}: --password is for Cognito user pools; an OpenID provider signs in with --device or --browser"
                    )));
                }
            };
            (&cfg.refresh_token_file, done)
        }
        LoginConfig::UserPool(cfg) => (
            &cfg.refresh_token_file,
            user_pool(profile, env, cfg, method, ui, ask).await?,
        ),
        LoginConfig::None => {
            return Err(Error::Usage(format!(
                "profile {:?} has login.kind = \"none\" (a guest identity): there is nothing to sign in to",
                profile.name
            )));
        }
    };
    store(profile, file, &done.refresh_token)?;
    Ok(done.subject)
}

/// A user pool's sign-in: its hosted UI in a browser (`login.domain`), or a
/// username and password.
async fn user_pool(
    profile: &ProfileConfig,
    env: &crate::config::Env,
    cfg: &crate::config::UserPoolConfig,
    method: Method,
    ui: &mut dyn Progress,
    ask: &mut dyn Ask,
) -> Result<SignedIn, Error> {
    let key = format!("profiles.{}.login", profile.name);
    match (&profile.sign_in.hosted_ui, method) {
        (Some(ui_cfg), Method::Browser { open }) => {
            // The pool's keys are where the SDK would call it (moto in tests).
            let idp =
                crate::upstream::aws::endpoint_override(profile, env, "COGNITO_IDENTITY_PROVIDER")
                    .map(|(u, from)| match url::Url::parse(&u) {
                        Ok(u) => Ok((u, from)),
                        Err(e) => Err(Error::Usage(format!("{from}: {e}"))),
                    })
                    .transpose()?;
            let idp = idp.as_ref().map(|(u, from)| (u, from.as_str()));
            oidc::Provider::hosted_ui(cfg, ui_cfg, idp)?
                .code(&profile.sign_in, open, ui)
                .await
        }
        (Some(_), Method::Device) => Err(Error::Usage(
            "a Cognito user pool's hosted UI has no device authorization grant: \
                 use --no-browser (print the URL; over SSH, forward the login.redirect_uri \
                 port with ssh -L) or --password"
                .into(),
        )),
        (None, Method::Device | Method::Browser { .. }) => Err(Error::Usage(format!(
            "{key}.domain is not set, so profile {:?} signs in with a username and \
                 password (--password); set login.domain for browser sign-in through the \
                 user pool's hosted UI",
            profile.name
        ))),
        (_, Method::Password) => userpool::sign_in(profile, cfg, ask).await,
    }
}

/// The profile's token store (`login.token_store`), if it has a sign-in.
pub fn token_store(profile: &ProfileConfig) -> Option<std::sync::Arc<dyn TokenStore>> {
    let file = profile.login.refresh_token_file()?;
    let kind = profile.login.token_store()?;
    Some(token_store::open(kind, file, profile.login.kind()))
}

/// Store a new refresh token (a file: atomically, 0600, in a private
/// directory; or the keychain) and forget the identity id cached for
/// whoever signed in before.
fn store(profile: &ProfileConfig, file: &Path, token: &SecretString) -> Result<(), Error> {
    let kind = profile.login.token_store().unwrap_or_default();
    let store = token_store::open(kind, file, profile.login.kind());
    // A guest's first sign-in (no token stored yet) keeps the guest identity,
    // which the first authenticated call links to the sign-in (Cognito's
    // guest → authenticated switch). Anyone signing in over an earlier
    // sign-in starts from a fresh identity.
    let keep_identity =
        profile.login.guest_until_login() && store.read().is_err_and(|e| e.is_login_required());
    if kind == StoreKind::File
        && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
    {
        fsutil::ensure_private_dir(dir)
            .map_err(|e| Error::Local(format!("cannot use {}: {e}", dir.display())))?;
    }
    store.save(token).map_err(|e| Error::Local(e.to_string()))?;
    if !keep_identity {
        forget_identity(profile);
    }
    Ok(())
}

fn forget_identity(profile: &ProfileConfig) {
    if let Some(f) = profile.aws.identity_id_file()
        && let Err(e) = std::fs::remove_file(f)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %f.display(), error = %e, "cannot remove the cached identity id");
    }
}

/// What a sign-out did.
#[derive(Debug)]
pub struct SignedOut {
    /// A token was stored (and so deleted).
    pub had_token: bool,
    /// Revocation at the IdP: `Ok` when revoked (or nothing to revoke).
    pub revoked: Result<(), String>,
}

/// Revoke the stored refresh token at the IdP, then delete it and the
/// identity cache — the local state is cleared whatever the IdP says.
pub async fn sign_out(profile: &ProfileConfig) -> Result<SignedOut, Error> {
    let Some(store) = token_store(profile) else {
        return Err(Error::Usage(format!(
            "profile {:?} has no sign-in (login.kind = \"none\")",
            profile.name
        )));
    };
    let token = match store.read() {
        Ok(t) => Some(t),
        Err(e) if e.is_login_required() => None,
        Err(e) => return Err(Error::Local(e.to_string())),
    };
    let revoked = match (&token, &profile.login) {
        (None, _) => Ok(()),
        (Some(t), LoginConfig::Oidc(cfg)) => {
            let key = format!("profiles.{}.login", profile.name);
            match oidc::Provider::discover(cfg, &key).await {
                Ok(idp) => idp.revoke(t).await,
                Err(e) => Err(e.to_string()),
            }
        }
        (Some(t), LoginConfig::UserPool(cfg)) => userpool::revoke(profile, cfg, t).await,
        (Some(_), LoginConfig::None) => Ok(()),
    };
    store.delete().map_err(|e| Error::Local(e.to_string()))?;
    forget_identity(profile);
    Ok(SignedOut {
        had_token: token.is_some(),
        revoked,
    })
}
