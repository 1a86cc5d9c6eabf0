//! Issue #10: a dump streams from the database's container to the disk, never held whole:
//! `deploy backup` of a database of over 200 MB peaks under 50 MB of memory. In a binary of
//! its own, so that nothing else this test process runs adds to what is measured.

mod common;

use std::process::Command;

use common::*;

const COMPOSE: &str = r#"services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets: [db_password]
    volumes: ["../db-data:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]
      interval: 1s
      retries: 60
secrets:
  db_password:
    file: ./.secrets/db_password
"#;

/// Runs `command` to its end; its output and its peak resident memory in KiB, from the
/// kernel's accounting of that one process (`wait4`).
#[allow(clippy::zombie_processes, reason = "wait4 below reaps it")]
fn run_measured(command: &mut Command) -> (bool, String, i64) {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as nix::libc::pid_t;
    let mut out = String::new();
    let (mut stdout, mut stderr) = (child.stdout.unwrap(), child.stderr.unwrap());
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    out.push_str(&err.join().unwrap());
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let ok = nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0;
    (ok, out, usage.ru_maxrss)
}

#[test]
fn a_dump_of_over_200_mb_streams_in_under_50_mb_of_memory() {
    let stack = Stack::empty("dumpmem");
    std::fs::write(
        stack.root.join("code/.secrets/db_password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    stack.add_settings("min_free_space: 1GiB\nhealth_timeout: 90s\n");
    stack.write("docker-compose.yml", COMPOSE);
    stack.commit("db");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);

    let db = service_container(&stack.project, "db").id.unwrap();
    // Random hex: the dump (compressed) stays larger than the memory bound, so a dump held
    // whole could not pass.
    let fill = "CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS pad FROM generate_series(1, 900000) g; SELECT pg_database_size(current_database());";
    let (code, size) = exec(&db, &["psql", "-U", "postgres", "-tA", "-c", fill]);
    assert_eq!(code, 0, "{size}");
    let size: u64 = size.trim().lines().last().unwrap().trim().parse().unwrap();
    assert!(size > 200 << 20, "the database holds {size} bytes");

    let (ok, out, peak_kib) = run_measured(
        Command::new(DEPLOY)
            .args(["backup", "--root"])
            .arg(&stack.root),
    );
    assert!(ok, "{out}");
    let dumps: Vec<_> = std::fs::read_dir(stack.root.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(dumps.len(), 1, "{out}");
    assert!(dumps[0] > 60 << 20, "the dump is {} bytes", dumps[0]);
    eprintln!(
        "deploy backup: {} MiB database, {} MiB dump, peak RSS {} MiB",
        size >> 20,
        dumps[0] >> 20,
        peak_kib / 1024
    );
    assert!(
        peak_kib < 50 * 1024,
        "`deploy backup` of a {} MiB database peaked at {} MiB",
        size >> 20,
        peak_kib / 1024
    );
}
