//! The `credbroker` binary: parse the command line, start the runtime, and
//! hand over to [`credbroker::cli::run`], which starts logging and owns every
//! command and its exit code (0 success, 64 usage/config error, 69 daemon
//! unavailable or port taken, 3 a profile not serving, 1 anything else;
//! `exec` passes its child's through).

use std::process::ExitCode;

use clap::Parser;
use credbroker::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            let code = if e.use_stderr() {
                credbroker::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(e) => {
            eprintln!("credbroker: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}
