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
//!  signal ─► shutdown ─► CancellationToken ─┬─► refresher[profile] (one task per profile)
//!                                           ├─► server (one listener: IMDS + ECS + admin)
//!  SIGHUP / notify(watcher) ─► Wake ────────┘
//!
//!  refresher[p] ──(upstream: login ─► aws)──► ProfileStore[p] (tokio::watch, one writer)
//!                                                   │
//!                          server handlers ◄────────┘ (many readers, never call upstream)
//! ```
//!
//! | module | responsibility | may use |
//! |---|---|---|
//! | [`config`] | raw TOML/env → validated [`config::Config`]; redacted `Display` | `secret`, `fsutil` |
//! | [`secret`] | redaction helpers (`SecretString`, key suffixes) | – |
//! | [`clock`] | injectable wall clock | – |
//! | [`creds`] | [`creds::AwsCredentials`] and their pre-rendered wire bodies | `secret` |
//! | [`store`] | per-profile `watch` snapshot: served creds + status | `creds` |
//! | [`upstream`] | the one seam to the outside: IdP refresh and AWS exchange | `creds`, `config`, `fsutil` |
//! | [`refresher`] | schedule, backoff, login-required state; the only writer | `upstream` (trait), `store` |
//! | [`server`] | IMDS, ECS, health and status routes + security guards | `store`, `creds` — **never `upstream`** |
//! | [`watcher`] | file-change notifications → wake a profile's refresher | – |
//! | [`app`] | composition root: the only place that spawns long-lived tasks | everything |
//! | [`cli`] | `check-config`, `status`, `env` client commands | `config` |
//! | `testing` | fixtures for unit, socket and fuzz tests (hidden) | `server`, `store` |
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
pub mod cli;
pub mod clock;
pub mod config;
pub mod creds;
pub mod error;
pub mod fsutil;
pub mod refresher;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod upstream;
pub mod watcher;

/// Exit code for usage and configuration errors (sysexits `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when a needed service is unavailable: the port is taken, or the
/// daemon a client command talks to is not running (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
