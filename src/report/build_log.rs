//! The per-push build log under ROOT/build-logs, and its `latest` link.
//!
//! One line per event (per line of a multi-line message), each with a millisecond timestamp:
//!
//! ```text
//! 2026-11-29 10:12:13.456 STEP  build web
//! 2026-11-29 10:12:13.789 OUT   build web | Step 1/3 : FROM python:3.11-slim
//! 2026-11-29 10:12:14.690 DONE  build web in 1.234s
//! ```

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

use super::{Event, Sink};

/// A build log file could not be set up.
#[derive(Debug, thiserror::Error)]
// The cause is in the message and deliberately not a `source`: the printed error chain then
// shows it once.
#[error("failed to {action} `{path}`: {cause}")]
pub(crate) struct BuildLogError {
    action: &'static str,
    path: PathBuf,
    cause: std::io::Error,
}

impl BuildLogError {
    fn new(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        move |cause| Self {
            action,
            path: path.to_owned(),
            cause,
        }
    }
}

/// An open build log, a sink of the reporter (`Reporter::add_build_log` opens and adds one).
pub(crate) struct BuildLog {
    path: PathBuf,
    /// Unbuffered: every line is one `write(2)` on an `O_APPEND` file, so `tail -f` sees it at
    /// once and a SIGKILLed deploy loses at most the line being written.
    writer: RollingFileAppender,
    /// A second handle on the same file, only for `fsync`, which the appender does not offer.
    sync: File,
}

impl BuildLog {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        let stamp = at.format("%Y-%m-%d %H:%M:%S%.3f");
        let (kind, text) = match event {
            Event::StepStarted { kind, .. } => ("STEP ", kind.to_string()),
            Event::StepFinished {
                kind,
                elapsed,
                ok: true,
                ..
            } => ("DONE ", format!("{kind} in {:.3}s", elapsed.as_secs_f64())),
            Event::StepFinished {
                kind,
                elapsed,
                ok: false,
                ..
            } => (
                "FAIL ",
                format!("{kind} after {:.3}s", elapsed.as_secs_f64()),
            ),
            Event::Output { source, line } => ("OUT  ", format!("{source} | {line}")),
            Event::Plan { rows } => (
                "PLAN ",
                rows.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Event::Info(text) => ("INFO ", text.clone()),
            Event::Warn(text) => ("WARN ", text.clone()),
            Event::Error(text) => ("ERROR", text.clone()),
        };
        let mut buf = String::with_capacity(text.len() + 32);
        for line in text.split('\n') {
            buf.push_str(&format!("{stamp} {kind} {}\n", line.trim_end_matches('\r')));
        }
        // One write per event: a multi-line message is never split by another writer.
        self.writer.write_all(buf.as_bytes())?;
        self.writer.flush()?;
        // Step ends and errors are the lines an operator needs after a crash of the host, so
        // they (and everything before them) go to disk now; fsync per output line would slow
        // a chatty build for nothing a killed process could lose.
        if matches!(event, Event::StepFinished { .. } | Event::Error(_)) {
            self.sync.sync_data()?;
        }
        Ok(())
    }
}

impl Sink for BuildLog {
    fn emit(&mut self, at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        self.write_event(at, event)
    }

    fn name(&self) -> String {
        format!("build log `{}`", self.path.display())
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        let _ = self.sync.sync_data();
    }
}

/// Opens (appending) `dir/name` as the build log and points `dir/latest` at it.
pub(crate) fn open_build_log(dir: &Path, name: &str) -> Result<BuildLog, BuildLogError> {
    let path = dir.join(name);
    // The name is built from a sanitized user and a full sha, so it is one plain file name;
    // if that ever stops being true we must not write outside `dir`.
    assert!(
        path.parent() == Some(dir) && path.file_name() == Some(OsStr::new(name)),
        "build log name `{name}` is not a plain file name"
    );
    fs::create_dir_all(dir).map_err(BuildLogError::new("create the build log directory", dir))?;
    // Never through a symlink planted under this name: we would append to what it points at.
    let sync = File::options()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(BuildLogError::new("create the build log", &path))?;
    let writer = RollingFileAppender::builder()
        .rotation(Rotation::NEVER)
        .filename_prefix(name)
        .build(dir)
        .map_err(|e| BuildLogError::new("open the build log", &path)(std::io::Error::other(e)))?;
    point_latest(dir, name).map_err(BuildLogError::new("update the link", &dir.join("latest")))?;
    Ok(BuildLog { path, writer, sync })
}

/// Points `dir/latest` at `name` with a relative link (the directory may be moved or
/// bind-mounted elsewhere), replacing the old link atomically so a reader never finds none.
fn point_latest(dir: &Path, name: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".latest.{}.tmp", std::process::id()));
    // Left over only if a deploy with our pid was killed between the two calls below.
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    fs::rename(&tmp, dir.join("latest")).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::report::{Source, StepId, StepKind};

    #[test]
    fn latest_link_is_relative_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("build-logs");
        let first = open_build_log(&logs, "2026-11-29 10:12:13 aaa alice.log").unwrap();
        assert_eq!(first.path(), logs.join("2026-11-29 10:12:13 aaa alice.log"));
        let latest = logs.join("latest");
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            Path::new("2026-11-29 10:12:13 aaa alice.log")
        );

        let _second = open_build_log(&logs, "2026-11-29 11:00:00 bbb bob.log").unwrap();
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            Path::new("2026-11-29 11:00:00 bbb bob.log")
        );
        // Both logs stay, and no temporary link is left behind.
        let mut names: Vec<_> = fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "2026-11-29 10:12:13 aaa alice.log",
                "2026-11-29 11:00:00 bbb bob.log",
                "latest"
            ]
        );
    }

    #[test]
    #[should_panic(expected = "not a plain file name")]
    fn refuses_a_name_that_leaves_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _ = open_build_log(dir.path(), "../escape.log");
    }

    #[test]
    #[should_panic(expected = "not a plain file name")]
    fn refuses_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let _ = open_build_log(dir.path(), "..");
    }

    #[test]
    fn every_line_is_on_disk_as_soon_as_it_is_emitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open_build_log(dir.path(), "x.log").unwrap();
        let at = Local.with_ymd_and_hms(2026, 11, 29, 10, 12, 13).unwrap()
            + chrono::Duration::milliseconds(45);
        let build = StepKind::Build {
            services: vec!["web".into()],
        };
        let events = [
            Event::StepStarted {
                id: StepId(1),
                kind: build.clone(),
            },
            Event::Output {
                source: Source::Step {
                    id: StepId(1),
                    kind: build.clone(),
                },
                line: "Step 1/2 : FROM debian".into(),
            },
            Event::StepFinished {
                id: StepId(1),
                kind: build,
                elapsed: Duration::from_millis(1234),
                ok: true,
            },
            Event::Error("failed to start `web`:\nexit code 1".into()),
        ];
        for e in &events {
            log.emit(at, e).unwrap();
        }
        // Read through the link while the log is still open: nothing waits in a buffer.
        let text = fs::read_to_string(dir.path().join("latest")).unwrap();
        let want = "\
2026-11-29 10:12:13.045 STEP  build web
2026-11-29 10:12:13.045 OUT   build web | Step 1/2 : FROM debian
2026-11-29 10:12:13.045 DONE  build web in 1.234s
2026-11-29 10:12:13.045 ERROR failed to start `web`:
2026-11-29 10:12:13.045 ERROR exit code 1
";
        assert_eq!(text, want);
    }

    /// Issue 15: the cause appeared twice in the printed chain (once in the message, once as
    /// the `source`).
    #[test]
    fn issue15_a_build_log_error_says_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let Err(err) = open_build_log(&dir.path().join("file"), "x.log") else {
            panic!("a log under a file cannot be opened");
        };
        let printed = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(printed.matches("File exists").count(), 1, "{printed}");
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let at = Local::now();
        open_build_log(dir.path(), "x.log")
            .unwrap()
            .emit(at, &Event::Info("one".into()))
            .unwrap();
        open_build_log(dir.path(), "x.log")
            .unwrap()
            .emit(at, &Event::Info("two".into()))
            .unwrap();
        let text = fs::read_to_string(dir.path().join("x.log")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
