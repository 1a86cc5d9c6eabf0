//! BuildKit's progress (the `moby.buildkit.trace` messages of a build) as lines for the
//! build log: each Dockerfile step once, with its name, cached or not, its duration, and
//! its output, in the style of `docker build --progress=plain`.
//!
//! ```text
//! #1 [stage-0 2/4] RUN pip install -r requirements.txt
//! #1 Collecting flask
//! #1 DONE 4.2s
//! #2 [stage-0 3/4] COPY . /app
//! #2 CACHED
//! ```
//!
//! A trace message repeats a step each time something about it changes; only the changes
//! make lines, so no step is printed twice. Pure: the build feeds it decoded messages.

use std::collections::{HashMap, VecDeque};

use bollard_buildkit_proto::moby::buildkit::v1::{StatusResponse, Vertex};

/// Lines of a step's output kept for the summary of a failure.
const LAST_LINES: usize = 10;

/// A line of output longer than this is cut into pieces: a step printing without newlines
/// must not grow a buffer without end.
const MAX_LINE: usize = 16 * 1024;

/// What the build has said so far, by step.
#[derive(Default)]
pub(crate) struct Progress {
    steps: Vec<StepState>,
    by_digest: HashMap<String, usize>,
}

#[derive(Default)]
struct StepState {
    name: String,
    /// Its `#N`, once its name was printed.
    number: Option<usize>,
    started: Option<f64>,
    /// Cached, done or failed: nothing more is printed about it.
    ended: bool,
    /// Output bytes after the last newline.
    partial: Vec<u8>,
    last_lines: VecDeque<String>,
    error: Option<String>,
}

/// The step that failed, for the error and the log's summary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FailedStep {
    pub(crate) name: String,
    pub(crate) error: String,
    pub(crate) last_lines: Vec<String>,
}

impl Progress {
    /// The lines one trace message adds.
    pub(crate) fn update(&mut self, status: &StatusResponse) -> Vec<String> {
        let mut out = Vec::new();
        for vertex in &status.vertexes {
            self.vertex(vertex, &mut out);
        }
        for log in &status.logs {
            let Some(&i) = self.by_digest.get(&log.vertex) else {
                continue;
            };
            self.announce(i, &mut out);
            let step = &mut self.steps[i];
            step.partial.extend_from_slice(&log.msg);
            let number = step.number.unwrap_or_default();
            for line in step.complete_lines() {
                out.push(format!("#{number} {line}"));
            }
        }
        for warning in &status.warnings {
            let short = String::from_utf8_lossy(&warning.short);
            match self.by_digest.get(&warning.vertex) {
                Some(&i) => {
                    self.announce(i, &mut out);
                    let number = self.steps[i].number.unwrap_or_default();
                    out.push(format!("#{number} WARNING: {short}"));
                }
                None => out.push(format!("WARNING: {short}")),
            }
        }
        out
    }

    /// What is left of every step's output without a final newline.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for step in &mut self.steps {
            if step.partial.is_empty() {
                continue;
            }
            let rest = std::mem::take(&mut step.partial);
            let line = redraw(&String::from_utf8_lossy(&rest));
            step.keep(&line);
            if let Some(number) = step.number {
                out.push(format!("#{number} {line}"));
            }
        }
        out
    }

    /// The first step that failed, with its last lines of output.
    pub(crate) fn failed(&self) -> Option<FailedStep> {
        self.steps.iter().find_map(|s| {
            s.error.as_ref().map(|error| FailedStep {
                name: s.name.clone(),
                error: error.clone(),
                last_lines: s.last_lines.iter().cloned().collect(),
            })
        })
    }

    fn vertex(&mut self, v: &Vertex, out: &mut Vec<String>) {
        let i = match self.by_digest.get(&v.digest) {
            Some(&i) => i,
            None => {
                self.steps.push(StepState {
                    name: v.name.clone(),
                    ..StepState::default()
                });
                self.by_digest
                    .insert(v.digest.clone(), self.steps.len() - 1);
                self.steps.len() - 1
            }
        };
        let seconds = |t: &Option<_>| {
            t.as_ref()
                .map(|t: &bollard_buildkit_proto::google::protobuf::Timestamp| {
                    t.seconds as f64 + f64::from(t.nanos) / 1e9
                })
        };
        if self.steps[i].ended {
            return;
        }
        if let Some(started) = seconds(&v.started) {
            self.steps[i].started.get_or_insert(started);
        }
        let failed = !v.error.is_empty();
        if v.cached || failed || (v.started.is_some() && !internal(&v.name)) {
            self.announce(i, out);
        }
        let step = &mut self.steps[i];
        let Some(number) = step.number else {
            // An internal step that went well: the context upload, the Dockerfile's load.
            if v.completed.is_some() {
                step.ended = true;
            }
            return;
        };
        if v.cached {
            step.ended = true;
            out.push(format!("#{number} CACHED"));
        } else if failed {
            step.ended = true;
            step.error = Some(v.error.clone());
            out.push(format!("#{number} ERROR: {}", v.error));
        } else if let Some(completed) = seconds(&v.completed) {
            step.ended = true;
            let took = completed - step.started.unwrap_or(completed);
            out.push(format!("#{number} DONE {:.1}s", took.max(0.0)));
        }
    }

    /// Prints a step's name the first time anything is said about it.
    fn announce(&mut self, i: usize, out: &mut Vec<String>) {
        if self.steps[i].number.is_some() {
            return;
        }
        let number = self.steps.iter().filter(|s| s.number.is_some()).count() + 1;
        let step = &mut self.steps[i];
        step.number = Some(number);
        out.push(format!("#{number} {}", step.name));
    }
}

impl StepState {
    /// The whole lines in `partial`, taken out of it (a line too long is cut).
    fn complete_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let rest = self.partial.split_off(end + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            lines.push(redraw(&String::from_utf8_lossy(&line[..end])));
        }
        while self.partial.len() > MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.partial, rest);
            lines.push(String::from_utf8_lossy(&piece).into_owned());
        }
        for line in &lines {
            self.keep(line);
        }
        lines
    }

    fn keep(&mut self, line: &str) {
        if self.last_lines.len() == LAST_LINES {
            self.last_lines.pop_front();
        }
        self.last_lines.push_back(line.to_owned());
    }
}

/// BuildKit's own bookkeeping steps, shown only when they fail.
fn internal(name: &str) -> bool {
    name.starts_with("[internal]") || name == "copy /context /"
}

/// A progress bar redraws its line with `\r`; the last redraw is what a terminal shows.
pub(crate) fn redraw(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    line.rsplit('\r').next().unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use bollard_buildkit_proto::google::protobuf::Timestamp;
    use bollard_buildkit_proto::moby::buildkit::v1::VertexLog;

    use super::*;

    fn at(seconds: i64, millis: i32) -> Option<Timestamp> {
        Some(Timestamp {
            seconds,
            nanos: millis * 1_000_000,
        })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.to_owned(),
            name: name.to_owned(),
            ..Vertex::default()
        }
    }

    fn log(digest: &str, msg: &str) -> VertexLog {
        VertexLog {
            vertex: digest.to_owned(),
            msg: msg.as_bytes().to_vec(),
            ..VertexLog::default()
        }
    }

    fn status(vertexes: Vec<Vertex>, logs: Vec<VertexLog>) -> StatusResponse {
        StatusResponse {
            vertexes,
            logs,
            ..StatusResponse::default()
        }
    }

    #[test]
    fn each_step_is_named_once_with_its_output_and_duration() {
        let mut p = Progress::default();
        let run = "[stage-0 2/3] RUN pip install";
        let mut lines = Vec::new();
        // The context upload: internal, silent when it goes well.
        let mut ctx = vertex("c", "[internal] load remote build context");
        ctx.started = at(10, 0);
        lines.extend(p.update(&status(vec![ctx.clone()], vec![])));
        ctx.completed = at(10, 100);
        lines.extend(p.update(&status(vec![ctx], vec![])));
        // A step starts, prints across messages, repeats itself, and ends.
        let mut v = vertex("r", run);
        v.started = at(10, 200);
        lines.extend(p.update(&status(vec![v.clone()], vec![log("r", "Collect")])));
        lines.extend(p.update(&status(
            vec![v.clone()],
            vec![log("r", "ing flask\n10%\r100%\n")],
        )));
        v.completed = at(11, 450);
        lines.extend(p.update(&status(vec![v.clone()], vec![])));
        lines.extend(p.update(&status(vec![v], vec![])));
        // A cached step.
        let mut copy = vertex("k", "[stage-0 3/3] COPY . /app");
        copy.cached = true;
        lines.extend(p.update(&status(vec![copy.clone()], vec![])));
        lines.extend(p.update(&status(vec![copy], vec![])));
        assert_eq!(
            lines,
            [
                "#1 [stage-0 2/3] RUN pip install",
                "#1 Collecting flask",
                "#1 100%",
                "#1 DONE 1.2s",
                "#2 [stage-0 3/3] COPY . /app",
                "#2 CACHED",
            ]
        );
        assert_eq!(p.failed(), None);
    }

    #[test]
    fn a_failed_step_keeps_its_last_lines() {
        let mut p = Progress::default();
        let mut v = vertex("r", "[stage-0 2/2] RUN ./build.sh");
        v.started = at(1, 0);
        let output: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        p.update(&status(
            vec![v.clone()],
            vec![log("r", &output), log("r", "no newline")],
        ));
        v.completed = at(2, 0);
        v.error = "executor failed running [/bin/sh -c ./build.sh]: exit code: 3".to_owned();
        let lines = p.update(&status(vec![v], vec![]));
        assert_eq!(
            lines,
            ["#1 ERROR: executor failed running [/bin/sh -c ./build.sh]: exit code: 3"]
        );
        assert_eq!(p.finish(), ["#1 no newline"]);
        let failed = p.failed().unwrap();
        assert_eq!(failed.name, "[stage-0 2/2] RUN ./build.sh");
        assert_eq!(failed.last_lines.len(), LAST_LINES);
        assert_eq!(failed.last_lines.first().unwrap(), "line 7");
        assert_eq!(failed.last_lines.last().unwrap(), "no newline");
    }

    #[test]
    fn an_internal_step_that_fails_is_shown() {
        let mut p = Progress::default();
        let mut v = vertex("m", "[internal] load metadata for docker.io/library/nope:1");
        v.started = at(1, 0);
        assert!(p.update(&status(vec![v.clone()], vec![])).is_empty());
        v.error = "pull access denied".to_owned();
        assert_eq!(
            p.update(&status(vec![v], vec![])),
            [
                "#1 [internal] load metadata for docker.io/library/nope:1",
                "#1 ERROR: pull access denied"
            ]
        );
    }

    #[test]
    fn endless_output_without_newlines_is_cut_into_lines() {
        let mut p = Progress::default();
        let mut v = vertex("r", "RUN yes");
        v.started = at(1, 0);
        let chunk = "y".repeat(MAX_LINE * 2 + 10);
        let lines = p.update(&status(vec![v], vec![log("r", &chunk)]));
        assert_eq!(lines.len(), 3, "the name and two full pieces");
        assert_eq!(p.steps[0].partial.len(), 10);
    }
}
