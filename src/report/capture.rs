//! A sink that keeps events in memory, so tests can assert on what a deploy reported.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Local};

use super::terminal::{Renderer, Style};
use super::{Event, Sink, Source, StepKind};

/// Every event a reporter emitted, after redaction. Clones share the same list.
#[derive(Clone, Default)]
pub(crate) struct Captured {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Captured {
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The lines printed by what the steps of `kind` ran, in order.
    pub(crate) fn output(&self, kind: &StepKind) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Output {
                    source: Source::Step { kind: k, .. },
                    line,
                } if &k == kind => Some(line),
                _ => None,
            })
            .collect()
    }

    /// What the pusher would have seen in hook mode, line by line.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut renderer = Renderer::new(Style::Plain);
        self.events()
            .iter()
            .flat_map(|e| {
                renderer
                    .render(e)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Sink for Captured {
    fn emit(&mut self, _at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }

    fn name(&self) -> String {
        "test capture".to_owned()
    }
}
