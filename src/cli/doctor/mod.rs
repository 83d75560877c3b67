//! `credbroker doctor`: a checklist of everything credbroker needs, each
//! failing line with its fix.
//!
//! In order: the config is valid ([`local`]); the secret files exist with
//! safe owner and mode, and their directories are private ([`local`]); the
//! IdP's discovery document and the AWS endpoints answer, without any
//! credential sent, and the local clock agrees with their `Date` headers
//! ([`upstream`]); the daemon answers, each profile's state, and a live
//! self-check of the daemon's own IMDS and ECS endpoints against the wire
//! rules SDKs depend on (protocol.md 3.4) ([`daemon`]).
//!
//! Exit 0 when no check fails (skipped ones do not count), 1 otherwise; an
//! unknown `--profile` is a usage error (64). `--json` prints the checks as a
//! JSON list of `{id, title, status: pass|fail|skip, detail, fix?}`. Nothing
//! printed is a secret: tokens and keys are never shown (an access key id
//! only by its last four characters).

mod daemon;
mod local;
mod upstream;

/// The pure checks, for the unit tests.
#[cfg(test)]
pub(super) mod checks {
    pub use super::daemon::{Kind, creds_problems, role_list_problems, token_problems};
    pub use super::upstream::discovery_problems;
}

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::Error;
use crate::config::{self, Env, ProfileConfig};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Broken: the line says how to fix it.
    Fail,
    /// Not applicable, or not possible because an earlier check failed.
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`config`, `secret:server.ecs_token_file`,
    /// `imds.role-list@127.0.0.1:9911`, …).
    pub id: String,
    /// Short human title.
    pub title: String,
    /// Outcome.
    pub status: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do (failing checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The checklist so far; printed line by line as it grows unless `--json`.
#[derive(Debug, Default)]
pub struct Report {
    checks: Vec<Check>,
    live: bool,
}

const TITLE_WIDTH: usize = 18;

impl Report {
    fn push(&mut self, c: Check) {
        if self.live {
            let mark = match c.status {
                Outcome::Pass => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            let mut s = format!("{mark}  {:<w$}  {}\n", c.title, c.detail, w = TITLE_WIDTH);
            if let Some(fix) = &c.fix {
                s.push_str(&format!("      {:<w$}  fix: {fix}\n", "", w = TITLE_WIDTH));
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
        }
        self.checks.push(c);
    }

    /// A passing check.
    pub fn pass(&mut self, id: impl Into<String>, title: &str, detail: impl Into<String>) {
        self.push(Check {
            id: id.into(),
            title: title.into(),
            status: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        });
    }

    /// A failing check and its fix.
    pub fn fail(
        &mut self,
        id: impl Into<String>,
        title: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Check {
            id: id.into(),
            title: title.into(),
            status: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    /// A skipped check.
    pub fn skip(&mut self, id: impl Into<String>, title: &str, detail: impl Into<String>) {
        self.push(Check {
            id: id.into(),
            title: title.into(),
            status: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        });
    }

    /// Pass or fail from a list of problems found (none: pass with `ok`).
    pub fn verdict(
        &mut self,
        id: String,
        title: &str,
        ok: String,
        problems: Vec<String>,
        fix: &str,
    ) {
        if problems.is_empty() {
            self.pass(id, title, ok);
        } else {
            self.fail(id, title, problems.join("; "), fix);
        }
    }

    /// The checks so far.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Outcome::Fail)
            .count()
    }
}

/// `credbroker doctor`.
pub async fn run(
    config_flag: Option<&Path>,
    env: &Env,
    profile: Option<&str>,
    json: bool,
) -> Result<u8, Error> {
    let path = config::config_path(config_flag, env);
    let mut report = Report {
        live: !json,
        ..Report::default()
    };
    if !json {
        super::out(format!("credbroker doctor: {}\n", path.display()).as_bytes())?;
    }
    if let Some(cfg) = local::config(&path, env, &mut report) {
        let profiles: Vec<&ProfileConfig> = match profile {
            Some(_) => vec![super::resolve_profile(&cfg, profile)?],
            None => cfg.profiles.values().collect(),
        };
        local::secret_files(&cfg, &profiles, &mut report);
        local::private_dirs(&cfg, &profiles, &mut report);
        upstream::check(&profiles, env, &mut report).await;
        daemon::check(&cfg, &profiles, &mut report).await;
    }
    let failed = report.failed();
    if json {
        let text = serde_json::to_string_pretty(report.checks())
            .map_err(|e| Error::Other(format!("cannot render the checks: {e}")))?;
        super::out(format!("{text}\n").as_bytes())?;
    } else {
        let total = report.checks().len();
        let skipped = report
            .checks()
            .iter()
            .filter(|c| c.status == Outcome::Skip)
            .count();
        let summary = match failed {
            0 => format!("all {} checks passed", total - skipped),
            n => format!("{n} of {} checks failed", total - skipped),
        };
        let skipped = match skipped {
            0 => String::new(),
            n => format!(" ({n} skipped)"),
        };
        super::out(format!("{summary}{skipped}\n").as_bytes())?;
    }
    Ok(u8::from(failed > 0))
}
