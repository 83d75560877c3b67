//! `credbroker login` and `credbroker logout`: the terminal side of
//! [`crate::login`]. Everything for the user goes to stderr (stdout stays
//! clean for scripts); a live indicator runs only on a terminal.
//!
//! After a sign-in the running daemon is told (`POST
//! /v1/profiles/<p>/login`) and we wait briefly for the profile to serve, so
//! the last line says which role is being served. A sign-out tells the
//! daemon first (it stops refreshing, so nothing rotates the token while we
//! revoke it), then revokes and deletes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::client::{DaemonClient, SERVING};
use super::{Error, resolve_profile};
use crate::config::{Config, Env, LoginConfig, ProfileConfig};
use crate::login::{self, Method, Progress};

/// How long `login` waits for the daemon to serve the new sign-in.
const SERVE_WAIT: Duration = Duration::from_secs(10);

/// What `login` was asked for on the command line (flattened into the
/// `login` subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoginFlags {
    /// Device authorization grant: print a URL and a code to enter on any
    /// device (SSH sessions, containers, headless hosts).
    #[arg(long, conflicts_with = "browser")]
    pub device: bool,
    /// Browser sign-in (authorization code + PKCE).
    #[arg(long)]
    pub browser: bool,
    /// Browser sign-in, printing the URL instead of opening a browser.
    #[arg(long, conflicts_with = "device")]
    pub no_browser: bool,
    /// Give up after this long [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Cognito user pools: the username [default: login.username, else asked].
    #[arg(long)]
    pub username: Option<String>,
    /// Cognito user pools: sign in with the username and password
    /// (InitiateAuth), not the hosted UI [default without login.domain].
    #[arg(long, conflicts_with_all = ["device", "browser", "no_browser"])]
    pub password: bool,
    /// Cognito user pools: read the password (then any MFA code) from
    /// stdin, one per line, instead of prompting (for scripts; implies
    /// --password).
    #[arg(long, conflicts_with_all = ["device", "browser", "no_browser"])]
    pub password_stdin: bool,
}

impl LoginFlags {
    /// The flow: as asked, else the profile's default. An OpenID provider:
    /// the browser where one can be opened, the device grant elsewhere
    /// (SSH, containers, no display). A user pool: its hosted UI when
    /// `login.domain` is set (the URL printed where no browser can be
    /// opened: Cognito has no device grant), else the password.
    pub fn method(&self, env: &Env, profile: &ProfileConfig) -> Method {
        let asked_browser = self.browser || self.no_browser;
        let browser = Method::Browser {
            open: !self.no_browser && (self.browser || login::can_open_browser(env)),
        };
        if self.password || self.password_stdin {
            return Method::Password;
        }
        if self.device {
            return Method::Device;
        }
        match &profile.login {
            LoginConfig::UserPool(_) if profile.sign_in.hosted_ui.is_some() => browser,
            LoginConfig::UserPool(_) if !asked_browser => Method::Password,
            _ if asked_browser || login::can_open_browser(env) => browser,
            _ => Method::Device,
        }
    }
}

/// The terminal's view of a sign-in.
struct Term {
    tty: bool,
    frame: usize,
}

impl Term {
    fn new() -> Term {
        Term {
            tty: std::io::stderr().is_terminal(),
            frame: 0,
        }
    }
    fn line(&mut self, s: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K");
        }
        let _ = writeln!(e, "{s}");
    }
}

impl Progress for Term {
    fn device_code(&mut self, uri: &str, complete: Option<&str>, code: &str, expires: Duration) {
        self.line("To sign in, open this page in a browser on any device:");
        self.line(&format!("    {uri}"));
        self.line(&format!("and enter the code:  {code}"));
        if let Some(c) = complete {
            self.line(&format!("(or open {c} , which has the code in it)"));
        }
        self.line(&format!(
            "The code expires in {}. Waiting for approval… (Ctrl-C to cancel)",
            humantime::format_duration(expires)
        ));
    }
    fn browser_url(&mut self, url: &str, opened: bool) {
        if opened {
            self.line("Opened your browser to sign in. If it did not open, visit:");
        } else {
            self.line("To sign in, open this URL in a browser on this machine:");
        }
        self.line(&format!("    {url}"));
        self.line("Waiting for the browser to come back… (Ctrl-C to cancel)");
    }
    fn note(&mut self, msg: &str) {
        self.line(msg);
    }
    fn tick(&mut self, waited: Duration) {
        if !self.tty {
            return;
        }
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[2K{} waiting… {} s",
            FRAMES[self.frame],
            waited.as_secs()
        );
        let _ = e.flush();
    }
}

/// Answers for a password sign-in: from the terminal (the password hidden),
/// or from stdin lines with `--password-stdin` (password, then MFA codes).
struct Answers {
    username: Option<String>,
    from_stdin: bool,
}

impl Answers {
    fn line(&self, prompt: &str) -> Result<String, login::Error> {
        if !self.from_stdin {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let mut s = String::new();
        match std::io::stdin().read_line(&mut s) {
            Ok(0) => Err(login::Error::Usage(format!(
                "no input for {:?} (stdin is closed)",
                prompt.trim_end_matches([':', ' '])
            ))),
            Ok(_) => Ok(s.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => Err(login::Error::Local(format!("cannot read stdin: {e}"))),
        }
    }
}

impl login::Ask for Answers {
    fn username(&mut self) -> Result<String, login::Error> {
        match self.username.clone() {
            Some(u) => Ok(u),
            None if self.from_stdin => Err(login::Error::Usage(
                "--password-stdin needs the username from --username or login.username".into(),
            )),
            None => self.line("Username: "),
        }
    }
    fn password(&mut self, username: &str) -> Result<crate::secret::SecretString, login::Error> {
        let p = if self.from_stdin {
            self.line("password")?
        } else {
            rpassword::prompt_password(format!("Password for {username}: "))
                .map_err(|e| login::Error::Local(format!("cannot read the password: {e}")))?
        };
        if p.is_empty() {
            return Err(login::Error::Usage("the password is empty".into()));
        }
        Ok(crate::secret::secret(p))
    }
    fn mfa_code(&mut self, kind: &str) -> Result<String, login::Error> {
        self.line(&format!("MFA code from your {kind}: "))
    }
}

/// The profile to sign in to: `--profile`, else the only one with an OIDC
/// sign-in, else `server.imds_profile`.
fn sign_in_profile<'a>(cfg: &'a Config, name: Option<&str>) -> Result<&'a ProfileConfig, Error> {
    if name.is_none() {
        let mut oidc = cfg
            .profiles
            .values()
            .filter(|p| !matches!(p.login, LoginConfig::None));
        if let (Some(only), None) = (oidc.next(), oidc.next()) {
            return Ok(only);
        }
    }
    resolve_profile(cfg, name)
}

fn failed(e: login::Error) -> Error {
    Error::Spawn {
        code: e.exit_code(),
        message: e.to_string(),
    }
}

/// `credbroker login`.
pub async fn login(
    cfg: &Config,
    env: &Env,
    profile: Option<&str>,
    flags: LoginFlags,
) -> Result<u8, Error> {
    let p = sign_in_profile(cfg, profile)?;
    let method = flags.method(env, p);
    let mut term = Term::new();
    let timeout = flags.timeout.unwrap_or(Duration::from_secs(600));
    let mut answers = Answers {
        username: flags.username.clone(),
        from_stdin: flags.password_stdin,
    };
    let run = tokio::time::timeout(
        timeout,
        login::sign_in(p, env, method, &mut term, &mut answers),
    );
    let expired = |_| {
        Err(login::Error::Expired(format!(
            "no sign-in within {}; run `credbroker login` again",
            humantime::format_duration(timeout)
        )))
    };
    let outcome = if method != Method::Password {
        tokio::select! {
            r = run => r.unwrap_or_else(expired),
            _ = tokio::signal::ctrl_c() => Err(login::Error::Cancelled),
        }
    } else {
        // A password prompt reads the terminal synchronously: leave SIGINT
        // its default action (nothing is half-written; the store is atomic).
        run.await.unwrap_or_else(expired)
    };
    let subject = outcome.map_err(failed)?;
    let place = login::token_store(p).map(|s| s.describe());
    term.line(&format!(
        "Signed in as {subject}; the refresh token is stored in {}.",
        place.unwrap_or_default()
    ));
    tell_daemon(cfg, p, &mut term).await
}

/// Tell the daemon about the new sign-in and wait for it to serve.
async fn tell_daemon(cfg: &Config, p: &ProfileConfig, term: &mut Term) -> Result<u8, Error> {
    let client = match DaemonClient::connect(cfg) {
        Ok(c) => c,
        Err(e) => return Ok(no_daemon(term, &e)),
    };
    match client.command(&p.name, "login").await {
        Ok(names) => term.line(&format!(
            "The daemon is refreshing {} now.",
            names.join(", ")
        )),
        Err(e @ Error::Unavailable(_)) => return Ok(no_daemon(term, &e)),
        Err(e) => return Err(e),
    }
    let start = tokio::time::Instant::now();
    loop {
        let doc = client.status().await?;
        let state = doc.state(&p.name).unwrap_or("unknown").to_owned();
        if SERVING.contains(&state.as_str()) {
            let s = |k: &str| {
                doc.profile(&p.name)
                    .and_then(|v| v[k].as_str())
                    .unwrap_or("?")
                    .to_owned()
            };
            term.line(&format!(
                "Profile {} is serving credentials (key …{}, expires {}).",
                p.name,
                s("access_key_id_suffix"),
                s("expiration")
            ));
            return Ok(0);
        }
        if start.elapsed() >= SERVE_WAIT || state == "login_required" {
            let hint = doc
                .profile(&p.name)
                .map(|v| super::client::not_serving_hint(&p.name, v))
                .unwrap_or_default();
            return Err(Error::NotServing(format!(
                "signed in, but the daemon does not serve profile {} yet (state {state}): {hint}",
                p.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn no_daemon(term: &mut Term, e: &Error) -> u8 {
    term.line(&format!("No daemon is running ({e})."));
    term.line(
        "Start it with `credbroker serve` (or `systemctl --user start credbroker`); it will use this sign-in.",
    );
    0
}

/// `credbroker logout`.
pub async fn logout(cfg: &Config, profile: Option<&str>, all: bool) -> Result<u8, Error> {
    let targets: Vec<&ProfileConfig> = if all {
        let mut seen = std::collections::HashSet::new();
        cfg.profiles
            .values()
            .filter(|p| {
                p.login
                    .refresh_token_file()
                    .is_some_and(|f| seen.insert(crate::config::token_file_key(f)))
            })
            .collect()
    } else {
        vec![sign_in_profile(cfg, profile)?]
    };
    let client = DaemonClient::connect(cfg).ok();
    let mut term = Term::new();
    let mut code = 0;
    for p in targets {
        let dropped = match &client {
            Some(c) => match c.command(&p.name, "logout").await {
                Ok(names) => format!("the daemon dropped the credentials of {}", names.join(", ")),
                Err(Error::Unavailable(_)) => "no daemon is running".to_owned(),
                Err(e) => return Err(e),
            },
            None => "no daemon is running".to_owned(),
        };
        let out = match login::sign_out(p).await {
            Ok(out) => out,
            Err(e) => {
                // The token could not be read or deleted (a locked keychain,
                // an unreadable file): it is still stored, so the daemon
                // goes back to using it rather than staying signed out.
                if let Some(c) = &client {
                    let _ = c.command(&p.name, "login").await;
                }
                return Err(failed(e));
            }
        };
        let revoked = match (&out.revoked, out.had_token) {
            (_, false) => "no refresh token was stored".to_owned(),
            (Ok(()), true) => {
                "the refresh token was revoked at the identity provider and deleted".to_owned()
            }
            (Err(why), true) => {
                code = 1;
                format!(
                    "the refresh token was deleted here, but NOT revoked at the identity provider: {why}"
                )
            }
        };
        term.line(&format!("Signed out of {}: {revoked}; {dropped}.", p.name));
        if p.login.guest_until_login()
            && let Some(c) = &client
            && let Ok(names) = c.command(&p.name, "login").await
        {
            // The token and identity are gone: restarted, the profile serves
            // a fresh guest identity.
            term.line(&format!(
                "The daemon serves guest credentials for {} again (a new guest identity).",
                names.join(", ")
            ));
        }
    }
    Ok(code)
}
