//! Amazon Cognito Identity pools (unsigned calls):
//!
//! * enhanced flow (`aws.flow = "cognito"`): `GetId` + `GetCredentialsForIdentity`
//!   with the `Logins` map and optional `CustomRoleArn`;
//! * basic flow (`aws.flow = "cognito-basic"`): `GetId` + `GetOpenIdToken` +
//!   STS `AssumeRoleWithWebIdentity` (role, session name, duration, policy).
//!
//! The identity id is cached on disk (0600) and reused across restarts, as the
//! AWS SDK providers do; when Cognito says it is gone (or no longer matches
//! the logins), the cache is cleared and `GetId` is called once more.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::Mutex;

use crate::config::{CognitoPool, StsRole};
use crate::creds::AwsCredentials;
use crate::fsutil;
use crate::metrics::{Call, UpstreamTimer};
use crate::secret::{ExposeSecret, secret};

use super::aws::{classify, to_system_time};
use super::sts::StsExchange;
use super::{IdToken, UpstreamError};

/// A Cognito identity pool exchange.
pub struct CognitoExchange {
    client: aws_sdk_cognitoidentity::Client,
    /// Present for the basic flow.
    sts: Option<StsExchange>,
    cfg: CognitoPool,
    /// Cached identity id (mirrors the file).
    identity: Mutex<Option<String>>,
    timer: UpstreamTimer,
}

fn plausible_identity_id(s: &str) -> bool {
    let Some((region, id)) = s.split_once(':') else {
        return false;
    };
    !region.is_empty()
        && !id.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b':')
}

/// Errors that mean the cached identity id itself is unusable, so that
/// forgetting it and calling `GetId` again can help: the identity is gone
/// (deleted, or from another pool), or it belongs to another login. Anything
/// else (access denied, unauthenticated access disabled, throttling, an
/// expired token) is about the configuration or the moment: a new `GetId`
/// would not help, and for guests it would mint a new identity per retry.
pub fn identity_is_unusable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::NotFound { .. } => true,
        UpstreamError::Rejected { code, message, .. } => match code.as_str() {
            // "Logins don't match. Please include at least one valid login
            // for this identity or identity pool." / "Access to Identity
            // '…' is forbidden." (an authenticated identity asked for
            // without its login).
            "NotAuthorizedException" => {
                let m = message.to_ascii_lowercase();
                m.contains("logins don't match")
                    || m.contains("logins do not match")
                    || (m.contains("access to identity") && m.contains("forbidden"))
            }
            // The login is already linked to another identity.
            "ResourceConflictException" => true,
            _ => false,
        },
        _ => false,
    }
}

impl CognitoExchange {
    /// Clients for this profile.
    pub fn new(cfg: &CognitoPool, basic: Option<&StsRole>, sdk: &aws_config::SdkConfig) -> Self {
        CognitoExchange {
            client: aws_sdk_cognitoidentity::Client::new(sdk),
            sts: basic.map(|r| StsExchange::new(r, sdk)),
            cfg: cfg.clone(),
            identity: Mutex::new(None),
            timer: UpstreamTimer::default(),
        }
    }

    /// Record call latencies into `timer` (the basic flow's STS call too).
    pub fn with_timer(mut self, timer: UpstreamTimer) -> Self {
        self.sts = self.sts.map(|s| s.with_timer(timer.clone()));
        self.timer = timer;
        self
    }

    fn id_file(&self) -> &PathBuf {
        &self.cfg.identity_id_file
    }

    fn logins(&self, token: Option<&IdToken>) -> Option<HashMap<String, String>> {
        let t = token?;
        let key = self.cfg.login_provider.clone()?;
        Some(HashMap::from([(key, t.token.expose_secret().to_owned())]))
    }

    /// The identity id: memory, else the cache file, else `GetId`.
    async fn identity_id(
        &self,
        cached: &mut Option<String>,
        logins: &Option<HashMap<String, String>>,
    ) -> Result<String, UpstreamError> {
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        match std::fs::read_to_string(self.id_file()) {
            Ok(s) if plausible_identity_id(s.trim()) => {
                let id = s.trim().to_owned();
                *cached = Some(id.clone());
                return Ok(id);
            }
            Ok(_) => tracing::warn!(
                path = %self.id_file().display(),
                "ignoring a corrupt identity-id cache file; calling GetId"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.id_file().display(), error = %e, "cannot read the identity-id cache")
            }
        }
        let pool = self.cfg.identity_pool_id.clone();
        let req = self
            .client
            .get_id()
            .identity_pool_id(pool)
            .set_account_id(self.cfg.account_id.clone())
            .set_logins(logins.clone());
        let out = self
            .timer
            .time(Call::GetId, req.send())
            .await
            .map_err(|e| classify("cognito-identity", e))?;
        let id = out
            .identity_id()
            .filter(|s| plausible_identity_id(s))
            .ok_or_else(|| UpstreamError::BadResponse {
                service: "cognito-identity",
                message: "GetId returned no usable IdentityId".into(),
            })?
            .to_owned();
        if let Err(e) = fsutil::write_atomic_private(self.id_file(), id.as_bytes()) {
            // Not fatal: the id is only a cache; it costs one GetId next start.
            tracing::warn!(path = %self.id_file().display(), error = %e, "cannot cache the identity id");
        }
        tracing::info!(identity_id = %id, "obtained a Cognito identity id");
        *cached = Some(id.clone());
        Ok(id)
    }

    fn forget(&self, cached: &mut Option<String>) {
        *cached = None;
        let _ = std::fs::remove_file(self.id_file());
    }

    /// Exchange an id_token (or nothing, for guests) for AWS credentials.
    pub async fn exchange(&self, token: Option<&IdToken>) -> Result<AwsCredentials, UpstreamError> {
        let logins = self.logins(token);
        let mut cached = self.identity.lock().await;
        let id = self.identity_id(&mut cached, &logins).await?;
        match self.with_identity(&id, &logins).await {
            Err(e) if identity_is_unusable(&e) => {
                // The identity was deleted, or belongs to another login (the
                // refresh token changed hands), or (a guest signing in) the
                // sign-in is already linked to another identity: start over
                // with GetId once, which finds that identity.
                if matches!(&e, UpstreamError::Rejected { code, .. } if code == "ResourceConflictException")
                {
                    tracing::info!(guest_identity_id = %id, "this sign-in already belongs to another Cognito identity: using that one instead of the cached (guest) identity");
                } else {
                    tracing::info!(error = %e, "Cognito refused the cached identity id; calling GetId again");
                }
                self.forget(&mut cached);
                let id = self.identity_id(&mut cached, &logins).await?;
                self.with_identity(&id, &logins).await
            }
            r => r,
        }
    }

    async fn with_identity(
        &self,
        id: &str,
        logins: &Option<HashMap<String, String>>,
    ) -> Result<AwsCredentials, UpstreamError> {
        match &self.sts {
            None => self.enhanced(id, logins).await,
            Some(sts) => {
                let req = self
                    .client
                    .get_open_id_token()
                    .identity_id(id)
                    .set_logins(logins.clone());
                let out = self
                    .timer
                    .time(Call::GetOpenIdToken, req.send())
                    .await
                    .map_err(|e| classify("cognito-identity", e))?;
                let token = out.token().ok_or_else(|| UpstreamError::BadResponse {
                    service: "cognito-identity",
                    message: "GetOpenIdToken returned no Token".into(),
                })?;
                sts.assume(&secret(token)).await
            }
        }
    }

    async fn enhanced(
        &self,
        id: &str,
        logins: &Option<HashMap<String, String>>,
    ) -> Result<AwsCredentials, UpstreamError> {
        let req = self
            .client
            .get_credentials_for_identity()
            .identity_id(id)
            .set_logins(logins.clone())
            .set_custom_role_arn(self.cfg.custom_role_arn.clone());
        let out = self
            .timer
            .time(Call::GetCredentialsForIdentity, req.send())
            .await
            .map_err(|e| classify("cognito-identity", e))?;
        let bad = |m: &str| UpstreamError::BadResponse {
            service: "cognito-identity",
            message: m.into(),
        };
        let c = out.credentials().ok_or_else(|| bad("no Credentials"))?;
        Ok(AwsCredentials {
            guest: false,
            access_key_id: c.access_key_id().unwrap_or_default().to_owned(),
            secret_access_key: secret(c.secret_key().unwrap_or_default()),
            session_token: secret(c.session_token().unwrap_or_default()),
            expiration: c
                .expiration()
                .and_then(to_system_time)
                .ok_or_else(|| bad("no Expiration"))?,
            account_id: self.cfg.account_id.clone().or_else(|| {
                self.cfg
                    .custom_role_arn
                    .as_deref()
                    .and_then(crate::config::account_from_arn)
            }),
            role_arn: self.cfg.custom_role_arn.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::fake::{self, FakeAws};
    use serde_json::json;

    fn guest_cfg(dir: &std::path::Path) -> CognitoPool {
        CognitoPool {
            identity_pool_id: "us-east-1:pool".into(),
            account_id: None,
            login_provider: None,
            custom_role_arn: None,
            identity_id_file: dir.join("identity-id"),
        }
    }

    fn creds_answer() -> fake::Answer {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        (
            200,
            json!({"IdentityId": "us-east-1:one", "Credentials": {
                "AccessKeyId": "ASIAFAKE", "SecretKey": "s", "SessionToken": "t", "Expiration": exp}}),
        )
    }

    /// A configuration error that persists (here: the pool does not allow
    /// guests) must not make each retry call GetId: for guests every GetId
    /// mints a new identity.
    #[tokio::test]
    async fn a_persistent_refusal_keeps_the_identity() {
        let aws = FakeAws::start(|op, _, n| match op {
            "GetId" => (200, json!({"IdentityId": format!("us-east-1:guest-{n}")})),
            "GetCredentialsForIdentity" => fake::error(
                400,
                "NotAuthorizedException",
                "Unauthenticated access is not supported for this identity pool.",
            ),
            _ => fake::error(400, "UnknownOperationException", op),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let x = CognitoExchange::new(
            &guest_cfg(dir.path()),
            None,
            &fake::sdk(&aws.endpoint).await,
        );
        for _ in 0..3 {
            let e = x.exchange(None).await.unwrap_err();
            assert!(matches!(e, UpstreamError::Rejected { .. }), "{e}");
        }
        assert_eq!(aws.count("GetId"), 1, "{:?}", aws.calls.lock().unwrap());
        assert_eq!(aws.count("GetCredentialsForIdentity"), 3);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("identity-id")).unwrap(),
            "us-east-1:guest-0"
        );
        // Neither does throttling (a code the old hand-kept list lacked) or AccessDenied.
        for (code, msg) in [
            ("RequestThrottledException", "slow"),
            ("AccessDeniedException", "no"),
        ] {
            let aws = FakeAws::start(move |op, _, n| match op {
                "GetId" => (200, json!({"IdentityId": format!("us-east-1:g-{n}")})),
                _ => fake::error(400, code, msg),
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            let x = CognitoExchange::new(
                &guest_cfg(dir.path()),
                None,
                &fake::sdk(&aws.endpoint).await,
            );
            let _ = x.exchange(None).await.unwrap_err();
            let _ = x.exchange(None).await.unwrap_err();
            assert_eq!(aws.count("GetId"), 1, "{code}");
        }
    }

    /// An identity that is gone (or belongs to another login) is forgotten
    /// and replaced once.
    #[tokio::test]
    async fn a_gone_identity_is_replaced_once() {
        for (code, msg) in [
            (
                "ResourceNotFoundException",
                "Identity 'us-east-1:old' not found.",
            ),
            (
                "NotAuthorizedException",
                "Logins don't match. Please include at least one valid login for this identity or identity pool.",
            ),
        ] {
            let aws = FakeAws::start(move |op, input, _| match op {
                "GetId" => (200, json!({"IdentityId": "us-east-1:new"})),
                "GetCredentialsForIdentity" if input["IdentityId"] == "us-east-1:old" => {
                    fake::error(400, code, msg)
                }
                "GetCredentialsForIdentity" => creds_answer(),
                _ => fake::error(400, "UnknownOperationException", op),
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("identity-id"), "us-east-1:old").unwrap();
            let x = CognitoExchange::new(
                &guest_cfg(dir.path()),
                None,
                &fake::sdk(&aws.endpoint).await,
            );
            let c = x.exchange(None).await.unwrap();
            assert_eq!(c.access_key_id, "ASIAFAKE");
            assert_eq!(aws.count("GetId"), 1, "{code}");
            assert_eq!(
                std::fs::read_to_string(dir.path().join("identity-id")).unwrap(),
                "us-east-1:new"
            );
        }
    }

    /// Guest first, then signed in: the guest identity is kept and the
    /// sign-in is sent with it (which links them); when Cognito says the
    /// sign-in already belongs to another identity, that one is used.
    #[tokio::test]
    async fn a_guest_signing_in_keeps_its_identity_or_moves_to_the_linked_one() {
        let mut cfg = guest_cfg(std::path::Path::new("/unused"));
        cfg.login_provider = Some("idp.example".into());
        let token = IdToken::from_jwt(fake::jwt("alice"));
        for (linked_elsewhere, want) in [(false, "us-east-1:guest"), (true, "us-east-1:owner")] {
            let aws = FakeAws::start(move |op, input, _| {
                let signed_in = input["Logins"]["idp.example"].is_string();
                match op {
                    "GetId" if signed_in => (200, json!({"IdentityId": "us-east-1:owner"})),
                    "GetId" => (200, json!({"IdentityId": "us-east-1:guest"})),
                    "GetCredentialsForIdentity"
                        if linked_elsewhere
                            && signed_in
                            && input["IdentityId"] == "us-east-1:guest" =>
                    {
                        fake::error(
                            400,
                            "ResourceConflictException",
                            "Logins are already linked to another identity",
                        )
                    }
                    "GetCredentialsForIdentity" => creds_answer(),
                    _ => fake::error(400, "UnknownOperationException", op),
                }
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            cfg.identity_id_file = dir.path().join("identity-id");
            let x = CognitoExchange::new(&cfg, None, &fake::sdk(&aws.endpoint).await);
            x.exchange(None).await.unwrap();
            x.exchange(Some(&token)).await.unwrap();
            let calls = aws.calls.lock().unwrap().clone();
            let last = &calls.last().unwrap().1;
            assert_eq!(last["IdentityId"], want, "{calls:?}");
            assert!(
                last["Logins"]["idp.example"].is_string(),
                "the sign-in was not sent"
            );
            let get_ids = calls.iter().filter(|(o, _)| o == "GetId").count();
            assert_eq!(get_ids, if linked_elsewhere { 2 } else { 1 });
            assert_eq!(
                std::fs::read_to_string(dir.path().join("identity-id")).unwrap(),
                want
            );
        }
    }

    #[test]
    fn identity_ids_are_checked() {
        assert!(plausible_identity_id(
            "us-east-1:0c0abc64-1234-4321-aaaa-0123456789ab"
        ));
        assert!(!plausible_identity_id("garbage"));
        assert!(!plausible_identity_id("us-east-1:\u{0}"));
        assert!(!plausible_identity_id(":x"));
    }
}
