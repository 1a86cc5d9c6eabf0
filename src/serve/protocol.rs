//! What travels over `ROOT/deploy.sock`: one JSON request per connection, then the deploy's
//! events and its outcome, one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::identity::Pusher;
use crate::ids::Revision;
use crate::ledger::Trigger;
use crate::pipeline::{Request, Target};
use crate::report::Event;

/// A deploy asked of the daemon. Only deploys of revisions already in the repo can be asked
/// for; the socket offers nothing else.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ask {
    Deploy {
        /// The pushed commit and ref, or `None` with `expression` for `deploy --revision`.
        pushed: Option<(Revision, String)>,
        expression: Option<String>,
        /// The pusher's name as the client claims it; believed only from a peer that may
        /// vouch for others (`identity`).
        user: String,
        trigger: Trigger,
    },
}

/// What the daemon sends back while and after it works.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Waiting behind other deploys.
    Queued {
        ahead: usize,
    },
    Event(Event),
    /// The end: the deploy's outcome. `message` says why it failed or was skipped.
    Done {
        ok: bool,
        message: Option<String>,
    },
}

impl Ask {
    pub(crate) fn from_request(request: &Request) -> Self {
        let (pushed, expression) = match &request.target {
            Target::Pushed { revision, refname } => {
                (Some((revision.clone(), refname.clone())), None)
            }
            Target::Expression(e) => (None, e.clone()),
        };
        Ask::Deploy {
            pushed,
            expression,
            user: request.user.to_string(),
            trigger: request.trigger,
        }
    }

    /// The pusher's name the client claims.
    pub(crate) fn claimed_user(&self) -> &str {
        let Ask::Deploy { user, .. } = self;
        user
    }

    /// The request, on behalf of `pusher`: who the daemon decided asked, from the claim and
    /// the peer's uid.
    pub(crate) fn into_request(self, pusher: Pusher) -> Request {
        let Ask::Deploy {
            pushed,
            expression,
            user: _,
            trigger,
        } = self;
        let target = match pushed {
            Some((revision, refname)) => Target::Pushed { revision, refname },
            None => Target::Expression(expression),
        };
        Request {
            target,
            user: pusher.name,
            uid: pusher.uid,
            trigger,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_the_decided_pusher_not_the_claim() {
        let ask = Ask::Deploy {
            pushed: None,
            expression: Some("main~1".to_owned()),
            user: "alice-the-admin".to_owned(),
            trigger: Trigger::Rollback,
        };
        assert_eq!(ask.claimed_user(), "alice-the-admin");
        let pusher = Pusher {
            name: crate::ids::UserName::sanitize("mallory"),
            uid: 1000,
        };
        let request = ask.into_request(pusher);
        assert_eq!((request.user.as_str(), request.uid), ("mallory", 1000));
        assert!(matches!(request.target, Target::Expression(Some(e)) if e == "main~1"));
    }
}
