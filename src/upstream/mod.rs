//! The one seam to the outside world. A profile's upstream is a [`Chain`] of
//! two layers:
//!
//! 1. **login** ([`Login`]): turns the refresh token into an OIDC `id_token`
//!    (OAuth2 refresh grant, or Cognito user pool `REFRESH_TOKEN_AUTH`), or
//!    nothing for guest identities. The id_token is reused while it has
//!    comfortably more life left than an exchange needs.
//! 2. **exchange** ([`Exchange`]): turns the id_token into AWS credentials
//!    (Cognito Identity enhanced/basic flow, or STS web identity).
//!
//! Only the refresher calls this module (through [`CredentialSource`]); the
//! server never does. Errors are classified by the reaction they cause
//! ([`UpstreamError::is_login_required`]) and never carry secret values.

pub mod aws;
pub mod cognito;
#[cfg(test)]
pub(crate) mod fake;
pub mod oidc;
pub mod sts;
pub mod token_store;
pub mod userpool;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::SharedClock;
use crate::config::{LoginConfig, ProfileConfig};
use crate::creds::AwsCredentials;
use crate::metrics::UpstreamTimer;
use crate::secret::SecretString;

/// Reuse a cached id_token only while it has at least this much life left
/// (or half its lifetime, for IdPs that issue shorter ones): far more than an
/// exchange takes, with room for clock skew against AWS.
pub const ID_TOKEN_MIN_TTL: Duration = Duration::from_secs(5 * 60);

/// Longest credential lifetime we accept: STS issues at most 12 h (36 h for
/// `GetSessionToken`, which we never call); anything later is a bad response
/// or a broken clock, and must not be served or scheduled against.
pub const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(36 * 3600);

/// Why an upstream attempt failed. Each variant's doc names the refresher's
/// reaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Network failure, timeout or 5xx. Reaction: retry with backoff, keep
    /// serving the last good credentials.
    #[error("{service}: {message}")]
    Transport {
        /// Which upstream.
        service: &'static str,
        /// Secret-free description.
        message: String,
    },
    /// Rate limited. Reaction: retry with backoff.
    #[error("{service}: throttled ({code})")]
    Throttled {
        /// Which upstream.
        service: &'static str,
        /// Error code.
        code: String,
    },
    /// The IdP refuses the refresh token (revoked, expired, reused) or the
    /// client: a human must log in again. Reaction: stop calling the IdP until
    /// the refresh-token file changes or SIGHUP.
    #[error("{service}: {code}: {message}")]
    LoginRequired {
        /// Which upstream.
        service: &'static str,
        /// Error code (`invalid_grant`, `NotAuthorizedException`, ...).
        code: String,
        /// Secret-free description including what to do.
        message: String,
    },
    /// AWS refused the exchange (token not accepted, access denied, bad
    /// parameter). Reaction: one retry with a fresh id_token, then backoff.
    #[error("{service}: {code}: {message}")]
    Rejected {
        /// Which upstream.
        service: &'static str,
        /// AWS error code.
        code: String,
        /// AWS message (truncated).
        message: String,
    },
    /// A Cognito identity no longer exists. Reaction: forget the cached
    /// identity id and call GetId again (inside the exchange).
    #[error("{service}: {code}: {message}")]
    NotFound {
        /// Which upstream.
        service: &'static str,
        /// AWS error code.
        code: String,
        /// AWS message (truncated).
        message: String,
    },
    /// A response we could not use. Reaction: retry with backoff.
    #[error("{service}: unexpected response: {message}")]
    BadResponse {
        /// Which upstream.
        service: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// A local problem (state file unwritable, ...). Reaction: retry with backoff.
    #[error("{message}")]
    Local {
        /// What went wrong.
        message: String,
    },
}

impl UpstreamError {
    /// A human must act before another attempt makes sense.
    pub fn is_login_required(&self) -> bool {
        matches!(self, UpstreamError::LoginRequired { .. })
    }

    /// AWS refused the id_token itself: a fresh one may help.
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, UpstreamError::Rejected { code, .. }
            if matches!(code.as_str(), "NotAuthorizedException" | "InvalidIdentityToken" | "ExpiredTokenException"))
    }

    /// Stable kind for status output and logs.
    pub fn kind(&self) -> String {
        match self {
            UpstreamError::Transport { .. } => "transport".into(),
            UpstreamError::Throttled { .. } => "throttled".into(),
            UpstreamError::LoginRequired { code, .. } => code.clone(),
            UpstreamError::Rejected { code, .. } | UpstreamError::NotFound { code, .. } => {
                code.clone()
            }
            UpstreamError::BadResponse { .. } => "bad_response".into(),
            UpstreamError::Local { .. } => "local".into(),
        }
    }
}

/// Cut upstream-provided text to a bounded, single-line size.
pub(crate) fn short(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

/// An OIDC id_token (or Cognito user pool id token).
#[derive(Debug, Clone)]
pub struct IdToken {
    /// The JWT.
    pub token: SecretString,
    /// Its `exp` claim, when readable.
    pub expires_at: Option<SystemTime>,
    /// Its lifetime (`exp − iat`), when readable.
    pub lifetime: Option<Duration>,
}

impl IdToken {
    /// Wrap a JWT, reading `exp` from its payload (no signature check: AWS
    /// validates the token; we only need to know when to refresh it).
    pub fn from_jwt(jwt: String) -> Self {
        let (expires_at, issued_at) = jwt_times(&jwt);
        let lifetime = match (issued_at, expires_at) {
            (Some(i), Some(e)) => e.duration_since(i).ok(),
            _ => None,
        };
        IdToken {
            token: SecretString::from(jwt),
            expires_at,
            lifetime,
        }
    }

    /// Still good for an exchange at `now`?
    pub fn fresh_at(&self, now: SystemTime) -> bool {
        let needed = match self.lifetime {
            Some(l) => ID_TOKEN_MIN_TTL.min(l / 2),
            None => ID_TOKEN_MIN_TTL,
        };
        self.expires_at
            .and_then(|e| e.duration_since(now).ok())
            .is_some_and(|left| left > needed)
    }
}

/// `exp` and `iat` of a JWT (payload only; no signature check).
fn jwt_times(jwt: &str) -> (Option<SystemTime>, Option<SystemTime>) {
    use base64::Engine;
    let Some(v) = jwt.split('.').nth(1).and_then(|payload| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    }) else {
        return (None, None);
    };
    let time = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0 && *t < 1e12)
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t))
    };
    (time("exp"), time("iat"))
}

/// The identity layer of a profile.
pub enum Login {
    /// OAuth2 refresh grant.
    Oidc(Box<oidc::OidcLogin>),
    /// Cognito user pool refresh.
    UserPool(Box<userpool::UserPoolLogin>),
    /// Guest identity: no token.
    Guest,
}

impl Login {
    /// Forget the session state kept in memory (a cached id_token, a rotated
    /// token not saved yet): a sign-in or sign-out replaced the token in the
    /// store. Waits for a refresh in flight, which shares the same lock, so
    /// no token is presented twice.
    pub async fn reset(&self) {
        match self {
            Login::Oidc(l) => l.reset().await,
            Login::UserPool(l) => l.reset().await,
            Login::Guest => {}
        }
    }

    /// An id_token: the cached one if still fresh (unless `force`), else a new one.
    ///
    /// The refresh runs in its own task, so it finishes even when the caller
    /// is cancelled (a reload, a sign-in, shutdown): once the IdP has rotated
    /// the refresh token, dropping the work before the new one is saved would
    /// lose the only valid copy.
    pub async fn id_token(self: &Arc<Self>, force: bool) -> Result<Option<IdToken>, UpstreamError> {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.refresh(force).await })
            .await
            .unwrap_or_else(|e| {
                Err(UpstreamError::Local {
                    message: format!("the refresh task failed: {e}"),
                })
            })
    }

    async fn refresh(&self, force: bool) -> Result<Option<IdToken>, UpstreamError> {
        match self {
            Login::Oidc(o) => o.id_token(force).await.map(Some),
            Login::UserPool(u) => u.id_token(force).await.map(Some),
            Login::Guest => Ok(None),
        }
    }
}

/// The AWS layer of a profile.
pub enum Exchange {
    /// Cognito Identity (enhanced or basic flow).
    Cognito(Box<cognito::CognitoExchange>),
    /// STS AssumeRoleWithWebIdentity with the IdP token.
    Sts(Box<sts::StsExchange>),
}

impl Exchange {
    /// Exchange the id_token for AWS credentials.
    pub async fn exchange(&self, token: Option<&IdToken>) -> Result<AwsCredentials, UpstreamError> {
        match self {
            Exchange::Cognito(c) => c.exchange(token).await,
            Exchange::Sts(s) => match token {
                Some(t) => s.assume(&t.token).await,
                None => Err(UpstreamError::Local {
                    message: "the sts flow needs an id_token (login.kind must not be \"none\")"
                        .into(),
                }),
            },
        }
    }
}

/// Where a refresher gets credentials from: the seam tests replace.
pub trait CredentialSource: Send + Sync + 'static {
    /// Obtain a fresh set of credentials.
    fn fetch(&self) -> impl Future<Output = Result<AwsCredentials, UpstreamError>> + Send;
}

/// login → exchange, with one retry on a fresh id_token when AWS rejects it.
/// The login may be shared with other profiles that use the same
/// refresh-token file (one serialized refresh for all of them).
pub struct Chain {
    login: Arc<Login>,
    exchange: Exchange,
    clock: SharedClock,
    /// `login.guest_until_login`: no refresh token yet means guest
    /// credentials, not `login_required`.
    guest_until_login: bool,
    /// Whether the switch to guest credentials was logged (once per run).
    said_guest: std::sync::atomic::AtomicBool,
}

impl Login {
    /// The login a profile's config asks for (creates clients; no I/O),
    /// timing its calls into `timer`.
    pub fn build(
        profile: &ProfileConfig,
        sdk: &aws_config::SdkConfig,
        clock: SharedClock,
        timer: &UpstreamTimer,
    ) -> Result<Login, UpstreamError> {
        Ok(match &profile.login {
            LoginConfig::Oidc(o) => Login::Oidc(Box::new(
                oidc::OidcLogin::new(o.clone(), clock)?.with_timer(timer.clone()),
            )),
            LoginConfig::UserPool(u) => Login::UserPool(Box::new(
                userpool::UserPoolLogin::new(u.clone(), sdk, clock).with_timer(timer.clone()),
            )),
            LoginConfig::None => Login::Guest,
        })
    }
}

impl Chain {
    /// Build the chain for a profile with a login of its own.
    pub async fn build(
        profile: &ProfileConfig,
        clock: SharedClock,
        timer: &UpstreamTimer,
    ) -> Result<Self, UpstreamError> {
        let sdk = aws::sdk_config(profile).await;
        let login = Arc::new(Login::build(profile, &sdk, clock.clone(), timer)?);
        Ok(Self::with_login(profile, &sdk, login, clock, timer))
    }

    /// The chain for a profile whose login is `login` (perhaps shared).
    pub fn with_login(
        profile: &ProfileConfig,
        sdk: &aws_config::SdkConfig,
        login: Arc<Login>,
        clock: SharedClock,
        timer: &UpstreamTimer,
    ) -> Self {
        use crate::config::AwsConfig;
        let t = timer.clone();
        let exchange = match &profile.aws {
            AwsConfig::Sts(role) => {
                Exchange::Sts(Box::new(sts::StsExchange::new(role, sdk).with_timer(t)))
            }
            AwsConfig::Cognito(pool) => Exchange::Cognito(Box::new(
                cognito::CognitoExchange::new(pool, None, sdk).with_timer(t),
            )),
            AwsConfig::CognitoBasic(pool, role) => Exchange::Cognito(Box::new(
                cognito::CognitoExchange::new(pool, Some(role), sdk).with_timer(t),
            )),
        };
        Chain {
            login,
            exchange,
            clock,
            guest_until_login: profile.login.guest_until_login(),
            said_guest: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl CredentialSource for Chain {
    async fn fetch(&self) -> Result<AwsCredentials, UpstreamError> {
        let token = match self.login.id_token(false).await {
            // Nobody has signed in (or a sign-out deleted the token): the
            // identity pool's guest role until `credbroker login`.
            Err(e) if self.guest_until_login && e.kind() == "no_refresh_token" => {
                if !self
                    .said_guest
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!(
                        "no sign-in yet: serving the identity pool's guest (unauthenticated) credentials until `credbroker login`"
                    );
                }
                None
            }
            r => r?,
        };
        let guest = token.is_none();
        let mut creds = match self.exchange.exchange(token.as_ref()).await {
            Err(e) if e.is_token_rejected() && token.is_some() => {
                tracing::info!(error = %e, "AWS rejected the id_token; refreshing it once and retrying");
                let token = self.login.id_token(true).await?;
                self.exchange.exchange(token.as_ref()).await?
            }
            r => r?,
        };
        creds.guest = guest;
        if !creds.is_complete() {
            return Err(UpstreamError::BadResponse {
                service: "aws",
                message: "credentials with an empty field".into(),
            });
        }
        let now = self.clock.now();
        if creds.expiration <= now {
            return Err(UpstreamError::BadResponse {
                service: "aws",
                message: "credentials that have already expired (check the system clock)".into(),
            });
        }
        if creds.expiration > now + MAX_CREDENTIAL_LIFETIME {
            return Err(UpstreamError::BadResponse {
                service: "aws",
                message: "credentials with an implausible expiration (more than 36 h ahead; check the system clock)".into(),
            });
        }
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn jwt_exp_is_read() {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":2000000000,"sub":"x"}"#);
        let t = IdToken::from_jwt(format!("h.{p}.s"));
        assert_eq!(
            t.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert!(t.fresh_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_999_000_000)));
        assert!(!t.fresh_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_999_999_800)));
        assert!(IdToken::from_jwt("not-a-jwt".into()).expires_at.is_none());
        // Short-lived tokens (60 s) are reused for the first half of their life.
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iat":2000000000,"exp":2000000060}"#);
        let t = IdToken::from_jwt(format!("h.{p}.s"));
        let iat = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert!(t.fresh_at(iat + Duration::from_secs(29)));
        assert!(!t.fresh_at(iat + Duration::from_secs(31)));
        // Absurd values are ignored, not a panic.
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1e308}"#);
        assert!(IdToken::from_jwt(format!("h.{p}.s")).expires_at.is_none());
        assert!(!IdToken::from_jwt("not-a-jwt".into()).fresh_at(SystemTime::now()));
    }

    #[test]
    fn kinds_and_reactions() {
        let e = UpstreamError::LoginRequired {
            service: "oidc",
            code: "invalid_grant".into(),
            message: "m".into(),
        };
        assert!(e.is_login_required());
        assert_eq!(e.kind(), "invalid_grant");
        let r = UpstreamError::Rejected {
            service: "sts",
            code: "ExpiredTokenException".into(),
            message: "m".into(),
        };
        assert!(r.is_token_rejected() && !r.is_login_required());
        assert!(short(&"x".repeat(500)).chars().count() <= 301);
        assert_eq!(short("a\nb"), "a b");
    }
}
