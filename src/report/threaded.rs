//! A sink on a thread of its own, so the reporter, called from async code, never waits for
//! a disk's `fsync` or a slow pusher's pipe: events queue to the thread in order.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use chrono::{DateTime, Local};

use super::{Event, Sink};

enum Message {
    Event(DateTime<Local>, Event),
    /// Answered once everything sent before it is written.
    Barrier(Sender<()>),
}

pub(crate) struct Threaded {
    name: String,
    tx: Option<Sender<Message>>,
    worker: Option<JoinHandle<()>>,
    /// The error that stopped the thread, reported on the next `emit`.
    failed: Arc<Mutex<Option<std::io::Error>>>,
}

impl Threaded {
    pub(crate) fn spawn(mut sink: Box<dyn Sink>) -> Self {
        let name = sink.name();
        let (tx, rx) = mpsc::channel::<Message>();
        let failed = Arc::new(Mutex::new(None));
        let worker = {
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || {
                for message in rx {
                    match message {
                        Message::Event(at, event) => {
                            if let Err(e) = sink.emit(at, &event) {
                                *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                                return;
                            }
                        }
                        Message::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
        };
        Self {
            name,
            tx: Some(tx),
            worker: Some(worker),
            failed,
        }
    }
}

impl Sink for Threaded {
    fn emit(&mut self, at: DateTime<Local>, event: &Event) -> std::io::Result<()> {
        if let Some(e) = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(Message::Event(at, event.clone())));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "its writer stopped",
            )),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn barrier(&mut self) -> Option<Receiver<()>> {
        let (done, wait) = mpsc::channel();
        self.tx.as_ref()?.send(Message::Barrier(done)).ok()?;
        Some(wait)
    }
}

impl Drop for Threaded {
    /// Writes what is queued before the sink goes: nothing a deploy reported is lost.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
