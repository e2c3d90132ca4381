//! Kafka topics and the messages of the order saga.
//!
//! Every message travels in an [`Envelope`] whose `message_id` is the idempotency key consumers
//! record in their inbox; the Kafka key is always the order id, so every message about one order
//! lands on one partition, in order. Bodies are internally tagged (`"type": "ReserveStock"`) and
//! versioned through `schema_version`: a consumer refuses a version it does not know (the message
//! goes to the dead-letter topic) instead of guessing.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::domain::{CustomerId, Money, OrderId, OrderStatus};
use crate::http::{OrderLine, OrderView, PricedLine};

/// Topic names. Dead-letter topics are the consumed topic plus [`DEAD_LETTER_SUFFIX`].
pub mod topics {
    pub const INVENTORY_COMMANDS: &str = "inventory.commands";
    pub const INVENTORY_EVENTS: &str = "inventory.events";
    pub const PAYMENT_COMMANDS: &str = "payment.commands";
    pub const PAYMENT_EVENTS: &str = "payment.events";
    pub const ORDER_EVENTS: &str = "order.events";
    pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

    /// Every topic the system uses, dead-letter topics included.
    pub fn all() -> Vec<String> {
        let base = [
            INVENTORY_COMMANDS,
            INVENTORY_EVENTS,
            PAYMENT_COMMANDS,
            PAYMENT_EVENTS,
            ORDER_EVENTS,
        ];
        base.iter()
            .flat_map(|t| [t.to_string(), dead_letter(t)])
            .collect()
    }

    pub fn dead_letter(topic: &str) -> String {
        format!("{topic}{DEAD_LETTER_SUFFIX}")
    }
}

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u16 = 1;

/// What every message carries around its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub message_id: Uuid,
    pub schema_version: u16,
    pub occurred_at_ms: i64,
    pub body: T,
}

impl<T> Envelope<T> {
    pub fn new(body: T, occurred_at_ms: i64) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            schema_version: SCHEMA_VERSION,
            occurred_at_ms,
            body,
        }
    }
}

/// Why a payload could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema version {0} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion(u16),
}

/// Parses an envelope and checks its schema version.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<T>, DecodeError> {
    let env: Envelope<T> = serde_json::from_slice(payload)?;
    if env.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(env.schema_version));
    }
    Ok(env)
}

/// A message body that knows its own name (used for the `kind` header and logs).
pub trait MessageKind {
    fn kind(&self) -> &'static str;
    fn order_id(&self) -> OrderId;
}

macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident { $($field:ident : $ty:ty),* $(,)? }),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum $name {
            $($(#[$vmeta])* $variant { $($field: $ty),* }),*
        }

        impl MessageKind for $name {
            fn kind(&self) -> &'static str {
                match self { $(Self::$variant { .. } => stringify!($variant)),* }
            }
            fn order_id(&self) -> OrderId {
                match self { $(Self::$variant { order_id, .. } => *order_id),* }
            }
        }
    };
}

message_enum!(
    /// Commands the order saga sends to the inventory service (topic `inventory.commands`).
    InventoryCommand {
        /// Reserve every line or none. Repeating it re-announces the first outcome.
        ReserveStock { order_id: OrderId, items: Vec<OrderLine> },
        /// Give reserved stock back. Arriving before the reservation, it blocks that reservation.
        ReleaseStock { order_id: OrderId },
        /// Turn a reservation into a sale.
        CommitStock { order_id: OrderId },
    }
);

message_enum!(
    /// Outcomes the inventory service announces (topic `inventory.events`).
    InventoryEvent {
        StockReserved { order_id: OrderId, lines: Vec<PricedLine>, total_minor: Money },
        StockRejected { order_id: OrderId, reason: String },
        StockReleased { order_id: OrderId },
        StockCommitted { order_id: OrderId },
    }
);

message_enum!(
    /// Commands the order saga sends to the payment service (topic `payment.commands`).
    PaymentCommand {
        /// Hold `amount` against the customer's credit limit, or decline.
        AuthorizePayment { order_id: OrderId, customer_id: CustomerId, amount_minor: Money },
        /// Take the held amount.
        CapturePayment { order_id: OrderId },
        /// Drop the hold. Arriving before the authorization, it blocks that authorization.
        VoidPayment { order_id: OrderId },
    }
);

message_enum!(
    /// Outcomes the payment service announces (topic `payment.events`).
    PaymentEvent {
        PaymentAuthorized { order_id: OrderId, amount_minor: Money },
        PaymentDeclined { order_id: OrderId, reason: String },
        PaymentCaptured { order_id: OrderId, amount_minor: Money },
        PaymentVoided { order_id: OrderId, amount_minor: Money },
    }
);

message_enum!(
    /// Changes to orders, feeding the CQRS read model (topic `order.events`). Each carries the
    /// order's state after the change and a version, so the projection can ignore stale or
    /// repeated deliveries.
    OrderEvent {
        OrderChanged { order_id: OrderId, version: i64, order: OrderView },
    }
);

impl OrderEvent {
    pub fn status(&self) -> OrderStatus {
        match self {
            Self::OrderChanged { order, .. } => order.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quantity, Sku};

    #[test]
    fn commands_are_tagged_by_type_and_round_trip() {
        let line = OrderLine {
            sku: Sku::parse("SKU-1")
                .ok()
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!()),
            quantity: Quantity::new(2).unwrap_or_else(|_| unreachable!()),
        };
        let cmd = InventoryCommand::ReserveStock {
            order_id: OrderId::new(),
            items: vec![line],
        };
        let env = Envelope::new(cmd.clone(), 1);
        let json = serde_json::to_string(&env).unwrap_or_default();
        assert!(json.contains("\"type\":\"ReserveStock\""));
        let back: Envelope<InventoryCommand> =
            decode(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.body, cmd);
        assert_eq!(back.body.kind(), "ReserveStock");
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let json = format!(
            r#"{{"message_id":"{}","schema_version":9,"occurred_at_ms":1,"body":{{"type":"CommitStock","order_id":"{}"}}}}"#,
            Uuid::now_v7(),
            Uuid::now_v7()
        );
        let err = decode::<InventoryCommand>(json.as_bytes()).err();
        assert!(matches!(err, Some(DecodeError::UnsupportedVersion(9))));
    }

    #[test]
    fn every_topic_has_a_dead_letter_topic() {
        let all = topics::all();
        assert_eq!(all.len(), 10);
        assert!(all.contains(&"payment.commands.dlq".to_string()));
    }
}
