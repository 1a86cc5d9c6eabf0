//! Events from the pipeline, rendered to the pusher's terminal, the build log and tracing.
//!
//! The pipeline only ever calls `Reporter`; each sink renders the same event stream. Every
//! line passes the `Redactor` before any sink sees it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::ids::{Revision, UserName};

/// Something the pipeline wants the pusher, the operator and the daemon log to know.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// A pipeline step begins (`checkout`, `build web`, `start db`, …).
    StepStarted {
        step: String,
    },
    /// A step ends; `ok: false` means it failed (the error follows as `Error`).
    StepFinished {
        step: String,
        elapsed: Duration,
        ok: bool,
    },
    /// A line of output from something we ran: Docker build output, a container's log.
    Output {
        source: String,
        line: String,
    },
    Info(String),
    Warn(String),
    /// The one-line reason a deploy failed.
    Error(String),
}

/// Cheap to clone; every clone feeds the same sinks.
#[derive(Clone)]
pub(crate) struct Reporter {
    // filled in by the report module
}

impl Reporter {
    /// Sends an event through the redactor to every sink.
    pub(crate) fn emit(&self, event: Event) {
        let _ = event;
        todo!()
    }

    pub(crate) fn info(&self, line: impl Into<String>) {
        self.emit(Event::Info(line.into()));
    }

    pub(crate) fn warn(&self, line: impl Into<String>) {
        self.emit(Event::Warn(line.into()));
    }

    /// Starts a step; the guard reports its duration when `finish`ed (or failure if dropped
    /// unfinished).
    pub(crate) fn step(&self, step: impl Into<String>) -> Step {
        let _ = step;
        todo!()
    }

    /// From now on, `value` is replaced by `***` in every line.
    pub(crate) fn redact(&self, value: &str) {
        let _ = value;
        todo!()
    }
}

/// A running step. `finish()` reports success; dropping it unfinished reports failure.
pub(crate) struct Step {}

impl Step {
    pub(crate) fn finish(self) {
        todo!()
    }
}

/// `<YYYY-MM-DD> <HH:MM:SS> <full sha> <user>.log`, the build log's file name.
pub(crate) fn build_log_name(at: DateTime<Local>, revision: &Revision, user: &UserName) -> String {
    format!(
        "{} {} {}.log",
        at.format("%Y-%m-%d %H:%M:%S"),
        revision,
        user
    )
}

/// Opens `dir/name` as the build log and points `dir/latest` at it.
pub(crate) fn open_build_log(dir: &Path, name: &str) -> std::io::Result<()> {
    let _ = (dir, name);
    todo!()
}
