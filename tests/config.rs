//! Issue #5: `deploy config [REV]` prints what a deploy would run, from the work tree or from
//! any pushed revision, warns about unset variables on stderr, and never prints a secret.

mod common;

use std::process::Output;

use common::*;

const TOKEN: &str = "tok-9f8e7d6c5b4a";

/// A root whose deploy branch is `main`; the files go to `staging`, which does not deploy,
/// so no Docker is involved.
fn staged() -> (Stack, String, String) {
    let stack = Stack::empty("cfg");
    std::fs::write(stack.root.join("code/.secrets/token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        stack.root.join("host.env"),
        format!("API_TOKEN={TOKEN}\nTAG=1.2\n"),
    )
    .unwrap();
    stack.add_settings(
        "env_file: host.env\ncompose_files: [docker-compose.yml, docker-compose.prod.yml]\n",
    );
    stack.write(
        "docker-compose.yml",
        "services:
  web:
    image: \"web:${TAG}\"
    command: run --port 80
    environment:
      TOKEN: ${API_TOKEN}
      MISSING: ${NOT_SET_ANYWHERE}
    secrets: [token]
    healthcheck:
      test: curl -f http://localhost
      interval: 90s
    stop_grace_period: 1m30s
secrets:
  token:
    file: ./.secrets/token
",
    );
    stack.write(
        "docker-compose.prod.yml",
        "services:\n  web:\n    restart: always\n    mem_limit: 256m\n",
    );
    let v1 = stack.commit("v1");
    stack.write(
        "docker-compose.prod.yml",
        "services:\n  web:\n    restart: on-failure:3\n",
    );
    let v2 = stack.commit("v2");
    git(&stack.work, &["push", "-q", "prod", "main:staging"]);
    (stack, v1, v2)
}

fn config(stack: &Stack, rev: Option<&str>) -> Output {
    let mut args = vec!["config"];
    args.extend(rev);
    stack.deploy(&args)
}

fn stdout(stack: &Stack, out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace(&stack.root.display().to_string(), "ROOT")
}

#[test]
fn config_prints_a_revision_and_the_work_tree() {
    let (stack, v1, v2) = staged();

    let at_v1 = config(&stack, Some(&v1[..10]));
    assert!(at_v1.status.success(), "{}", text(&at_v1));
    let printed = stdout(&stack, &at_v1).replace(&stack.project, "PROJECT");
    insta::assert_snapshot!("config_at_v1", printed);
    let stderr = String::from_utf8_lossy(&at_v1.stderr);
    assert!(
        stderr.contains("variable `NOT_SET_ANYWHERE` is not set"),
        "the warning goes to stderr: {stderr}"
    );
    assert!(!text(&at_v1).contains(TOKEN), "a secret value was printed");

    // A branch expression reads the newer files.
    let at_tip = config(&stack, Some("staging"));
    assert!(at_tip.status.success(), "{}", text(&at_tip));
    assert!(stdout(&stack, &at_tip).contains("restart: on-failure:3"));
    let at_parent = config(&stack, Some("staging~1"));
    assert_eq!(stdout(&stack, &at_parent), stdout(&stack, &at_v1));
    let _ = v2;

    // Without a revision: the checked-out tree, which nothing has written yet.
    let empty = config(&stack, None);
    assert!(!empty.status.success());
    assert!(
        text(&empty).contains("is not in the pushed tree"),
        "{}",
        text(&empty)
    );
    for f in ["docker-compose.yml", "docker-compose.prod.yml"] {
        std::fs::copy(stack.work.join(f), stack.root.join("code").join(f)).unwrap();
    }
    let work_tree = config(&stack, None);
    assert!(work_tree.status.success(), "{}", text(&work_tree));
    assert_eq!(stdout(&stack, &work_tree), stdout(&stack, &at_tip));
}

#[test]
fn config_names_what_is_wrong() {
    let (stack, _, _) = staged();
    let unknown = config(&stack, Some("no-such-branch"));
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "deploy: unknown revision `no-such-branch`: no commit, branch or tag by that name in the pushed repo"
    );

    stack.write(
        "docker-compose.prod.yml",
        "services:\n  web:\n    restrat: always\n",
    );
    stack.commit("typo");
    git(&stack.work, &["push", "-q", "prod", "main:staging"]);
    let typo = config(&stack, Some("staging"));
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&typo.stderr)
            .contains("`docker-compose.prod.yml`: services.web.restrat: not supported"),
        "{}",
        text(&typo)
    );
}

/// A revision's `include:` and `extends.file` are read from that revision too, not from the
/// work tree.
#[test]
fn config_of_a_revision_reads_the_files_it_names_from_that_revision() {
    let stack = Stack::empty("cfginc");
    stack.write(
        "docker-compose.yml",
        "include: [ops/tools.yml]
services:
  web:
    extends: {file: ops/base.yml, service: base}
",
    );
    stack.write(
        "ops/base.yml",
        "services:\n  base:\n    image: web:from-base\n",
    );
    stack.write("ops/tools.yml", "services:\n  tools:\n    image: tools:1\n");
    let v1 = stack.commit("v1");
    git(&stack.work, &["push", "-q", "prod", "main:staging"]);
    let out = config(&stack, Some(&v1));
    assert!(out.status.success(), "{}", text(&out));
    let printed = stdout(&stack, &out);
    assert!(printed.contains("image: web:from-base"), "{printed}");
    assert!(printed.contains("image: tools:1"), "{printed}");
}
