//! `credbroker env`: the `export` lines that point a shell or container at
//! the daemon (ECS by default, IMDS with `--imds`).

use super::client::{self, base_url};
use super::{Error, resolve_profile};
use crate::config::Config;
use crate::secret::ExposeSecret;

/// How clients get the ECS token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read by the SDK per fetch).
    File,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` with the value itself.
    Inline,
}

impl TokenMode {
    /// From the `--inline-token` flag.
    pub fn from_flag(inline: bool) -> TokenMode {
        if inline {
            TokenMode::Inline
        } else {
            TokenMode::File
        }
    }
}

/// `credbroker env`.
pub fn env_lines(
    cfg: &Config,
    profile: Option<&str>,
    imds: bool,
    token: TokenMode,
) -> Result<String, Error> {
    if imds {
        return Ok(format!(
            "export AWS_EC2_METADATA_SERVICE_ENDPOINT={}/\n",
            imds_base(cfg, profile)?
        ));
    }
    let located = client::locate(cfg)?;
    let p = resolve_profile(cfg, profile)?;
    let token_line = match token {
        TokenMode::File => format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
            shell_quote(&cfg.server.ecs_token_file.display().to_string())
        ),
        TokenMode::Inline => format!(
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN={}",
            shell_quote(client::read_ecs_token(cfg)?.expose_secret())
        ),
    };
    Ok(format!(
        "export AWS_CONTAINER_CREDENTIALS_FULL_URI={}/v1/credentials/{}\n{token_line}\n",
        base_url(located.addr),
        p.name
    ))
}

/// The IMDS base URL for a profile: its own listener
/// (`profiles.<name>.imds_listen`, as bound per `daemon.json`, else as
/// configured); else the main listener, which serves only
/// `server.imds_profile` (and only with `server.imds`).
pub fn imds_base(cfg: &Config, profile: Option<&str>) -> Result<String, Error> {
    let located = client::locate(cfg)?;
    if let Some(name) = profile {
        let p = resolve_profile(cfg, Some(name))?;
        if let Some(configured) = p.imds_listen {
            let addr = located
                .imds_listeners
                .get(name)
                .copied()
                .unwrap_or(configured);
            return Ok(base_url(addr));
        }
        if name != cfg.server.imds_profile {
            return Err(Error::Usage(format!(
                "profile {name:?} has no IMDS endpoint of its own (set profiles.{name}.imds_listen), \
                 and the main listener's IMDS serves only server.imds_profile ({:?})",
                cfg.server.imds_profile
            )));
        }
    }
    if !cfg.server.imds {
        return Err(Error::Usage(
            "IMDS is disabled on the main listener (server.imds = false)".into(),
        ));
    }
    Ok(base_url(located.addr))
}

/// Quote for POSIX shells when needed (`eval "$(credbroker env)"`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
