//! Rebuilds the crate when a migration is added (sqlx's `migrate!` tracks only existing files).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
