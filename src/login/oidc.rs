//! Interactive OIDC sign-in, run by `credbroker login` (never by the daemon):
//!
//! * discovery (`authorization_endpoint`, `device_authorization_endpoint`,
//!   `jwks_uri`, `revocation_endpoint`), issuer checked (OIDC Discovery §4.3),
//!   every endpoint held to the upstream URL rule (https, or http on loopback);
//! * the **device authorization grant** (RFC 8628): `interval` honoured,
//!   `slow_down` adds 5 s (§3.5), `authorization_pending` keeps polling,
//!   `expired_token` / `access_denied` end it with their own error;
//! * **authorization code + PKCE S256** (RFC 7636) with an RFC 8252 loopback
//!   redirect ([`super::redirect`]), `state` and `nonce` checked, RFC 9207
//!   `iss` checked when the IdP sends it;
//! * the id_token validated ([`super::id_token`]); a response without a
//!   refresh token is an error naming the IdP setting that is missing;
//! * RFC 7009 revocation for `logout`.
//!
//! Written over reqwest rather than the `oauth2` crate: oauth2 5 would add a
//! second copy of rand, sha2, base64 and chrono, its typed token response has
//! no `id_token`, and its device polling hides the `slow_down` and
//! `expired_token` answers we must tell the user about. What is left here is
//! three form POSTs and one SHA-256; the id_token cryptography is a crate's.

use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use sha2::Digest;
use url::Url;

use super::{Error, Progress, SignedIn, redirect};
use crate::config::{OidcConfig, SignIn};
use crate::net::check_upstream_url;
use crate::secret::{ExposeSecret, SecretString, secret};
use crate::upstream::oidc::{OAuthError, TokenResponse};
use crate::upstream::short;
use crate::upstream::token_store::read_client_secret;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: the polling interval when the IdP names none.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: what `slow_down` adds to the interval.
const SLOW_DOWN_STEP: u64 = 5;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    jwks_uri: Option<String>,
    revocation_endpoint: Option<String>,
}

/// No `Debug`: `device_code` is a credential until it expires.
#[derive(Deserialize)]
struct DeviceAuth {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

/// A token endpoint's answer: tokens, or an OAuth error code.
enum Answer {
    Tokens(TokenResponse),
    OAuth(String, String),
}

/// An OpenID provider as discovered for one profile's login settings.
pub struct Provider {
    http: reqwest::Client,
    cfg: OidcConfig,
    issuer: String,
    token_endpoint: Url,
    authorization_endpoint: Option<Url>,
    device_endpoint: Option<Url>,
    jwks_uri: Option<Url>,
    revocation_endpoint: Option<Url>,
}

fn endpoint(raw: Option<&str>, name: &str) -> Result<Option<Url>, Error> {
    raw.map(|s| {
        let url =
            Url::parse(s).map_err(|_| Error::Protocol(format!("discovery {name} is not a URL")))?;
        check_upstream_url(&url)
            .map_err(|m| Error::Protocol(format!("discovered {name} rejected: {m}")))?;
        Ok(url)
    })
    .transpose()
}

fn transport(what: &str, e: &reqwest::Error) -> Error {
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Error::Unavailable(format!("identity provider {what}: {why}"))
}

/// `n` random bytes, base64url without padding.
fn random_b64(n: usize) -> Result<String, Error> {
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The scopes a sign-in asks for: `login.scopes` plus `openid` and
/// `offline_access` when missing (without them there is no id_token or no
/// refresh token).
pub fn sign_in_scopes(cfg: &OidcConfig) -> String {
    let mut scopes = cfg.scopes.clone().unwrap_or_default();
    for needed in ["openid", "offline_access"] {
        if !scopes.iter().any(|s| s == needed) {
            scopes.push(needed.into());
        }
    }
    scopes.join(" ")
}

impl Provider {
    /// Discover the provider named by `login.issuer`.
    pub async fn discover(cfg: &OidcConfig, key: &str) -> Result<Provider, Error> {
        let issuer = cfg.issuer.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{key}.issuer is needed to sign in (discovery names the sign-in endpoints)"
            ))
        })?;
        let http = crate::upstream::oidc::http_client().map_err(|e| Error::Local(e.to_string()))?;
        let base = issuer.as_str().trim_end_matches('/');
        let resp = http
            .get(format!("{base}/.well-known/openid-configuration"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport("discovery", &e))?;
        if !resp.status().is_success() {
            return Err(Error::Protocol(format!(
                "discovery at {base}: HTTP {} (is {key}.issuer right?)",
                resp.status()
            )));
        }
        let d: Discovery = resp
            .json()
            .await
            .map_err(|_| Error::Protocol("the discovery document is not valid JSON".into()))?;
        if d.issuer.trim_end_matches('/') != base {
            return Err(Error::Protocol(format!(
                "discovery issuer {:?} does not match {key}.issuer {base:?}",
                short(&d.issuer)
            )));
        }
        let token_endpoint = match &cfg.token_endpoint {
            Some(t) => t.clone(),
            None => endpoint(Some(&d.token_endpoint), "token_endpoint")?
                .ok_or_else(|| Error::Protocol("discovery has no token_endpoint".into()))?,
        };
        Ok(Provider {
            http,
            issuer: d.issuer,
            token_endpoint,
            authorization_endpoint: endpoint(
                d.authorization_endpoint.as_deref(),
                "authorization_endpoint",
            )?,
            device_endpoint: endpoint(
                d.device_authorization_endpoint.as_deref(),
                "device_authorization_endpoint",
            )?,
            jwks_uri: endpoint(d.jwks_uri.as_deref(), "jwks_uri")?,
            revocation_endpoint: endpoint(d.revocation_endpoint.as_deref(), "revocation_endpoint")?,
            cfg: cfg.clone(),
        })
    }

    /// Whether the provider offers the device grant.
    pub fn has_device_flow(&self) -> bool {
        self.device_endpoint.is_some()
    }

    /// POST `form` with this client's authentication (HTTP Basic for a
    /// confidential client, `client_id` in the form for a public one).
    async fn post(
        &self,
        url: &Url,
        what: &str,
        mut form: Vec<(&str, &str)>,
    ) -> Result<reqwest::Response, Error> {
        let client_secret = read_client_secret(self.cfg.client_secret_file.as_deref())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut req = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json");
        match &client_secret {
            Some(s) => req = req.basic_auth(&self.cfg.client_id, Some(s.expose_secret())),
            None => form.push(("client_id", &self.cfg.client_id)),
        }
        req.form(&form)
            .send()
            .await
            .map_err(|e| transport(what, &e))
    }

    async fn token(&self, form: Vec<(&str, &str)>) -> Result<Answer, Error> {
        let resp = self
            .post(&self.token_endpoint, "token endpoint", form)
            .await?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map(Answer::Tokens)
                .map_err(|_| Error::Protocol("the token response is not valid JSON".into()));
        }
        if status.is_server_error() {
            return Err(Error::Unavailable(format!("token endpoint: HTTP {status}")));
        }
        match resp.json::<OAuthError>().await {
            Ok(e) => Ok(Answer::OAuth(
                short(&e.error),
                e.error_description
                    .as_deref()
                    .map(short)
                    .unwrap_or_default(),
            )),
            Err(_) => Err(Error::Protocol(format!(
                "token endpoint: HTTP {status} without an OAuth error body"
            ))),
        }
    }

    /// RFC 8628: show the code, poll until the user approves it.
    pub async fn device(&self, ui: &mut dyn Progress) -> Result<SignedIn, Error> {
        let url = self.device_endpoint.as_ref().ok_or_else(|| {
            Error::Usage(
                "the identity provider offers no device authorization grant (no \
                 device_authorization_endpoint in its discovery document); use --browser"
                    .into(),
            )
        })?;
        let scope = sign_in_scopes(&self.cfg);
        let resp = self
            .post(url, "device authorization", vec![("scope", &scope)])
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let why = resp
                .json::<OAuthError>()
                .await
                .map(|e| short(&e.error))
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(Error::Protocol(format!(
                "the identity provider refused the device authorization request ({why}): \
                 is the device grant enabled for client {:?}?",
                self.cfg.client_id
            )));
        }
        let auth: DeviceAuth = resp.json().await.map_err(|_| {
            Error::Protocol("the device authorization response is not valid JSON".into())
        })?;
        ui.device_code(
            &auth.verification_uri,
            auth.verification_uri_complete.as_deref(),
            &auth.user_code,
            Duration::from_secs(auth.expires_in),
        );
        self.poll(&auth, ui).await
    }

    async fn poll(&self, auth: &DeviceAuth, ui: &mut dyn Progress) -> Result<SignedIn, Error> {
        let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL).max(1);
        let deadline = Instant::now() + Duration::from_secs(auth.expires_in);
        let expired = || {
            Error::Expired(
                "the code expired before it was approved; run `credbroker login` again".into(),
            )
        };
        loop {
            super::wait(ui, Duration::from_secs(interval)).await;
            if Instant::now() >= deadline {
                return Err(expired());
            }
            let form = vec![
                ("grant_type", DEVICE_GRANT),
                ("device_code", &*auth.device_code),
            ];
            match self.token(form).await? {
                Answer::Tokens(t) => return self.finish(t, None).await,
                Answer::OAuth(code, _) if code == "authorization_pending" => {}
                Answer::OAuth(code, _) if code == "slow_down" => {
                    interval += SLOW_DOWN_STEP;
                    ui.note(&format!(
                        "the identity provider asked to slow down; polling every {interval} s"
                    ));
                }
                Answer::OAuth(code, _) if code == "expired_token" => return Err(expired()),
                Answer::OAuth(code, _) if code == "access_denied" => {
                    return Err(Error::Denied(
                        "the sign-in was denied at the identity provider (access_denied)".into(),
                    ));
                }
                Answer::OAuth(code, desc) => return Err(refused(&code, &desc, &self.cfg)),
            }
        }
    }

    /// Authorization code + PKCE through the system browser and a loopback
    /// redirect. `open_browser = false` only prints the URL.
    pub async fn code(
        &self,
        sign_in: &SignIn,
        open_browser: bool,
        ui: &mut dyn Progress,
    ) -> Result<SignedIn, Error> {
        let auth_url = self.authorization_endpoint.as_ref().ok_or_else(|| {
            Error::Usage("the identity provider has no authorization_endpoint; use --device".into())
        })?;
        let listener = redirect::Listener::bind(sign_in.redirect_uri.as_ref()).await?;
        let redirect_uri = listener.redirect_uri().to_string();
        let state = random_b64(32)?;
        let nonce = random_b64(32)?;
        let verifier = secret(random_b64(32)?);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.expose_secret().as_bytes()));
        let mut url = auth_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.cfg.client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &sign_in_scopes(&self.cfg))
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(p) = &sign_in.prompt {
                q.append_pair("prompt", p);
            }
        }
        let opened = open_browser && webbrowser::open(url.as_str()).is_ok();
        ui.browser_url(url.as_str(), opened);
        let code = listener.wait(&state, &self.issuer, ui).await?;
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", verifier.expose_secret()),
        ];
        match self.token(form).await? {
            Answer::Tokens(t) => self.finish(t, Some(&nonce)).await,
            Answer::OAuth(code, desc) => Err(refused(&code, &desc, &self.cfg)),
        }
    }

    /// Check what a sign-in returned: a refresh token, and a valid id_token.
    async fn finish(&self, t: TokenResponse, nonce: Option<&str>) -> Result<SignedIn, Error> {
        let rt = t.refresh_token.filter(|r| !r.is_empty()).ok_or_else(|| {
            Error::Protocol(format!(
                "the identity provider issued no refresh token: allow the refresh_token grant \
                 and the offline_access scope for client {:?} (some IdPs, oidc-provider among \
                 them, also need login.prompt = \"consent\")",
                self.cfg.client_id
            ))
        })?;
        let id = t.id_token.ok_or_else(|| {
            Error::Protocol("the identity provider issued no id_token (is openid allowed?)".into())
        })?;
        let jwks = self.jwks().await?;
        let v = super::id_token::verify(&id, &jwks, &self.issuer, &self.cfg.client_id, nonce)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(SignedIn {
            refresh_token: secret(rt),
            subject: v.sub,
        })
    }

    async fn jwks(&self) -> Result<JwkSet, Error> {
        let url = self
            .jwks_uri
            .as_ref()
            .ok_or_else(|| Error::Protocol("discovery has no jwks_uri".into()))?;
        let resp = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport("jwks_uri", &e))?;
        if !resp.status().is_success() {
            return Err(Error::Protocol(format!("jwks_uri: HTTP {}", resp.status())));
        }
        resp.json()
            .await
            .map_err(|_| Error::Protocol("the provider's JWKS is not a valid key set".into()))
    }

    /// RFC 7009: revoke `token` (a refresh token) at the IdP.
    pub async fn revoke(&self, token: &SecretString) -> Result<(), String> {
        let url = self.revocation_endpoint.as_ref().ok_or_else(|| {
            "the identity provider publishes no revocation_endpoint; the refresh token stays \
             valid there until it expires"
                .to_owned()
        })?;
        let form = vec![
            ("token", token.expose_secret()),
            ("token_type_hint", "refresh_token"),
        ];
        let resp = self
            .post(url, "revocation endpoint", form)
            .await
            .map_err(|e| e.to_string())?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the revocation endpoint answered HTTP {s}")),
        }
    }
}

/// An OAuth error from the token endpoint during a sign-in.
fn refused(code: &str, desc: &str, cfg: &OidcConfig) -> Error {
    match code {
        "invalid_client" | "unauthorized_client" => Error::Usage(format!(
            "the identity provider rejected the client ({code}): check login.client_id \
             ({:?}) and login.client_secret_file",
            cfg.client_id
        )),
        "access_denied" => Error::Denied(format!("the sign-in was denied ({code})")),
        _ => Error::Protocol(format!(
            "the identity provider refused the sign-in ({code}{}{desc})",
            if desc.is_empty() { "" } else { ": " }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_adds_the_scopes_a_refresh_token_needs() {
        let mut cfg = OidcConfig {
            issuer: None,
            token_endpoint: None,
            client_id: "c".into(),
            client_secret_file: None,
            refresh_token_file: "/x".into(),
            token_store: Default::default(),
            guest_until_login: false,
            scopes: None,
        };
        assert_eq!(sign_in_scopes(&cfg), "openid offline_access");
        cfg.scopes = Some(vec!["email".into(), "openid".into()]);
        assert_eq!(sign_in_scopes(&cfg), "email openid offline_access");
    }

    #[test]
    fn pkce_values_are_long_and_random() {
        let a = random_b64(32).unwrap();
        let b = random_b64(32).unwrap();
        assert_eq!(a.len(), 43, "RFC 7636 §4.1: 43..128 characters");
        assert_ne!(a, b);
    }
}
