//! The `credbroker` binary: parse the command line, load the config, run.
//! Exit codes: 0 success, 64 usage/config error, 69 unavailable (port taken,
//! daemon not running), 3 (`status`) some profile is not serving, 1 anything
//! else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use credbroker::cli::{self, Cli, Command};
use credbroker::error::StartupError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                credbroker::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    credbroker::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("credbroker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credbroker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let env = cli::process_env();
    let config = cli::load_config(&cli, &env)?;
    match cli.command {
        Command::Serve => {
            let clock = Arc::new(credbroker::clock::SystemClock);
            credbroker::app::run(config, clock, credbroker::shutdown::signal()).await
        }
        Command::CheckConfig => {
            print!("{config}");
            Ok(())
        }
        Command::Status { json } => {
            let report = cli::status(&config, json).await?;
            print!("{}", report.output);
            if report.not_serving.is_empty() {
                Ok(())
            } else {
                Err(StartupError::NotServing(report.not_serving))
            }
        }
        Command::Env {
            profile,
            imds,
            inline_token,
        } => {
            let token = if inline_token {
                cli::TokenMode::Inline
            } else {
                cli::TokenMode::File
            };
            print!(
                "{}",
                cli::env_lines(&config, profile.as_deref(), imds, token)?
            );
            Ok(())
        }
    }
}
