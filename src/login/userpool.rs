//! Cognito user-pool sign-in, run by `credbroker login` for a profile with
//! `login.kind = "cognito-user-pool"`: `InitiateAuth USER_SRP_AUTH` and its
//! `PASSWORD_VERIFIER` challenge (the default, `login.auth_flow = "srp"`:
//! the password never leaves the machine; the arithmetic is the maintained
//! `aws-cognito-srp` crate's, not ours), or `USER_PASSWORD_AUTH`
//! (`login.auth_flow = "password"`), with `SECRET_HASH` for app clients
//! with a secret; then the MFA challenge (`SOFTWARE_TOKEN_MFA`, `SMS_MFA`)
//! answered with a code the user types. Sign-out revokes with `RevokeToken`.

use aws_cognito_srp::{SrpClient, User, UserAuthenticationParameters, VerificationParameters};
use aws_sdk_cognitoidentityprovider::operation::initiate_auth::InitiateAuthOutput;
use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, ChallengeNameType};

use super::{Ask, Error, SignedIn};
use crate::config::{PoolAuthFlow, ProfileConfig, UserPoolConfig};
use crate::secret::{ExposeSecret, SecretString, secret};
use crate::upstream::token_store::read_client_secret;
use crate::upstream::userpool::secret_hash;

type Idp = aws_sdk_cognitoidentityprovider::Client;

fn client_secret(cfg: &UserPoolConfig) -> Result<Option<SecretString>, Error> {
    read_client_secret(cfg.client_secret_file.as_deref()).map_err(|e| Error::Usage(e.to_string()))
}

fn aws_error<E>(what: &str, e: aws_sdk_cognitoidentityprovider::error::SdkError<E>) -> Error
where
    E: aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata,
{
    use aws_sdk_cognitoidentityprovider::error::SdkError;
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("error").to_owned();
            match code.as_str() {
                "NotAuthorizedException" | "UserNotFoundException" => {
                    Error::Denied(format!("{what}: wrong username or password ({code})"))
                }
                "CodeMismatchException" | "ExpiredCodeException" => {
                    Error::Denied(format!("{what}: the MFA code was not accepted ({code})"))
                }
                "InvalidParameterException" => Error::Usage(format!(
                    "{what}: {code}: is the flow enabled for the app client (ALLOW_USER_SRP_AUTH; or ALLOW_USER_PASSWORD_AUTH with login.auth_flow = \"password\")?"
                )),
                _ => Error::Protocol(format!("{what}: {code}")),
            }
        }
        _ => Error::Unavailable(format!("{what}: the user pool did not answer")),
    }
}

/// The sign-in in progress: who, and the SRP state when the flow is SRP.
struct Session<'a> {
    idp: Idp,
    cfg: &'a UserPoolConfig,
    secret: Option<SecretString>,
    /// The name challenge answers carry (the pool's own name for the user
    /// once a challenge has told it).
    username: String,
    flow: PoolAuthFlow,
    srp: Option<SrpClient<User>>,
}

impl Session<'_> {
    /// Three MFA attempts, after the SRP round when there is one.
    fn max_rounds(&self) -> u32 {
        if self.flow == PoolAuthFlow::Srp { 4 } else { 3 }
    }

    fn hash(&self) -> Option<String> {
        self.secret
            .as_ref()
            .map(|s| secret_hash(s.expose_secret(), &self.username, &self.cfg.client_id))
    }

    /// `InitiateAuth` with SRP_A (no password sent).
    async fn start_srp(&mut self, password: &SecretString) -> Result<InitiateAuthOutput, Error> {
        let srp = SrpClient::new(
            User::new(
                &self.cfg.user_pool_id,
                &self.username,
                password.expose_secret(),
            ),
            &self.cfg.client_id,
            None,
        );
        let UserAuthenticationParameters { a, .. } = srp.get_auth_parameters();
        let mut req = self
            .idp
            .initiate_auth()
            .auth_flow(AuthFlowType::UserSrpAuth)
            .client_id(&self.cfg.client_id)
            .auth_parameters("USERNAME", &self.username)
            .auth_parameters("SRP_A", a);
        if let Some(h) = self.hash() {
            req = req.auth_parameters("SECRET_HASH", h);
        }
        self.srp = Some(srp);
        req.send().await.map_err(|e| aws_error("InitiateAuth", e))
    }

    /// `InitiateAuth` with the password.
    async fn start_password(&self, password: &SecretString) -> Result<InitiateAuthOutput, Error> {
        let mut req = self
            .idp
            .initiate_auth()
            .auth_flow(AuthFlowType::UserPasswordAuth)
            .client_id(&self.cfg.client_id)
            .auth_parameters("USERNAME", &self.username)
            .auth_parameters("PASSWORD", password.expose_secret());
        if let Some(h) = self.hash() {
            req = req.auth_parameters("SECRET_HASH", h);
        }
        req.send().await.map_err(|e| aws_error("InitiateAuth", e))
    }

    /// The first step of the flow.
    async fn start(&mut self, password: &SecretString) -> Result<InitiateAuthOutput, Error> {
        match self.flow {
            PoolAuthFlow::Password => self.start_password(password).await,
            PoolAuthFlow::Srp => self.start_srp(password).await,
        }
    }

    /// The responses to a challenge (with `USERNAME` and `SECRET_HASH`).
    fn answer(
        &mut self,
        out: &InitiateAuthOutput,
        rounds: u32,
        ask: &mut dyn Ask,
    ) -> Result<Vec<(&'static str, String)>, Error> {
        let param = |k: &str| {
            out.challenge_parameters()
                .and_then(|p| p.get(k))
                .cloned()
                .ok_or_else(|| {
                    Error::Protocol(format!("the PASSWORD_VERIFIER challenge has no {k}"))
                })
        };
        let responses = match out.challenge_name() {
            Some(ChallengeNameType::PasswordVerifier) if rounds == 1 && self.srp.is_some() => {
                self.username = param("USERNAME")?;
                let srp = self
                    .srp
                    .take()
                    .ok_or_else(|| Error::Protocol("no SRP state".into()))?;
                let VerificationParameters {
                    password_claim_secret_block,
                    password_claim_signature,
                    timestamp,
                } = srp
                    .verify(
                        &param("SECRET_BLOCK")?,
                        &param("USER_ID_FOR_SRP")?,
                        &param("SALT")?,
                        &param("SRP_B")?,
                    )
                    .map_err(|e| Error::Protocol(format!("SRP: {e}")))?;
                vec![
                    ("PASSWORD_CLAIM_SECRET_BLOCK", password_claim_secret_block),
                    ("PASSWORD_CLAIM_SIGNATURE", password_claim_signature),
                    ("TIMESTAMP", timestamp),
                ]
            }
            Some(ChallengeNameType::SoftwareTokenMfa) if rounds <= self.max_rounds() => vec![(
                "SOFTWARE_TOKEN_MFA_CODE",
                ask.mfa_code("authenticator app")?.trim().to_owned(),
            )],
            Some(ChallengeNameType::SmsMfa) if rounds <= self.max_rounds() => {
                vec![("SMS_MFA_CODE", ask.mfa_code("SMS")?.trim().to_owned())]
            }
            Some(ChallengeNameType::NewPasswordRequired) => {
                return Err(Error::Usage(format!(
                    "the user pool requires a new password for {:?}: set a permanent \
                     password first (the pool's hosted UI, or AdminSetUserPassword)",
                    self.username
                )));
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the user pool asked for a challenge credbroker does not answer ({})",
                    other.map(|c| c.as_str()).unwrap_or("none")
                )));
            }
        };
        let mut all = vec![("USERNAME", self.username.clone())];
        all.extend(responses);
        if let Some(h) = self.hash() {
            all.push(("SECRET_HASH", h));
        }
        Ok(all)
    }
}

/// Sign in with a password (SRP or the password flow, `login.auth_flow`)
/// and an MFA code when the pool asks for one.
pub async fn sign_in(
    profile: &ProfileConfig,
    cfg: &UserPoolConfig,
    ask: &mut dyn Ask,
) -> Result<SignedIn, Error> {
    let sdk = crate::upstream::aws::sdk_config(profile).await;
    let username = match &cfg.username {
        Some(u) => u.clone(),
        None => ask.username()?,
    };
    let password = ask.password(&username)?;
    let mut session = Session {
        idp: Idp::new(&sdk),
        cfg,
        secret: client_secret(cfg)?,
        username: username.clone(),
        flow: profile.sign_in.auth_flow,
        srp: None,
    };
    let mut out = session.start(&password).await?;
    drop(password);
    let mut rounds = 0;
    loop {
        if let Some(result) = out.authentication_result() {
            let rt = result
                .refresh_token()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Error::Protocol("the user pool issued no refresh token".into()))?;
            return Ok(SignedIn {
                refresh_token: secret(rt.to_owned()),
                subject: username,
            });
        }
        rounds += 1;
        let mut req = session
            .idp
            .respond_to_auth_challenge()
            .client_id(&cfg.client_id)
            .set_challenge_name(out.challenge_name().cloned())
            .set_session(out.session().map(str::to_owned));
        for (k, v) in session.answer(&out, rounds, ask)? {
            req = req.challenge_responses(k, v);
        }
        let next = req
            .send()
            .await
            .map_err(|e| aws_error("RespondToAuthChallenge", e))?;
        out = InitiateAuthOutput::builder()
            .set_authentication_result(next.authentication_result().cloned())
            .set_challenge_name(next.challenge_name().cloned())
            .set_session(next.session().map(str::to_owned))
            .set_challenge_parameters(next.challenge_parameters().cloned())
            .build();
    }
}

/// `RevokeToken` for a user-pool refresh token.
pub async fn revoke(
    profile: &ProfileConfig,
    cfg: &UserPoolConfig,
    token: &SecretString,
) -> Result<(), String> {
    let sdk = crate::upstream::aws::sdk_config(profile).await;
    let idp = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let secret = client_secret(cfg).map_err(|e| e.to_string())?;
    idp.revoke_token()
        .token(token.expose_secret())
        .client_id(&cfg.client_id)
        .set_client_secret(secret.map(|s| s.expose_secret().to_owned()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| match aws_error("RevokeToken", e) {
            Error::Unavailable(m) | Error::Protocol(m) | Error::Denied(m) | Error::Usage(m) => m,
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoginConfig;
    use crate::upstream::fake::{self, FakeAws};
    use serde_json::json;

    struct Scripted;

    impl Ask for Scripted {
        fn username(&mut self) -> Result<String, Error> {
            Ok("alice".into())
        }
        fn password(&mut self, _: &str) -> Result<SecretString, Error> {
            Ok(secret("correct horse battery staple"))
        }
        fn mfa_code(&mut self, _: &str) -> Result<String, Error> {
            Ok("123456".into())
        }
    }

    /// `login.auth_flow = "srp"`: SRP_A goes out, the PASSWORD_VERIFIER
    /// challenge is answered (as the pool's own name for the user, with its
    /// SECRET_HASH) and the password is in no request. The SRP arithmetic is
    /// aws-cognito-srp's; this checks the flow around it.
    #[tokio::test]
    async fn srp_sign_in_answers_the_password_verifier_without_the_password() {
        let aws = FakeAws::start(|op, input, _| match op {
            "InitiateAuth" if input["AuthFlow"] == "USER_SRP_AUTH" => (
                200,
                json!({"ChallengeName": "PASSWORD_VERIFIER", "Session": "s1", "ChallengeParameters": {
                    "SALT": "a1b2c3d4e5f60718", "SRP_B": "1f".repeat(192),
                    "SECRET_BLOCK": "c2VjcmV0LWJsb2Nr", "USERNAME": "uuid-of-alice",
                    "USER_ID_FOR_SRP": "uuid-of-alice"}}),
            ),
            "RespondToAuthChallenge" => (
                200,
                json!({"AuthenticationResult": {"IdToken": fake::jwt("alice"), "AccessToken": "a",
                    "RefreshToken": "rt-1", "ExpiresIn": 3600, "TokenType": "Bearer"}}),
            ),
            _ => fake::error(400, "InvalidParameterException", op),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "sekret").unwrap();
        let text = format!(
            "[profiles.p]\nendpoint_url = \"{}\"\n[profiles.p.login]\nkind = \"cognito-user-pool\"\nuser_pool_id = \"us-east-1_Abc\"\nclient_id = \"c\"\nusername = \"alice\"\nclient_secret_file = \"{}\"\nauth_flow = \"srp\"\n[profiles.p.aws]\nflow = \"cognito\"\nidentity_pool_id = \"us-east-1:x\"\n",
            aws.endpoint,
            dir.path().join("secret").display()
        );
        let env = crate::config::Env::from([("HOME".to_owned(), dir.path().display().to_string())]);
        let cfg = crate::config::load_str(&text, &dir.path().join("c.toml"), &env).unwrap();
        let profile = &cfg.profiles["p"];
        let LoginConfig::UserPool(pool) = &profile.login else {
            panic!("not a user pool")
        };
        let done = sign_in(profile, pool, &mut Scripted).await.unwrap();
        assert_eq!(done.refresh_token.expose_secret(), "rt-1");
        let calls = aws.calls.lock().unwrap().clone();
        let (start, answer) = (&calls[0].1, &calls[1].1);
        assert_eq!(start["AuthFlow"], "USER_SRP_AUTH");
        let a = start["AuthParameters"]["SRP_A"].as_str().unwrap();
        assert!(
            a.len() >= 256 && a.bytes().all(|b| b.is_ascii_hexdigit()),
            "{a}"
        );
        assert_eq!(
            start["AuthParameters"]["SECRET_HASH"],
            secret_hash("sekret", "alice", "c")
        );
        let r = &answer["ChallengeResponses"];
        assert_eq!(answer["ChallengeName"], "PASSWORD_VERIFIER");
        assert_eq!(answer["Session"], "s1");
        assert_eq!(r["USERNAME"], "uuid-of-alice");
        assert_eq!(
            r["SECRET_HASH"],
            secret_hash("sekret", "uuid-of-alice", "c")
        );
        assert_eq!(r["PASSWORD_CLAIM_SECRET_BLOCK"], "c2VjcmV0LWJsb2Nr");
        assert!(
            r["PASSWORD_CLAIM_SIGNATURE"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(r["TIMESTAMP"].as_str().is_some_and(|s| s.contains("UTC")));
        let all = format!("{calls:?}");
        assert!(!all.contains("correct horse"), "the password was sent");
    }
}
