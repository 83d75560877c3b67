//! Command line: `serve`, `check-config`, `status`, `env`.
//!
//! `status` and `env` talk to (or describe) the running daemon: its real
//! address comes from `daemon.json` in the runtime directory (the daemon may
//! have bound port 0), falling back to `server.listen`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::{DAEMON_FILE, DaemonInfo};
use crate::config::{self, Config, Env};
use crate::error::StartupError;
use crate::secret::ExposeSecret;

/// credbroker: keeps AWS credentials fresh from an IdP refresh token and
/// serves them to SDKs on loopback (IMDSv2 and ECS container credentials).
#[derive(Debug, Parser)]
#[command(name = "credbroker", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $CREDBROKER_CONFIG, else $XDG_CONFIG_HOME/credbroker/config.toml]
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (until SIGTERM/SIGINT).
    Serve,
    /// Validate the config and print it resolved (secrets are only ever paths).
    CheckConfig,
    /// Show the running daemon's per-profile state.
    Status {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Print the `export` lines a shell or container needs to use the daemon.
    Env {
        /// Profile to serve through the ECS endpoint [default: server.imds_profile].
        #[arg(long)]
        profile: Option<String>,
        /// Point clients at the IMDS endpoint instead of the ECS endpoint.
        #[arg(long)]
        imds: bool,
        /// Print the ECS token itself (AWS_CONTAINER_AUTHORIZATION_TOKEN) instead
        /// of its file, for clients that cannot read the token file (older Go
        /// and Ruby SDKs). The output then contains a secret.
        #[arg(long, conflicts_with = "imds")]
        inline_token: bool,
    },
}

/// The process environment as a map.
pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// Load the config named by the CLI / environment.
pub fn load_config(cli: &Cli, env: &Env) -> Result<Config, StartupError> {
    let path = config::config_path(cli.config.as_deref(), env);
    Ok(config::load(&path, env)?)
}

fn base_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    }
}

/// The daemon's live address (from `daemon.json`), else the configured one.
///
/// The runtime directory must be ours (another user who created it first
/// could point `daemon.json` anywhere, and `status` sends the ECS token
/// there), and the address must be loopback: anything else is refused with
/// an error naming the file.
pub fn daemon_addr(cfg: &Config) -> Result<SocketAddr, StartupError> {
    let dir = &cfg.server.runtime_dir;
    let path = dir.join(DAEMON_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(cfg.server.listen),
    };
    crate::fsutil::check_private_dir(dir)
        .map_err(|e| StartupError::Usage(format!("server.runtime_dir: {e}")))?;
    match serde_json::from_str::<DaemonInfo>(&text) {
        Ok(d) if crate::net::is_loopback(d.listen.ip()) => Ok(d.listen),
        Ok(d) => Err(StartupError::Usage(format!(
            "{} names {}, which is not a loopback address; refusing to use it \
             (remove the file; a running daemon writes it again on start)",
            path.display(),
            d.listen
        ))),
        Err(_) => Ok(cfg.server.listen),
    }
}

/// How `credbroker env` hands the ECS token to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read by the SDK per fetch).
    File,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` with the value itself.
    Inline,
}

/// `credbroker env`.
pub fn env_lines(
    cfg: &Config,
    profile: Option<&str>,
    imds: bool,
    token: TokenMode,
) -> Result<String, StartupError> {
    let base = base_url(daemon_addr(cfg)?);
    if imds {
        if !cfg.server.imds {
            return Err(StartupError::Usage(
                "IMDS is disabled (server.imds = false)".into(),
            ));
        }
        if let Some(p) = profile
            && p != cfg.server.imds_profile
        {
            return Err(StartupError::Usage(format!(
                "IMDS serves only server.imds_profile ({:?}), not {p:?}",
                cfg.server.imds_profile
            )));
        }
        return Ok(format!(
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT={base}/\n"
        ));
    }
    let p = profile.unwrap_or(&cfg.server.imds_profile);
    if !cfg.profiles.contains_key(p) {
        return Err(StartupError::Usage(format!(
            "no profile named {p:?} (profiles: {})",
            cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let token_line = match token {
        TokenMode::File => format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            shell_quote(&cfg.server.ecs_token_file.display().to_string())
        ),
        TokenMode::Inline => {
            let t = crate::fsutil::read_secret_file(&cfg.server.ecs_token_file).map_err(|e| {
                StartupError::Unavailable(format!(
                    "cannot read the ECS token file {}: {e} (start the daemon once to create it)",
                    cfg.server.ecs_token_file.display()
                ))
            })?;
            format!(
                "export AWS_CONTAINER_AUTHORIZATION_TOKEN={}",
                shell_quote(&t)
            )
        }
    };
    Ok(format!(
        "export AWS_CONTAINER_CREDENTIALS_FULL_URI={base}/v1/credentials/{p}\n{token_line}\n"
    ))
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What `credbroker status` found.
#[derive(Debug)]
pub struct StatusReport {
    /// The text (or JSON) to print.
    pub output: String,
    /// Profiles that are not serving valid credentials, with their state.
    pub not_serving: Vec<(String, String)>,
}

/// States in which a profile serves valid credentials.
const SERVING: [&str; 2] = ["ready", "retrying"];

/// `credbroker status`: fetch `/v1/status` from the running daemon.
pub async fn status(cfg: &Config, json: bool) -> Result<StatusReport, StartupError> {
    let addr = daemon_addr(cfg)?;
    let token = crate::fsutil::read_secret_file(&cfg.server.ecs_token_file).map_err(|e| {
        StartupError::Unavailable(format!(
            "cannot read the ECS token file {}: {e} (is the daemon running?)",
            cfg.server.ecs_token_file.display()
        ))
    })?;
    let token = crate::secret::secret(token);
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| StartupError::Other(e.to_string()))?;
    let resp = http
        .get(format!("{}/v1/status", base_url(addr)))
        .header(reqwest::header::AUTHORIZATION, token.expose_secret())
        .send()
        .await
        .map_err(|_| {
            StartupError::Unavailable(format!(
                "no credbroker daemon answers at {addr} (is it running?)"
            ))
        })?;
    let code = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !code.is_success() {
        return Err(StartupError::Unavailable(format!(
            "the daemon at {addr} answered HTTP {code}"
        )));
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| StartupError::Other("unreadable status document".into()))?;
    let not_serving = v["profiles"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(n, p)| {
                    (
                        n.clone(),
                        p["state"].as_str().unwrap_or("unknown").to_owned(),
                    )
                })
                .filter(|(_, st)| !SERVING.contains(&st.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let output = if json {
        format!("{body}\n")
    } else {
        render_status(addr, &v)
    };
    Ok(StatusReport {
        output,
        not_serving,
    })
}

fn render_status(addr: SocketAddr, v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "credbroker {} at {addr} (IMDS profile: {})\n",
        s(&v["version"]),
        s(&v["imds_profile"])
    );
    let rows: Vec<[String; 6]> = v["profiles"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, p)| {
                    [
                        name.clone(),
                        s(&p["state"]),
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
        .unwrap_or_default();
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path) -> Config {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:7777"
ecs_token_file = "{0}/my tokens/ecs-token"
runtime_dir = "{0}/run"
[profiles.default]
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:x" }}
[profiles.dev]
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:y" }}
"#,
            dir.display()
        );
        config::load_str(&text, std::path::Path::new("c.toml"), &Env::new()).unwrap()
    }

    #[test]
    fn env_prints_the_live_address_and_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let out = env_lines(&c, None, false, TokenMode::File).unwrap();
        assert!(
            out.contains(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:7777/v1/credentials/default\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='{}/my tokens/ecs-token'",
                dir.path().display()
            )),
            "{out}"
        );
        // The running daemon's address wins over server.listen.
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let info = DaemonInfo {
            pid: 1,
            listen: "127.0.0.1:4242".parse().unwrap(),
            imds_listeners: Default::default(),
            version: "v".into(),
        };
        std::fs::write(
            dir.path().join("run").join(DAEMON_FILE),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        let out = env_lines(&c, Some("dev"), false, TokenMode::File).unwrap();
        assert!(
            out.contains("http://127.0.0.1:4242/v1/credentials/dev\n"),
            "{out}"
        );
        assert_eq!(
            env_lines(&c, None, true, TokenMode::File).unwrap(),
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:4242/\n"
        );
        assert!(matches!(
            env_lines(&c, Some("nope"), false, TokenMode::File),
            Err(StartupError::Usage(_))
        ));
        assert!(matches!(
            env_lines(&c, Some("dev"), true, TokenMode::File),
            Err(StartupError::Usage(_))
        ));
    }

    #[test]
    fn daemon_file_must_be_loopback_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let run = dir.path().join("run");
        crate::fsutil::ensure_private_dir(&run).unwrap();
        let write = |addr: &str| {
            let info = DaemonInfo {
                pid: 1,
                listen: addr.parse().unwrap(),
                imds_listeners: Default::default(),
                version: "v".into(),
            };
            std::fs::write(run.join(DAEMON_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
        };
        write("[::1]:4242");
        assert_eq!(daemon_addr(&c).unwrap(), "[::1]:4242".parse().unwrap());
        write("192.0.2.7:9911");
        let e = daemon_addr(&c).unwrap_err();
        assert!(
            e.to_string().contains("192.0.2.7:9911") && e.to_string().contains("not a loopback"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::EXIT_USAGE);
        // A runtime directory others may write to is not trusted.
        write("127.0.0.1:4242");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = daemon_addr(&c).unwrap_err();
        assert!(e.to_string().contains("server.runtime_dir"), "{e}");
        assert!(env_lines(&c, None, false, TokenMode::File).is_err());
    }

    #[test]
    fn inline_token_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        assert!(matches!(
            env_lines(&c, None, false, TokenMode::Inline),
            Err(StartupError::Unavailable(_))
        ));
        crate::fsutil::write_atomic_private(&c.server.ecs_token_file, b"tok-123").unwrap();
        let out = env_lines(&c, None, false, TokenMode::Inline).unwrap();
        assert!(
            out.ends_with("export AWS_CONTAINER_AUTHORIZATION_TOKEN=tok-123\n"),
            "{out}"
        );
    }
}
