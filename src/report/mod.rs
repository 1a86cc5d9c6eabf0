//! Events from the pipeline, rendered to the pusher's terminal, the build log and tracing.
//!
//! The pipeline only ever calls `Reporter`; each sink renders the same event stream. Every
//! line passes the `Redactor` before any sink sees it.

mod build_log;
#[cfg(test)]
mod capture;
mod redact;
mod terminal;
mod threaded;
mod trace;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};

use crate::ids::{Revision, UserName};

pub(crate) use build_log::{BuildLogError, open_build_log};
#[cfg(test)]
pub(crate) use capture::Captured;
pub(crate) use redact::Redactor;

/// A step's identity among one deploy's events: what pairs its start with its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StepId(pub(crate) u32);

/// What a step does, and to what.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum StepKind {
    Checkout,
    ReadCompose,
    Plan,
    /// Builds the image these services share.
    Build {
        services: Vec<String>,
    },
    Pull {
        image: String,
    },
    Start {
        service: String,
    },
    Replace {
        service: String,
    },
    RemoveOld,
    /// Dumps a database (`pg_dump -Fc`), then checks the dump.
    Dump {
        service: String,
    },
    /// Restores a dump into a database.
    Restore {
        service: String,
    },
    /// The release command (`x-deploy.release`), in a one-off container of the new image.
    Release,
    /// Lifecycle hooks (`post_start`, `pre_stop`) run in a container: `what` says whose.
    Hook {
        what: String,
    },
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKind::Checkout => f.write_str("checkout"),
            StepKind::ReadCompose => f.write_str("read compose file"),
            StepKind::Plan => f.write_str("plan"),
            StepKind::Build { services } => write!(f, "build {}", services.join(", ")),
            StepKind::Pull { image } => write!(f, "pull {image}"),
            StepKind::Start { service } => write!(f, "start {service}"),
            StepKind::Replace { service } => write!(f, "replace {service}"),
            StepKind::RemoveOld => f.write_str("remove old containers"),
            StepKind::Dump { service } => write!(f, "dump {service}"),
            StepKind::Restore { service } => write!(f, "restore {service}"),
            StepKind::Release => f.write_str("release"),
            StepKind::Hook { what } => write!(f, "run {what}"),
        }
    }
}

/// Where a line of output comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Source {
    /// What a step ran printed it: a build, a pull.
    Step { id: StepId, kind: StepKind },
    /// The log of a service's container.
    Logs { service: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Step { kind, .. } => kind.fmt(f),
            Source::Logs { service } => write!(f, "logs {service}"),
        }
    }
}

/// One line of a plan, as data: `network shop_default create`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PlanRow {
    /// `network`, `volume`, `build`, `image`, `service`, `remove`.
    pub(crate) what: String,
    pub(crate) name: String,
    pub(crate) action: String,
}

impl fmt::Display for PlanRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<7} {:<28} {}", self.what, self.name, self.action)
    }
}

/// Something the pipeline wants the pusher, the operator and the daemon log to know.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Event {
    /// A pipeline step begins.
    StepStarted {
        id: StepId,
        kind: StepKind,
    },
    /// The step of the same id ends; `ok: false` means it failed (the error follows as
    /// `Error`). Its kind comes along so a renderer need not remember it.
    StepFinished {
        id: StepId,
        kind: StepKind,
        elapsed: Duration,
        ok: bool,
    },
    /// A line of output from something we ran: Docker build output, a container's log.
    Output {
        source: Source,
        line: String,
    },
    /// The plan of the deploy, one row per network, volume, image and service.
    Plan {
        rows: Vec<PlanRow>,
    },
    Info(String),
    Warn(String),
    /// The one-line reason a deploy failed.
    Error(String),
}

impl Event {
    /// The same event with every secret in every text replaced by `***`, and every control
    /// character but tab and newline written as `\xNN`: output from a build or a container
    /// must not move the pusher's cursor, forge a `remote:` line, or change colours.
    fn cleaned(self, redactor: &Redactor) -> Self {
        let r = |s: String| escape_controls(&redactor.redact(&s)).into_owned();
        match self {
            Event::StepStarted { id, kind } => Event::StepStarted {
                id,
                kind: kind.cleaned(&r),
            },
            Event::StepFinished {
                id,
                kind,
                elapsed,
                ok,
            } => Event::StepFinished {
                id,
                kind: kind.cleaned(&r),
                elapsed,
                ok,
            },
            Event::Output { source, line } => Event::Output {
                source: match source {
                    Source::Step { id, kind } => Source::Step {
                        id,
                        kind: kind.cleaned(&r),
                    },
                    Source::Logs { service } => Source::Logs {
                        service: r(service),
                    },
                },
                line: r(line),
            },
            Event::Plan { rows } => Event::Plan {
                rows: rows
                    .into_iter()
                    .map(|row| PlanRow {
                        what: r(row.what),
                        name: r(row.name),
                        action: r(row.action),
                    })
                    .collect(),
            },
            Event::Info(line) => Event::Info(r(line)),
            Event::Warn(line) => Event::Warn(r(line)),
            Event::Error(line) => Event::Error(r(line)),
        }
    }
}

impl StepKind {
    fn cleaned(self, r: &impl Fn(String) -> String) -> Self {
        match self {
            StepKind::Build { services } => StepKind::Build {
                services: services.into_iter().map(r).collect(),
            },
            StepKind::Pull { image } => StepKind::Pull { image: r(image) },
            StepKind::Start { service } => StepKind::Start {
                service: r(service),
            },
            StepKind::Replace { service } => StepKind::Replace {
                service: r(service),
            },
            other => other,
        }
    }
}

/// One renderer of the event stream: the terminal, the build log, tracing, and later the
/// daemon's socket clients.
///
/// Sinks are called in emit order with the reporter's lock held, so `emit` must not block for
/// long: a sink feeding a slow network client should queue (and drop) rather than wait.
pub(crate) trait Sink: Send {
    /// Renders one event, already redacted. An error detaches the sink and the deploy goes on
    /// without it: a pusher who hung up must not leave a deploy half-done.
    fn emit(&mut self, at: DateTime<Local>, event: &Event) -> std::io::Result<()>;

    /// What to call this sink when it is detached: `terminal`, `build log `…``.
    fn name(&self) -> String;

    /// For a sink that writes later (`threaded`): a receiver answered once everything
    /// emitted so far is written.
    fn barrier(&mut self) -> Option<std::sync::mpsc::Receiver<()>> {
        None
    }
}

/// Cheap to clone; every clone feeds the same sinks.
#[derive(Clone, Default)]
pub(crate) struct Reporter {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    redactor: Redactor,
    sinks: Vec<Box<dyn Sink>>,
    /// What `Output` lines may still take, in bytes; at zero the rest is cut.
    output_left: u64,
    output_limit: u64,
    output_cut: bool,
    /// The id of the next step.
    next_step: u32,
}

impl Default for Inner {
    fn default() -> Self {
        let limit = crate::settings::Settings::default().build_log_limit;
        Self {
            redactor: Redactor::default(),
            sinks: Vec::new(),
            output_left: limit,
            output_limit: limit,
            output_cut: false,
            next_step: 0,
        }
    }
}

impl Reporter {
    /// A reporter with no sinks: events go nowhere until sinks are added.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds the pusher's terminal (stderr): colour only when stderr is a tty, plain lines
    /// otherwise (in hook mode git relays them as `remote:` lines).
    pub(crate) fn with_terminal(self) -> Self {
        let terminal = Box::new(terminal::TerminalSink::stderr());
        self.add_sink(Box::new(threaded::Threaded::spawn(terminal)));
        self
    }

    /// Opens `dir/name` as the build log (see `open_build_log`) and adds it to this reporter
    /// and every clone of it, from the next event on. Returns the log's path.
    pub(crate) fn add_build_log(&self, dir: &Path, name: &str) -> Result<PathBuf, BuildLogError> {
        let log = open_build_log(dir, name)?;
        let path = log.path().to_owned();
        self.add_sink(Box::new(threaded::Threaded::spawn(Box::new(log))));
        Ok(path)
    }

    /// Adds `tracing` (the daemon's own log): steps and messages at info/warn/error, output
    /// lines at debug.
    pub(crate) fn with_tracing(self) -> Self {
        self.add_sink(Box::new(trace::TracingSink));
        self
    }

    /// Adds a sink to this reporter and every clone of it, from the next event on.
    pub(crate) fn add_sink(&self, sink: Box<dyn Sink>) {
        self.lock().sinks.push(sink);
    }

    /// A reporter whose events tests can read back.
    #[cfg(test)]
    pub(crate) fn capture() -> (Self, Captured) {
        let captured = Captured::default();
        let reporter = Self::new();
        reporter.add_sink(Box::new(captured.clone()));
        (reporter, captured)
    }

    /// Sends an event through the redactor to every sink.
    pub(crate) fn emit(&self, event: Event) {
        let at = Local::now();
        let mut inner = self.lock();
        if let Event::Output { source, line } = &event {
            // What the line takes in the build log: its timestamp, kind and source too.
            let cost = (LOG_LINE_OVERHEAD + source.to_string().len() + line.len()) as u64;
            match inner.output_left.checked_sub(cost) {
                Some(left) => inner.output_left = left,
                None if inner.output_cut => return,
                None => {
                    inner.output_cut = true;
                    let limit = crate::compose::bytes::human(inner.output_limit);
                    drop(inner);
                    self.warn(format!(
                        "output cut here: this deploy's output reached {limit} (`build_log_limit` in deploy.yml); steps and errors are still reported"
                    ));
                    return;
                }
            }
        }
        let event = event.cleaned(&inner.redactor);
        let mut detached = Vec::new();
        let mut i = 0;
        while i < inner.sinks.len() {
            match inner.sinks[i].emit(at, &event) {
                Ok(()) => i += 1,
                Err(err) => {
                    let sink = inner.sinks.remove(i);
                    detached.push(format!("stopped writing to the {}: {err}", sink.name()));
                }
            }
        }
        for message in detached {
            tracing::warn!("{message}");
            let warning = Event::Warn(message);
            // The remaining sinks get one chance; a second failure is not worth a cascade.
            for sink in &mut inner.sinks {
                let _ = sink.emit(at, &warning);
            }
        }
    }

    pub(crate) fn info(&self, line: impl Into<String>) {
        self.emit(Event::Info(line.into()));
    }

    pub(crate) fn warn(&self, line: impl Into<String>) {
        self.emit(Event::Warn(line.into()));
    }

    /// The one-line reason a deploy failed.
    pub(crate) fn error(&self, line: impl Into<String>) {
        self.emit(Event::Error(line.into()));
    }

    /// A line of output from something we ran.
    pub(crate) fn output(&self, source: Source, line: impl Into<String>) {
        self.emit(Event::Output {
            source,
            line: line.into(),
        });
    }

    /// The plan, as data; each sink lays it out.
    pub(crate) fn plan(&self, rows: Vec<PlanRow>) {
        self.emit(Event::Plan { rows });
    }

    /// Starts a step; the guard reports its duration when `finish`ed (or failure if dropped
    /// unfinished), and what it runs prints through it.
    pub(crate) fn step(&self, kind: StepKind) -> Step {
        let id = {
            let mut inner = self.lock();
            inner.next_step += 1;
            StepId(inner.next_step)
        };
        self.emit(Event::StepStarted {
            id,
            kind: kind.clone(),
        });
        Step {
            reporter: self.clone(),
            id,
            kind,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Bounds the output lines (build steps, container logs) of this reporter and its clones
    /// to `bytes` in all: a build that prints without end must not fill the disk or the
    /// pusher's terminal. Steps, messages and errors are never cut.
    pub(crate) fn limit_output(&self, bytes: u64) {
        let mut inner = self.lock();
        inner.output_left = bytes;
        inner.output_limit = bytes;
        inner.output_cut = false;
    }

    /// Returns once every sink has written what was emitted before: the build log is on
    /// disk before the ledger says the deploy is over, so `deploy logs --follow` misses
    /// nothing.
    pub(crate) async fn flush(&self) {
        let waits: Vec<_> = self
            .lock()
            .sinks
            .iter_mut()
            .filter_map(|s| s.barrier())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for wait in waits {
                let _ = wait.recv();
            }
        })
        .await;
    }

    /// The secrets registered so far, to redact text that does not go through a sink.
    pub(crate) fn redactor(&self) -> Redactor {
        self.lock().redactor.clone()
    }

    /// From now on, `value` is replaced by `***` in every line. Surrounding whitespace is
    /// ignored (secret files usually end with a newline); an empty value is ignored.
    pub(crate) fn redact(&self, value: &str) {
        self.lock().redactor.add(value);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A sink that panicked must not silence the rest of the deploy's reporting.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks: Vec<String> = self.lock().sinks.iter().map(|s| s.name()).collect();
        f.debug_struct("Reporter")
            .field("sinks", &sinks)
            .finish_non_exhaustive()
    }
}

/// A running step. `finish()` reports success; dropping it unfinished reports failure.
#[must_use = "dropping a step right away reports it as failed"]
pub(crate) struct Step {
    reporter: Reporter,
    id: StepId,
    kind: StepKind,
    started: Instant,
    finished: bool,
}

impl Step {
    /// A line printed by what this step runs.
    pub(crate) fn output(&self, line: impl Into<String>) {
        self.reporter.output(
            Source::Step {
                id: self.id,
                kind: self.kind.clone(),
            },
            line,
        );
    }

    pub(crate) fn finish(mut self) {
        self.end(true);
    }

    fn end(&mut self, ok: bool) {
        self.finished = true;
        self.reporter.emit(Event::StepFinished {
            id: self.id,
            kind: self.kind.clone(),
            elapsed: self.started.elapsed(),
            ok,
        });
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            self.end(false);
        }
    }
}

/// The bytes a build log line takes besides its source and text: the timestamp, the kind
/// and the separators (`2026-12-03 10:12:13.456 OUT   web | …\n`).
const LOG_LINE_OVERHEAD: usize = 34;

/// `text` with each control character except tab and newline written `\xNN`.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if control(c) {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

/// `350ms`, `1.2s`, `2m05s`: short enough for a step line, precise enough to compare pushes.
pub(crate) fn format_elapsed(elapsed: Duration) -> String {
    let ms = elapsed.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", elapsed.as_secs_f64())
    } else {
        let secs = elapsed.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn build_log_name_format() {
        let at = Local.with_ymd_and_hms(2026, 11, 29, 10, 12, 13).unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let name = build_log_name(
            at,
            &Revision::parse(sha).unwrap(),
            &UserName::sanitize("alice"),
        );
        assert_eq!(name, format!("2026-11-29 10:12:13 {sha} alice.log"));
    }

    fn logs(service: &str) -> Source {
        Source::Logs {
            service: service.to_owned(),
        }
    }

    /// A step's start and end are paired by its id, not by its name: two steps of the same
    /// kind (two `start web`, say) never end each other.
    #[test]
    fn step_finish_reports_success_and_drop_reports_failure() {
        let (reporter, captured) = Reporter::capture();
        let start = StepKind::Start {
            service: "web".into(),
        };
        let first = reporter.step(start.clone());
        drop(reporter.step(start.clone()));
        first.finish();
        let events = captured.events();
        assert_eq!(events.len(), 4);
        let ids: Vec<(StepId, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::StepFinished { id, ok, kind, .. } if *kind == start => Some((*id, *ok)),
                _ => None,
            })
            .collect();
        assert_eq!(ids, [(StepId(2), false), (StepId(1), true)]);
        assert_eq!(
            events[0],
            Event::StepStarted {
                id: StepId(1),
                kind: start
            }
        );
    }

    #[test]
    fn every_sink_sees_redacted_text() {
        let (reporter, captured) = Reporter::capture();
        reporter.redact("hunter2\n");
        reporter.output(logs("web"), "password=hunter2");
        reporter.info("using hunter2");
        reporter
            .step(StepKind::Start {
                service: "hunter2".into(),
            })
            .finish();
        let lines = captured.lines().join("\n");
        assert!(!lines.contains("hunter2"), "{lines}");
        assert!(lines.contains("password=***"), "{lines}");
    }

    #[test]
    fn a_build_log_added_mid_deploy_gets_the_next_events_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new();
        reporter.info("before the log");
        reporter.redact("s3cret");
        let path = reporter.add_build_log(dir.path(), "x.log").unwrap();
        assert_eq!(path, dir.path().join("x.log"));
        reporter.clone().output(logs("web"), "pw s3cret");
        // The log writes on its own thread; the last reporter's drop waits for it.
        drop(reporter);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with(" OUT   logs web | pw ***\n"), "{text}");
    }

    #[test]
    fn clones_share_sinks_across_tasks() {
        let (reporter, captured) = Reporter::capture();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let reporter = reporter.clone();
                std::thread::spawn(move || reporter.info(format!("from {i}")))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(captured.events().len(), 4);
    }

    struct Failing;

    impl Sink for Failing {
        fn emit(&mut self, _: DateTime<Local>, _: &Event) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn name(&self) -> String {
            "terminal".into()
        }
    }

    #[test]
    fn a_failing_sink_is_detached_and_the_others_are_told() {
        let (reporter, captured) = Reporter::capture();
        reporter.add_sink(Box::new(Failing));
        reporter.info("one");
        reporter.info("two");
        let events = captured.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(
            matches!(&events[1], Event::Warn(w) if w.starts_with("stopped writing to the terminal"))
        );
        assert_eq!(events[2], Event::Info("two".into()));
    }

    #[test]
    fn control_characters_are_escaped_before_any_sink() {
        let (reporter, captured) = Reporter::capture();
        reporter.output(logs("web"), "a\rremote: forged\u{1b}[31m\tok");
        let lines = captured.lines().join("\n");
        assert!(
            !lines.contains('\r') && !lines.contains('\u{1b}'),
            "{lines:?}"
        );
        assert!(
            lines.contains("a\\x0dremote: forged\\x1b[31m\tok"),
            "{lines:?}"
        );
    }

    #[test]
    fn output_is_cut_at_the_limit_once_and_steps_still_go_through() {
        let (reporter, captured) = Reporter::capture();
        // Each line costs 34 + 8 (`logs web`) + 9 bytes: ten of them fit.
        reporter.limit_output(510);
        for i in 0..50 {
            reporter.output(logs("web"), format!("line {i:04}"));
        }
        reporter.step(StepKind::Checkout).finish();
        let events = captured.events();
        let outputs = events
            .iter()
            .filter(|e| matches!(e, Event::Output { .. }))
            .count();
        assert_eq!(outputs, 10, "{events:?}");
        let cuts: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::Warn(w) if w.contains("build_log_limit")))
            .collect();
        assert_eq!(cuts.len(), 1, "{events:?}");
        assert!(matches!(
            events.last(),
            Some(Event::StepFinished { ok: true, .. })
        ));
    }

    #[test]
    fn elapsed_formats() {
        assert_eq!(format_elapsed(Duration::from_millis(350)), "350ms");
        assert_eq!(format_elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_elapsed(Duration::from_secs(125)), "2m05s");
    }
}
