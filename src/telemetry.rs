//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Third-party HTTP and AWS SDK crates are capped at `debug` even when
//! `RUST_LOG=trace`: at trace level they dump raw requests and responses,
//! which carry refresh tokens, id tokens and session credentials. Our own
//! modules never log a secret at any level (tests grep the output for them).
//! Timestamps are left out under systemd (`JOURNAL_STREAM` set): journald
//! adds its own.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Crates whose trace output may contain secrets.
pub const CAPPED: [&str; 10] = [
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "aws_smithy_runtime_api",
    "aws_runtime",
    "aws_sdk_sts",
    "aws_sdk_cognitoidentity",
    "aws_sdk_cognitoidentityprovider",
    "aws_config",
    "hyper_util",
    "reqwest",
];

/// Build the filter for `spec` (a `RUST_LOG` value, or `None` for `info`).
/// When the spec asks for `trace` anywhere, the [`CAPPED`] crates are held at
/// `debug` (and hyper, rustls, tower at `info`); otherwise it is used as is.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.unwrap_or("");
    let mut f = EnvFilter::builder()
        .with_default_directive(tracing::Level::INFO.into())
        .parse_lossy(spec);
    if !spec.to_ascii_lowercase().contains("trace") {
        return f;
    }
    for c in CAPPED {
        if let Ok(d) = format!("{c}=debug").parse::<Directive>() {
            f = f.add_directive(d);
        }
    }
    for c in ["hyper", "h2", "rustls", "tower"] {
        if let Ok(d) = format!("{c}=info").parse::<Directive>() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Install the global subscriber (idempotent: later calls are ignored).
pub fn init() {
    let spec = std::env::var("RUST_LOG").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(spec.as_deref()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
