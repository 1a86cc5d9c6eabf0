//! Rebuilds when `migrations/` changes: `sqlx::migrate!()` embeds the files at compile time,
//! and on stable Rust only a build script can tell cargo that a new one appeared.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
