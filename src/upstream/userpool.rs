//! Amazon Cognito user pool refresh: `InitiateAuth` with `REFRESH_TOKEN_AUTH`
//! (unsigned), plus `SECRET_HASH` = Base64(HMAC-SHA256(secret, username +
//! client_id)) when the app client has a secret. A user pool with refresh
//! token rotation returns a new refresh token, which is persisted atomically
//! before the id token is used.

use aws_sdk_cognitoidentityprovider::types::AuthFlowType;
use base64::Engine;
use hmac::{KeyInit, Mac};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::UserPoolConfig;
use crate::metrics::{Call, UpstreamTimer};
use crate::secret::ExposeSecret;

use super::aws::classify;
use super::token_store::{RotatingToken, TokenFile, TokenStore, read_client_secret};
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
}

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
        let store = Arc::new(TokenFile::new(cfg.refresh_token_file.clone(), SERVICE));
        Self::with_store(cfg, store, sdk, clock)
    }

    /// A login whose refresh token is kept in `store`.
    pub fn with_store(
        cfg: UserPoolConfig,
        store: Arc<dyn TokenStore>,
        sdk: &aws_config::SdkConfig,
        clock: SharedClock,
    ) -> Self {
        UserPoolLogin {
            cfg,
            client: aws_sdk_cognitoidentityprovider::Client::new(sdk),
            clock,
            cache: Mutex::new(Cache {
                id_token: None,
                refresh: RotatingToken::new(store),
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
        let sent = self.timer.time(Call::UserPoolRefresh, req.send()).await;
        let out = sent.map_err(|e| match classify(SERVICE, e) {
            UpstreamError::Rejected { code, message, .. } if code == "NotAuthorizedException" => {
                cache.refresh.store().login_required(
                    &code,
                    &format!("the user pool rejected the refresh token ({message})"),
                )
            }
            other => other,
        })?;
        let result = out
            .authentication_result()
            .ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message: "InitiateAuth returned a challenge instead of tokens".into(),
            })?;
        // A pool with rotation returns a new refresh token: the old one is
        // dead. Persist it before anything else (kept in memory if that fails).
        cache.refresh.rotated(&rt, result.refresh_token());
        let id = result
            .id_token()
            .ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message: "InitiateAuth returned no IdToken".into(),
            })?;
        let tok = IdToken::from_jwt(id.to_owned());
        cache.id_token = Some(tok.clone());
        Ok(tok)
    }
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

    #[test]
    fn secret_hash_matches_reference() {
        // Reference value computed with Python: base64(hmac_sha256(b"sekret", b"alice" + b"client1")).
        assert_eq!(
            secret_hash("sekret", "alice", "client1"),
            "BAylvgxJioyVNoWaGuPx0mtw/Qw5ldDaUkvgKj/mDFM="
        );
    }
}
