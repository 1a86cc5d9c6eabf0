//! Command-line interface: clap structs and one file per subcommand.

pub(crate) fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
