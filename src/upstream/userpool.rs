//! Amazon Cognito user pool refresh: `InitiateAuth` with `REFRESH_TOKEN_AUTH`
//! (unsigned), plus `SECRET_HASH` = Base64(HMAC-SHA256(secret, username +
//! client_id)) when the app client has a secret; or, for an app client with
//! refresh-token rotation (2025), `GetTokensFromRefreshToken` (such clients
//! refuse `REFRESH_TOKEN_AUTH`), which takes the client secret itself.
//! `login.rotation` picks the call; unset, the first refusal of
//! `REFRESH_TOKEN_AUTH` is retried once with `GetTokensFromRefreshToken`
//! (the refused token was not consumed) and, if that works, it is used from
//! then on. A rotated refresh token is persisted before the id token is used.

use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, AuthenticationResultType};
use base64::Engine;
use hmac::{KeyInit, Mac};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::UserPoolConfig;
use crate::metrics::{Call, UpstreamTimer};
use crate::secret::ExposeSecret;

use super::aws::classify;
use super::token_store::{self, RotatingToken, TokenStore, read_client_secret};
use super::{IdToken, UpstreamError};

const SERVICE: &str = "cognito-idp";

/// Cognito user pool refresh-token login.
pub struct UserPoolLogin {
    cfg: UserPoolConfig,
    client: aws_sdk_cognitoidentityprovider::Client,
    clock: SharedClock,
    cache: Mutex<Cache>,
    timer: UpstreamTimer,
}

struct Cache {
    id_token: Option<IdToken>,
    /// The refresh token (and a rotated one not saved yet).
    refresh: RotatingToken,
    /// Whether the app client rotates (from `login.rotation`, or learnt).
    rotation: Option<bool>,
}

/// The pool's answer to a refresh: tokens, or why not.
type Refreshed = Result<AuthenticationResultType, UpstreamError>;

/// `SECRET_HASH` for Cognito app clients with a secret.
pub fn secret_hash(client_secret: &str, username: &str, client_id: &str) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(client_secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    mac.update(client_id.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl UserPoolLogin {
    /// A login for this configuration.
    pub fn new(cfg: UserPoolConfig, sdk: &aws_config::SdkConfig, clock: SharedClock) -> Self {
        let store = token_store::open(cfg.token_store, &cfg.refresh_token_file, SERVICE);
        Self::with_store(cfg, store, sdk, clock)
    }

    /// A login whose refresh token is kept in `store`.
    pub fn with_store(
        cfg: UserPoolConfig,
        store: Arc<dyn TokenStore>,
        sdk: &aws_config::SdkConfig,
        clock: SharedClock,
    ) -> Self {
        let rotation = cfg.rotation;
        UserPoolLogin {
            cfg,
            client: aws_sdk_cognitoidentityprovider::Client::new(sdk),
            clock,
            cache: Mutex::new(Cache {
                id_token: None,
                refresh: RotatingToken::new(store),
                rotation,
            }),
            timer: UpstreamTimer::default(),
        }
    }

    /// Record call latencies into `timer` (else into detached histograms).
    pub fn with_timer(mut self, timer: UpstreamTimer) -> Self {
        self.timer = timer;
        self
    }

    /// The cached id token if fresh (and not `force`), else a refreshed one.
    /// Drop the cached id_token and any unsaved rotated token.
    pub async fn reset(&self) {
        let mut cache = self.cache.lock().await;
        cache.id_token = None;
        cache.refresh.forget_pending();
    }

    /// The cached id_token if fresh (and not `force`), else a refreshed one.
    pub async fn id_token(&self, force: bool) -> Result<IdToken, UpstreamError> {
        let mut cache = self.cache.lock().await;
        if !force
            && let Some(t) = cache
                .id_token
                .as_ref()
                .filter(|t| t.fresh_at(self.clock.now()))
        {
            return Ok(t.clone());
        }
        let rt = cache.refresh.current()?;
        let prepared = cache.refresh.prepare();
        let result = match cache.rotation {
            Some(true) => self.get_tokens(&rt).await,
            Some(false) => self.initiate_auth(&rt).await,
            None => match self.initiate_auth(&rt).await {
                Err(first) if refused_flow(&first) => {
                    tracing::debug!(error = %first, "REFRESH_TOKEN_AUTH refused; trying GetTokensFromRefreshToken");
                    match self.get_tokens(&rt).await {
                        Ok(r) => {
                            cache.rotation = Some(true);
                            tracing::info!("the user pool's app client rotates refresh tokens: refreshing with GetTokensFromRefreshToken (set login.rotation = true to skip the first attempt)");
                            Ok(r)
                        }
                        // The token itself is dead: say so.
                        Err(e) if dead_token(&e) => Err(e),
                        // Anything else about the second call (throttled,
                        // not offered here): the first answer stands.
                        Err(_) => Err(first),
                    }
                }
                other => other,
            },
        }
        .map_err(|e| {
            if dead_token(&e) {
                cache.refresh.rejected();
            }
            match e {
                UpstreamError::Rejected { code, message, .. } if code == "NotAuthorizedException" => {
                    cache.refresh.store().login_required(
                        &code,
                        &format!("the user pool rejected the refresh token ({message})"),
                    )
                }
                other => other,
            }
        })?;
        let result = &result;
        // A pool with rotation returns a new refresh token: the old one is
        // dead. Persist it before anything else (kept in memory if that fails).
        cache.refresh.rotated(&rt, result.refresh_token(), prepared);
        let id = result
            .id_token()
            .ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message: "the user pool returned no IdToken".into(),
            })?;
        let tok = IdToken::from_jwt(id.to_owned());
        cache.id_token = Some(tok.clone());
        Ok(tok)
    }

    /// `InitiateAuth` with `REFRESH_TOKEN_AUTH`.
    async fn initiate_auth(&self, rt: &crate::secret::SecretString) -> Refreshed {
        let mut req = self
            .client
            .initiate_auth()
            .auth_flow(AuthFlowType::RefreshTokenAuth)
            .client_id(&self.cfg.client_id)
            .auth_parameters("REFRESH_TOKEN", rt.expose_secret());
        if let Some(s) = read_client_secret(self.cfg.client_secret_file.as_deref())? {
            let user = self.cfg.username.as_deref().unwrap_or_default();
            req = req.auth_parameters(
                "SECRET_HASH",
                secret_hash(s.expose_secret(), user, &self.cfg.client_id),
            );
        }
        let out = self.timer.time(Call::UserPoolRefresh, req.send()).await;
        let out = out.map_err(|e| classify(SERVICE, e))?;
        out.authentication_result
            .ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message: "InitiateAuth returned a challenge instead of tokens".into(),
            })
    }

    /// `GetTokensFromRefreshToken` (app clients with rotation).
    async fn get_tokens(&self, rt: &crate::secret::SecretString) -> Refreshed {
        let secret = read_client_secret(self.cfg.client_secret_file.as_deref())?;
        let req = self
            .client
            .get_tokens_from_refresh_token()
            .client_id(&self.cfg.client_id)
            .refresh_token(rt.expose_secret())
            .set_client_secret(secret.map(|s| s.expose_secret().to_owned()));
        let out = self.timer.time(Call::UserPoolRefresh, req.send()).await;
        let out = out.map_err(|e| classify(SERVICE, e))?;
        out.authentication_result
            .ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message: "GetTokensFromRefreshToken returned no tokens".into(),
            })
    }
}

/// Whether a refusal of `REFRESH_TOKEN_AUTH` may mean "this app client
/// rotates refresh tokens, use GetTokensFromRefreshToken" (AWS documents the
/// refusal, not its error code, so any refusal of the token or the flow).
fn refused_flow(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Rejected { code, .. } if matches!(
        code.as_str(),
        "NotAuthorizedException" | "InvalidParameterException" | "UnsupportedOperationException"
    ))
}

/// The pool refused the refresh token itself (revoked, expired, rotated away).
fn dead_token(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Rejected { code, .. } if code == "NotAuthorizedException")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{SecretString, secret};
    use crate::upstream::fake::{self, FakeAws};
    use std::sync::Mutex as StdMutex;

    /// A token store whose first `fail_saves` saves fail (disk full, …).
    #[derive(Debug)]
    struct FlakyStore {
        token: StdMutex<String>,
        fail_saves: StdMutex<u32>,
    }

    impl TokenStore for FlakyStore {
        fn read(&self) -> Result<SecretString, UpstreamError> {
            Ok(secret(self.token.lock().unwrap().clone()))
        }
        fn save(&self, t: &SecretString) -> Result<(), UpstreamError> {
            let mut f = self.fail_saves.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(UpstreamError::Local {
                    message: "disk full".into(),
                });
            }
            *self.token.lock().unwrap() = t.expose_secret().to_owned();
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
        fn login_required(&self, code: &str, what: &str) -> UpstreamError {
            UpstreamError::LoginRequired {
                service: SERVICE,
                code: code.into(),
                message: what.into(),
            }
        }
    }

    /// With rotation, the IdP's answer holds the only valid refresh token:
    /// a failed save must not drop it. It is used for the next refresh and
    /// saved once the store takes it.
    #[tokio::test]
    async fn a_rotated_token_survives_a_failed_save() {
        let aws = FakeAws::start(|op, input, n| match op {
            "InitiateAuth" => {
                let presented = input["AuthParameters"]["REFRESH_TOKEN"]
                    .as_str()
                    .unwrap_or("");
                if presented != format!("rt-{n}") {
                    return fake::error(
                        400,
                        "NotAuthorizedException",
                        "Refresh Token has been revoked",
                    );
                }
                (
                    200,
                    serde_json::json!({"AuthenticationResult": {
                        "IdToken": fake::jwt("u"), "AccessToken": "a", "ExpiresIn": 3600,
                        "TokenType": "Bearer", "RefreshToken": format!("rt-{}", n + 1)}}),
                )
            }
            _ => fake::error(400, "UnknownOperationException", op),
        })
        .await;
        let store = Arc::new(FlakyStore {
            token: StdMutex::new("rt-0".into()),
            fail_saves: StdMutex::new(2),
        });
        let cfg = UserPoolConfig {
            user_pool_id: "us-east-1_x".into(),
            client_id: "c".into(),
            client_secret_file: None,
            username: None,
            refresh_token_file: "/nonexistent".into(),
            token_store: Default::default(),
            guest_until_login: false,
            rotation: None,
        };
        let login = UserPoolLogin::with_store(
            cfg,
            store.clone(),
            &fake::sdk(&aws.endpoint).await,
            Arc::new(crate::clock::SystemClock),
        );
        // Rotation to rt-1; its save fails, but the id token is still good.
        login.id_token(true).await.unwrap();
        assert_eq!(*store.token.lock().unwrap(), "rt-0");
        // The next refresh presents rt-1 from memory (its save fails again),
        // and gets rt-2, which is saved.
        login.id_token(true).await.unwrap();
        assert_eq!(*store.token.lock().unwrap(), "rt-2");
        login.id_token(true).await.unwrap();
        assert_eq!(*store.token.lock().unwrap(), "rt-3");
        assert_eq!(aws.count("InitiateAuth"), 3);
    }

    /// A rotating app client (2025): refuses REFRESH_TOKEN_AUTH, rotates
    /// through GetTokensFromRefreshToken (which gets the client secret
    /// itself, no SECRET_HASH), and refuses a rotated-away token.
    async fn rotating_pool() -> FakeAws {
        FakeAws::start(|op, input, n| match op {
            "InitiateAuth" => fake::error(
                400,
                "InvalidParameterException",
                "Refresh token rotation is enabled for this app client",
            ),
            "GetTokensFromRefreshToken" => {
                let presented = input["RefreshToken"].as_str().unwrap_or("");
                if presented != format!("rt-{n}") || input["ClientSecret"] != "sekret" {
                    return fake::error(400, "NotAuthorizedException", "Invalid Refresh Token.");
                }
                (
                    200,
                    serde_json::json!({"AuthenticationResult": {
                        "IdToken": fake::jwt("u"), "AccessToken": "a", "ExpiresIn": 3600,
                        "TokenType": "Bearer", "RefreshToken": format!("rt-{}", n + 1)}}),
                )
            }
            _ => fake::error(400, "UnknownOperationException", op),
        })
        .await
    }

    async fn rotating_login(
        aws: &FakeAws,
        rotation: Option<bool>,
        token: &str,
    ) -> (UserPoolLogin, Arc<FlakyStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "sekret").unwrap();
        let store = Arc::new(FlakyStore {
            token: StdMutex::new(token.into()),
            fail_saves: StdMutex::new(0),
        });
        let cfg = UserPoolConfig {
            user_pool_id: "us-east-1_x".into(),
            client_id: "c".into(),
            client_secret_file: Some(secret_file),
            username: Some("alice".into()),
            refresh_token_file: "/nonexistent".into(),
            token_store: Default::default(),
            guest_until_login: false,
            rotation,
        };
        let login = UserPoolLogin::with_store(
            cfg,
            store.clone(),
            &fake::sdk(&aws.endpoint).await,
            Arc::new(crate::clock::SystemClock),
        );
        (login, store, dir)
    }

    /// `login.rotation` unset: the first refusal of REFRESH_TOKEN_AUTH is
    /// retried with GetTokensFromRefreshToken, which is used from then on;
    /// every rotated token is stored.
    #[tokio::test]
    async fn a_rotating_client_is_found_from_the_refusal_and_its_tokens_stored() {
        let aws = rotating_pool().await;
        let (login, store, _dir) = rotating_login(&aws, None, "rt-0").await;
        for want in ["rt-1", "rt-2", "rt-3"] {
            login.id_token(true).await.unwrap();
            assert_eq!(*store.token.lock().unwrap(), want);
        }
        assert_eq!(
            aws.count("InitiateAuth"),
            1,
            "tried REFRESH_TOKEN_AUTH again"
        );
        assert_eq!(aws.count("GetTokensFromRefreshToken"), 3);
    }

    /// `login.rotation = true`: never REFRESH_TOKEN_AUTH; a rotated-away
    /// token is a login-required error, not a retry.
    #[tokio::test]
    async fn rotation_true_uses_get_tokens_only_and_a_dead_token_needs_a_login() {
        let aws = rotating_pool().await;
        let (login, store, _dir) = rotating_login(&aws, Some(true), "rt-0").await;
        login.id_token(true).await.unwrap();
        assert_eq!(*store.token.lock().unwrap(), "rt-1");
        assert_eq!(aws.count("InitiateAuth"), 0);
        let (stale, _, _dir2) = rotating_login(&aws, Some(true), "rt-0").await;
        let err = stale.id_token(true).await.unwrap_err();
        assert!(err.is_login_required(), "{err:?}");
    }

    /// Unset, a token both calls refuse is a login-required error.
    #[tokio::test]
    async fn a_dead_token_refused_by_both_calls_needs_a_login() {
        let aws = rotating_pool().await;
        let (login, store, _dir) = rotating_login(&aws, None, "revoked").await;
        let err = login.id_token(true).await.unwrap_err();
        assert!(err.is_login_required(), "{err:?}");
        assert_eq!(
            *store.token.lock().unwrap(),
            "revoked",
            "the token was not kept"
        );
        assert_eq!(aws.count("GetTokensFromRefreshToken"), 1);
    }

    #[test]
    fn secret_hash_matches_reference() {
        // Reference value computed with Python: base64(hmac_sha256(b"sekret", b"alice" + b"client1")).
        assert_eq!(
            secret_hash("sekret", "alice", "client1"),
            "BAylvgxJioyVNoWaGuPx0mtw/Qw5ldDaUkvgKj/mDFM="
        );
    }
}
