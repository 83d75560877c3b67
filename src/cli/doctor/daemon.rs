//! Daemon checks: it answers, each profile's state, and a live self-check
//! of its endpoints against the rules SDKs depend on (protocol.md 3.4):
//!
//! * IMDSv2: `PUT /latest/api/token` answers a token as `text/plain` with
//!   the TTL header echoed (Rust and Go fail without it); a token-less GET is
//!   401 unless `server.imds_v1`; the role list is the bare role name, no
//!   newline or whitespace (the Rust SDK panics on one); the role document
//!   is `text/plain` JSON with `"Code": "Success"` (Go requires it) and an
//!   `Expiration` ending in `Z` (Rust and JS reject offsets).
//! * ECS: with the token, `application/json` with the four fields and the
//!   same `Expiration` rule; without it, 401 with a JSON `{code, message}`
//!   (Go parses errors only as `application/json`).
//!
//! A profile that serves no credentials must answer 503 there, and does not
//! fail the self-check (its state check says why).

use std::net::SocketAddr;

use reqwest::Method;
use serde_json::Value;

use super::Report;
use crate::cli::Error;
use crate::cli::client::{Answer, DaemonClient, SERVING, StatusDoc, last_error};
use crate::config::{Config, ProfileConfig};

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL: &str = "21600";
const CREDS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

fn not_credbroker(addr: SocketAddr) -> String {
    format!(
        "credbroker does not answer like this: is another program listening on {addr} \
         (named by daemon.json, else server.listen)? Stop it, or restart the daemon; \
         if it is credbroker, report a bug"
    )
}

/// Daemon, profile and self-check lines.
pub async fn check(cfg: &Config, profiles: &[&ProfileConfig], report: &mut Report) {
    let client = match DaemonClient::connect(cfg) {
        Ok(c) => c,
        Err(e) => {
            let fix = match &e {
                Error::Usage(_) => "fix the file or directory named above".to_owned(),
                _ => {
                    "start the daemon: `credbroker serve` (or its systemd user service)".to_owned()
                }
            };
            report.fail("daemon", "daemon", e.to_string(), fix);
            report.skip("self-check", "self-check", "the daemon is not reachable");
            return;
        }
    };
    let Some(doc) = running(&client, report).await else {
        report.skip("self-check", "self-check", "the daemon is not running");
        return;
    };
    profile_states(doc.as_ref(), profiles, report);
    self_check(cfg, &client, doc.as_ref(), profiles, report).await;
}

/// `daemon`: `None` when nothing answers; `Some(None)` when something
/// answers but not with a status document.
async fn running(client: &DaemonClient, report: &mut Report) -> Option<Option<StatusDoc>> {
    let addr = client.addr();
    let health = match client
        .send(client.request(Method::GET, "/healthz"), addr)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            report.fail(
                "daemon",
                "daemon",
                e.to_string(),
                "start the daemon: `credbroker serve` (or its systemd user service)",
            );
            return None;
        }
    };
    let healthy = health.status == 200 && health.body == "ok";
    match (healthy, client.status().await) {
        (true, Ok(doc)) => {
            let pid = client
                .located()
                .pid
                .map(|p| format!(", pid {p}"))
                .unwrap_or_default();
            let version = doc.value["version"].as_str().unwrap_or("?").to_owned();
            report.pass(
                "daemon",
                "daemon",
                format!("credbroker {version} at {addr}{pid}"),
            );
            Some(Some(doc))
        }
        (_, status) => {
            let status = status.err().map_or_else(|| "ok".into(), |e| e.to_string());
            report.fail(
                "daemon",
                "daemon",
                format!(
                    "{addr} answers, but not as credbroker: /healthz HTTP {}; /v1/status: {status}",
                    health.status
                ),
                not_credbroker(addr),
            );
            Some(None)
        }
    }
}

/// `profile:<name>`: ready or retrying passes; anything else says what to do.
fn profile_states(doc: Option<&StatusDoc>, profiles: &[&ProfileConfig], report: &mut Report) {
    for p in profiles {
        let (id, title) = (format!("profile:{}", p.name), "profile state");
        let Some(doc) = doc else {
            report.skip(id, title, format!("{}: no status document", p.name));
            continue;
        };
        let Some(st) = doc.profile(&p.name) else {
            report.fail(
                id,
                title,
                format!("{}: the daemon does not serve this profile", p.name),
                "restart the daemon so that it loads this config (check -c / CREDBROKER_CONFIG)",
            );
            continue;
        };
        let state = st["state"].as_str().unwrap_or("unknown");
        if SERVING.contains(&state) {
            let s = |k: &str| st[k].as_str().unwrap_or("-").to_owned();
            report.pass(
                id,
                title,
                format!(
                    "{}: {state}; key …{}, expires {}, next refresh {}",
                    p.name,
                    s("access_key_id_suffix"),
                    s("expiration"),
                    s("next_refresh")
                ),
            );
        } else {
            let keychain = p.login.token_store() == Some(crate::config::StoreKind::Keyring);
            let fix = match (state, p.login.refresh_token_file()) {
                ("login_required" | "logged_out", Some(_)) if keychain => format!(
                    "run `credbroker login --profile {}` (the token is kept in the OS keychain)",
                    p.name
                ),
                ("login_required" | "logged_out", Some(f)) => format!(
                    "run `credbroker login --profile {}` (or write a new refresh token to {}; \
                     picked up at once)",
                    p.name,
                    f.display()
                ),
                _ => "see `credbroker status` and the upstream checks above".to_owned(),
            };
            let why = last_error(st)
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            report.fail(id, title, format!("{}: {state}{why}", p.name), fix);
        }
    }
}

async fn self_check(
    cfg: &Config,
    client: &DaemonClient,
    doc: Option<&StatusDoc>,
    profiles: &[&ProfileConfig],
    report: &mut Report,
) {
    // Some(false): the profile serves nothing now, so 503 is the right answer.
    let serving = |name: &str| {
        doc.and_then(|d| d.state(name))
            .map(|s| SERVING.contains(&s))
    };
    let main = &cfg.server.imds_profile;
    if let Some(p) = profiles.iter().find(|p| &p.name == main) {
        if cfg.server.imds {
            let l = Listener {
                addr: client.addr(),
                profile: p,
                serving: serving(main),
                v1: Some(cfg.server.imds_v1),
            };
            imds(client, &l, report).await;
        } else {
            report.skip(
                "imds",
                "IMDS",
                "server.imds = false: the main listener serves no IMDS",
            );
        }
    }
    for p in profiles {
        if let Some(configured) = p.imds_listen {
            let addr = client
                .located()
                .imds_listeners
                .get(&p.name)
                .copied()
                .unwrap_or(configured);
            let l = Listener {
                addr,
                profile: p,
                serving: serving(&p.name),
                v1: None,
            };
            imds(client, &l, report).await;
        }
    }
    for p in profiles {
        ecs(client, &p.name, serving(&p.name), report).await;
    }
    if let Some(p) = profiles.first() {
        ecs_unauthorized(client, &p.name, report).await;
    }
}

/// An IMDS listener and what it should serve.
struct Listener<'a> {
    addr: SocketAddr,
    profile: &'a ProfileConfig,
    serving: Option<bool>,
    /// Whether token-less GETs are allowed (`None`: not checked here).
    v1: Option<bool>,
}

impl Listener<'_> {
    /// `127.0.0.1:9912 (dev)`: how the lines name this listener.
    fn at(&self) -> String {
        format!("{} ({})", self.addr, self.profile.name)
    }

    /// Record a verdict for check `kind` (`imds.token`, …) of this listener.
    fn verdict(&self, report: &mut Report, kind: &str, title: &str, ok: String, p: Vec<String>) {
        let at = self.at();
        report.verdict(
            format!("{kind}@{}", self.addr),
            title,
            format!("{at}: {ok}"),
            prefixed(&at, p),
            &not_credbroker(self.addr),
        );
    }
}

/// The IMDSv2 sequence SDKs run: token, (token-less GET,) role list, role.
async fn imds(client: &DaemonClient, l: &Listener<'_>, report: &mut Report) {
    let Some(token) = imds_token(client, l, report).await else {
        report.skip(
            format!("imds.credentials@{}", l.addr),
            "IMDS credentials",
            format!("{}: no token", l.at()),
        );
        return;
    };
    if let Some(v1) = l.v1 {
        imds_v2_only(client, l, v1, report).await;
    }
    let get = client
        .request_to(l.addr, Method::GET, CREDS_PATH)
        .header(TOKEN_HEADER, &token);
    let Ok(list) = client.send(get, l.addr).await else {
        return;
    };
    let problems = role_list_problems(&list, &l.profile.role_name);
    l.verdict(
        report,
        "imds.role-list",
        "IMDS role list",
        format!("{:?}", list.body),
        problems,
    );
    let role = list.body.trim();
    if list.status != 200 || role.is_empty() || role.contains(char::is_whitespace) {
        report.skip(
            format!("imds.credentials@{}", l.addr),
            "IMDS credentials",
            format!("{}: no usable role name", l.at()),
        );
        return;
    }
    let get = client
        .request_to(l.addr, Method::GET, &format!("{CREDS_PATH}{role}"))
        .header(TOKEN_HEADER, &token);
    if let Ok(c) = client.send(get, l.addr).await {
        let (ok, problems) =
            creds_problems(&c, Kind::Imds, l.serving, std::time::SystemTime::now());
        l.verdict(report, "imds.credentials", "IMDS credentials", ok, problems);
    }
}

/// `PUT /latest/api/token` → the token, when one was issued.
async fn imds_token(
    client: &DaemonClient,
    l: &Listener<'_>,
    report: &mut Report,
) -> Option<String> {
    let put = client
        .request_to(l.addr, Method::PUT, "/latest/api/token")
        .header(TTL_HEADER, TTL);
    let a = match client.send(put, l.addr).await {
        Ok(a) => a,
        Err(e) => {
            report.fail(
                format!("imds.token@{}", l.addr),
                "IMDS token",
                e.to_string(),
                "start the daemon, or check profiles.<name>.imds_listen",
            );
            return None;
        }
    };
    let ok = "token with TTL header echoed".to_owned();
    l.verdict(report, "imds.token", "IMDS token", ok, token_problems(&a));
    let token = a.body.trim().to_owned();
    (a.status == 200 && !token.is_empty()).then_some(token)
}

/// A token-less GET is 401 unless IMDSv1 is on.
async fn imds_v2_only(client: &DaemonClient, l: &Listener<'_>, v1: bool, report: &mut Report) {
    let get = client.request_to(l.addr, Method::GET, CREDS_PATH);
    let Ok(b) = client.send(get, l.addr).await else {
        return;
    };
    let problems = match (v1, b.status) {
        (false, 401) | (true, 200) => vec![],
        (false, s) => vec![format!(
            "a token-less GET got HTTP {s}, not 401 (server.imds_v1 = false)"
        )],
        (true, s) => vec![format!(
            "a token-less GET got HTTP {s} although server.imds_v1 = true"
        )],
    };
    let ok = if v1 {
        "token-less GETs allowed (server.imds_v1)"
    } else {
        "token-less GET refused (401)"
    };
    l.verdict(report, "imds.v2-only", "IMDS v2 only", ok.into(), problems);
}

fn prefixed(at: &str, problems: Vec<String>) -> Vec<String> {
    match problems.split_first() {
        Some((first, rest)) => std::iter::once(format!("{at}: {first}"))
            .chain(rest.iter().cloned())
            .collect(),
        None => problems,
    }
}

async fn ecs(client: &DaemonClient, profile: &str, serving: Option<bool>, report: &mut Report) {
    let addr = client.addr();
    let at = format!("{addr} ({profile})");
    let id = format!("ecs.credentials:{profile}@{addr}");
    let req = client
        .request(Method::GET, &format!("/v1/credentials/{profile}"))
        .header(
            reqwest::header::AUTHORIZATION,
            crate::secret::ExposeSecret::expose_secret(client.token()),
        );
    match client.send(req, addr).await {
        Ok(a) => {
            let (ok, problems) =
                creds_problems(&a, Kind::Ecs, serving, std::time::SystemTime::now());
            report.verdict(
                id,
                "ECS credentials",
                format!("{at}: {ok}"),
                prefixed(&at, problems),
                &not_credbroker(addr),
            );
        }
        Err(e) => report.fail(
            id,
            "ECS credentials",
            e.to_string(),
            "start the daemon: `credbroker serve`",
        ),
    }
}

async fn ecs_unauthorized(client: &DaemonClient, profile: &str, report: &mut Report) {
    let addr = client.addr();
    let req = client.request(Method::GET, &format!("/v1/credentials/{profile}"));
    let Ok(a) = client.send(req, addr).await else {
        return;
    };
    let mut problems = Vec::new();
    if a.status != 401 {
        problems.push(format!(
            "a GET without the token got HTTP {}, not 401",
            a.status
        ));
    }
    if !a.header("content-type").starts_with("application/json") {
        problems.push(format!("its Content-Type is {:?}, not application/json (the Go SDK then ignores the error body)", a.header("content-type")));
    }
    let body: Option<Value> = serde_json::from_str(&a.body).ok();
    if !body
        .as_ref()
        .is_some_and(|b| b["code"].is_string() && b["message"].is_string())
    {
        problems.push("its body is not a JSON {\"code\", \"message\"}".into());
    }
    if a.body.contains("AccessKeyId") {
        problems.push("it carries credentials".into());
    }
    report.verdict(
        format!("ecs.unauthorized@{addr}"),
        "ECS authorization",
        format!("{addr}: a GET without the token is refused (401, JSON error)"),
        prefixed(&addr.to_string(), problems),
        &not_credbroker(addr),
    );
}

/// What is wrong with a `PUT /latest/api/token` answer.
pub fn token_problems(a: &Answer) -> Vec<String> {
    let mut p = Vec::new();
    if a.status != 200 {
        p.push(format!("PUT /latest/api/token got HTTP {}", a.status));
        return p;
    }
    match a.header(TTL_HEADER) {
        TTL => {}
        "" => p.push(format!("the token response lacks the {TTL_HEADER} header (the AWS SDKs for Rust and Go then fail)")),
        v => p.push(format!("the token response's {TTL_HEADER} is {v:?}, not the requested {TTL}")),
    }
    if !a.header("content-type").starts_with("text/plain") {
        p.push(format!(
            "the token's Content-Type is {:?}, not text/plain",
            a.header("content-type")
        ));
    }
    if a.body.is_empty() || a.body.contains(char::is_whitespace) {
        p.push("the token is empty or contains whitespace".into());
    }
    p
}

/// What is wrong with a `GET …/security-credentials/` answer.
pub fn role_list_problems(a: &Answer, expected: &str) -> Vec<String> {
    let mut p = Vec::new();
    if a.status != 200 {
        p.push(format!("the role list got HTTP {}", a.status));
        return p;
    }
    if a.body.contains(char::is_whitespace) {
        p.push(format!("the role list {:?} contains a newline or whitespace (the AWS SDK for Rust panics, botocore gets 404)", a.body));
    } else if a.body != expected {
        p.push(format!(
            "the role list {:?} is not the profile's role_name {expected:?}",
            a.body
        ));
    }
    if !a.header("content-type").starts_with("text/plain") {
        p.push(format!(
            "the role list's Content-Type is {:?}, not text/plain",
            a.header("content-type")
        ));
    }
    p
}

/// Which credentials document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IMDS role document (`text/plain`, with `Code`).
    Imds,
    /// ECS document (`application/json`).
    Ecs,
}

/// Check a credentials answer → (what passed, problems). With `serving =
/// Some(false)` a 503 is expected instead.
pub fn creds_problems(
    a: &Answer,
    kind: Kind,
    serving: Option<bool>,
    now: std::time::SystemTime,
) -> (String, Vec<String>) {
    let ctype = match kind {
        Kind::Imds => "text/plain",
        Kind::Ecs => "application/json",
    };
    let mut p = Vec::new();
    if !a.header("content-type").starts_with(ctype) {
        p.push(format!(
            "Content-Type {:?}, not {ctype}",
            a.header("content-type")
        ));
    }
    if serving == Some(false) {
        if a.status != 503 {
            p.insert(
                0,
                format!(
                    "HTTP {} for a profile that serves no credentials (503 expected)",
                    a.status
                ),
            );
        }
        return (
            "HTTP 503, as it should be while the profile serves no credentials".into(),
            p,
        );
    }
    if a.status != 200 {
        p.insert(0, format!("HTTP {}", a.status));
        return (String::new(), p);
    }
    let Ok(doc) = serde_json::from_str::<Value>(&a.body) else {
        p.push("the body is not JSON".into());
        return (String::new(), p);
    };
    if kind == Kind::Imds && doc["Code"].as_str() != Some("Success") {
        p.push("no \"Code\": \"Success\" (the AWS SDK for Go rejects the document)".into());
    }
    for k in ["AccessKeyId", "SecretAccessKey", "Token"] {
        if doc[k].as_str().is_none_or(str::is_empty) {
            p.push(format!("{k} missing or empty"));
        }
    }
    let exp = doc["Expiration"].as_str().unwrap_or("");
    p.extend(expiration_problem(exp, now));
    let key = doc["AccessKeyId"]
        .as_str()
        .map(crate::secret::key_suffix)
        .unwrap_or_default();
    (format!("key …{key}, Expiration {exp}"), p)
}

/// `Expiration` must be `YYYY-MM-DDTHH:MM:SSZ` and in the future.
pub fn expiration_problem(exp: &str, now: std::time::SystemTime) -> Option<String> {
    let shape = exp.len() == 20
        && exp.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return Some(if exp.ends_with('Z') {
            format!("Expiration {exp:?} is not YYYY-MM-DDTHH:MM:SSZ")
        } else {
            format!(
                "Expiration {exp:?} does not end in Z (the AWS SDKs for Rust and JavaScript reject offsets)"
            )
        });
    }
    let t =
        aws_smithy_types::DateTime::from_str(exp, aws_smithy_types::date_time::Format::DateTime)
            .ok()
            .and_then(|d| std::time::SystemTime::try_from(d).ok());
    match t {
        Some(t) if t > now => None,
        Some(_) => Some(format!("Expiration {exp} is in the past")),
        None => Some(format!("Expiration {exp:?} is not a valid time")),
    }
}
