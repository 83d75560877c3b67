//! `credbroker completions <shell>` and `credbroker man [command]`, both
//! generated from the clap definitions in [`super::Cli`], so they never
//! drift from `--help`.

use clap::CommandFactory;

use super::{Cli, Error};

/// Shells we generate completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// Bash (bash-completion).
    Bash,
    /// Zsh (`_credbroker` in `$fpath`).
    Zsh,
    /// Fish.
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut cmd,
        "credbroker",
        &mut buf,
    );
    buf
}

/// The man page (roff) of credbroker, or of one of its subcommands
/// (`credbroker-exec(1)`).
pub fn man(subcommand: Option<&str>) -> Result<Vec<u8>, Error> {
    let mut cmd = Cli::command();
    // Building fills in the subcommands' display names (`credbroker-exec`)
    // and usage names (`credbroker exec`), which the page shows.
    cmd.build();
    let page = match subcommand {
        None => cmd,
        Some(name) => cmd.find_subcommand(name).cloned().ok_or_else(|| {
            Error::Usage(format!(
                "no subcommand named {name:?} (subcommands: {})",
                cmd.get_subcommands()
                    .map(|s| s.get_name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
    };
    let name = page
        .get_display_name()
        .unwrap_or(page.get_name())
        .to_owned();
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| Error::Other(format!("cannot render the man page: {e}")))?;
    Ok(title_first(&String::from_utf8_lossy(&buf), &name).into_bytes())
}

/// clap_mangen opens with two lines that define the `\*(Aq` string, and
/// writes a `.TH` whose empty date field shifts the others; put a complete
/// `.TH` first instead, as man(7) pages begin (tools that sniff a page's
/// first line expect it). The definitions still precede any text that uses
/// them.
fn title_first(page: &str, name: &str) -> String {
    let th = format!(
        ".TH {name} 1 \"\" \"credbroker {}\" \"User Commands\"",
        env!("CARGO_PKG_VERSION")
    );
    let mut lines: Vec<&str> = page.lines().filter(|l| !l.starts_with(".TH ")).collect();
    lines.insert(0, &th);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
