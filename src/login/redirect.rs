//! The RFC 8252 loopback redirect of a browser sign-in: a one-shot HTTP
//! listener on 127.0.0.1 (an ephemeral port unless `login.redirect_uri`
//! fixes one) that accepts exactly one callback carrying our `state`.
//!
//! * A callback with another `state` (a forged or stale link) is answered 400
//!   and ignored: it neither ends nor hijacks the sign-in.
//! * An RFC 9207 `iss` other than the provider's ends the sign-in (mix-up).
//! * `error=…` with our state ends it with that error; a `code` ends it with
//!   the code. Later callbacks get 410.
//! * The pages say no-store and no-referrer, so the code in the URL does not
//!   travel on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use tokio::sync::mpsc;
use url::Url;

use super::{Error, Progress};
use crate::secret::{SecretString, secret};

/// Path of the default redirect URI.
pub const DEFAULT_PATH: &str = "/callback";

/// What the callback handler tells the waiting sign-in.
enum Event {
    /// A callback that is not ours (reason, for the terminal).
    Ignored(&'static str),
    /// The sign-in's outcome.
    Done(Result<SecretString, Error>),
}

struct Callback {
    state: String,
    issuer: String,
    events: mpsc::UnboundedSender<Event>,
    finished: Mutex<bool>,
}

/// A bound redirect listener.
pub struct Listener {
    listener: tokio::net::TcpListener,
    uri: Url,
}

impl Listener {
    /// Bind `fixed` (a validated loopback `http://` URI) or 127.0.0.1:0.
    pub async fn bind(fixed: Option<&Url>) -> Result<Listener, Error> {
        let (addr, path) = match fixed {
            Some(u) => {
                let host = u.host_str().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
                let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
                    [127, 0, 0, 1].into()
                } else {
                    host.parse().map_err(|_| {
                        Error::Usage(format!(
                            "login.redirect_uri host {host:?} is not a loopback IP"
                        ))
                    })?
                };
                (
                    SocketAddr::new(ip, u.port().unwrap_or(80)),
                    u.path().to_owned(),
                )
            }
            None => (
                SocketAddr::from(([127, 0, 0, 1], 0)),
                DEFAULT_PATH.to_owned(),
            ),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot listen on {addr} for the sign-in redirect: {e}"
            ))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Local(format!("cannot read the redirect address: {e}")))?;
        let uri = match fixed {
            Some(u) => u.clone(),
            None => Url::parse(&format!("http://{bound}{path}"))
                .map_err(|e| Error::Local(format!("redirect URI: {e}")))?,
        };
        Ok(Listener { listener, uri })
    }

    /// The redirect URI to send in the authorization request.
    pub fn redirect_uri(&self) -> &Url {
        &self.uri
    }

    /// Serve until one callback with `state` arrives; its code, or its error.
    pub async fn wait(
        self,
        state: &str,
        issuer: &str,
        ui: &mut dyn Progress,
    ) -> Result<SecretString, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cb = Arc::new(Callback {
            state: state.to_owned(),
            issuer: issuer.trim_end_matches('/').to_owned(),
            events: tx,
            finished: Mutex::new(false),
        });
        let path = match self.uri.path() {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let app = Router::new()
            .route(&path, axum::routing::get(callback))
            .with_state(cb);
        let stop = tokio_util::sync::CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(self.listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            })
        };
        let outcome = loop {
            match rx.recv().await {
                Some(Event::Ignored(why)) => ui.note(&format!("ignored a sign-in callback: {why}")),
                Some(Event::Done(r)) => break r,
                None => break Err(Error::Local("the redirect listener stopped".into())),
            }
        };
        // Let the browser get its page before the listener goes away.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop.cancel();
        let _ = server.await;
        outcome
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>credbroker: {title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{body}</p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Text an IdP put in the callback, made safe to show in the page.
fn shown(s: &str) -> String {
    crate::upstream::short(s)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " _-.:".contains(*c))
        .collect()
}

async fn callback(
    State(cb): State<Arc<Callback>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut finished = cb.finished.lock().unwrap_or_else(|p| p.into_inner());
    if *finished {
        return page(
            StatusCode::GONE,
            "Already signed in",
            "This sign-in has finished. You can close this tab.",
        );
    }
    if !q.get("state").is_some_and(|s| same(s, &cb.state)) {
        let _ = cb.events.send(Event::Ignored(
            "its state is not the one sent (forged or stale link)",
        ));
        return page(
            StatusCode::BAD_REQUEST,
            "Not this sign-in",
            "This response does not belong to the sign-in credbroker is waiting for (state mismatch). It was ignored.",
        );
    }
    if let Some(iss) = q.get("iss")
        && iss.trim_end_matches('/') != cb.issuer
    {
        *finished = true;
        let _ = cb.events.send(Event::Done(Err(Error::Protocol(
            "the sign-in response names another issuer (RFC 9207 iss mismatch)".into(),
        ))));
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "The response came from another identity provider.",
        );
    }
    if let Some(err) = q.get("error") {
        *finished = true;
        let err = shown(err);
        let e = if err == "access_denied" {
            Error::Denied("the sign-in was denied at the identity provider (access_denied)".into())
        } else if err == "invalid_scope" {
            Error::Usage(
                "the identity provider refused the scopes asked for (invalid_scope): allow them \
                 for the client, or change login.scopes"
                    .into(),
            )
        } else {
            let desc = q
                .get("error_description")
                .map(|d| shown(d))
                .unwrap_or_default();
            Error::Protocol(format!(
                "the identity provider ended the sign-in: {err} {desc}"
            ))
        };
        let _ = cb.events.send(Event::Done(Err(e)));
        return page(
            StatusCode::OK,
            "Sign-in failed",
            &format!("The identity provider answered {err}. You can close this tab."),
        );
    }
    match q.get("code").filter(|c| !c.is_empty()) {
        Some(code) => {
            *finished = true;
            let _ = cb.events.send(Event::Done(Ok(secret(code.clone()))));
            page(
                StatusCode::OK,
                "Signed in",
                "credbroker has what it needs. You can close this tab.",
            )
        }
        None => page(
            StatusCode::BAD_REQUEST,
            "Incomplete response",
            "The response has neither a code nor an error.",
        ),
    }
}
