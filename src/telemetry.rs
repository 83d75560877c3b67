//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Third-party HTTP and AWS SDK crates are capped at `debug` **whatever
//! `RUST_LOG` says**: at trace level they dump raw requests and responses,
//! which carry refresh tokens, id tokens and session credentials. The cap is a
//! second, fixed per-layer filter ([`caps`]) that every event must also pass,
//! so no spelling of `RUST_LOG` (`trace`, `5`, `aws_smithy_runtime`,
//! `reqwest=`, `[{x}]=trace`, …) can raise those crates above it; a spec can
//! only lower them. Deciding from the spec's text instead (as an earlier
//! version did) misses spellings that mean trace without saying it.
//! Our own modules never log a secret at any level (tests grep the output).
//! Timestamps are left out under systemd (`JOURNAL_STREAM` set): journald
//! adds its own.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::FormatEvent;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Crates whose trace output may contain secrets: held at `debug`.
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

/// Noisy transport crates: held at `info`.
pub const QUIET: [&str; 4] = ["hyper", "h2", "rustls", "tower"];

/// The user's filter for `spec` (a `RUST_LOG` value, or `None` for `info`).
/// Unparsable directives are skipped (and the rest kept), as `RUST_LOG`
/// usually is.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(spec.unwrap_or(""))
}

/// The fixed ceiling every event must also pass: [`CAPPED`] at `debug`,
/// [`QUIET`] at `info`, everything else unrestricted (the user's filter
/// decides). The longest matching target wins, so `hyper_util` is `debug`
/// even though `hyper` is `info`.
pub fn caps() -> Targets {
    let t = CAPPED
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(*c, LevelFilter::DEBUG)
        });
    QUIET
        .iter()
        .fold(t, |t, c| t.with_target(*c, LevelFilter::INFO))
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Timestamps and levels (a terminal or a file).
    Plain,
    /// Under systemd (`JOURNAL_STREAM` set): no timestamp (journald adds
    /// its own) and a `<N>` syslog priority prefix, which journald turns into
    /// the entry's priority (`journalctl -p warning` works).
    Journald,
}

/// Prefixes each line with its syslog priority (sd-daemon(3) `SD_ERR`…).
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{prio}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// A formatting layer writing to `writer`, filtered by `spec` **and** [`caps`].
pub fn layer<S, W>(spec: Option<&str>, writer: W, ansi: bool, style: Style) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi && style == Style::Plain);
    let filter = filter(spec).and(caps());
    match style {
        Style::Plain => fmt.with_filter(filter).boxed(),
        Style::Journald => {
            let format = tracing_subscriber::fmt::format().without_time();
            fmt.event_format(Priority(format))
                .with_filter(filter)
                .boxed()
        }
    }
}

/// Install the global subscriber (idempotent: later calls are ignored).
pub fn init() {
    let spec = std::env::var("RUST_LOG").ok();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let style = if std::env::var_os("JOURNAL_STREAM").is_some() {
        Style::Journald
    } else {
        Style::Plain
    };
    let _ = tracing_subscriber::registry()
        .with(layer(spec.as_deref(), std::io::stderr, ansi, style))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Emit one trace and one debug event per capped target (and our own
    /// target) under `spec`; return what reached the log.
    fn run(spec: &str) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(layer(
            Some(spec),
            move || w.clone(),
            false,
            Style::Plain,
        ));
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "aws_smithy_runtime", "SECRET-smithy-trace");
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "SECRET-orchestrator-trace");
            tracing::trace!(target: "aws_smithy_http_client::hyper_1", "SECRET-http-trace");
            tracing::trace!(target: "aws_sdk_sts", "SECRET-sts-trace");
            tracing::trace!(target: "reqwest::connect", "SECRET-reqwest-trace");
            tracing::trace!(target: "hyper_util::client", "SECRET-hyper-util-trace");
            tracing::debug!(target: "hyper::proto", "hyper-debug");
            tracing::debug!(target: "aws_smithy_runtime", "smithy-debug");
            tracing::trace!(target: "credbroker::refresher", "own-trace");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_rust_log_spelling_lets_sdk_trace_output_through() {
        // Each of these means "trace" for the SDK/HTTP crates in EnvFilter's
        // grammar; only the first one says so in its text.
        for spec in [
            "trace",
            "TRACE",
            "5",
            "aws_smithy_runtime",
            "reqwest=",
            "aws_smithy_runtime=trace,reqwest=trace,aws_sdk_sts=5",
            "hyper_util=trace,aws_smithy_http_client=trace",
            "[{x}]=trace,trace",
            "info,aws_smithy_runtime::client::orchestrator=trace",
        ] {
            let out = run(spec);
            assert!(!out.contains("SECRET"), "RUST_LOG={spec} leaked:\n{out}");
        }
    }

    #[test]
    fn journald_lines_carry_their_priority_and_no_timestamp() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(layer(
            Some("info"),
            move || w.clone(),
            false,
            Style::Journald,
        ));
        tracing::subscriber::with_default(sub, || {
            tracing::error!(target: "credbroker::x", "bad");
            tracing::warn!(target: "credbroker::x", "meh");
            tracing::info!(target: "credbroker::x", "fine");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("<3>") && lines[0].contains("bad"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("<4>") && lines[2].starts_with("<6>"),
            "{out}"
        );
        assert!(
            !out.contains("2026-") && !out.contains("T0"),
            "no timestamps: {out}"
        );
    }

    #[test]
    fn the_spec_still_works_below_the_caps() {
        let out = run("trace");
        assert!(out.contains("own-trace"), "{out}");
        assert!(out.contains("smithy-debug"), "{out}");
        assert!(!out.contains("hyper-debug"), "hyper is held at info: {out}");
        let out = run("aws_smithy_runtime");
        assert!(out.contains("smithy-debug"), "{out}");
        let out = run("warn");
        assert!(
            !out.contains("smithy-debug") && !out.contains("own-trace"),
            "{out}"
        );
        let out = run("");
        assert!(!out.contains("smithy-debug"), "default is info: {out}");
    }
}
