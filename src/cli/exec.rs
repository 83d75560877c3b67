//! `credbroker exec -- CMD ARGS…`: run a command whose AWS SDKs get the
//! profile's credentials from the daemon's ECS endpoint.
//!
//! The child's environment (protocol.md 2.1 and 4.1):
//!
//! * **set**: `AWS_CONTAINER_CREDENTIALS_FULL_URI` (this profile's ECS URL)
//!   and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (or, with
//!   `--inline-token`, `AWS_CONTAINER_AUTHORIZATION_TOKEN`); `AWS_REGION` and
//!   `AWS_DEFAULT_REGION` when unset (from each other, else the profile's
//!   region: botocore reads only the second, the other SDKs the first);
//!   `NO_PROXY`/`no_proxy` extended by the loopback hosts when a proxy
//!   variable is set (botocore and Rust would send the loopback request
//!   through the proxy).
//! * **removed**: everything in [`REMOVED`], each with its reason: the
//!   variables an SDK's credential chain consults *before* the container
//!   provider, the one that wins over `FULL_URI`, the token variable of the
//!   other mode, and the IMDS endpoint settings (Java falls through to IMDS
//!   when the container provider fails, and must not reach another role).
//! * **kept**: everything else, including `AWS_CONFIG_FILE`,
//!   `AWS_SHARED_CREDENTIALS_FILE` (they hold more than credentials) and the
//!   `AWS_EC2_METADATA_*DISABLED` switches (they only restrict IMDS). A
//!   `[default]` profile with credentials in those files would still win in
//!   every SDK; `exec` warns about it.
//!
//! The daemon must answer before the child is spawned (exit 69 otherwise).
//! The exit code is the child's (128+n when signal n killed it); SIGINT,
//! SIGTERM and SIGHUP are forwarded to it. SIGINT is not forwarded while
//! credbroker is in the terminal's foreground process group: the terminal
//! has already sent Ctrl-C to the child, which shares that group, and a
//! second one would make many programs quit without cleaning up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::client::{DaemonClient, SERVING, not_serving_hint};
use super::{Error, TokenMode, resolve_profile};
use crate::config::{Config, Env};
use crate::secret::ExposeSecret;

/// Removed from the child's environment, with the reason.
pub const REMOVED: [(&str, &str); 19] = [
    (
        "AWS_ACCESS_KEY_ID",
        "static keys come first in every SDK's chain",
    ),
    (
        "AWS_SECRET_ACCESS_KEY",
        "static keys come first in every SDK's chain",
    ),
    ("AWS_SESSION_TOKEN", "goes with the static keys"),
    (
        "AWS_SECURITY_TOKEN",
        "boto2's name for the session token, still read by botocore",
    ),
    (
        "AWS_CREDENTIAL_EXPIRATION",
        "expiry of static keys (botocore, JS)",
    ),
    (
        "AWS_ACCOUNT_ID",
        "account of static keys; would mislabel the daemon's",
    ),
    (
        "AWS_PROFILE",
        "a named profile's credentials win over the container provider",
    ),
    (
        "AWS_DEFAULT_PROFILE",
        "the older name of AWS_PROFILE (botocore, CLI v1)",
    ),
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "web identity comes before the container provider",
    ),
    ("AWS_ROLE_ARN", "goes with AWS_WEB_IDENTITY_TOKEN_FILE"),
    (
        "AWS_ROLE_SESSION_NAME",
        "goes with AWS_WEB_IDENTITY_TOKEN_FILE",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "wins over FULL_URI in every SDK",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "Java prefers it to the token file (set with --inline-token)",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "the other SDKs prefer it to the inline token (set without --inline-token)",
    ),
    (
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "Java falls through to IMDS when the container provider fails",
    ),
    (
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "goes with the IMDS endpoint",
    ),
    ("AWS_IMDS_USE_IPV6", "botocore's legacy IMDS endpoint mode"),
    (
        "AWS_CREDENTIAL_FILE",
        "boto2 credential file, read by botocore before the container provider",
    ),
    (
        "BOTO_CONFIG",
        "boto2 config, read by botocore before the container provider",
    ),
];

/// Proxy variables botocore and the Rust SDK honour even for loopback.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// How the child gets the ECS token.
#[derive(Clone, Copy)]
pub enum ChildToken<'a> {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    File(&'a Path),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` (a secret in the child's environment).
    Inline(&'a str),
}

/// The changes to the child's environment: `remove` first, then `set`.
/// (No `Debug`: with an inline token, `set` holds a secret.)
pub struct Plan {
    /// Variables to remove.
    pub remove: Vec<&'static str>,
    /// Variables to set.
    pub set: Vec<(String, String)>,
}

/// What to change in `env` for a child that uses `url` with `token`.
pub fn plan(env: &Env, url: &str, token: ChildToken<'_>, region: &str) -> Plan {
    let get = |k: &str| env.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let mut set = vec![(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
        url.to_owned(),
    )];
    set.push(match token {
        ChildToken::File(p) => (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_owned(),
            p.display().to_string(),
        ),
        ChildToken::Inline(t) => ("AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned(), t.to_owned()),
    });
    let (r, d) = (get("AWS_REGION"), get("AWS_DEFAULT_REGION"));
    if r.is_none() {
        let v = d.clone().unwrap_or_else(|| region.to_owned());
        set.push(("AWS_REGION".to_owned(), v));
    }
    if d.is_none() {
        let v = r.unwrap_or_else(|| region.to_owned());
        set.push(("AWS_DEFAULT_REGION".to_owned(), v));
    }
    if PROXY_VARS.iter().any(|k| get(k).is_some()) {
        for k in ["NO_PROXY", "no_proxy"] {
            let mut hosts: Vec<String> = get(k)
                .map(|v| v.split(',').map(|h| h.trim().to_owned()).collect())
                .unwrap_or_default();
            hosts.retain(|h| !h.is_empty());
            for h in LOOPBACK_HOSTS {
                if !hosts.iter().any(|x| x == h) {
                    hosts.push(h.to_owned());
                }
            }
            set.push((k.to_owned(), hosts.join(",")));
        }
    }
    Plan {
        remove: REMOVED.iter().map(|(k, _)| *k).collect(),
        set,
    }
}

/// `credbroker exec`.
pub async fn run(
    cfg: &Config,
    env: &Env,
    profile: Option<&str>,
    mode: TokenMode,
    argv: &[OsString],
) -> Result<u8, Error> {
    let p = resolve_profile(cfg, profile)?;
    let client = DaemonClient::connect(cfg)?;
    // The daemon must answer (and accept our token) before anything runs.
    let doc = client.status().await?;
    match doc.profile(&p.name) {
        None => {
            return Err(Error::Usage(format!(
                "the daemon at {} does not serve profile {:?} (started with another config? \
                 restart it)",
                client.addr(),
                p.name
            )));
        }
        Some(st) if !SERVING.contains(&st["state"].as_str().unwrap_or("")) => {
            eprintln!("credbroker: warning: {}", not_serving_hint(&p.name, st));
        }
        Some(_) => {}
    }
    for w in shadowing_profiles(env) {
        eprintln!("credbroker: warning: {w}");
    }
    let url = format!("{}/v1/credentials/{}", client.base(), p.name);
    let token = match mode {
        TokenMode::File => ChildToken::File(client.token_file()),
        TokenMode::Inline => ChildToken::Inline(client.token().expose_secret()),
    };
    let plan = plan(env, &url, token, &p.region);
    run_child(argv, &plan).await
}

/// Spawn, forward signals, and return the child's exit code.
async fn run_child(argv: &[OsString], plan: &Plan) -> Result<u8, Error> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Usage("exec: no command given".into()));
    };
    // Installed before the spawn, so no signal meant for the child can kill
    // us first and orphan it.
    let mut signals = Signals::install()?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for k in &plan.remove {
        cmd.env_remove(k);
    }
    cmd.envs(plan.set.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().map_err(|e| {
        let shown = program.to_string_lossy();
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::Spawn {
                code: 127,
                message: format!("exec: {shown}: command not found"),
            },
            _ => Error::Spawn {
                code: 126,
                message: format!("exec: {shown}: {e}"),
            },
        }
    })?;
    let pid = child.id();
    // Reaped only here, by `try_wait`, on the task that also forwards the
    // signals: a forwarded signal can never reach a reused pid.
    loop {
        let exited = child
            .try_wait()
            .map_err(|e| Error::Other(format!("exec: waiting for the command: {e}")))?;
        if let Some(status) = exited {
            return Ok(exit_code(status));
        }
        tokio::select! {
            // SIGCHLDs coalesce; a periodic look costs nothing.
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            sig = signals.next() => if let Some(sig) = sig {
                forward(pid, sig);
            },
        }
    }
}

/// The shell convention: the exit code, or 128+n for signal n.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(n)) => (128 + (n & 0x7f)) as u8,
        (None, None) => 1,
    }
}

/// The signals `exec` forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Int,
    Term,
    Hup,
}

struct Signals {
    child: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| Error::Other(format!("exec: cannot handle signals: {e}"));
        Ok(Signals {
            child: signal(SignalKind::child()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
            hup: signal(SignalKind::hangup()).map_err(err)?,
        })
    }

    /// The next signal to forward, or `None` for a SIGCHLD.
    async fn next(&mut self) -> Option<Sig> {
        tokio::select! {
            Some(()) = self.child.recv() => None,
            Some(()) = self.int.recv() => Some(Sig::Int),
            Some(()) = self.term.recv() => Some(Sig::Term),
            Some(()) = self.hup.recv() => Some(Sig::Hup),
            else => std::future::pending().await,
        }
    }
}

/// Send `sig` to the child (`kill(2)` through rustix's safe binding). The
/// child is not reaped yet (see [`run_child`]), so its pid cannot have been
/// reused.
fn forward(pid: u32, sig: Sig) {
    use rustix::process::{Pid, Signal, kill_process};
    if sig == Sig::Int && in_terminal_foreground() {
        return;
    }
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let signal = match sig {
        Sig::Int => Signal::INT,
        Sig::Term => Signal::TERM,
        Sig::Hup => Signal::HUP,
    };
    let _ = kill_process(pid, signal);
}

/// Are we in the foreground process group of our controlling terminal
/// (where Ctrl-C reaches the child directly)? From `/proc/self/stat`: pgrp,
/// tty_nr and tpgid are the 3rd, 5th and 6th fields after the command name.
fn in_terminal_foreground() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    matches!((f.get(2), f.get(4), f.get(5)), (Some(pgrp), Some(tty), Some(tpgid)) if *tty != "0" && pgrp == tpgid)
}

/// Warnings for a `[default]` profile in the shared AWS files that sets
/// credentials: every SDK uses those before the container provider.
pub fn shadowing_profiles(env: &Env) -> Vec<String> {
    let home = env.get("HOME").map(PathBuf::from).unwrap_or_default();
    let path = |var: &str, default: &str| {
        let p = env
            .get(var)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("~/{default}"));
        match p.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(p),
        }
    };
    let files = [
        (
            path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
            "AWS_SHARED_CREDENTIALS_FILE",
        ),
        (path("AWS_CONFIG_FILE", ".aws/config"), "AWS_CONFIG_FILE"),
    ];
    let mut out = Vec::new();
    for (file, var) in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let keys = default_credential_keys(&text);
        if !keys.is_empty() {
            out.push(format!(
                "[default] in {} sets {}, which SDKs use before the daemon's credentials \
                 (remove it from that profile, or point {var} elsewhere)",
                file.display(),
                keys.join(", ")
            ));
        }
    }
    out
}

/// Credential-bearing keys of `[default]` (or `[profile default]`) in an
/// AWS config or credentials file.
pub fn default_credential_keys(text: &str) -> Vec<String> {
    const KEYS: [&str; 7] = [
        "aws_access_key_id",
        "aws_session_token",
        "credential_process",
        "role_arn",
        "web_identity_token_file",
        "sso_session",
        "sso_start_url",
    ];
    let mut in_default = false;
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let s = section.split_whitespace().collect::<Vec<_>>().join(" ");
            in_default = s == "default" || s == "profile default";
        } else if in_default && let Some((k, _)) = line.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            if KEYS.contains(&k.as_str()) && !found.contains(&k) {
                found.push(k);
            }
        }
    }
    found
}
