//! `deploy completions SHELL` and the man page, both generated from the clap definitions,
//! for those who install with `cargo install` (the Debian package ships them).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script: `deploy completions bash > /etc/bash_completion.d/deploy`.
pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "deploy", &mut script);
    print(&script)
}

/// Writes the man pages (roff) into `dir`: `deploy.1`, and `deploy-status.1` and so on for
/// each subcommand, as the Debian package installs them.
pub(crate) fn man(dir: &Path) -> anyhow::Result<u8> {
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("failed to write the man pages into {}", dir.display()))?;
    Ok(super::exit::SUCCESS)
}

/// Writes to stdout; a reader that stops early (`| head`) is not an error.
fn print(bytes: &[u8]) -> anyhow::Result<u8> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(super::exit::SUCCESS),
    }
}
