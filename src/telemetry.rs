//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (else the config's
//! `log.level`, default `info`), as text or as one JSON object per line
//! (`log.format = "json"`).
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
//! Text lines leave timestamps out under systemd (`JOURNAL_STREAM` set):
//! journald adds its own. JSON lines are always complete objects (with a
//! timestamp, no priority prefix), for log shippers that parse them.
//!
//! The daemon installs its subscriber once its config is loaded
//! ([`init_with`]); the other commands log with the defaults ([`init`]).

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

/// Noisy transport crates, and the D-Bus stack of the keychain and desktop
/// notifications (whose debug output shows message bodies): held at `info`.
pub const QUIET: [&str; 9] = [
    "hyper",
    "h2",
    "rustls",
    "tower",
    "zbus",
    "secret_service",
    "zbus_secret_service_keyring_store",
    "keyring_core",
    "notify_rust",
];

/// Crates that log derived secrets at `info` (aws-cognito-srp logs the
/// `SECRET_HASH`): held at `warn`.
pub const SILENCED: [&str; 1] = ["aws_cognito_srp"];

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
    let t = QUIET
        .iter()
        .fold(t, |t, c| t.with_target(*c, LevelFilter::INFO));
    SILENCED
        .iter()
        .fold(t, |t, c| t.with_target(*c, LevelFilter::WARN))
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (journald style under systemd).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

impl LogFormat {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Is `spec` a valid filter? For `log.level`, which, unlike `RUST_LOG`, is
/// checked strictly: every directive must parse, and one without `=` must
/// be a level (EnvFilter would take `loud` as a target name and enable it at
/// trace; write `target=level` for that).
pub fn check_spec(spec: &str) -> Result<(), String> {
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && d.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{d:?} is not a level (off, error, warn, info, debug, trace); use target=level for a target"
            ));
        }
    }
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(spec)
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// A text layer writing to `writer`, filtered by `spec` **and** [`caps`].
pub fn layer<S, W>(spec: Option<&str>, writer: W, ansi: bool, style: Style) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    layer_as(LogFormat::Text, spec, writer, ansi, style)
}

/// A layer in `format` writing to `writer`, filtered by `spec` **and**
/// [`caps`] (the same caps for both formats).
pub fn layer_as<S, W>(
    format: LogFormat,
    spec: Option<&str>,
    writer: W,
    ansi: bool,
    style: Style,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if format == LogFormat::Json {
        return tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(filter(spec).and(caps()))
            .boxed();
    }
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

/// Install the global subscriber with the defaults: text, `RUST_LOG` or
/// `info` (idempotent: later calls are ignored).
pub fn init() {
    init_with(LogFormat::Text, "info");
}

/// Install the global subscriber: `format`, and `RUST_LOG` when set and
/// non-empty, else `level` (idempotent: later calls are ignored).
pub fn init_with(format: LogFormat, level: &str) {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let spec = env.as_deref().unwrap_or(level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let style = if std::env::var_os("JOURNAL_STREAM").is_some() {
        Style::Journald
    } else {
        Style::Plain
    };
    let _ = tracing_subscriber::registry()
        .with(layer_as(format, Some(spec), std::io::stderr, ansi, style))
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
            // aws-cognito-srp logs the SECRET_HASH at info; zbus shows
            // D-Bus message bodies (keychain secrets) at debug.
            tracing::info!(target: "aws_cognito_srp::client", "SECRET-srp-hash-info");
            tracing::debug!(target: "zbus::connection", "SECRET-zbus-debug");
            tracing::debug!(target: "secret_service::blocking", "SECRET-secret-service-debug");
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

    /// Like [`run`], in JSON.
    fn run_json(spec: &str) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(layer_as(
            LogFormat::Json,
            Some(spec),
            move || w.clone(),
            false,
            Style::Journald,
        ));
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "aws_smithy_runtime", "SECRET-smithy-trace");
            tracing::trace!(target: "reqwest::connect", "SECRET-reqwest-trace");
            tracing::trace!(target: "hyper_util::client", "SECRET-hyper-util-trace");
            tracing::debug!(target: "hyper::proto", "hyper-debug");
            tracing::info!(target: "credbroker::refresher", profile = "dev", outcome = "success", lifetime_s = 3600u64, "credentials refreshed");
            tracing::trace!(target: "credbroker::refresher", "own-trace");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_are_objects_and_keep_the_caps() {
        for spec in ["trace", "5", "aws_smithy_runtime=trace,reqwest=trace"] {
            let out = run_json(spec);
            assert!(!out.contains("SECRET"), "RUST_LOG={spec} leaked:\n{out}");
            assert!(!out.contains("hyper-debug"), "{out}");
        }
        let out = run_json("trace");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        let f = &lines[0]["fields"];
        assert_eq!(f["message"], "credentials refreshed");
        assert_eq!(f["profile"], "dev");
        assert_eq!(f["outcome"], "success");
        assert_eq!(f["lifetime_s"], 3600);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].is_string(), "{out}");
        assert!(!out.starts_with('<'), "no journald prefix on JSON: {out}");
    }

    #[test]
    fn log_levels_are_checked_strictly() {
        for ok in [
            "info",
            "warn,credbroker=debug",
            "trace",
            "off",
            "credbroker::refresher=debug",
        ] {
            assert!(check_spec(ok).is_ok(), "{ok}");
        }
        for bad in ["loud", "credbroker=verbose", "info,credbroker"] {
            assert!(check_spec(bad).is_err(), "{bad}");
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
