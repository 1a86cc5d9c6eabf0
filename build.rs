//! Rebuilds when `migrations/` changes: `sqlx::migrate!()` embeds the files at compile time,
//! and on stable Rust only a build script can tell cargo that a new one appeared. Also
//! names the commit the binary is built from, for `deploy --version` (`DEPLOY_COMMIT`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=DEPLOY_COMMIT");
    let commit = std::env::var("DEPLOY_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!(
        "cargo:rustc-env=DEPLOY_COMMIT={}",
        commit.unwrap_or_else(|| "unknown commit".to_owned())
    );
}
