//! Placing an order: the one transaction behind `POST /orders`.
//!
//! The order (PENDING), its saga (RESERVING_STOCK with a deadline), the outbox rows
//! `ReserveStock` (`inventory.commands`) and `OrderChanged` (`order.events`), and, when the
//! client sent an `Idempotency-Key`, the stored response all commit together.
//!
//! Idempotency: the key row is inserted *first*, with the response already in it (the response
//! is known before anything is written: a PENDING view of the new order). If the row exists, the
//! transaction writes nothing else: the same body gets the stored response back, a different body
//! is refused. Two concurrent requests with one key race on the primary key; the loser's insert
//! finds the winner's row (on Postgres it waits for the winner to commit) and replays it.
//! Keys are scoped to the customer, so one customer cannot replay another's order.

use contracts::domain::{CustomerId, OrderId, OrderStatus};
use contracts::http::{OrderView, PlaceOrderRequest};
use contracts::messages::InventoryCommand;
use platform::db::{Db, DbError, Script};
use platform::messaging::outbox;

use crate::saga::{OrderState, Outgoing, SagaPolicy, SagaState};
use crate::store::{self, OrderRecord, SagaRecord, StoredResponse};

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// What `POST /orders` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub order_id: OrderId,
    pub status: u16,
    /// The JSON body: an [`OrderView`].
    pub body: String,
    /// `true` when this is the stored response to an earlier request with the same key.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "Idempotency-Key {0:?} was already used with a different request body; use a new key for a new order"
    )]
    KeyReused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks an `Idempotency-Key`: 1 to 128 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters long"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

/// A fingerprint of the request, to tell a retry from a different order under the same key.
/// FNV-1a over the canonical JSON (the parsed request serialized again, so whitespace and key
/// order do not matter): stable across builds and instances, unlike `std`'s `DefaultHasher`.
/// It is no security boundary, since a key only ever replays the same customer's own order.
pub fn request_hash(request: &PlaceOrderRequest) -> String {
    let canonical = serde_json::to_string(request).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}:{}", canonical.len())
}

/// Places an order for `customer`, or replays the response stored for `idempotency_key`.
#[tracing::instrument(skip_all, fields(customer_id = %customer, order_id = tracing::field::Empty))]
pub async fn place_order(
    db: &Db,
    policy: &SagaPolicy,
    customer: &CustomerId,
    idempotency_key: Option<&str>,
    request: &PlaceOrderRequest,
) -> Result<Placed, PlaceError> {
    request
        .validate()
        .map_err(|e| PlaceError::Invalid(e.to_string()))?;
    if let Some(key) = idempotency_key {
        validate_idempotency_key(key).map_err(PlaceError::Invalid)?;
    }
    let hash = request_hash(request);
    let placed = platform::db::retry(5, || {
        place_once(db, policy, customer, idempotency_key, request, &hash)
    })
    .await??;
    tracing::Span::current().record("order_id", tracing::field::display(placed.order_id));
    if placed.replayed {
        tracing::info!(order_id = %placed.order_id, "idempotent replay");
    } else {
        metrics::counter!(crate::metrics::SAGA_STARTED).increment(1);
        tracing::info!(order_id = %placed.order_id, "order placed");
    }
    Ok(placed)
}

/// One attempt; the outer `Result` is the database's, the inner one the caller's mistake.
async fn place_once(
    db: &Db,
    policy: &SagaPolicy,
    customer: &CustomerId,
    idempotency_key: Option<&str>,
    request: &PlaceOrderRequest,
    hash: &str,
) -> Result<Result<Placed, PlaceError>, DbError> {
    let now = platform::now_ms();
    let order = OrderRecord {
        state: OrderState {
            order_id: OrderId::new(),
            customer_id: customer.clone(),
            items: request.items.clone(),
            status: OrderStatus::Pending,
            total_minor: None,
            reason: None,
        },
        created_at_ms: now,
        updated_at_ms: now,
        version: 1,
    };
    let order_id = order.state.order_id;
    let view: OrderView = order.view();
    let body = serde_json::to_string(&view)
        .map_err(|e| DbError::Corrupt(format!("cannot serialize the order view: {e}")))?;
    let placed = Placed {
        order_id,
        status: 201,
        body,
        replayed: false,
    };

    let mut tx = db.begin().await?;
    if let Some(key) = idempotency_key {
        let response = StoredResponse {
            request_hash: hash.to_string(),
            order_id: order_id.to_string(),
            status: placed.status,
            body: placed.body.clone(),
        };
        if !store::claim_idempotency_key(&mut tx, customer, key, &response, now).await? {
            let stored = store::stored_response(&mut tx, customer, key).await?;
            tx.rollback().await?;
            let Some(stored) = stored else {
                // The winner's row vanished between our insert and select: only possible if it
                // was deleted; try again from the start.
                return Err(DbError::Conflict(format!("idempotency key {key:?}")));
            };
            if stored.request_hash != hash {
                return Ok(Err(PlaceError::KeyReused(key.to_string())));
            }
            let order_id = stored
                .order_id
                .parse()
                .map_err(|e| DbError::Corrupt(format!("stored order id: {e}")))?;
            return Ok(Ok(Placed {
                order_id,
                status: stored.status,
                body: stored.body,
                replayed: true,
            }));
        }
    }
    let saga = SagaRecord {
        order_id,
        state: SagaState::start(now, policy),
        version: 1,
        updated_at_ms: now,
    };
    let reserve = Outgoing::Inventory(InventoryCommand::ReserveStock {
        order_id,
        items: request.items.clone(),
    });
    // The order, its saga and their messages in one script: one hand-off on SQLite.
    let mut script = Script::new();
    store::add_order_insert(&mut script, &order)?;
    store::add_saga_insert(&mut script, &saga);
    outbox::add_rows(
        &mut script,
        &[
            store::command_row(&reserve, now)?,
            store::order_changed_row(&order, now)?,
        ],
    );
    script.execute(&mut tx).await?;
    tx.commit().await?;
    Ok(Ok(placed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> PlaceOrderRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn idempotency_keys_must_be_short_visible_ascii() {
        assert!(validate_idempotency_key("abc-123_XYZ:./").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(128)).is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key(&"k".repeat(129)).is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key("tab\there").is_err());
        assert!(validate_idempotency_key("caf\u{e9}").is_err());
    }

    #[test]
    fn the_request_hash_ignores_formatting_but_not_content() {
        let a = request(r#"{"items":[{"sku":"A","quantity":1}]}"#);
        let b = request("{ \"items\" : [ { \"quantity\": 1, \"sku\": \"A\" } ] }");
        let c = request(r#"{"items":[{"sku":"A","quantity":2}]}"#);
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
