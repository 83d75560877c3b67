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
//! * RFC 7009 revocation for `logout`;
//! * a Cognito user pool's **hosted UI** ([`Provider::hosted_ui`]): the same
//!   code + PKCE flow at the pool's domain (no discovery there, no device
//!   grant, never `offline_access`), the id_token checked against the
//!   pool's JWKS and issuer, and required to be an id token.
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

use super::id_token::Verified;
use super::{Error, Progress, SignedIn, redirect};
use crate::config::{HostedUi, OidcConfig, SignIn, UserPoolConfig};
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

/// Which kind of authorization server this is: the messages differ.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flavour {
    /// An OpenID provider found by discovery.
    Oidc,
    /// A Cognito user pool's hosted UI: no discovery at the domain, no device
    /// grant, no `offline_access`; the id_token must be an id token
    /// (`token_use = "id"`) and, with a client secret, its user must be
    /// `login.username` (the daemon's `SECRET_HASH` is computed from it).
    HostedUi {
        /// `login.username`, when the client has a secret.
        username: Option<String>,
    },
}

/// The OAuth client a profile signs in as.
struct Client {
    id: String,
    secret_file: Option<std::path::PathBuf>,
}

/// An authorization server for one profile's sign-in: an OpenID provider
/// as discovered, or a user pool's hosted UI.
pub struct Provider {
    http: reqwest::Client,
    client: Client,
    /// The `scope` of a sign-in.
    scopes: String,
    flavour: Flavour,
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
            client: Client {
                id: cfg.client_id.clone(),
                secret_file: cfg.client_secret_file.clone(),
            },
            scopes: sign_in_scopes(cfg),
            flavour: Flavour::Oidc,
        })
    }

    /// A user pool's hosted UI (`login.domain`): the OAuth endpoints under
    /// the domain, the issuer and JWKS of the pool (Cognito publishes no
    /// discovery document at the domain, and none with a device grant).
    /// `idp_base` is the cognito-idp endpoint the SDK would use, when
    /// overridden, and where that came from (for errors).
    pub fn hosted_ui(
        pool: &UserPoolConfig,
        ui: &HostedUi,
        idp_base: Option<(&Url, &str)>,
    ) -> Result<Provider, Error> {
        let region = pool
            .user_pool_id
            .split_once('_')
            .map(|(r, _)| r)
            .unwrap_or_default();
        let issuer = format!(
            "https://cognito-idp.{region}.amazonaws.com/{}",
            pool.user_pool_id
        );
        let (base, from) = idp_base.map_or_else(
            || {
                (
                    format!("https://cognito-idp.{region}.amazonaws.com"),
                    "the pool's region",
                )
            },
            |(u, from)| (u.as_str().trim_end_matches('/').to_owned(), from),
        );
        let under = |path: &str| {
            ui.domain
                .join(path)
                .map_err(|e| Error::Usage(format!("login.domain: {e}")))
        };
        let jwks = Url::parse(&format!(
            "{base}/{}/.well-known/jwks.json",
            pool.user_pool_id
        ))
        .map_err(|e| Error::Usage(format!("{from}: {e}")))?;
        check_upstream_url(&jwks)
            .map_err(|m| Error::Usage(format!("the pool's JWKS (from {from}): {m}")))?;
        Ok(Provider {
            http: crate::upstream::oidc::http_client().map_err(|e| Error::Local(e.to_string()))?,
            client: Client {
                id: pool.client_id.clone(),
                secret_file: pool.client_secret_file.clone(),
            },
            scopes: hosted_ui_scopes(ui),
            flavour: Flavour::HostedUi {
                // Only a confidential client's refresh needs the name
                // (SECRET_HASH); a public one may sign in as anyone.
                username: pool.client_secret_file.as_ref().and(pool.username.clone()),
            },
            issuer,
            token_endpoint: under("oauth2/token")?,
            authorization_endpoint: Some(under("oauth2/authorize")?),
            device_endpoint: None,
            jwks_uri: Some(jwks),
            revocation_endpoint: Some(under("oauth2/revoke")?),
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
        let client_secret = read_client_secret(self.client.secret_file.as_deref())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut req = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json");
        match &client_secret {
            Some(s) => req = req.basic_auth(&self.client.id, Some(s.expose_secret())),
            None => form.push(("client_id", &self.client.id)),
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
        let resp = self
            .post(url, "device authorization", vec![("scope", &self.scopes)])
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
                self.client.id
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
                Answer::OAuth(code, desc) => return Err(self.refused(&code, &desc)),
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
        let url = self.authorize_url(auth_url, sign_in, &redirect_uri, &state, &nonce, &challenge);
        let opened = open_browser && webbrowser::open(url.as_str()).is_ok();
        ui.browser_url(url.as_str(), opened);
        if let Flavour::HostedUi { .. } = self.flavour {
            ui.note(&format!(
                "(The hosted UI redirects only to callback URLs registered in app client {:?}: if \
                 it shows redirect_mismatch, register {redirect_uri} there.)",
                self.client.id
            ));
            if !opened && let Some(port) = listener.redirect_uri().port() {
                ui.note(&format!(
                    "(Signing in from another machine? Forward the port first: \
                     ssh -L {port}:localhost:{port} THIS-HOST)"
                ));
            }
        }
        let code = listener.wait(&state, &self.issuer, ui).await?;
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose_secret()),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", verifier.expose_secret()),
        ];
        match self.token(form).await? {
            Answer::Tokens(t) => self.finish(t, Some(&nonce)).await,
            Answer::OAuth(code, desc) => Err(self.refused(&code, &desc)),
        }
    }

    /// The authorization request (RFC 6749 §4.1.1 with PKCE and `nonce`).
    fn authorize_url(
        &self,
        base: &Url,
        sign_in: &SignIn,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> Url {
        let mut url = base.clone();
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &self.client.id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.scopes)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(p) = &sign_in.prompt {
            q.append_pair("prompt", p);
        }
        if let Some(idp) = sign_in
            .hosted_ui
            .as_ref()
            .and_then(|h| h.identity_provider.as_deref())
        {
            q.append_pair("identity_provider", idp);
        }
        drop(q);
        url
    }

    /// Check what a sign-in returned: a refresh token, and a valid id_token.
    async fn finish(&self, t: TokenResponse, nonce: Option<&str>) -> Result<SignedIn, Error> {
        let rt = t.refresh_token.filter(|r| !r.is_empty()).ok_or_else(|| {
            Error::Protocol(match self.flavour {
                Flavour::Oidc => format!(
                    "the identity provider issued no refresh token: allow the refresh_token \
                     grant and the offline_access scope for client {:?} (some IdPs, \
                     oidc-provider among them, also need login.prompt = \"consent\")",
                    self.client.id
                ),
                Flavour::HostedUi { .. } => format!(
                    "the user pool issued no refresh token: give app client {:?} a refresh \
                     token validity (and ALLOW_REFRESH_TOKEN_AUTH)",
                    self.client.id
                ),
            })
        })?;
        let id = t.id_token.ok_or_else(|| {
            Error::Protocol("the identity provider issued no id_token (is openid allowed?)".into())
        })?;
        let jwks = self.jwks().await?;
        let v = super::id_token::verify(&id, &jwks, &self.issuer, &self.client.id, nonce)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let subject = match &self.flavour {
            Flavour::Oidc => v.sub,
            Flavour::HostedUi { username } => hosted_ui_user(v, username.as_deref())?,
        };
        Ok(SignedIn {
            refresh_token: secret(rt),
            subject,
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

impl Provider {
    /// An OAuth error from the token endpoint during a sign-in.
    fn refused(&self, code: &str, desc: &str) -> Error {
        let secret_key = match self.flavour {
            Flavour::Oidc => "login.client_secret_file",
            Flavour::HostedUi { .. } => "login.client_secret_file (the app client's secret)",
        };
        match code {
            "invalid_client" | "unauthorized_client" => Error::Usage(format!(
                "the identity provider rejected the client ({code}): check login.client_id \
                 ({:?}) and {secret_key}",
                self.client.id
            )),
            "invalid_scope" => Error::Usage(format!(
                "the identity provider refused the scopes {:?} ({code}): allow them for client \
                 {:?}, or change login.scopes",
                self.scopes, self.client.id
            )),
            "access_denied" => Error::Denied(format!("the sign-in was denied ({code})")),
            _ => Error::Protocol(format!(
                "the identity provider refused the sign-in ({code}{}{desc})",
                if desc.is_empty() { "" } else { ": " }
            )),
        }
    }
}

/// The scopes of a hosted-UI sign-in: `login.scopes` with `openid` added
/// when missing (the default is `openid` alone).
/// Never `offline_access`: Cognito refuses scopes the app client does not
/// list, and its code grant returns a refresh token without one.
pub fn hosted_ui_scopes(ui: &HostedUi) -> String {
    let mut scopes = ui.scopes.clone().unwrap_or_default();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    scopes.join(" ")
}

/// A hosted-UI id_token's user: it must be an id token (Cognito's access
/// tokens are JWTs signed with the same key), and, when `login.username` is
/// set, be that user — the daemon's `SECRET_HASH` names it.
fn hosted_ui_user(v: Verified, want: Option<&str>) -> Result<String, Error> {
    if v.token_use.as_deref() != Some("id") {
        return Err(Error::Protocol(format!(
            "the user pool's id_token has token_use {:?}, not \"id\"",
            v.token_use.as_deref().unwrap_or("")
        )));
    }
    let user = v.cognito_username.unwrap_or(v.sub);
    match want {
        Some(w) if w != user => Err(Error::Usage(format!(
            "signed in as {user:?}, but login.username is {w:?}: sign in as {w:?}, or set \
             login.username = {user:?}"
        ))),
        _ => Ok(user),
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

    fn pool() -> (UserPoolConfig, HostedUi) {
        let pool = UserPoolConfig {
            user_pool_id: "eu-west-1_Abc".into(),
            client_id: "app".into(),
            client_secret_file: None,
            username: Some("alice".into()),
            refresh_token_file: "/x".into(),
            token_store: Default::default(),
            guest_until_login: false,
            rotation: None,
        };
        let ui = HostedUi {
            domain: Url::parse("https://myapp.auth.eu-west-1.amazoncognito.com").unwrap(),
            scopes: Some(vec!["email".into()]),
            identity_provider: Some("Google".into()),
        };
        (pool, ui)
    }

    #[test]
    fn hosted_ui_endpoints_issuer_and_authorize_request() {
        let (pool, ui) = pool();
        let p = Provider::hosted_ui(&pool, &ui, None).unwrap();
        assert_eq!(
            p.issuer,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc"
        );
        assert_eq!(
            p.token_endpoint.as_str(),
            "https://myapp.auth.eu-west-1.amazoncognito.com/oauth2/token"
        );
        assert_eq!(
            p.jwks_uri.as_ref().unwrap().as_str(),
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc/.well-known/jwks.json"
        );
        assert!(!p.has_device_flow(), "Cognito has no device grant");
        assert_eq!(
            p.flavour,
            Flavour::HostedUi { username: None },
            "a public client may sign in as anyone: login.username is not enforced"
        );
        let local = Url::parse("http://127.0.0.1:5000/").unwrap();
        let p2 = Provider::hosted_ui(&pool, &ui, Some((&local, "AWS_ENDPOINT_URL"))).unwrap();
        assert_eq!(
            p2.jwks_uri.as_ref().unwrap().as_str(),
            "http://127.0.0.1:5000/eu-west-1_Abc/.well-known/jwks.json",
            "an endpoint override serves the pool's keys"
        );
        let sign_in = SignIn {
            prompt: None,
            hosted_ui: Some(ui),
            ..SignIn::default()
        };
        let url = p.authorize_url(
            p.authorization_endpoint.as_ref().unwrap(),
            &sign_in,
            "http://localhost:8765/callback",
            "st",
            "no",
            "ch",
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/oauth2/authorize");
        assert_eq!(q["scope"], "openid email");
        assert_eq!(q["identity_provider"], "Google");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "http://localhost:8765/callback");
        assert!(!q.contains_key("prompt"));
    }

    #[test]
    fn a_hosted_ui_token_must_be_an_id_token_of_login_username() {
        let v = |use_: &str, user: &str| Verified {
            sub: "s-1".into(),
            exp: 0,
            token_use: Some(use_.into()),
            cognito_username: Some(user.into()),
        };
        assert_eq!(
            hosted_ui_user(v("id", "alice"), Some("alice")).unwrap(),
            "alice"
        );
        assert_eq!(hosted_ui_user(v("id", "bob"), None).unwrap(), "bob");
        let e = hosted_ui_user(v("access", "alice"), None).unwrap_err();
        assert!(e.to_string().contains("token_use"), "{e}");
        let e = hosted_ui_user(v("id", "bob"), Some("alice")).unwrap_err();
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("login.username"),
            "{e}"
        );
    }
}
