//! The small pieces both sides of a contract test need: a fresh migrated database, the messages a
//! provider's code wrote to its outbox, and a Kafka delivery built from a contract's example.

use std::path::PathBuf;

use pact_models::v4::async_message::AsynchronousMessage;
use platform::db::{Db, DbError};
use platform::messaging::consumer::Delivery;
use sqlx::Row;
use sqlx::migrate::Migrator;
use tempfile::TempDir;

/// The metadata key that names the Kafka topic a contract's message travels on.
pub const TOPIC: &str = "topic";

/// Why a fixture could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot create a directory for the test database: {0}")]
    Dir(#[source] std::io::Error),
    #[error("test database at {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: DbError,
    },
    #[error(transparent)]
    Query(#[from] DbError),
    #[error("the provider's code wrote no {kind} message to its outbox")]
    NoMessage { kind: String },
    #[error(
        "message {description:?} has no {TOPIC:?} in its metadata: a consumer must know the topic"
    )]
    NoTopic { description: String },
    #[error("message {description:?} has no contents")]
    NoContents { description: String },
    /// The provider's or consumer's own code refused what the fixture asked of it.
    #[error("the service's code failed: {0}")]
    Code(String),
}

/// A migrated SQLite database in its own directory; the directory goes when this value does.
pub struct FreshDb {
    pub db: Db,
    _dir: TempDir,
}

impl FreshDb {
    /// Creates and migrates a database with the platform's and the service's migrations.
    pub async fn new(sqlite: &Migrator, postgres: &Migrator) -> Result<Self, FixtureError> {
        let dir = tempfile::tempdir().map_err(FixtureError::Dir)?;
        let path = dir.path().join("contract.db");
        let db_error = |source| FixtureError::Db {
            path: path.clone(),
            source,
        };
        let db = Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .map_err(db_error)?;
        db.migrate(sqlite, postgres).await.map_err(db_error)?;
        Ok(Self { db, _dir: dir })
    }
}

/// One message as the provider's code wrote it into its outbox: what the relay would publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub topic: String,
    pub kind: String,
    pub payload: String,
}

/// The newest outbox message of `kind` (e.g. `ReserveStock`).
pub async fn last_outbox_message(db: &Db, kind: &str) -> Result<Produced, FixtureError> {
    let row = sqlx::query(
        "SELECT topic, kind, payload FROM outbox WHERE kind = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(kind)
    .fetch_optional(db.pool())
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| FixtureError::NoMessage { kind: kind.into() })?;
    Ok(Produced {
        topic: row.try_get("topic").map_err(DbError::from)?,
        kind: row.try_get("kind").map_err(DbError::from)?,
        payload: row.try_get("payload").map_err(DbError::from)?,
    })
}

/// Every outbox message, oldest first, as `(topic, kind, payload)`.
pub async fn outbox(db: &Db) -> Result<Vec<Produced>, FixtureError> {
    let rows = sqlx::query("SELECT topic, kind, payload FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .map_err(DbError::from)?;
    rows.iter()
        .map(|row| {
            Ok(Produced {
                topic: row.try_get("topic").map_err(DbError::from)?,
                kind: row.try_get("kind").map_err(DbError::from)?,
                payload: row.try_get("payload").map_err(DbError::from)?,
            })
        })
        .collect()
}

/// The Kafka delivery a consumer would receive for a contract's example message: the payload is
/// the message's contents, the topic comes from its metadata.
pub fn delivery(message: &AsynchronousMessage) -> Result<Delivery, FixtureError> {
    let description = &message.description;
    let topic = message
        .contents
        .metadata
        .get(TOPIC)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| FixtureError::NoTopic {
            description: description.clone(),
        })?;
    let payload = message
        .contents
        .contents
        .value()
        .ok_or_else(|| FixtureError::NoContents {
            description: description.clone(),
        })?;
    Ok(Delivery {
        topic: topic.to_string(),
        partition: 0,
        offset: 0,
        key: None,
        payload: payload.to_vec(),
    })
}
