//! `deploy`: `git push` deploys an app and its PostgreSQL stack on a Docker host.

mod cancel;
mod cli;
mod compose;
mod docker;
mod git;
mod identity;
mod ids;
mod ledger;
mod notify;
mod pipeline;
mod plan;
mod report;
mod root;
mod serve;
mod settings;

fn main() -> std::process::ExitCode {
    cli::main()
}
