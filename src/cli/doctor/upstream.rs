//! Upstream checks: the IdP's discovery document, the AWS endpoints (no
//! credential is ever sent: an unsigned GET, any HTTP answer counts), and
//! the local clock against their `Date` headers.
//!
//! Requests go the way the daemon's own would: the same proxy variables, no
//! redirects. Endpoints resolve as the daemon's AWS SDK resolves them: the
//! profile's `endpoint_url`, else `AWS_ENDPOINT_URL_<SERVICE>`, else
//! `AWS_ENDPOINT_URL`, else the regional endpoint (from *this* environment:
//! a daemon run by systemd may have another).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use url::Url;

use super::Report;
use crate::config::{Env, LoginConfig, ProfileConfig};

/// The clock may differ from upstream's by this much. A synchronised clock
/// is within a second; more than a minute means no time sync, which
/// eventually breaks id-token (`iat`/`exp`) checks upstream and makes SDKs
/// misjudge `Expiration`.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The `Date` headers seen: (URL, local time minus upstream time, seconds).
type Dates = Vec<(String, f64)>;

fn http() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(6))
        .user_agent(concat!("credbroker-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .ok()
}

/// A short, secret-free description of a request failure.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if e.is_connect() {
        format!("cannot connect ({root})")
    } else {
        root.to_string()
    }
}

/// GET `url`; on any HTTP answer, record its `Date` against our clock.
async fn probe(
    http: &reqwest::Client,
    url: &str,
    dates: &mut Dates,
) -> Result<reqwest::Response, String> {
    let resp = http.get(url).send().await.map_err(|e| describe(&e))?;
    let now = SystemTime::now();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate)
                .ok()
        })
        .and_then(|d| SystemTime::try_from(d).ok());
    if let Some(d) = date {
        let skew = match now.duration_since(d) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        dates.push((url.to_owned(), skew));
    }
    Ok(resp)
}

/// IdP, AWS and clock checks for `profiles`.
pub async fn check(profiles: &[&ProfileConfig], env: &Env, report: &mut Report) {
    let Some(http) = http() else {
        report.skip("upstream", "upstream", "cannot build an HTTP client");
        return;
    };
    let mut dates = Dates::new();
    idp(profiles, &http, &mut dates, report).await;
    aws(profiles, env, &http, &mut dates, report).await;
    clock(&dates, report);
}

/// URLs → the profiles that use them (one check per URL).
type ByUrl = BTreeMap<String, Vec<String>>;

async fn idp(
    profiles: &[&ProfileConfig],
    http: &reqwest::Client,
    dates: &mut Dates,
    report: &mut Report,
) {
    let (mut discovery, mut token) = (ByUrl::new(), ByUrl::new());
    for p in profiles {
        if let LoginConfig::Oidc(o) = &p.login {
            match (&o.issuer, &o.token_endpoint) {
                (_, Some(t)) => token.entry(t.to_string()).or_default(),
                (Some(i), None) => discovery
                    .entry(i.as_str().trim_end_matches('/').to_owned())
                    .or_default(),
                (None, None) => continue,
            }
            .push(p.name.clone());
        }
    }
    if discovery.is_empty() && token.is_empty() {
        report.skip(
            "idp",
            "IdP discovery",
            "no selected profile logs in with OIDC",
        );
    }
    for (issuer, names) in discovery {
        let id = format!("idp.discovery:{issuer}");
        let url = format!("{issuer}/.well-known/openid-configuration");
        let who = names.join(", ");
        let fix = format!(
            "is the IdP up, and is login.issuer right (profiles: {who})? \
             The daemon needs {url} (behind a proxy, set HTTPS_PROXY for it)"
        );
        match probe(http, &url, dates).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let doc: Option<serde_json::Value> = resp.json().await.ok();
                let problems = discovery_problems(&issuer, status, doc.as_ref());
                let ok = format!(
                    "{url}: token endpoint {}",
                    doc.as_ref()
                        .map_or("-", |d| d["token_endpoint"].as_str().unwrap_or("-"))
                );
                report.verdict(
                    id,
                    "IdP discovery",
                    ok,
                    problems
                        .into_iter()
                        .map(|p| format!("{url}: {p}"))
                        .collect(),
                    &fix,
                );
            }
            Err(e) => report.fail(id, "IdP discovery", format!("{url}: {e}"), fix),
        }
    }
    for (url, names) in token {
        let id = format!("idp.token-endpoint:{url}");
        match probe(http, &url, dates).await {
            Ok(resp) => report.pass(
                id,
                "IdP token endpoint",
                format!("{url} answered HTTP {}", resp.status().as_u16()),
            ),
            Err(e) => report.fail(
                id,
                "IdP token endpoint",
                format!("{url}: {e}"),
                format!(
                    "is the IdP up, and is login.token_endpoint right (profiles: {})?",
                    names.join(", ")
                ),
            ),
        }
    }
}

/// What is wrong with a discovery answer (empty: nothing).
pub fn discovery_problems(
    issuer: &str,
    status: u16,
    doc: Option<&serde_json::Value>,
) -> Vec<String> {
    if status != 200 {
        return vec![format!("HTTP {status}")];
    }
    let Some(doc) = doc else {
        return vec!["not a JSON document".into()];
    };
    let mut problems = Vec::new();
    match doc["issuer"].as_str() {
        Some(i) if i.trim_end_matches('/') == issuer => {}
        Some(i) => problems.push(format!("its issuer {i:?} is not login.issuer {issuer:?}")),
        None => problems.push("no issuer".into()),
    }
    match doc["token_endpoint"].as_str().map(Url::parse) {
        Some(Ok(u)) => {
            if let Err(e) = crate::net::check_upstream_url(&u) {
                problems.push(format!("token_endpoint {u}: {e}"));
            }
        }
        Some(Err(_)) => problems.push("token_endpoint is not a URL".into()),
        None => problems.push("no token_endpoint".into()),
    }
    problems
}

/// The AWS services a profile calls: (service id, `AWS_ENDPOINT_URL_*`
/// suffix, regional host prefix).
fn services(p: &ProfileConfig) -> Vec<(&'static str, &'static str, &'static str)> {
    const IDENTITY: (&str, &str, &str) =
        ("cognito-identity", "COGNITO_IDENTITY", "cognito-identity");
    const STS: (&str, &str, &str) = ("sts", "STS", "sts");
    const IDP: (&str, &str, &str) = ("cognito-idp", "COGNITO_IDENTITY_PROVIDER", "cognito-idp");
    let mut out = match p.aws.flow_name() {
        "cognito" => vec![IDENTITY],
        "sts" => vec![STS],
        _ => vec![IDENTITY, STS],
    };
    if matches!(p.login, LoginConfig::UserPool(_)) {
        out.push(IDP);
    }
    out
}

/// The endpoint the daemon's SDK would use for a service, and where it came from.
pub fn endpoint(p: &ProfileConfig, env: &Env, suffix: &str, host: &str) -> (String, String) {
    crate::upstream::aws::endpoint_override(p, env, suffix).unwrap_or_else(|| {
        (
            format!("https://{host}.{}.amazonaws.com/", p.region),
            "regional endpoint".into(),
        )
    })
}

async fn aws(
    profiles: &[&ProfileConfig],
    env: &Env,
    http: &reqwest::Client,
    dates: &mut Dates,
    report: &mut Report,
) {
    // URL → (service, source, profiles)
    let mut urls: BTreeMap<String, (&str, String, Vec<String>)> = BTreeMap::new();
    for p in profiles {
        for (service, suffix, host) in services(p) {
            let (url, source) = endpoint(p, env, suffix, host);
            urls.entry(url)
                .or_insert_with(|| (service, source, Vec::new()))
                .2
                .push(p.name.clone());
        }
    }
    for (url, (service, source, names)) in urls {
        let id = format!("aws:{service}@{url}");
        match probe(http, &url, dates).await {
            Ok(resp) => report.pass(
                id,
                "AWS endpoint",
                format!(
                    "{service} {url} ({source}) answered HTTP {}",
                    resp.status().as_u16()
                ),
            ),
            Err(e) => report.fail(
                id,
                "AWS endpoint",
                format!("{service} {url} ({source}): {e}"),
                format!(
                    "check DNS, firewall and proxy (HTTPS_PROXY) for the daemon; or set \
                     profiles.<name>.endpoint_url (profiles: {})",
                    names.join(", ")
                ),
            ),
        }
    }
}

fn clock(dates: &Dates, report: &mut Report) {
    let Some((url, skew)) = dates.first() else {
        report.skip(
            "clock",
            "clock skew",
            "no upstream answered with a Date header",
        );
        return;
    };
    // `Date` has whole seconds: within one is all it can tell.
    let detail = match skew {
        s if s.abs() < 1.0 => format!("local clock within 1 s of the Date of {url}"),
        s if *s > 0.0 => format!("local clock {s:.0} s ahead of the Date of {url}"),
        s => format!("local clock {:.0} s behind the Date of {url}", s.abs()),
    };
    if skew.abs() <= MAX_SKEW.as_secs_f64() {
        report.pass("clock", "clock skew", detail);
    } else {
        report.fail(
            "clock",
            "clock skew",
            detail,
            "synchronise the clock (e.g. timedatectl set-ntp true)",
        );
    }
}
