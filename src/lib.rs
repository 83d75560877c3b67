//! # credbroker
//!
//! A long-running local credential broker. It holds an identity-provider
//! **refresh token** (OIDC or an Amazon Cognito user pool), turns it into AWS
//! credentials through Amazon Cognito Identity pools (enhanced or basic flow)
//! or STS `AssumeRoleWithWebIdentity`, refreshes both layers **before** they
//! expire, and serves the credentials on loopback in the EC2 instance-metadata
//! (IMDSv2) and ECS container-credentials formats, so unmodified AWS SDKs and
//! the AWS CLI pick them up.
//!
//! # Layout
//!
//! ```text
//!  signal ─► shutdown ─► root CancellationToken ─┬─► supervisor[profile] (child token each)
//!                                                 │     ├─► refresher[profile]  (the only writer of its store)
//!                                                 │     └─► imds listener[profile] (optional, imds_listen)
//!                                                 └─► main listener (IMDS + ECS + admin)
//!  config file (notify) / SIGHUP ─► reload ─► ConfigDiff ─► supervisor: start / stop / replace
//!                                                    └──► listeners: swap ListenerView
//!  refresh-token file (notify) / SIGHUP ─► Wake ─► refresher[profile]
//!  `credbroker login`/`logout` ─► POST /v1/profiles/{p}/… ─► control ─► supervisor: restart / drop
//!  Metrics (app) ─► server (requests, IMDS tokens, GET /metrics), refresher (outcomes),
//!                  upstream (call latency); optional metrics listener (/metrics, health)
//!  connection (serve) ─► audit::Connection (caller, tally) ─► audit writer thread ─► file / journal
//!                                                                  └─► last callers (/v1/status)
//!
//!  refresher[p] ──(upstream: login ─► aws)──► ProfileStore[p] (tokio::watch, one writer)
//!     (profiles on one refresh-token file share one login)   │
//!                      Registry (name → reader) ◄── supervisor (adds, replaces, removes)
//!                                │
//!                  server handlers (many readers, never call upstream)
//! ```
//!
//! | module | responsibility | uses |
//! |---|---|---|
//! | [`config`] | raw TOML/env → typed, validated [`config::Config`] (`raw`, `validate`, `display`); [`config::ConfigDiff`] for reloads | `net`, `fsutil`, `telemetry` (log format, filter check) |
//! | [`net`] | what counts as loopback; which upstream URLs are acceptable | – |
//! | [`secret`] | redaction helpers (`SecretString`, key suffixes) | – |
//! | [`clock`] | injectable wall clock | – |
//! | [`fsutil`] | atomic 0600 writes, secret-file reads, owner/mode checks of directories and files | – |
//! | [`creds`] | [`creds::AwsCredentials`] and their pre-rendered wire bodies | `secret` |
//! | [`metrics`] | the Prometheus registry and its typed handles (refresh counters, upstream timer, IMDS token counters, request counts); OpenMetrics rendering | – |
//! | [`store`] | per-profile `watch` snapshot: served creds + status | `creds` |
//! | [`upstream`] | the one seam to the outside: IdP refresh and AWS exchange; where a refresh token is kept (`token_store`: file or OS keychain) | `config`, `creds`, `clock`, `fsutil`, `metrics` (timer), `net`, `secret` |
//! | [`refresher`] | schedule, backoff, login-required state; the only writer | `upstream` (trait), `store`, `creds`, `clock`, `fsutil`, `metrics`, `secret` |
//! | [`server`] | IMDS, ECS, health, status, `/metrics` and login/logout notification routes + security guards; the audit layer (`trail`); connection cap and listen queue; the metrics-only listener | `store`, `creds`, `clock`, `metrics`, `net`, `secret`, `control`, `audit`, `peer` — **never `upstream`** |
//! | [`control`] | commands from the admin API to the app (`login`/`logout` finished for a profile): a channel the server sends on and the app's reload loop applies | – |
//! | [`login`] | interactive sign-in and sign-out, run by `credbroker login`/`logout` (never the daemon): OIDC discovery, device grant, code + PKCE with a loopback redirect, id_token validation (`jsonwebtoken`), RFC 7009 revocation; user pools through their hosted UI (the same code + PKCE flow at the pool's domain, checked against the pool's JWKS) or with a password or SRP (`aws-cognito-srp`) and MFA, `RevokeToken`; storing the token in the profile's token store (file or keychain) | `config`, `fsutil`, `net`, `secret`, `upstream` (token store, HTTP client) |
//! | [`watcher`] | file-change notifications → wake a profile's refresher | `refresher` (its `Wake`), `fsutil` |
//! | [`app`] | composition root, the only place that spawns long-lived tasks: `App::build`/`run`, `Deps` (source factory, listeners), the per-profile `supervisor`, `reload`, shared logins (`UpstreamSources`), readiness/status reporting (and the desktop notification) | everything above, `shutdown` |
//! | [`cli`] | `serve`, `check-config`; `login`, `logout`; client commands `status`, `env`, `exec`, `credential-process`, `doctor`, `healthcheck` through one daemon client (`cli::client`); `completions`, `man` | `app`, `clock`, `config`, `error`, `fsutil`, `login`, `net`, `secret`, `shutdown` |
//! | [`error`], [`shutdown`], [`telemetry`], [`systemd`] | start-up errors and exit codes; signals; logging with fixed caps (text or JSON, journald priorities); notify protocol and socket activation | `config` (error only), `net` (systemd) |
//! | [`desktop`] | a desktop notification when a profile comes to need a sign-in (feature `desktop-notify`, Linux session D-Bus) | – |
//! | [`peer`] | who owns the other end of a loopback connection (sock_diag), and the uid access policy | `fsutil` |
//! | [`audit`] | the audit trail: per-connection tally of credential fetches, one writer thread (pid/exe from the socket inode, JSON lines rotated by size, or journal events), last callers per profile | `creds` (timestamps), `fsutil`, `peer` |
//! | `testing` | fixtures for unit, socket and fuzz tests (hidden) | `server`, `store`, `creds`, `clock`, `secret` |
//!
//! Two rules hold throughout: the server never imports upstream code (the
//! serving path answers from memory in microseconds), and secrets never reach
//! `Debug`, `Display`, logs, status output or HTTP error bodies.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod creds;
pub mod desktop;
pub mod error;
pub mod fsutil;
pub mod login;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod refresher;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod upstream;
pub mod watcher;

/// Exit code of `credbroker status` when the daemon runs but some profile
/// serves no valid credentials (`login_required`, `expired`, `starting`), as
/// `systemctl status` exits 3 for a unit that is not active.
pub const EXIT_NOT_SERVING: u8 = 3;
/// Exit code for usage and configuration errors (sysexits `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when a needed service is unavailable: the port is taken, or the
/// daemon a client command talks to is not running (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
