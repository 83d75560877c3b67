//! Cognito user-pool sign-in, run by `credbroker login` for a profile with
//! `login.kind = "cognito-user-pool"`: `InitiateAuth USER_PASSWORD_AUTH`
//! (with `SECRET_HASH` for app clients with a secret), then the MFA
//! challenge (`SOFTWARE_TOKEN_MFA`, `SMS_MFA`) answered with a code the user
//! types. `USER_SRP_AUTH` is not offered: no maintained Rust crate does
//! Cognito's SRP variant, and a hand-written SRP is exactly the kind of
//! cryptography not to write here. Sign-out revokes with `RevokeToken`.

use aws_sdk_cognitoidentityprovider::types::{AuthFlowType, ChallengeNameType};

use super::{Ask, Error, SignedIn};
use crate::config::{ProfileConfig, UserPoolConfig};
use crate::secret::{ExposeSecret, SecretString, secret};
use crate::upstream::token_store::read_client_secret;
use crate::upstream::userpool::secret_hash;

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
                    "{what}: {code}: is USER_PASSWORD_AUTH enabled for app client (ALLOW_USER_PASSWORD_AUTH)?"
                )),
                _ => Error::Protocol(format!("{what}: {code}")),
            }
        }
        _ => Error::Unavailable(format!("{what}: the user pool did not answer")),
    }
}

/// Sign in with a password (and an MFA code when the pool asks for one).
pub async fn sign_in(
    profile: &ProfileConfig,
    cfg: &UserPoolConfig,
    ask: &mut dyn Ask,
) -> Result<SignedIn, Error> {
    let sdk = crate::upstream::aws::sdk_config(profile).await;
    let idp = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let username = match &cfg.username {
        Some(u) => u.clone(),
        None => ask.username()?,
    };
    let password = ask.password(&username)?;
    let client_secret = client_secret(cfg)?;
    let hash = client_secret
        .as_ref()
        .map(|s| secret_hash(s.expose_secret(), &username, &cfg.client_id));
    let mut req = idp
        .initiate_auth()
        .auth_flow(AuthFlowType::UserPasswordAuth)
        .client_id(&cfg.client_id)
        .auth_parameters("USERNAME", &username)
        .auth_parameters("PASSWORD", password.expose_secret());
    if let Some(h) = &hash {
        req = req.auth_parameters("SECRET_HASH", h);
    }
    let mut out = req.send().await.map_err(|e| aws_error("InitiateAuth", e))?;
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
        let challenge = out.challenge_name().cloned();
        let (kind, key) = match &challenge {
            Some(ChallengeNameType::SoftwareTokenMfa) if rounds <= 3 => {
                ("authenticator app", "SOFTWARE_TOKEN_MFA_CODE")
            }
            Some(ChallengeNameType::SmsMfa) if rounds <= 3 => ("SMS", "SMS_MFA_CODE"),
            Some(ChallengeNameType::NewPasswordRequired) => {
                return Err(Error::Usage(format!(
                    "the user pool requires a new password for {username:?}: set a permanent \
                     password first (the pool's hosted UI, or AdminSetUserPassword)"
                )));
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the user pool asked for a challenge credbroker does not answer ({})",
                    other.as_ref().map(|c| c.as_str()).unwrap_or("none")
                )));
            }
        };
        let code = ask.mfa_code(kind)?;
        let mut req = idp
            .respond_to_auth_challenge()
            .client_id(&cfg.client_id)
            .set_challenge_name(challenge)
            .set_session(out.session().map(str::to_owned))
            .challenge_responses("USERNAME", &username)
            .challenge_responses(key, code.trim());
        if let Some(h) = &hash {
            req = req.challenge_responses("SECRET_HASH", h);
        }
        let next = req
            .send()
            .await
            .map_err(|e| aws_error("RespondToAuthChallenge", e))?;
        out =
            aws_sdk_cognitoidentityprovider::operation::initiate_auth::InitiateAuthOutput::builder(
            )
            .set_authentication_result(next.authentication_result().cloned())
            .set_challenge_name(next.challenge_name().cloned())
            .set_session(next.session().map(str::to_owned))
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
