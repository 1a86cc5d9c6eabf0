//! Tests of the git module against real repositories in temp dirs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{Oid, Repository, Signature, Time};
use tempfile::TempDir;

use super::*;

#[derive(Clone, Copy)]
enum Item {
    File(&'static str),
    Exec(&'static str),
    Link(&'static str),
}

/// A deploy root in a temp dir: `code.git` made by `init_bare`, `code` not yet there.
struct Fixture {
    _tmp: TempDir,
    root: PathBuf,
    repo: PathBuf,
    code: PathBuf,
    /// Blobs above this many bytes are streamed by the checkout rather than written by
    /// libgit2; 0 streams every regular file.
    stream_above: u64,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let repo = root.join("code.git");
        init_bare(&repo, "main").unwrap();
        Self {
            code: root.join("code"),
            repo,
            root,
            _tmp: tmp,
            stream_above: u64::MAX,
        }
    }

    /// Both ways of writing files: by libgit2, and streamed.
    fn both() -> [Self; 2] {
        let streaming = Self {
            stream_above: 0,
            ..Self::new()
        };
        [Self::new(), streaming]
    }

    fn git(&self) -> Repository {
        Repository::open_bare(&self.repo).unwrap()
    }

    /// Commits `files` on `main`, as a push would, and returns the new commit.
    fn commit(&self, message: &str, files: &[(&str, Item)]) -> Revision {
        let r = self.git();
        let tree = r.find_tree(write_tree(&r, files)).unwrap();
        let parent = r
            .find_reference("refs/heads/main")
            .ok()
            .map(|b| b.peel_to_commit().unwrap());
        let sig = Signature::new(
            "Ada Lovelace",
            "ada@example.com",
            &Time::new(1_700_000_000, 0),
        )
        .unwrap();
        let parents: Vec<_> = parent.iter().collect();
        let oid = r
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                message,
                &tree,
                &parents,
            )
            .unwrap();
        Revision::parse(&oid.to_string()).unwrap()
    }

    fn checkout(&self, rev: &Revision) -> Result<(), GitError> {
        worktree::checkout_streaming_above(&self.repo, &self.code, rev, self.stream_above, u64::MAX)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.code.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Every non-directory under `code`, as `path → kind:content`.
    fn state(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.code, Path::new(""), &mut out);
        out
    }

    /// Adds the operator's untracked files: `.secrets/` (0700) and `.env`.
    fn add_operator_files(&self) {
        let secrets = self.code.join(".secrets");
        fs::create_dir_all(&secrets).unwrap();
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(secrets.join("db_password"), "hunter2").unwrap();
        fs::write(self.code.join(".env"), "DEBUG=0").unwrap();
    }

    fn assert_operator_files(&self) {
        let state = self.state();
        assert_eq!(state[".secrets/db_password"], "file:hunter2");
        assert_eq!(state[".env"], "file:DEBUG=0");
        let mode = fs::metadata(self.code.join(".secrets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

fn write_tree(r: &Repository, files: &[(&str, Item)]) -> Oid {
    let mut builder = r.treebuilder(None).unwrap();
    let mut subdirs: BTreeMap<&str, Vec<(&str, Item)>> = BTreeMap::new();
    for &(path, item) in files {
        if let Some((dir, rest)) = path.split_once('/') {
            subdirs.entry(dir).or_default().push((rest, item));
            continue;
        }
        let (content, mode) = match item {
            Item::File(c) => (c, 0o100644),
            Item::Exec(c) => (c, 0o100755),
            Item::Link(target) => (target, 0o120000),
        };
        builder
            .insert(path, r.blob(content.as_bytes()).unwrap(), mode)
            .unwrap();
    }
    for (dir, items) in subdirs {
        builder
            .insert(dir, write_tree(r, &items), 0o040000)
            .unwrap();
    }
    builder.write().unwrap()
}

fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let key = rel.to_str().unwrap().to_owned();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).unwrap();
            out.insert(key, format!("link:{}", target.display()));
        } else if meta.is_dir() {
            walk(&entry.path(), &rel, out);
        } else {
            let content = fs::read_to_string(entry.path()).unwrap();
            let kind = if meta.permissions().mode() & 0o111 != 0 {
                "exec"
            } else {
                "file"
            };
            out.insert(key, format!("{kind}:{content}"));
        }
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn git_cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bob")
        .env("GIT_AUTHOR_EMAIL", "bob@example.com")
        .env("GIT_COMMITTER_NAME", "Bob")
        .env("GIT_COMMITTER_EMAIL", "bob@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ---- init_bare ----

#[test]
fn init_bare_creates_a_bare_repo_with_head_on_the_branch() {
    let f = Fixture::new();
    let r = f.git();
    assert!(r.is_bare());
    let head = r.find_reference("HEAD").unwrap();
    assert_eq!(head.symbolic_target().unwrap(), Some("refs/heads/main"));
    assert!(f.repo.join("hooks").is_dir());
    assert_eq!(
        git_cli(&f.repo, &["rev-parse", "--is-bare-repository"]),
        "true"
    );
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), None);
}

#[test]
fn init_bare_again_keeps_refs_and_can_move_head() {
    let f = Fixture::new();
    let first = f.commit("first", &[("a", Item::File("1"))]);
    init_bare(&f.repo, "main").unwrap();
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), Some(first.clone()));

    init_bare(&f.repo, "release/v2").unwrap();
    let r = f.git();
    assert_eq!(
        r.find_reference("HEAD").unwrap().symbolic_target().unwrap(),
        Some("refs/heads/release/v2")
    );
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), Some(first));
    assert_eq!(branch_tip(&f.repo, "release/v2").unwrap(), None);
}

#[test]
fn init_bare_accepts_pushes_from_the_git_cli() {
    let f = Fixture::new();
    let work = f.root.join("laptop");
    fs::create_dir(&work).unwrap();
    git_cli(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("app.py"), "print('hi')\n").unwrap();
    git_cli(&work, &["add", "."]);
    git_cli(&work, &["commit", "-q", "-m", "first"]);
    let pushed = git_cli(&work, &["rev-parse", "HEAD"]);
    git_cli(&work, &["push", "-q", f.repo.to_str().unwrap(), "main"]);
    assert_eq!(
        branch_tip(&f.repo, "main").unwrap().unwrap().as_str(),
        pushed
    );
    // Pushing again (a second commit) updates the branch HEAD points at, without complaint.
    fs::write(work.join("app.py"), "print('bye')\n").unwrap();
    git_cli(&work, &["commit", "-q", "-am", "second"]);
    git_cli(&work, &["push", "-q", f.repo.to_str().unwrap(), "main"]);
    let pushed = git_cli(&work, &["rev-parse", "HEAD"]);
    assert_eq!(
        branch_tip(&f.repo, "main").unwrap().unwrap().as_str(),
        pushed
    );
}

#[test]
fn init_bare_refuses_bad_branch_names() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("code.git");
    for bad in [
        "", "a..b", "-x", "HEAD", "a b", "x.lock", "a\nb", "a~1", "a:b", "/a", "a/",
    ] {
        match init_bare(&repo, bad) {
            Err(GitError::InvalidBranch(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(!repo.exists(), "nothing is created for a bad name");
    let msg = init_bare(&repo, "a..b").unwrap_err().to_string();
    assert_eq!(
        msg,
        "invalid branch name `a..b`: git does not accept `refs/heads/a..b` as a ref name"
    );
}

#[test]
fn init_bare_refuses_to_take_over_other_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep.txt"), "mine").unwrap();
    assert!(matches!(
        init_bare(&full, "main"),
        Err(GitError::NotEmpty(_))
    ));
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);

    let work = tmp.path().join("work");
    Repository::init(&work).unwrap();
    assert!(matches!(
        init_bare(&work, "main"),
        Err(GitError::NotBare(_))
    ));

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    init_bare(&empty, "main").unwrap();
    assert!(Repository::open_bare(&empty).unwrap().is_bare());
}

// ---- resolve and branch_tip ----

#[test]
fn resolve_understands_shas_branches_tags_and_expressions() {
    let f = Fixture::new();
    let first = f.commit("first", &[("a", Item::File("1"))]);
    let second = f.commit("second", &[("a", Item::File("2"))]);
    let r = f.git();
    let oid = Oid::from_str(first.as_str()).unwrap();
    r.tag_lightweight("light", &r.find_object(oid, None).unwrap(), false)
        .unwrap();
    let sig = Signature::now("T", "t@example.com").unwrap();
    r.tag(
        "v1.0",
        &r.find_object(oid, None).unwrap(),
        &sig,
        "release",
        false,
    )
    .unwrap();
    r.reference("refs/heads/feature/x", oid, false, "test")
        .unwrap();

    let cases = [
        (second.as_str().to_owned(), &second),
        (second.as_str().to_uppercase(), &second),
        (second.as_str()[..7].to_owned(), &second),
        ("main".to_owned(), &second),
        ("HEAD".to_owned(), &second),
        ("main~1".to_owned(), &first),
        ("main^".to_owned(), &first),
        ("light".to_owned(), &first),
        ("v1.0".to_owned(), &first),
        ("refs/tags/v1.0".to_owned(), &first),
        ("feature/x".to_owned(), &first),
    ];
    for (rev, want) in cases {
        assert_eq!(&resolve(&f.repo, &rev, "main").unwrap(), want, "{rev}");
    }
}

/// Issue 17, finding 13: a tag named like the deploy branch must not stand in for it.
#[test]
fn issue17_the_deploy_branch_wins_over_a_tag_of_its_name() {
    let f = Fixture::new();
    let first = f.commit("first", &[("a", Item::File("1"))]);
    let second = f.commit("second", &[("a", Item::File("2"))]);
    let r = f.git();
    let oid = Oid::from_str(first.as_str()).unwrap();
    r.tag_lightweight("main", &r.find_object(oid, None).unwrap(), false)
        .unwrap();
    assert_eq!(resolve(&f.repo, "main", "main").unwrap(), second);
    assert_eq!(resolve(&f.repo, "main~1", "main").unwrap(), first);
    assert_eq!(resolve(&f.repo, "refs/tags/main", "main").unwrap(), first);
    // Another branch name is left to git.
    assert_eq!(resolve(&f.repo, "main", "prod").unwrap(), first);
}

#[test]
fn resolve_refuses_what_is_not_a_commit() {
    let f = Fixture::new();
    f.commit("first", &[("a", Item::File("1"))]);
    let r = f.git();
    let main = r
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let tree = main.tree_id().to_string();
    let blob = r.blob(b"loose").unwrap().to_string();
    for rev in [
        "nope",
        "main~5",
        "main:a",
        tree.as_str(),
        blob.as_str(),
        &"d".repeat(40),
        "main^{tree}",
    ] {
        match resolve(&f.repo, rev, "main") {
            Err(GitError::UnknownRevision(got)) => assert_eq!(got, rev),
            other => panic!("{rev}: {other:?}"),
        }
    }
    assert_eq!(
        resolve(&f.repo, "nope", "main").unwrap_err().to_string(),
        "unknown revision `nope`: no commit, branch or tag by that name in the pushed repo"
    );
}

#[test]
fn resolve_refuses_option_like_and_control_input_before_git_sees_it() {
    let f = Fixture::new();
    let cases = [
        ("", "invalid revision ``: it is empty"),
        ("--all", "invalid revision `--all`: it starts with `-`"),
        (
            "main\n",
            "invalid revision `main\\n`: it contains a control character",
        ),
        (
            "ma\u{1b}[2Jin",
            "invalid revision `ma\\u{1b}[2Jin`: it contains a control character",
        ),
        (
            "a\0b",
            "invalid revision `a\\0b`: it contains a control character",
        ),
    ];
    for (rev, want) in cases {
        assert_eq!(resolve(&f.repo, rev, "main").unwrap_err().to_string(), want);
    }
}

#[test]
fn resolve_says_when_a_short_sha_is_ambiguous() {
    let f = Fixture::new();
    f.commit("first", &[("a", Item::File("1"))]);
    let r = f.git();
    // Write blobs until two ids share their first 4 hex digits (about 300 on average).
    let mut seen = BTreeMap::new();
    let prefix = (0..100_000)
        .find_map(|i| {
            let id = r.blob(format!("blob {i}").as_bytes()).unwrap().to_string();
            seen.insert(id[..4].to_owned(), id.clone())
                .map(|_| id[..4].to_owned())
        })
        .unwrap();
    let err = resolve(&f.repo, &prefix, "main").unwrap_err();
    assert!(matches!(err, GitError::AmbiguousRevision(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "ambiguous revision `{prefix}`: more than one object id starts with it; give more characters"
        )
    );
}

#[test]
fn branch_tip_reads_branches_and_refuses_bad_names() {
    let f = Fixture::new();
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), None);
    let first = f.commit("first", &[("a", Item::File("1"))]);
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), Some(first));
    assert_eq!(branch_tip(&f.repo, "other").unwrap(), None);
    assert!(matches!(
        branch_tip(&f.repo, "a..b"),
        Err(GitError::InvalidBranch(_))
    ));
}

#[test]
fn opening_a_missing_repo_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.git");
    let msg = resolve(&missing, "main", "main").unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "failed to open the push repository `{}`: ",
            missing.display()
        )),
        "{msg}"
    );
}

// ---- checkout ----

#[test]
fn checkout_writes_updates_and_removes_tracked_files() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "v1",
            &[
                ("app.py", Item::File("v1")),
                ("old.txt", Item::File("old")),
                ("lib/util.py", Item::File("u1")),
            ],
        );
        let v2 = f.commit(
            "v2",
            &[
                ("app.py", Item::File("v2")),
                ("lib/new.py", Item::File("n")),
            ],
        );

        f.checkout(&v1).unwrap();
        assert_eq!(
            f.state(),
            map(&[
                ("app.py", "file:v1"),
                ("old.txt", "file:old"),
                ("lib/util.py", "file:u1")
            ])
        );

        f.checkout(&v2).unwrap();
        assert_eq!(
            f.state(),
            map(&[("app.py", "file:v2"), ("lib/new.py", "file:n")])
        );
    }
}

#[test]
fn checkout_keeps_untracked_operator_files_through_every_change() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "v1",
            &[("app.py", Item::File("v1")), ("conf/a", Item::File("a"))],
        );
        f.checkout(&v1).unwrap();
        f.add_operator_files();
        f.write("conf/local.ini", "mine");

        let v2 = f.commit("v2", &[("app.py", Item::File("v2"))]);
        f.checkout(&v2).unwrap();
        f.assert_operator_files();
        assert_eq!(
            f.state()["conf/local.ini"],
            "file:mine",
            "an untracked file in a removed dir stays"
        );
        assert!(!f.code.join("conf/a").exists());

        f.checkout(&v1).unwrap();
        f.assert_operator_files();
        assert_eq!(f.state()["app.py"], "file:v1");
    }
}

#[test]
fn checkout_rolls_back_to_an_older_revision() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "v1",
            &[
                ("app.py", Item::File("v1")),
                ("gone-later", Item::File("x")),
            ],
        );
        let v2 = f.commit(
            "v2",
            &[
                ("app.py", Item::File("v2")),
                ("added-later", Item::File("y")),
            ],
        );
        f.checkout(&v2).unwrap();
        f.add_operator_files();

        f.checkout(&v1).unwrap();
        let mut want = map(&[("app.py", "file:v1"), ("gone-later", "file:x")]);
        want.extend(map(&[
            (".env", "file:DEBUG=0"),
            (".secrets/db_password", "file:hunter2"),
        ]));
        assert_eq!(f.state(), want);
    }
}

#[test]
fn checkout_never_moves_the_bare_repos_head_or_branches() {
    let f = Fixture::new();
    let v1 = f.commit("v1", &[("a", Item::File("1"))]);
    let v2 = f.commit("v2", &[("a", Item::File("2"))]);
    f.checkout(&v1).unwrap();
    f.checkout(&v2).unwrap();
    f.checkout(&v1).unwrap();
    let r = f.git();
    assert_eq!(
        r.find_reference("HEAD").unwrap().symbolic_target().unwrap(),
        Some("refs/heads/main")
    );
    assert_eq!(branch_tip(&f.repo, "main").unwrap(), Some(v2));
    assert!(
        !f.code.join(".git").exists(),
        "no gitlink is written into the work tree"
    );
    assert_eq!(
        git_cli(&f.repo, &["rev-parse", "--is-bare-repository"]),
        "true"
    );
}

#[test]
fn checkout_turns_a_file_into_a_directory_and_back() {
    for f in Fixture::both() {
        let as_file = f.commit("file", &[("config", Item::File("flat"))]);
        let as_dir = f.commit("dir", &[("config/app.ini", Item::File("nested"))]);
        f.checkout(&as_file).unwrap();
        f.checkout(&as_dir).unwrap();
        assert_eq!(f.state(), map(&[("config/app.ini", "file:nested")]));
        f.checkout(&as_file).unwrap();
        assert_eq!(f.state(), map(&[("config", "file:flat")]));
    }
}

#[test]
fn checkout_writes_symlinks_as_symlinks() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "links",
            &[
                ("real.txt", Item::File("r")),
                ("alias", Item::Link("real.txt")),
                ("dir/up", Item::Link("../real.txt")),
            ],
        );
        f.checkout(&v1).unwrap();
        assert!(
            fs::symlink_metadata(f.code.join("alias"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            f.state(),
            map(&[
                ("real.txt", "file:r"),
                ("alias", "link:real.txt"),
                ("dir/up", "link:../real.txt")
            ])
        );
        assert_eq!(fs::read_to_string(f.code.join("dir/up")).unwrap(), "r");
        // A link that becomes a file, and a file that becomes a link.
        let v2 = f.commit(
            "swap",
            &[
                ("real.txt", Item::Link("alias")),
                ("alias", Item::File("a")),
            ],
        );
        f.checkout(&v2).unwrap();
        assert_eq!(
            f.state(),
            map(&[("real.txt", "link:alias"), ("alias", "file:a")])
        );
    }
}

#[test]
fn checkout_keeps_the_executable_bit() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "exec",
            &[
                ("run.sh", Item::Exec("#!/bin/sh")),
                ("data", Item::File("d")),
            ],
        );
        f.checkout(&v1).unwrap();
        assert_eq!(
            f.state(),
            map(&[("run.sh", "exec:#!/bin/sh"), ("data", "file:d")])
        );
        let v2 = f.commit(
            "flip",
            &[
                ("run.sh", Item::File("#!/bin/sh")),
                ("data", Item::Exec("d")),
            ],
        );
        f.checkout(&v2).unwrap();
        assert_eq!(
            f.state(),
            map(&[("run.sh", "file:#!/bin/sh"), ("data", "exec:d")])
        );
    }
}

#[test]
fn checkout_puts_back_hand_edited_and_deleted_tracked_files() {
    for f in Fixture::both() {
        let v1 = f.commit(
            "v1",
            &[("app.py", Item::File("v1")), ("b", Item::File("b"))],
        );
        f.checkout(&v1).unwrap();
        f.write("app.py", "hot fix on the server");
        fs::remove_file(f.code.join("b")).unwrap();
        f.checkout(&v1).unwrap();
        assert_eq!(f.state(), map(&[("app.py", "file:v1"), ("b", "file:b")]));
    }
}

#[test]
fn checkout_refuses_a_revision_that_tracks_secrets() {
    let f = Fixture::new();
    let v1 = f.commit("v1", &[("app.py", Item::File("v1"))]);
    f.checkout(&v1).unwrap();
    f.add_operator_files();
    let evil = f.commit(
        "evil",
        &[
            ("app.py", Item::File("v2")),
            (".secrets/db_password", Item::File("pwned")),
        ],
    );
    let err = f.checkout(&evil).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "revision {evil} tracks `.secrets`, which is reserved for the operator's files on the host; remove it from the repository"
        )
    );
    f.assert_operator_files();
    assert_eq!(f.state()["app.py"], "file:v1", "nothing was written");
    // Rolling back while the branch still holds the refused commit deletes nothing either.
    f.checkout(&v1).unwrap();
    f.assert_operator_files();
}

#[test]
fn checkout_refuses_to_overwrite_untracked_files() {
    for f in Fixture::both() {
        let v1 = f.commit("v1", &[("app.py", Item::File("v1"))]);
        f.checkout(&v1).unwrap();
        f.add_operator_files();
        f.write("notes/todo", "mine");
        let v2 = f.commit(
            "v2",
            &[
                ("app.py", Item::File("v2")),
                (".env", Item::File("DEBUG=1")),
                ("notes", Item::File("x")),
            ],
        );
        let err = f.checkout(&v2).unwrap_err();
        assert!(
            matches!(&err, GitError::UntrackedInTheWay { paths, .. } if paths == &[".env", "notes"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "checking out {v2} would overwrite untracked files in `{}`: `.env`, `notes`; move them away or stop tracking them in the repository",
                f.code.display()
            )
        );
        f.assert_operator_files();
        assert_eq!(f.state()["app.py"], "file:v1", "nothing was written");
    }
}

/// libgit2 deletes what the baseline (normally HEAD) has and the target lacks. In the bare
/// repo HEAD is the newest push, so a rollback after a refused push that tracks `.env` would
/// delete the operator's `.env` unless the baseline is what the work tree really holds.
#[test]
fn rollback_after_a_refused_push_keeps_the_operators_files() {
    let f = Fixture::new();
    let v1 = f.commit("v1", &[("app.py", Item::File("v1"))]);
    f.checkout(&v1).unwrap();
    f.add_operator_files();
    let bad = f.commit(
        "tracks .env",
        &[
            ("app.py", Item::File("v2")),
            (".env", Item::File("DEBUG=1")),
        ],
    );
    assert!(f.checkout(&bad).is_err());
    // The branch (and the bare repo's HEAD) still points at `bad` while rolling back.
    f.checkout(&v1).unwrap();
    f.assert_operator_files();
    let v3 = f.commit("v3", &[("app.py", Item::File("v3"))]);
    f.checkout(&v3).unwrap();
    f.assert_operator_files();
}

#[test]
fn checkout_accepts_untracked_files_that_already_match() {
    let f = Fixture::new();
    f.write("app.py", "v1");
    f.add_operator_files();
    let v1 = f.commit(
        "v1",
        &[("app.py", Item::File("v1")), ("new.py", Item::File("n"))],
    );
    f.checkout(&v1).unwrap();
    assert_eq!(f.state()["app.py"], "file:v1");
    f.assert_operator_files();
}

#[test]
fn checkout_refuses_to_replace_a_directory_holding_untracked_files() {
    let f = Fixture::new();
    let as_dir = f.commit("dir", &[("config/app.ini", Item::File("nested"))]);
    f.checkout(&as_dir).unwrap();
    f.write("config/local.ini", "mine");
    let as_file = f.commit("file", &[("config", Item::File("flat"))]);
    let err = f.checkout(&as_file).unwrap_err();
    assert!(
        matches!(&err, GitError::UntrackedInTheWay { paths, .. } if paths == &["config"]),
        "{err:?}"
    );
    assert_eq!(f.state()["config/local.ini"], "file:mine");
}

#[test]
fn checkout_survives_a_garbage_collected_baseline() {
    let f = Fixture::new();
    let v1 = f.commit(
        "v1",
        &[("app.py", Item::File("v1")), ("old", Item::File("o"))],
    );
    f.checkout(&v1).unwrap();
    f.add_operator_files();
    // As if a force push and `git gc` had pruned the commit last checked out.
    fs::write(
        f.repo.join("deploy/checkout/HEAD"),
        format!("{}\n", "e".repeat(40)),
    )
    .unwrap();
    let v2 = f.commit("v2", &[("app.py", Item::File("v2"))]);
    f.checkout(&v2).unwrap();
    assert_eq!(f.state()["app.py"], "file:v2");
    assert!(
        !f.code.join("old").exists(),
        "the index still says what was tracked"
    );
    f.assert_operator_files();
}

#[test]
fn streamed_files_come_from_loose_and_packed_objects_and_leave_a_clean_index() {
    let [_, f] = Fixture::both();
    let v1 = f.commit(
        "v1",
        &[("big.bin", Item::File("loose")), ("run", Item::Exec("x"))],
    );
    f.checkout(&v1).unwrap();
    // What git itself sees through the private git dir: nothing modified.
    let status = |f: &Fixture| {
        let gitdir = f.repo.join("deploy/checkout");
        git_cli(
            &f.code,
            &[
                &format!("--git-dir={}", gitdir.display()),
                &format!("--work-tree={}", f.code.display()),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
        )
    };
    assert_eq!(status(&f), "");

    let v2 = f.commit(
        "v2",
        &[("big.bin", Item::File("packed")), ("run", Item::Exec("y"))],
    );
    git_cli(&f.repo, &["gc", "--quiet", "--prune=now"]);
    assert!(
        fs::read_dir(f.repo.join("objects")).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            name == "pack" || name == "info"
        }),
        "every object is packed"
    );
    f.checkout(&v2).unwrap();
    assert_eq!(
        f.state(),
        map(&[("big.bin", "file:packed"), ("run", "exec:y")])
    );
    assert_eq!(status(&f), "");
}

#[test]
fn checkout_of_an_unknown_revision_fails_cleanly() {
    let f = Fixture::new();
    f.commit("v1", &[("a", Item::File("1"))]);
    let missing = Revision::parse(&"a".repeat(40)).unwrap();
    assert!(matches!(
        f.checkout(&missing),
        Err(GitError::UnknownRevision(_))
    ));
}

// ---- tree_id and commit_info ----

#[test]
fn tree_id_finds_subdirectories_and_stays_equal_for_equal_contents() {
    let f = Fixture::new();
    let v1 = f.commit(
        "v1",
        &[
            ("web/app.py", Item::File("a")),
            ("web/static/x.css", Item::File("x")),
            ("README", Item::File("1")),
        ],
    );
    let v2 = f.commit(
        "v2",
        &[
            ("web/app.py", Item::File("a")),
            ("web/static/x.css", Item::File("x")),
            ("README", Item::File("2")),
        ],
    );

    let root1 = tree_id(&f.repo, &v1, Path::new("")).unwrap().unwrap();
    let root2 = tree_id(&f.repo, &v2, Path::new("")).unwrap().unwrap();
    assert_ne!(root1, root2);
    assert_eq!(
        root1,
        f.git()
            .find_commit(Oid::from_str(v1.as_str()).unwrap())
            .unwrap()
            .tree_id()
            .to_string()
    );

    let web1 = tree_id(&f.repo, &v1, Path::new("web")).unwrap();
    assert!(web1.is_some());
    assert_eq!(web1, tree_id(&f.repo, &v2, Path::new("./web/")).unwrap());
    assert_eq!(tree_id(&f.repo, &v1, Path::new(".")).unwrap(), Some(root1));
    assert!(
        tree_id(&f.repo, &v1, Path::new("web/static"))
            .unwrap()
            .is_some()
    );

    assert_eq!(tree_id(&f.repo, &v1, Path::new("api")).unwrap(), None);
    assert_eq!(
        tree_id(&f.repo, &v1, Path::new("README")).unwrap(),
        None,
        "a file is no tree"
    );
    for bad in ["../x", "/etc", "web/../../x"] {
        assert!(
            matches!(
                tree_id(&f.repo, &v1, Path::new(bad)),
                Err(GitError::PathOutsideRepo(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn commit_info_reads_author_and_subject_safely() {
    let f = Fixture::new();
    let v1 = f.commit(
        "Fix the login page\n\nLong body.",
        &[("a", Item::File("1"))],
    );
    let info = commit_info(&f.repo, &v1).unwrap();
    assert_eq!(
        info,
        CommitInfo {
            revision: v1,
            author: "Ada Lovelace".to_owned(),
            subject: "Fix the login page".to_owned()
        }
    );

    let r = f.git();
    let tree = r.find_tree(write_tree(&r, &[])).unwrap();
    let sig = Signature::new("Eve\u{1b}[31m", "eve@example.com", &Time::new(0, 0)).unwrap();
    let oid = r
        .commit(None, &sig, &sig, "red \u{1b}[2J alert", &tree, &[])
        .unwrap();
    let info = commit_info(&f.repo, &Revision::parse(&oid.to_string()).unwrap()).unwrap();
    assert_eq!(info.author, "Eve\u{fffd}[31m");
    assert_eq!(info.subject, "red \u{fffd}[2J alert");
}

// ---- read_file ----

#[test]
fn read_file_reads_committed_files_at_any_revision() {
    let f = Fixture::new();
    let v1 = f.commit(
        "v1",
        &[
            (
                "docker-compose.yml",
                Item::File("services: {a: {image: x}}\n"),
            ),
            ("deploy/prod.yml", Item::File("p1")),
            ("link.yml", Item::Link("docker-compose.yml")),
        ],
    );
    let v2 = f.commit("v2", &[("docker-compose.yml", Item::File("v2"))]);

    let read =
        |rev: &Revision, path: &str| read_file(&f.repo, rev, Path::new(path), u64::MAX).unwrap();
    assert_eq!(
        read(&v1, "docker-compose.yml").as_deref(),
        Some(&b"services: {a: {image: x}}\n"[..])
    );
    assert_eq!(
        read(&v2, "./docker-compose.yml").as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(read(&v1, "deploy/prod.yml").as_deref(), Some(&b"p1"[..]));
    assert_eq!(read(&v2, "deploy/prod.yml"), None, "gone in v2");
    assert_eq!(read(&v1, "deploy"), None, "a directory is no file");
    assert_eq!(
        read(&v1, "link.yml"),
        None,
        "a symlink leads out of the revision"
    );
    assert_eq!(read(&v1, ""), None);
    assert!(matches!(
        read_file(&f.repo, &v1, Path::new("../x"), u64::MAX),
        Err(GitError::PathOutsideRepo(_))
    ));
}

/// Issue 17: a container that can write to the work tree swaps a directory the last
/// checkout wrote for a symlink to a host directory. The next checkout removes the link
/// (what it points at is untouched) and writes the directory again, instead of refusing
/// every later deploy.
#[test]
fn issue17_a_tracked_directory_swapped_for_a_link_is_put_back() {
    for f in Fixture::both() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("app.py"), "host file").unwrap();
        let v1 = f.commit("v1", &[("src/app.py", Item::File("one"))]);
        let v2 = f.commit("v2", &[("src/app.py", Item::File("two"))]);
        f.checkout(&v1).unwrap();
        std::fs::remove_dir_all(f.code.join("src")).unwrap();
        std::os::unix::fs::symlink(outside.path(), f.code.join("src")).unwrap();
        f.checkout(&v2).unwrap();
        assert_eq!(f.state(), map(&[("src/app.py", "file:two")]));
        assert_eq!(
            std::fs::read_to_string(outside.path().join("app.py")).unwrap(),
            "host file"
        );
    }
}
