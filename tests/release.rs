//! Issue #10: the release phase and database dumps, through real pushes of the CalMiner
//! example (`deploy-examples/calminer`) to a real PostgreSQL container. The app refuses to
//! start on a schema older than its migrations, so a page that answers proves the release
//! command ran before the new code served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::daemon::{Daemon, Load};
use common::*;

/// The CalMiner example in a fresh root, its port and password on the host, its image named
/// after the project (tests run side by side).
fn calminer(prefix: &str) -> Stack {
    let stack = Stack::empty(prefix);
    std::fs::write(
        stack.root.join("code/.secrets/db_password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    std::fs::write(
        stack.root.join("host.env"),
        format!("CALMINER_PORT={}\n", stack.port),
    )
    .unwrap();
    stack.add_settings("env_file: host.env\nhealth_timeout: 60s\nmin_free_space: 1GiB\n");
    copy_dir(&example("calminer"), &stack.work);
    let compose = stack.compose().replace(
        "image: calminer-api",
        &format!("image: {}-api", stack.project),
    );
    stack.write("docker-compose.yml", &compose);
    stack
}

/// Commits everything as `version` and pushes it.
fn ship(stack: &Stack, version: &str) -> (String, Push) {
    stack.push_version(version, "alice")
}

fn page(stack: &Stack, version: &str) -> String {
    stack.wait_for_page(&format!("version: {version}\n"), Duration::from_secs(60))
}

fn add_scenario(stack: &Stack, name: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /scenarios?name={name} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 201"), "{answer}");
}

fn line<'a>(page: &'a str, key: &str) -> &'a str {
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` in {page}"))
}

fn scenarios(page: &str) -> Vec<&str> {
    page.lines()
        .filter_map(|l| l.strip_prefix("scenario: "))
        .collect()
}

fn release_of(stack: &Stack, sha: &str) -> serde_json::Value {
    let history = stack.history();
    let row = history
        .iter()
        .find(|r| r["revision"] == sha && r["trigger"] != "restore")
        .unwrap_or_else(|| panic!("no deploy of {sha}: {history:#?}"));
    row["release"].clone()
}

fn backups(stack: &Stack) -> Vec<serde_json::Value> {
    let out = stack.deploy(&["backups", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn api_id(stack: &Stack) -> String {
    service_container(&stack.project, "api").id.unwrap()
}

#[test]
fn the_release_runs_in_the_new_image_before_the_new_code_serves() {
    let stack = calminer("rel");
    let (sha1, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output.contains("applied 001_scenarios.sql"),
        "{}",
        push.output
    );
    let first = page(&stack, "1");
    assert_eq!(line(&first, "migrations"), "001_scenarios.sql");
    assert_eq!(release_of(&stack, &sha1)["outcome"], "done");
    add_scenario(&stack, "alpha");

    // The new code needs the new column: it answers only if the migration ran first.
    stack.write(
        "migrations/002_price.sql",
        "ALTER TABLE scenarios ADD COLUMN price numeric;\n",
    );
    let (sha2, push) = ship(&stack, "2");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let second = page(&stack, "2");
    assert_eq!(line(&second, "columns"), "id,name,created_at,price");
    assert_eq!(scenarios(&second), ["alpha"]);
    let release = release_of(&stack, &sha2);
    assert_eq!(release["outcome"], "done", "{release}");
    assert_eq!(
        release["command"],
        serde_json::json!(["python", "/app/migrate.py"])
    );
    let log = std::fs::read_to_string(
        stack
            .root
            .join("build-logs")
            .join(stack.logs().last().unwrap()),
    )
    .unwrap();
    assert!(log.contains("applied 002_price.sql"), "{log}");
    assert!(
        log.contains("DONE  release in"),
        "a timed step named `release`: {log}"
    );

    // The dump before it: named like a build log, for the revision released, checked.
    let dumps = backups(&stack);
    let dump = dumps
        .iter()
        .find(|b| b["before_revision"] == sha2.as_str())
        .unwrap_or_else(|| panic!("no dump before {sha2}: {dumps:#?}"));
    assert_eq!(dump["live_revision"], sha1.as_str());
    assert_eq!(
        (&dump["service"], &dump["reason"]),
        (&"db".into(), &"release".into())
    );
    let name = dump["file"].as_str().unwrap();
    let pattern = regex_lite(name, &sha2);
    assert!(
        pattern,
        "`{name}` is `<YYYY-MM-DD> <HH:MM:SS> <sha> db.dump`"
    );
    let file = stack.root.join("backups").join(name);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        dump["size"].as_u64().unwrap()
    );

    // A push that changes nothing the image is built from does not run it again.
    stack.write("NOTES.md", "docs only\n");
    let sha3 = stack.commit("docs");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(push.output.contains("not run again"), "{}", push.output);
    assert_eq!(release_of(&stack, &sha3)["outcome"], "skipped");
    assert_eq!(
        backups(&stack).len(),
        dumps.len(),
        "no dump without a release"
    );
}

/// `<YYYY-MM-DD> <HH:MM:SS> <sha> db.dump`, without a regex crate.
fn regex_lite(name: &str, sha: &str) -> bool {
    let parts: Vec<&str> = name.split(' ').collect();
    parts.len() == 4
        && parts[0].len() == 10
        && parts[0].chars().filter(|c| *c == '-').count() == 2
        && parts[1].len() == 8
        && parts[1].chars().filter(|c| *c == ':').count() == 2
        && parts[2] == sha
        && parts[3] == "db.dump"
}

#[test]
fn a_failing_release_leaves_the_running_version_and_its_data_alone() {
    let stack = calminer("relfail");
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    add_scenario(&stack, "alpha");
    let api = api_id(&stack);

    stack.write(
        "migrations/002_broken.sql",
        "ALTER TABLE scenarios ADD COLUMN price numeric;\nSELECT 1/0;\n",
    );
    let (sha2, push) = ship(&stack, "2");
    assert!(!push.output.contains("deployed 2"), "{}", push.output);
    assert!(
        push.output.contains("the release command failed"),
        "{}",
        push.output
    );
    assert!(
        push.output.contains("division by zero"),
        "its last lines: {}",
        push.output
    );
    let after = page(&stack, "1");
    assert_eq!(
        line(&after, "columns"),
        "id,name,created_at",
        "the migration's transaction rolled back"
    );
    assert_eq!(scenarios(&after), ["alpha"]);
    assert_eq!(api_id(&stack), api, "nothing was replaced");
    assert_eq!(release_of(&stack, &sha2)["outcome"], "failed");
    let names: Vec<String> = containers(&stack.project)
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    assert_eq!(names.len(), 2, "no release container is left: {names:?}");
}

#[test]
fn under_deploy_serve_a_failing_release_fails_no_request() {
    let stack = calminer("relserve");
    let _daemon = Daemon::start(&stack);
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");

    let load = Load::start(stack.port);
    stack.write("migrations/002_broken.sql", "SELECT 1/0;\n");
    let (_, push) = ship(&stack, "2");
    assert!(
        push.output.contains("the release command failed"),
        "{}",
        push.output
    );
    std::fs::remove_file(stack.work.join("migrations/002_broken.sql")).unwrap();
    stack.write(
        "migrations/002_price.sql",
        "ALTER TABLE scenarios ADD COLUMN price numeric;\n",
    );
    let (_, push) = ship(&stack, "3");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let third = page(&stack, "3");
    let (ok, failed, when) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed, at {when:?}",
        ok + failed
    );
    assert!(ok > 20, "the load ran: {ok}");
    assert_eq!(line(&third, "columns"), "id,name,created_at,price");
}

#[test]
fn a_release_that_ran_before_a_failed_health_check_says_how_to_put_the_data_back() {
    let stack = calminer("relhealth");
    stack.add_setting("health_timeout: 20s");
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    add_scenario(&stack, "alpha");

    // The migration drops a column; the new code then never gets healthy.
    stack.write(
        "migrations/002_drop.sql",
        "ALTER TABLE scenarios DROP COLUMN created_at;\n",
    );
    let compose = stack.compose().replace(
        "\"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)\"]",
        "\"raise SystemExit(1)\"]",
    );
    assert!(compose.contains("SystemExit"), "{compose}");
    stack.write("docker-compose.yml", &compose);
    let (sha2, push) = ship(&stack, "2");
    assert!(
        push.output.contains("THE RELEASE COMMAND RAN"),
        "{}",
        push.output
    );
    let back = page(&stack, "1");
    assert_eq!(
        line(&back, "columns"),
        "id,name",
        "the old code runs on the new schema"
    );
    assert_eq!(release_of(&stack, &sha2)["outcome"], "done");

    // The exact command printed puts the data back.
    let printed = push
        .output
        .lines()
        .find_map(|l| {
            l.split_once("run: deploy ")
                .map(|(_, c)| c.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no command in {}", push.output));
    let args = shlex::split(&printed).unwrap();
    let out = run(std::process::Command::new(DEPLOY).args(&args));
    assert!(out.status.success(), "`deploy {printed}`: {}", text(&out));
    let restored = page(&stack, "1");
    assert_eq!(line(&restored, "columns"), "id,name,created_at");
    assert_eq!(scenarios(&restored), ["alpha"]);
    let history = stack.history();
    assert_eq!(history[0]["trigger"], "restore", "{history:#?}");
    assert_eq!(history[0]["status"], "succeeded", "{history:#?}");
}

#[test]
fn restore_drill_rows_after_the_dump_go_rows_before_it_stay() {
    let stack = calminer("reldrill");
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    add_scenario(&stack, "alpha");
    add_scenario(&stack, "beta");

    let out = stack.deploy(&["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let name = std::path::Path::new(&path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    add_scenario(&stack, "gamma");
    assert_eq!(scenarios(&page(&stack, "1")), ["alpha", "beta", "gamma"]);

    let out = stack.deploy(&["restore-db", &name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stopping `"),
        "the app is stopped meanwhile: {}",
        text(&out)
    );
    assert_eq!(scenarios(&page(&stack, "1")), ["alpha", "beta"]);

    // Bad input changes nothing: a truncated recorded dump, a truncated file from
    // elsewhere, a file that is not a dump.
    add_scenario(&stack, "delta");
    let api = api_id(&stack);
    let bytes = std::fs::read(&path).unwrap();
    let elsewhere = stack.base.path().join("cut.dump");
    std::fs::write(&elsewhere, &bytes[..bytes.len() / 2]).unwrap();
    let not_a_dump = stack.base.path().join("notes.txt");
    std::fs::write(&not_a_dump, "hello\n").unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    for (args, says) in [
        (
            vec!["restore-db", name.as_str()],
            "is not the dump that was recorded",
        ),
        (
            vec!["restore-db", elsewhere.to_str().unwrap(), "--service", "db"],
            "is not a whole PostgreSQL dump",
        ),
        (
            vec![
                "restore-db",
                not_a_dump.to_str().unwrap(),
                "--service",
                "db",
            ],
            "is not a whole PostgreSQL dump",
        ),
    ] {
        let out = stack.deploy(&args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
        assert!(
            !text(&out).contains("stopping `"),
            "nothing stopped: {}",
            text(&out)
        );
        assert_eq!(scenarios(&page(&stack, "1")), ["alpha", "beta", "delta"]);
        assert_eq!(api_id(&stack), api);
    }
}

#[test]
fn rolling_back_with_restore_db_returns_code_and_data() {
    let stack = calminer("relback");
    stack.write(
        "migrations/002_note.sql",
        "ALTER TABLE scenarios ADD COLUMN note text DEFAULT 'kept';\n",
    );
    let (sha1, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    add_scenario(&stack, "alpha");

    // A destructive migration.
    stack.write(
        "migrations/003_drop_note.sql",
        "ALTER TABLE scenarios DROP COLUMN note;\n",
    );
    let (_, push) = ship(&stack, "2");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_eq!(line(&page(&stack, "2"), "columns"), "id,name,created_at");

    // Code only: it says the data did not come back, and how to bring it.
    let out = stack.deploy(&["--revision", &sha1]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("deploy --revision {} --restore-db", &sha1[..12])),
        "{}",
        text(&out)
    );
    assert_eq!(line(&page(&stack, "1"), "columns"), "id,name,created_at");

    let out = stack.deploy(&["--revision", &sha1, "--restore-db"]);
    assert!(out.status.success(), "{}", text(&out));
    let back = page(&stack, "1");
    assert_eq!(line(&back, "columns"), "id,name,created_at,note");
    assert_eq!(scenarios(&back), ["alpha"]);
}

#[test]
fn a_release_service_that_does_not_exist_or_a_database_that_is_not_postgres_changes_nothing() {
    let stack = calminer("relbad");
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    let api = api_id(&stack);
    let good = stack.compose();

    stack.write(
        "docker-compose.yml",
        &good.replace("    service: api\n", "    service: worker\n"),
    );
    let (_, push) = ship(&stack, "2");
    assert!(
        push.output
            .contains("x-deploy.release.service: there is no service `worker`"),
        "{}",
        push.output
    );

    stack.write(
        "docker-compose.yml",
        &good.replace("x-deploy:\n", "x-deploy:\n  databases: [api]\n"),
    );
    stack.write(
        "migrations/002_price.sql",
        "ALTER TABLE scenarios ADD COLUMN price numeric;\n",
    );
    let (_, push) = ship(&stack, "3");
    assert!(
        push.output.contains("it is not PostgreSQL"),
        "{}",
        push.output
    );
    let after = page(&stack, "1");
    assert_eq!(line(&after, "columns"), "id,name,created_at");
    assert_eq!(api_id(&stack), api);
}

/// Removes what a project made, when dropped (for a root a test creates besides its stack).
struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

#[test]
fn export_then_import_into_a_fresh_root_serves_the_same_data() {
    let stack = calminer("relmove");
    // The image is named after the project (both hosts are this machine here).
    let compose = stack.compose();
    let image_line = compose
        .lines()
        .find(|l| l.contains("image: t"))
        .unwrap()
        .to_owned();
    stack.write(
        "docker-compose.yml",
        &compose.replace(&format!("{image_line}\n"), ""),
    );
    stack.write(
        "migrations/002_price.sql",
        "ALTER TABLE scenarios ADD COLUMN price numeric;\n",
    );
    let (sha, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    add_scenario(&stack, "alpha");
    add_scenario(&stack, "beta");

    let archive = stack.base.path().join("host.tar");
    let out = stack.deploy(&["export", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("mode 0600"), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The old host goes away (its data stays on its disk); the new one comes up from the file.
    let out = stack.deploy(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    let name = format!("{}new", stack.project);
    let _moved = Project(name.clone());
    let new_root = stack.base.path().join(&name);
    let out = run(std::process::Command::new(DEPLOY)
        .args(["import", archive.to_str().unwrap()])
        .arg(&new_root));
    assert!(out.status.success(), "{}", text(&out));
    let moved = page(&stack, "1");
    assert_eq!(scenarios(&moved), ["alpha", "beta"]);
    assert_eq!(line(&moved, "columns"), "id,name,created_at,price");
    let status = run(std::process::Command::new(DEPLOY)
        .args(["status", "--json", "--root"])
        .arg(&new_root));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["live"]["revision"], sha.as_str(), "{status:#}");
    assert_eq!(status["project"], name.as_str());
    assert!(new_root.join("code.git/hooks/post-receive").is_file());

    // Bad input: not an archive, or a root that holds something.
    let out = run(std::process::Command::new(DEPLOY)
        .args(["import", archive.to_str().unwrap()])
        .arg(&new_root));
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
}

#[test]
fn backup_schedule_dumps_under_deploy_serve_and_status_shows_it() {
    let stack = calminer("relsched");
    stack.add_setting("backups: never");
    stack.add_setting("backup_schedule: daily");
    let daemon = Daemon::start(&stack);
    let (_, push) = ship(&stack, "1");
    assert!(push.output.contains("deployed"), "{}", push.output);
    page(&stack, "1");
    assert!(backups(&stack).is_empty(), "`backups: never` took none");
    // The schedule counts from the newest dump: with none, a restarted daemon takes one now.
    daemon.kill();
    let _daemon = Daemon::start(&stack);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let taken = loop {
        let list = backups(&stack);
        if let Some(b) = list.iter().find(|b| b["reason"] == "schedule") {
            break b.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled dump: {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(taken["service"], "db");
    let out = stack.deploy(&["status"]);
    let printed = text(&out);
    assert!(
        printed.contains(&format!("ago: {}", taken["file"].as_str().unwrap())),
        "{printed}"
    );
    assert!(!printed.contains("warning"), "{printed}");
}
