//! `credbroker healthcheck`: is the daemon alive (`/healthz`) or ready
//! (`/readyz`)? For container `HEALTHCHECK`s and Kubernetes `exec` probes,
//! so an image needs no curl or shell.
//!
//! The address is `--url`, else the daemon's live address from `daemon.json`
//! (else `server.listen`) through [`client::locate`], the same lookup every
//! client command uses. No ECS token is read or sent: the health routes need
//! none, and a probe must not depend on the token file.
//!
//! Exit codes: 0 healthy (or ready), 69 nothing answers, 3 the daemon
//! answers but is not ready (`/readyz` 503: some profile serves no valid
//! credentials), 64 a bad `--url` or config, 1 any other answer (something
//! else listens there, or a guard refused the probe). Failures are one line
//! on stderr; success is one line on stdout (container engines keep it in
//! the health log).

use super::Error;
use super::client::{self, Located};
use crate::config::Config;

/// Which route to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /healthz`: the process serves HTTP.
    Live,
    /// `GET /readyz`: every profile serves valid credentials.
    Ready,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Live => "/healthz",
            Probe::Ready => "/readyz",
        }
    }
}

/// Where to send the probe, and how we know (for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// Where the address came from: `--url`, `daemon.json` or `server.listen`.
    pub source: String,
}

/// The target named by `--url` (`http://host:port`, a path is not allowed:
/// the probe picks it).
pub fn target_from_url(url: &str) -> Result<Target, Error> {
    let bad = |why: &str| Error::Usage(format!("--url {url:?}: {why}; expected http://HOST:PORT"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad("only http is served"));
    }
    if parsed.host_str().is_none() || parsed.port_or_known_default().is_none() {
        return Err(bad("no host"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(bad("no path or query (the probe adds /healthz or /readyz)"));
    }
    Ok(Target {
        base: url.trim_end_matches('/').to_owned(),
        source: "--url".to_owned(),
    })
}

/// The running daemon's address from the config (`daemon.json`, else
/// `server.listen`).
pub fn target_from_config(cfg: &Config) -> Result<Target, Error> {
    let Located {
        addr, daemon_file, ..
    } = client::locate(cfg)?;
    let source = daemon_file.map_or_else(
        || "server.listen; no daemon.json in server.runtime_dir".to_owned(),
        |f| f.display().to_string(),
    );
    Ok(Target {
        base: client::base_url(addr),
        source,
    })
}

/// The address part of a base URL, for messages.
fn shown(base: &str) -> &str {
    base.strip_prefix("http://").unwrap_or(base)
}

/// Probe once; `Ok` is the one line to print.
pub async fn probe(target: &Target, probe: Probe) -> Result<String, Error> {
    let http = client::loopback_http()?;
    let url = format!("{}{}", target.base, probe.path());
    let at = shown(&target.base);
    let resp = http.get(&url).send().await.map_err(|e| {
        let what = if e.is_timeout() {
            format!("the daemon at {at} did not answer {} in time", probe.path())
        } else {
            format!("no credbroker daemon answers at {at}")
        };
        Error::Unavailable(format!(
            "unhealthy: {what} (address from {})",
            target.source
        ))
    })?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    match (probe, status, body.as_str()) {
        (Probe::Live, 200, "ok") => Ok(format!("healthy: credbroker at {at} is alive")),
        (Probe::Ready, 200, "ready") => Ok(format!(
            "ready: credbroker at {at} serves valid credentials for every profile"
        )),
        (Probe::Ready, 503, _) => Err(Error::NotServing(format!(
            "not ready: credbroker at {at} is alive, but some profile serves no valid \
             credentials yet (`credbroker status` says which and why)"
        ))),
        (_, 403, _) => Err(Error::Other(format!(
            "unhealthy: {at} refused the probe (HTTP 403): the daemon answers loopback \
             peers and its allowed hosts only; probe from inside its network namespace"
        ))),
        (_, code, _) => Err(Error::Other(format!(
            "unhealthy: {at} answered {} with HTTP {code}, not as credbroker does \
             (is something else listening there?)",
            probe.path()
        ))),
    }
}

/// `credbroker healthcheck`: probe, print one line, exit 0; or fail.
pub async fn run(target: &Target, which: Probe) -> Result<u8, Error> {
    let line = probe(target, which).await?;
    super::out(format!("{line}\n").as_bytes())
}
