//! Who a deploy is recorded under. A name claimed by the environment or on the control socket
//! is believed only from a user who may speak for others; anyone else is their own login name.
//!
//! Git servers run every pusher's hook as one account (gitolite's and Gitea's `git`), which
//! owns the repository and says who pushed in `GL_USER` or `GITEA_PUSHER_NAME`. That account
//! and root may vouch for others. An SSH developer pushing as themselves runs the hook under
//! their own uid, so `DEPLOY_USER=alice-the-admin` from them names nobody but them.

use std::os::unix::fs::MetadataExt;

use crate::ids::UserName;
use crate::root::Root;

/// Where a git server (or a person) puts the pusher's name, in the order they count.
const CLAIM_VARS: [&str; 3] = ["DEPLOY_USER", "GL_USER", "GITEA_PUSHER_NAME"];

/// Who a deploy is recorded under: the name in the ledger and the build log's file name, and
/// the uid that asked for it (the hook's process, or the control socket's peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pusher {
    pub(crate) name: UserName,
    pub(crate) uid: u32,
}

/// The uid that owns `ROOT/code.git`, read through a symlink as gitolite and Gitea setups
/// have it; `None` when it cannot be read, and then only root may vouch.
pub(crate) fn repo_owner(root: &Root) -> Option<u32> {
    std::fs::metadata(root.repo()).ok().map(|m| m.uid())
}

/// Whether `uid` may name someone else as the pusher: root, or the owner of `code.git`.
pub(crate) fn may_vouch(uid: u32, repo_owner: Option<u32>) -> bool {
    uid == 0 || Some(uid) == repo_owner
}

/// The name a deploy is recorded under (the rule itself, without I/O): the claim when `uid`
/// may vouch and it says something, otherwise `uid`'s login name, otherwise `uid-<N>`.
pub(crate) fn recorded_name(
    claim: Option<&str>,
    uid: u32,
    repo_owner: Option<u32>,
    login: Option<&str>,
) -> UserName {
    match claim.filter(|c| !c.trim().is_empty()) {
        Some(claim) if may_vouch(uid, repo_owner) => UserName::sanitize(claim),
        _ => match login.filter(|l| !l.trim().is_empty()) {
            Some(login) => UserName::sanitize(login),
            None => UserName::sanitize(&format!("uid-{uid}")),
        },
    }
}

/// `uid`'s login name from the user database. Blocking: NSS may ask a directory server.
pub(crate) fn login_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The name the environment claims: the first of `DEPLOY_USER`, `GL_USER` and
/// `GITEA_PUSHER_NAME` that is set and not blank.
pub(crate) fn claim_from_env() -> Option<String> {
    CLAIM_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// Applies the rule for `uid` against `root`'s repo owner. Blocking (see `login_name`).
pub(crate) fn pusher(root: &Root, claim: Option<&str>, uid: u32) -> Pusher {
    let owner = repo_owner(root);
    // The login name is looked up only when it is needed.
    let login = match claim {
        Some(c) if !c.trim().is_empty() && may_vouch(uid, owner) => None,
        _ => login_name(uid),
    };
    Pusher {
        name: recorded_name(claim, uid, owner, login.as_deref()),
        uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(claim: Option<&str>, uid: u32, owner: Option<u32>, login: Option<&str>) -> String {
        recorded_name(claim, uid, owner, login).to_string()
    }

    #[test]
    fn root_and_the_repo_owner_may_vouch_and_nobody_else() {
        assert!(may_vouch(0, Some(998)));
        assert!(may_vouch(0, None));
        assert!(may_vouch(998, Some(998)));
        assert!(!may_vouch(1000, Some(998)));
        assert!(!may_vouch(1000, None));
    }

    #[test]
    fn a_claim_counts_only_from_root_or_the_repo_owner() {
        let admin = Some("alice-the-admin");
        // gitolite: the `git` account (uid 998) owns the repo and names the pusher.
        assert_eq!(name(admin, 998, Some(998), Some("git")), "alice-the-admin");
        assert_eq!(name(admin, 0, Some(998), Some("root")), "alice-the-admin");
        // A developer with a shell: their own login name, whatever they claim.
        assert_eq!(name(admin, 1000, Some(998), Some("mallory")), "mallory");
        assert_eq!(name(admin, 1000, None, Some("mallory")), "mallory");
        // No passwd entry (a container's uid, a deleted user).
        assert_eq!(name(admin, 4242, Some(0), None), "uid-4242");
    }

    #[test]
    fn without_a_claim_everyone_is_their_login_name() {
        assert_eq!(name(None, 0, Some(0), Some("root")), "root");
        assert_eq!(name(Some("  "), 998, Some(998), Some("git")), "git");
        assert_eq!(name(None, 4242, Some(0), None), "uid-4242");
    }

    #[test]
    fn claims_and_login_names_are_sanitized() {
        for recorded in [
            name(Some("../../etc/x y"), 0, None, None),
            name(None, 1000, None, Some("../evil")),
        ] {
            assert!(
                !recorded.contains('/') && !recorded.contains(".."),
                "{recorded}"
            );
        }
    }

    #[test]
    fn the_repo_owner_is_read_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("repositories/app.git");
        std::fs::create_dir_all(&real).unwrap();
        let root = Root::new(dir.path().join("root"));
        std::fs::create_dir(root.path()).unwrap();
        std::os::unix::fs::symlink(&real, root.repo()).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(repo_owner(&root), Some(me));
        assert_eq!(repo_owner(&Root::new(dir.path().join("nothing"))), None);
    }
}
