//! Config parsing: arbitrary bytes (as lossy UTF-8) through the real loader
//! (`config::load_str`: TOML → `config` crate → serde → validation).
//!
//! Properties:
//! * never panics;
//! * every error names the file (the env map holds no `CREDBROKER__*` or
//!   `AWS_ENDPOINT_URL*` variable, so the origin is always the file) and its
//!   `Display` starts with `fuzz.toml: `;
//! * on success, the resolved `Display` form (what `check-config` prints)
//!   loads again, and displays identically (Display ∘ load is idempotent).
#![no_main]

use std::path::Path;

use credbroker::config::{self, Env};
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.toml";

fn env() -> Env {
    Env::from([
        ("HOME".to_owned(), "/home/fuzz".to_owned()),
        ("XDG_RUNTIME_DIR".to_owned(), "/run/user/1000".to_owned()),
    ])
}

/// `load_str` reads `aws.session_policy_file` from disk when it is set: an
/// input naming `/dev/zero` or a FIFO would hang or exhaust memory, which is
/// the fuzzer finding the file system, not a bug. Skip inputs that could set
/// that key (TOML basic strings may spell a key with `\u` escapes).
fn may_read_files(text: &str) -> bool {
    text.contains("session_policy") || text.contains("\\u") || text.contains("\\U")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if may_read_files(&text) {
        return;
    }
    let env = env();
    let path = Path::new(ORIGIN);
    match config::load_str(&text, path, &env) {
        Ok(c) => {
            let shown = c.to_string();
            let again = match config::load_str(&shown, path, &env) {
                Ok(a) => a,
                Err(e) => panic!(
                    "the Display form does not reload: {e}\n--- input\n{text}\n--- displayed\n{shown}"
                ),
            };
            let shown_again = again.to_string();
            assert_eq!(
                shown, shown_again,
                "Display → load → Display changed the config\n--- input\n{text}"
            );
        }
        Err(e) => {
            assert_eq!(e.origin, ORIGIN, "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.toml: "), "{msg}");
        }
    }
});
