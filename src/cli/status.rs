//! `credbroker status`: the running daemon's per-profile state.

use std::net::SocketAddr;

use serde_json::Value;

use super::Error;
use super::client::{DaemonClient, SERVING};
use crate::config::Config;

/// What `credbroker status` found.
#[derive(Debug)]
pub struct StatusReport {
    /// The text (or JSON) to print.
    pub output: String,
    /// Profiles that are not serving valid credentials: name, state, and
    /// what to do.
    pub not_serving: Vec<(String, String, String)>,
}

/// `credbroker status`: fetch `/v1/status` from the running daemon.
pub async fn status(cfg: &Config, json: bool) -> Result<StatusReport, Error> {
    let client = DaemonClient::connect(cfg)?;
    let doc = client.status().await?;
    let v = &doc.value;
    let not_serving = v["profiles"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(n, p)| {
                    (
                        n.clone(),
                        p["state"].as_str().unwrap_or("unknown").to_owned(),
                        super::client::not_serving_hint(n, p),
                    )
                })
                .filter(|(_, st, _)| !SERVING.contains(&st.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let output = if json {
        format!("{}\n", doc.body)
    } else {
        render(client.addr(), v)
    };
    Ok(StatusReport {
        output,
        not_serving,
    })
}

/// `credbroker status`: print the report; exit 3 (naming them) when some
/// profile serves no valid credentials.
pub async fn run(cfg: &Config, json: bool) -> Result<u8, Error> {
    let report = status(cfg, json).await?;
    super::out(report.output.as_bytes())?;
    if report.not_serving.is_empty() {
        return Ok(0);
    }
    let names: Vec<String> = report
        .not_serving
        .iter()
        .map(|(n, s, hint)| format!("{n} ({s}): {hint}"))
        .collect();
    Err(Error::NotServing(format!(
        "not serving: {}",
        names.join(", ")
    )))
}

fn rows(v: &Value) -> Vec<[String; 6]> {
    let s = |x: &Value| x.as_str().unwrap_or("-").to_owned();
    v["profiles"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, p)| {
                    [
                        name.clone(),
                        match p["guest"].as_bool() {
                            Some(true) => format!("{} (guest)", s(&p["state"])),
                            _ => s(&p["state"]),
                        },
                        p["access_key_id_suffix"]
                            .as_str()
                            .map(|k| format!("…{k}"))
                            .unwrap_or("-".into()),
                        s(&p["expiration"]),
                        s(&p["next_refresh"]),
                        p["last_error"]["kind"].as_str().unwrap_or("-").to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

fn render(addr: SocketAddr, v: &Value) -> String {
    let s = |x: &Value| x.as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "credbroker {} at {addr} (IMDS profile: {})\n",
        s(&v["version"]),
        s(&v["imds_profile"])
    );
    if let Some(e) = v["config_error"].as_str() {
        out.push_str(&format!(
            "config reload refused (the daemon keeps the previous config): {e}\n"
        ));
    }
    let rows = rows(v);
    let head = [
        "PROFILE",
        "STATE",
        "KEY",
        "EXPIRES",
        "NEXT REFRESH",
        "LAST ERROR",
    ]
    .map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(m) = v["profiles"].as_object() {
        for (name, p) in m {
            if let Some(msg) = p["last_error"]["message"].as_str() {
                out.push_str(&format!("{name}: {msg}\n"));
            }
        }
        for (name, p) in m {
            out.push_str(&callers(name, &p["callers"]));
        }
    }
    out
}

/// `NAME: last callers` lines: who fetched, newest first.
fn callers(name: &str, list: &Value) -> String {
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut out = format!("{name}: last callers\n");
    for c in list {
        let num = |k: &str| c[k].as_u64().map_or("?".to_owned(), |n| n.to_string());
        let pid = c["pid"]
            .as_u64()
            .map_or(String::new(), |p| format!(" pid {p}"));
        let exe = c["exe"].as_str().map_or(String::new(), |e| format!(" {e}"));
        out.push_str(&format!(
            "  uid {}{pid}{exe} via {} ({} connection(s), last {}{})\n",
            num("uid"),
            c["route"].as_str().unwrap_or("?"),
            num("connections"),
            c["last"].as_str().unwrap_or("?"),
            if c["refused"].as_bool() == Some(true) {
                ", refused"
            } else {
                ""
            },
        ));
    }
    out
}
