//! How many clients the control socket serves at once: a cap per peer uid, so one user's
//! idle connections cannot lock the others out, and a cap in all, so the socket never takes
//! the descriptors the proxy and the deploys need.
//!
//! A connection counts from accept until it closes, which for a deploy is when its last line
//! was sent: a queued push holds its place while it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Connections one uid may hold open. Deploys run one at a time, and a newer push of a
/// branch replaces a queued one, so more than a few waiting from one user is not a use.
pub(crate) const PER_UID: usize = 8;
/// Connections open in all.
pub(crate) const TOTAL: usize = 64;

/// Why a connection was not admitted; the message is the client's reply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "too many connections to `deploy serve` from uid {uid} ({PER_UID} open); try again when one of them ends"
    )]
    PerUid { uid: u32 },
    #[error("too many connections to `deploy serve` ({TOTAL} open); try again shortly")]
    Total,
}

/// The open connections, by uid.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    open: Arc<Mutex<Counts>>,
    per_uid: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_uid: HashMap<u32, usize>,
    total: usize,
}

/// A place taken by one connection, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    open: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Default for Admission {
    fn default() -> Self {
        Self::with_caps(PER_UID, TOTAL)
    }
}

impl Admission {
    pub(crate) fn with_caps(per_uid: usize, total: usize) -> Self {
        Self {
            open: Arc::default(),
            per_uid,
            total,
        }
    }

    /// Takes a place for a connection from `uid`, or says which cap it hit.
    pub(crate) fn admit(&self, uid: u32) -> Result<Ticket, Refused> {
        let mut open = lock(&self.open);
        if open.total >= self.total {
            return Err(Refused::Total);
        }
        let mine = open.by_uid.entry(uid).or_default();
        if *mine >= self.per_uid {
            return Err(Refused::PerUid { uid });
        }
        *mine += 1;
        open.total += 1;
        Ok(Ticket {
            open: Arc::clone(&self.open),
            uid,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total -= 1;
        if let Some(mine) = open.by_uid.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                open.by_uid.remove(&self.uid);
            }
        }
    }
}

fn lock(open: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Every update of the counts is complete before anything can panic.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_its_own_cap() {
        let admission = Admission::with_caps(2, 10);
        let mallory: Vec<Ticket> = (0..2).map(|_| admission.admit(1000).unwrap()).collect();
        assert_eq!(
            admission.admit(1000).unwrap_err(),
            Refused::PerUid { uid: 1000 }
        );
        // Others are not locked out by one user's connections.
        let _git = admission.admit(998).unwrap();
        let _root = admission.admit(0).unwrap();
        drop(mallory);
        let _again = admission.admit(1000).unwrap();
    }

    #[test]
    fn the_total_is_capped_and_places_come_back() {
        let admission = Admission::with_caps(2, 3);
        let a = admission.admit(1).unwrap();
        let _b = admission.admit(2).unwrap();
        let _c = admission.admit(3).unwrap();
        assert_eq!(admission.admit(4).unwrap_err(), Refused::Total);
        drop(a);
        let _d = admission.admit(4).unwrap();
        assert_eq!(lock(&admission.open).by_uid.len(), 3);
    }

    #[test]
    fn refusals_read_as_a_reply() {
        assert_eq!(
            Refused::PerUid { uid: 1000 }.to_string(),
            "too many connections to `deploy serve` from uid 1000 (8 open); try again when one of them ends"
        );
    }
}
