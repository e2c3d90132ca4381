//! Test support shared by the services' test suites: a fresh database of either dialect.
//!
//! Postgres tests run against the server named by `TEST_POSTGRES_URL` (`.ci/run` starts one on
//! loopback from Debian's package). Each call creates a new database in it, so tests never see
//! each other's rows. Without `TEST_POSTGRES_URL` the Postgres half of a test is skipped with a
//! message, except under CI (`CI` set), where that is an error: CI must prove both dialects.

use std::path::Path;

use sqlx::Connection;
use sqlx::migrate::Migrator;

use crate::db::Db;

pub const TEST_POSTGRES_URL: &str = "TEST_POSTGRES_URL";

/// A migrated SQLite database in `dir`.
pub async fn sqlite(dir: &Path, sqlite: &Migrator, postgres: &Migrator) -> Db {
    let url = format!("sqlite://{}", dir.join("test.db").display());
    let db = Db::connect(&url).await.expect("connect sqlite");
    db.migrate(sqlite, postgres).await.expect("migrate sqlite");
    db
}

/// A migrated, empty Postgres database, or `None` when no server is configured outside CI.
pub async fn postgres(sqlite: &Migrator, postgres: &Migrator) -> Option<Db> {
    let Some(admin_url) = std::env::var(TEST_POSTGRES_URL)
        .ok()
        .filter(|s| !s.is_empty())
    else {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("{TEST_POSTGRES_URL} is not set under CI: the Postgres path must be tested");
        }
        eprintln!("skipping the Postgres half: {TEST_POSTGRES_URL} is not set");
        return None;
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url.as_str(), String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    let url = format!("{base}/{name}{query}");
    let db = Db::connect(&url).await.expect("connect test database");
    db.migrate(sqlite, postgres)
        .await
        .expect("migrate postgres");
    Some(db)
}

/// Both dialects: SQLite always, Postgres when configured.
pub async fn both(dir: &Path, sqlite_m: &Migrator, postgres_m: &Migrator) -> Vec<Db> {
    let mut dbs = vec![sqlite(dir, sqlite_m, postgres_m).await];
    dbs.extend(postgres(sqlite_m, postgres_m).await);
    dbs
}
