//! What travels over `ROOT/deploy.sock`: one JSON request per connection, then the deploy's
//! events and its outcome, one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::ids::{Revision, UserName};
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

    pub(crate) fn into_request(self) -> Request {
        let Ask::Deploy {
            pushed,
            expression,
            user,
            trigger,
        } = self;
        let target = match pushed {
            Some((revision, refname)) => Target::Pushed { revision, refname },
            None => Target::Expression(expression),
        };
        // Sanitized again: the socket is an input like any other.
        Request {
            target,
            user: UserName::sanitize(&user),
            trigger,
        }
    }
}
