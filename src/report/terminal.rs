//! The pusher's terminal: Heroku/Dokku-style lines on stderr, coloured only on a tty.
//!
//! ```text
//! -----> build web
//!        Step 1/3 : FROM python:3.11-slim
//!        build web done in 1.2s
//!  !     warning: service `db` has no healthcheck
//! ```

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Local};

#[cfg(test)]
use super::StepKind;
use super::{Event, Sink, Source, StepId, format_elapsed};

const HEADING: &str = "-----> ";
const INDENT: &str = "       ";
const ALERT: &str = " !     ";

/// Whether to decorate with ANSI colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Style {
    /// In hook mode git relays stderr as `remote:` lines, where escape codes are noise.
    Plain,
    Colour,
}

impl Style {
    /// Colour only on a tty, and never when the user asked for none (`NO_COLOR`, `TERM=dumb`).
    fn for_stderr() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !no_color && !dumb {
            Style::Colour
        } else {
            Style::Plain
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        match self {
            Style::Plain => text.to_owned(),
            Style::Colour => format!("\x1b[{code}m{text}\x1b[0m"),
        }
    }
}

const BOLD_CYAN: &str = "1;36";
const GREEN: &str = "32";
const RED: &str = "31";
const BOLD_RED: &str = "1;31";
const YELLOW: &str = "33";
const DIM: &str = "2";

/// Turns events into terminal lines. Keeps the open steps so output and messages that belong
/// to the current step read as its body.
pub(crate) struct Renderer {
    style: Style,
    open_steps: Vec<StepId>,
}

impl Renderer {
    pub(crate) fn new(style: Style) -> Self {
        Self {
            style,
            open_steps: Vec::new(),
        }
    }

    /// The lines for one event, each ending in `\n`.
    pub(crate) fn render(&mut self, event: &Event) -> String {
        let s = self.style;
        match event {
            Event::StepStarted { id, kind } => {
                self.open_steps.push(*id);
                lines(
                    &s.paint(BOLD_CYAN, HEADING),
                    &s.paint("1", &kind.to_string()),
                )
            }
            Event::StepFinished {
                id,
                kind,
                elapsed,
                ok,
            } => {
                if let Some(i) = self.open_steps.iter().rposition(|open| open == id) {
                    self.open_steps.remove(i);
                }
                let elapsed = format_elapsed(*elapsed);
                if *ok {
                    lines(
                        INDENT,
                        &format!("{kind} {} in {elapsed}", s.paint(GREEN, "done")),
                    )
                } else {
                    lines(
                        &s.paint(RED, ALERT),
                        &format!("{kind} {} after {elapsed}", s.paint(RED, "failed")),
                    )
                }
            }
            Event::Output { source, line } => {
                // Output of the step on screen is its body; anything else (another task's
                // output interleaving, a container's log) says where it comes from.
                let own =
                    matches!(source, Source::Step { id, .. } if self.open_steps.last() == Some(id));
                if own {
                    lines(INDENT, line)
                } else {
                    lines(
                        INDENT,
                        &format!("{} {line}", s.paint(DIM, &format!("{source} |"))),
                    )
                }
            }
            Event::Plan { rows } => rows
                .iter()
                .map(|row| lines(INDENT, &row.to_string()))
                .collect(),
            Event::Info(text) => {
                if self.open_steps.is_empty() {
                    lines(&s.paint(BOLD_CYAN, HEADING), text)
                } else {
                    lines(INDENT, text)
                }
            }
            Event::Warn(text) => lines(
                &s.paint(YELLOW, ALERT),
                &format!("{} {text}", s.paint(YELLOW, "warning:")),
            ),
            Event::Error(text) => lines(&s.paint(BOLD_RED, ALERT), &s.paint(BOLD_RED, text)),
        }
    }
}

/// `first` before the first line of `text`, the indent before the others, so a multi-line
/// message stays one aligned block.
fn lines(first: &str, text: &str) -> String {
    let mut out = String::with_capacity(first.len() + text.len() + 1);
    let mut pieces = text.split('\n');
    out.push_str(first);
    out.push_str(pieces.next().unwrap_or_default().trim_end_matches('\r'));
    out.push('\n');
    for piece in pieces {
        out.push_str(INDENT);
        out.push_str(piece.trim_end_matches('\r'));
        out.push('\n');
    }
    out
}

/// Writes rendered events to stderr, one `write_all` per event so lines from concurrent
/// writers never interleave mid-line.
pub(crate) struct TerminalSink {
    renderer: Renderer,
}

impl TerminalSink {
    pub(crate) fn stderr() -> Self {
        Self {
            renderer: Renderer::new(Style::for_stderr()),
        }
    }
}

impl Sink for TerminalSink {
    fn emit(&mut self, _at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        let text = self.renderer.render(event);
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    }

    fn name(&self) -> String {
        "terminal".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn render(style: Style, events: &[Event]) -> String {
        let mut r = Renderer::new(style);
        events.iter().map(|e| r.render(e)).collect()
    }

    fn sample() -> Vec<Event> {
        let build = StepKind::Build {
            services: vec!["web".into()],
        };
        let start = StepKind::Start {
            service: "web".into(),
        };
        vec![
            Event::Info("deploying 0123456789ab to prod".into()),
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
            Event::Output {
                source: Source::Logs {
                    service: "db".into(),
                },
                line: "ready to accept connections".into(),
            },
            Event::Info("sent 12 files".into()),
            Event::StepFinished {
                id: StepId(1),
                kind: build,
                elapsed: Duration::from_millis(1234),
                ok: true,
            },
            Event::StepStarted {
                id: StepId(2),
                kind: start.clone(),
            },
            Event::StepFinished {
                id: StepId(2),
                kind: start,
                elapsed: Duration::from_millis(80),
                ok: false,
            },
            Event::Warn("no healthcheck for `db`".into()),
            Event::Error("failed to start `web`:\ncontainer exited with code 1".into()),
        ]
    }

    #[test]
    fn plain_lines_for_hook_mode() {
        let want = "\
-----> deploying 0123456789ab to prod
-----> build web
       Step 1/2 : FROM debian
       logs db | ready to accept connections
       sent 12 files
       build web done in 1.2s
-----> start web
 !     start web failed after 80ms
 !     warning: no healthcheck for `db`
 !     failed to start `web`:
       container exited with code 1
";
        assert_eq!(render(Style::Plain, &sample()), want);
    }

    #[test]
    fn plain_has_no_escape_codes_and_colour_has_them() {
        assert!(!render(Style::Plain, &sample()).contains('\x1b'));
        assert!(render(Style::Colour, &sample()).contains("\x1b[1;36m-----> \x1b[0m"));
    }
}
