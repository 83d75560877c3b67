//! Command line: the daemon (`serve`), its config (`check-config`), the
//! client commands that consume a running daemon (`status`, `env`, `exec`,
//! `credential-process`, `doctor`, `healthcheck`) and the generated
//! `completions` and `man`.
//!
//! Every client command finds the daemon through [`client`]: its live
//! address comes from `daemon.json` in the runtime directory (the daemon may
//! have bound port 0), falling back to `server.listen`, and it authenticates
//! with the ECS token. None of them ever calls upstream for credentials: the
//! daemon is the only one that talks to the IdP and AWS (`doctor` only checks
//! that the endpoints answer, without credentials).
//!
//! Exit codes ([`Error::exit_code`]): 0 success, 64 usage or config error, 69
//! the daemon is not reachable (or the port is taken, for `serve`), 3 a
//! profile is not serving valid credentials (`status`,
//! `credential-process`, `healthcheck --ready`), 1 anything else (`doctor`: some check failed);
//! `exec` exits with its child's code (128+n when a signal killed it).

pub mod client;
mod credential_process;
mod doctor;
mod env;
mod error;
mod exec;
mod generate;
mod healthcheck;
mod login;
mod status;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Env, ProfileConfig};

pub use client::{DaemonClient, base_url, daemon_addr};
pub use env::{TokenMode, env_lines};
pub use error::Error;
pub use generate::CompletionShell;
pub use status::{StatusReport, status};

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
        /// Profile to serve [default: server.imds_profile].
        #[arg(long)]
        profile: Option<String>,
        /// Point clients at an IMDS endpoint instead of the ECS endpoint: the
        /// profile's own (profiles.<name>.imds_listen), else the main
        /// listener, which serves server.imds_profile.
        #[arg(long)]
        imds: bool,
        /// Print the ECS token itself (AWS_CONTAINER_AUTHORIZATION_TOKEN) instead
        /// of its file, for clients that cannot read the token file (older Go
        /// and Ruby SDKs). The output then contains a secret.
        #[arg(long, conflicts_with = "imds")]
        inline_token: bool,
    },
    /// Run a command that gets the profile's credentials from the daemon
    /// (ECS container credentials), with every variable that would override
    /// them removed from its environment.
    Exec {
        /// Profile [default: server.imds_profile].
        #[arg(long)]
        profile: Option<String>,
        /// Hand the child AWS_CONTAINER_AUTHORIZATION_TOKEN (the token itself)
        /// instead of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE.
        #[arg(long)]
        inline_token: bool,
        /// The command and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD",
            value_parser = clap::value_parser!(OsString)
        )]
        command: Vec<OsString>,
    },
    /// Print the profile's credentials as `credential_process` JSON, read from
    /// the running daemon (never from upstream). For ~/.aws/config:
    /// `credential_process = credbroker credential-process --profile P`.
    CredentialProcess {
        /// Profile [default: server.imds_profile].
        #[arg(long)]
        profile: Option<String>,
    },
    /// Check the config, secret files, upstream endpoints, the clock and the
    /// running daemon's endpoints; print a fix for every failing check.
    Doctor {
        /// Check only this profile [default: all].
        #[arg(long)]
        profile: Option<String>,
        /// Print the checks as a JSON list.
        #[arg(long)]
        json: bool,
    },
    /// Sign in at the profile's identity provider and hand the refresh token
    /// to the daemon: the browser (authorization code + PKCE, loopback
    /// redirect) where one can be opened, else the device code flow.
    Login {
        /// Profile [default: the only one with an OIDC login, else server.imds_profile].
        #[arg(long)]
        profile: Option<String>,
        #[command(flatten)]
        flags: login::LoginFlags,
    },
    /// Sign out: revoke the refresh token at the identity provider, delete it
    /// and the cached identity, and have the daemon drop the credentials now.
    Logout {
        /// Profile [default: as for `login`].
        #[arg(long, conflicts_with = "all")]
        profile: Option<String>,
        /// Every profile with a sign-in.
        #[arg(long)]
        all: bool,
    },
    /// Probe the running daemon's /healthz (or /readyz with --ready) and exit
    /// 0 when it answers healthy: for container HEALTHCHECKs and Kubernetes
    /// exec probes (no curl or shell needed). Exit 69 when nothing answers,
    /// 3 when it is alive but not ready, 1 for any other answer.
    Healthcheck {
        /// Probe /readyz (every profile serves valid credentials) instead of
        /// /healthz (the daemon serves HTTP).
        #[arg(long)]
        ready: bool,
        /// The daemon's address, e.g. http://127.0.0.1:9911 [default: from
        /// daemon.json in server.runtime_dir, else server.listen; no config
        /// is read when this is given].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print a shell completion script (generated from these definitions).
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
    /// Print the man page (roff), of credbroker or of one subcommand.
    Man {
        /// A subcommand, e.g. `exec` [default: the main page].
        command: Option<String>,
    },
}

/// The process environment as a map.
pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// Load the config named by `--config` / the environment.
pub fn load_config(flag: Option<&Path>, env: &Env) -> Result<Config, Error> {
    let path = config::config_path(flag, env);
    Ok(config::load(&path, env)?)
}

/// Run one command line; the exit code is the process's.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: scripts (and credential_process callers) show it as is.
            eprintln!("credbroker: {}", e.to_string().replace('\n', " "));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let Cli { config, command } = cli;
    let env = process_env();
    // Only the commands that need a valid config load it (`doctor` reports
    // an invalid one as a failing check).
    let load = || load_config(config.as_deref(), &env);
    // The daemon logs as its config says; every other command with the
    // defaults (RUST_LOG, text).
    if !matches!(command, Command::Serve) {
        crate::telemetry::init();
    }
    match command {
        Command::Completions { shell } => out(&generate::completions(shell)),
        Command::Man { command } => out(&generate::man(command.as_deref())?),
        Command::Doctor { profile, json } => {
            doctor::run(config.as_deref(), &env, profile.as_deref(), json).await
        }
        Command::Serve => {
            let cfg = load()?;
            crate::telemetry::init_with(cfg.log.format, &cfg.log.level);
            serve(cfg).await
        }
        Command::CheckConfig => out(load()?.to_string().as_bytes()),
        Command::Status { json } => status::run(&load()?, json).await,
        Command::Env {
            profile,
            imds,
            inline_token,
        } => {
            let token = TokenMode::from_flag(inline_token);
            out(env_lines(&load()?, profile.as_deref(), imds, token)?.as_bytes())
        }
        Command::Exec {
            profile,
            inline_token,
            command,
        } => {
            let mode = TokenMode::from_flag(inline_token);
            exec::run(&load()?, &env, profile.as_deref(), mode, &command).await
        }
        Command::Login { profile, flags } => {
            login::login(&load()?, &env, profile.as_deref(), flags).await
        }
        Command::Logout { profile, all } => login::logout(&load()?, profile.as_deref(), all).await,
        Command::Healthcheck { ready, url } => {
            let target = match url {
                Some(u) => healthcheck::target_from_url(&u)?,
                None => healthcheck::target_from_config(&load()?)?,
            };
            let which = if ready {
                healthcheck::Probe::Ready
            } else {
                healthcheck::Probe::Live
            };
            healthcheck::run(&target, which).await
        }
        Command::CredentialProcess { profile } => {
            let doc = credential_process::document(&load()?, profile.as_deref()).await?;
            out(doc.as_bytes())
        }
    }
}

/// `credbroker serve`: the one place the daemon is started from the CLI.
async fn serve(cfg: Config) -> Result<u8, Error> {
    let clock = Arc::new(crate::clock::SystemClock);
    crate::app::run(cfg, clock, crate::shutdown::signal()).await?;
    Ok(0)
}

/// Write to stdout and flush. A reader that went away (`| head`) is not an
/// error; other write errors are (never a panic, as `print!` would).
fn out(bytes: &[u8]) -> Result<u8, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(0),
    }
}

/// The profile a client command is about: `--profile`, else
/// `server.imds_profile`; an unknown name is a usage error listing the known ones.
pub fn resolve_profile<'a>(
    cfg: &'a Config,
    name: Option<&str>,
) -> Result<&'a ProfileConfig, Error> {
    let name = name.unwrap_or(&cfg.server.imds_profile);
    cfg.profiles.get(name).ok_or_else(|| {
        Error::Usage(format!(
            "no profile named {name:?} (profiles: {})",
            cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests;
