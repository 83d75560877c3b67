//! A fault-injecting stand-in for the AWS JSON services (Cognito Identity,
//! Cognito user pools), for unit tests of reactions moto cannot produce: moto
//! never refuses a cached identity id and never rotates a user-pool refresh
//! token. It speaks awsJson1.1 on `127.0.0.1:0`: the operation comes from
//! `X-Amz-Target`, errors are `{"__type": CODE, "message": …}`.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// What the handler answers: a status and a JSON body.
pub type Answer = (u16, Value);

/// One recorded call: the operation (e.g. `GetId`) and its JSON input.
pub type Call = (String, Value);

/// A running fake; stops when dropped.
pub struct FakeAws {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Every call so far, in order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAws {
    /// Start a fake whose answers come from `handler(operation, input, n)`,
    /// where `n` counts earlier calls of that operation.
    pub async fn start<F>(handler: F) -> FakeAws
    where
        F: Fn(&str, &Value, usize) -> Answer + Send + Sync + 'static,
    {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let seen = calls.clone();
        let handler = Arc::new(handler);
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            let handler = handler.clone();
            async move {
                let op = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|t| t.rsplit('.').next())
                    .unwrap_or("")
                    .to_owned();
                let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = {
                    let mut c = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let n = c.iter().filter(|(o, _)| *o == op).count();
                    c.push((op.clone(), input.clone()));
                    n
                };
                let (status, body) = handler(&op, &input, n);
                answer(status, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let endpoint = format!(
            "http://{}",
            listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"))
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAws {
            endpoint,
            calls,
            task,
        }
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(o, _)| o == op)
            .count()
    }
}

fn answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    if let Some(t) = body.get("__type").and_then(Value::as_str)
        && let Ok(v) = t.parse()
    {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// An awsJson1.1 error answer.
pub fn error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        serde_json::json!({ "__type": code, "message": message }),
    )
}

/// An SDK config for the fake: region `us-east-1`, no credentials, the
/// fake's endpoint for every service, one attempt.
pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .no_credentials()
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// A JWT-shaped token (unsigned) expiring an hour from now.
pub fn jwt(sub: &str) -> String {
    use base64::Engine;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let payload = serde_json::json!({ "sub": sub, "iat": now, "exp": now + 3600 });
    format!(
        "{}.{}.sig",
        b64(br#"{"alg":"none"}"#),
        b64(payload.to_string().as_bytes())
    )
}
