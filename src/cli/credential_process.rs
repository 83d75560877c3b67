//! `credbroker credential-process`: the AWS `credential_process` protocol,
//! answered from the running daemon.
//!
//! An SDK or the AWS CLI runs the command from `~/.aws/config`
//! (`credential_process = credbroker credential-process --profile dev`) and
//! reads one JSON document from stdout:
//!
//! ```json
//! {"Version": 1, "AccessKeyId": "…", "SecretAccessKey": "…",
//!  "SessionToken": "…", "Expiration": "2026-11-22T01:00:00Z"}
//! ```
//!
//! (`AccountId` is added when the daemon knows it.) The credentials come
//! from the daemon's ECS endpoint, never from upstream: fifty build jobs that
//! start at once cause fifty loopback reads and no IdP or AWS call. On any
//! failure stdout stays empty (an SDK would try to parse it) and stderr gets
//! one line saying what to do; the exit code tells scripts which case it was
//! (69 daemon down, 64 unknown profile, 3 no valid credentials).

use serde_json::{Map, Value};

use super::client::DaemonClient;
use super::{Error, resolve_profile};
use crate::config::Config;
use crate::secret::ExposeSecret;

/// The `credential_process` document for a profile, with its newline.
pub async fn document(cfg: &Config, profile: Option<&str>) -> Result<String, Error> {
    let p = resolve_profile(cfg, profile)?;
    let client = DaemonClient::connect(cfg)?;
    let creds = client.credentials(&p.name).await?;
    let mut doc = Map::new();
    doc.insert("Version".into(), Value::from(1));
    doc.insert("AccessKeyId".into(), creds.access_key_id.into());
    doc.insert(
        "SecretAccessKey".into(),
        creds.secret_access_key.expose_secret().into(),
    );
    doc.insert(
        "SessionToken".into(),
        creds.session_token.expose_secret().into(),
    );
    doc.insert("Expiration".into(), creds.expiration.into());
    if let Some(a) = creds.account_id {
        doc.insert("AccountId".into(), a.into());
    }
    let text = serde_json::to_string(&Value::Object(doc))
        .map_err(|e| Error::Other(format!("cannot render the document: {e}")))?;
    Ok(text + "\n")
}
