//! STS `AssumeRoleWithWebIdentity` (unsigned): the `sts` flow with the IdP's
//! id_token, and the second half of the Cognito basic flow with the token
//! from `GetOpenIdToken`.

use crate::config::StsRole;
use crate::creds::AwsCredentials;
use crate::metrics::{Call, UpstreamTimer};
use crate::secret::{ExposeSecret, SecretString, secret};

use super::UpstreamError;
use super::aws::{classify, to_system_time};

/// Assumes `role_arn` with a web identity token.
pub struct StsExchange {
    client: aws_sdk_sts::Client,
    cfg: StsRole,
    timer: UpstreamTimer,
}

impl StsExchange {
    /// A client for this profile.
    pub fn new(cfg: &StsRole, sdk: &aws_config::SdkConfig) -> Self {
        StsExchange {
            client: aws_sdk_sts::Client::new(sdk),
            cfg: cfg.clone(),
            timer: UpstreamTimer::default(),
        }
    }

    /// Record call latencies into `timer` (else into detached histograms).
    pub fn with_timer(mut self, timer: UpstreamTimer) -> Self {
        self.timer = timer;
        self
    }

    /// Call AssumeRoleWithWebIdentity with `token`.
    pub async fn assume(&self, token: &SecretString) -> Result<AwsCredentials, UpstreamError> {
        let role_arn = self.cfg.role_arn.clone();
        let req = self
            .client
            .assume_role_with_web_identity()
            .role_arn(&role_arn)
            .role_session_name(&self.cfg.session_name)
            .web_identity_token(token.expose_secret())
            .set_duration_seconds(
                self.cfg
                    .duration
                    .map(|d| d.as_secs().min(i32::MAX as u64) as i32),
            )
            .set_policy(self.cfg.session_policy.clone());
        let out = self
            .timer
            .time(Call::AssumeRoleWithWebIdentity, req.send())
            .await
            .map_err(|e| classify("sts", e))?;
        let bad = |m: &str| UpstreamError::BadResponse {
            service: "sts",
            message: m.into(),
        };
        let c = out.credentials().ok_or_else(|| bad("no Credentials"))?;
        let assumed_account = out
            .assumed_role_user()
            .and_then(|u| crate::config::account_from_arn(u.arn()));
        Ok(AwsCredentials {
            guest: false,
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: secret(c.secret_access_key()),
            session_token: secret(c.session_token()),
            expiration: to_system_time(c.expiration())
                .ok_or_else(|| bad("unreadable Expiration"))?,
            account_id: self
                .cfg
                .account_id
                .clone()
                .or_else(|| crate::config::account_from_arn(&role_arn))
                .or(assumed_account),
            role_arn: Some(role_arn),
        })
    }
}
