//! The daemon's own log: every event also goes to `tracing`.

use chrono::{DateTime, Local};

use super::{Event, Sink};

/// Steps and messages at info/warn/error; output lines at debug, since the build log already
/// holds them in full and the daemon's log would drown in them (`RUST_LOG=deploy=debug` shows
/// them).
pub(crate) struct TracingSink;

impl Sink for TracingSink {
    fn emit(&mut self, _at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        match event {
            Event::StepStarted { kind, .. } => tracing::info!(step = %kind, "step started"),
            Event::StepFinished {
                kind,
                elapsed,
                ok: true,
                ..
            } => {
                tracing::info!(step = %kind, elapsed_ms = elapsed.as_millis(), "step finished");
            }
            Event::StepFinished {
                kind,
                elapsed,
                ok: false,
                ..
            } => {
                tracing::warn!(step = %kind, elapsed_ms = elapsed.as_millis(), "step failed");
            }
            Event::Output { source, line } => tracing::debug!(source = %source, "{line}"),
            Event::Plan { rows } => {
                for row in rows {
                    tracing::debug!("plan: {row}");
                }
            }
            Event::Info(text) => tracing::info!("{text}"),
            Event::Warn(text) => tracing::warn!("{text}"),
            Event::Error(text) => tracing::error!("{text}"),
        }
        Ok(())
    }

    fn name(&self) -> String {
        "tracing log".to_owned()
    }
}
