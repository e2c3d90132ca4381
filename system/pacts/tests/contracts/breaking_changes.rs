//! What a breaking change looks like: the committed contracts verified against providers that
//! changed something a consumer relies on. Each verification must fail, and say which consumer
//! the change breaks.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use contract_pacts::files::committed;
use contract_pacts::http_provider::{HttpProvider, Instance, ServiceFixture, StateError};
use contract_pacts::names::{GATEWAY, INVENTORY_SERVICE, ORDER_SERVICE};
use contract_pacts::verify;
use contracts::messages::{InventoryCommand, decode};
use pact_models::provider_states::ProviderState;
use serde_json::Value;

use crate::gateway_inventory::InventoryFixture;
use crate::inventory_commands::{self, RESERVE};
use crate::support::placed;

/// The order service as if someone renamed `ReserveStock.items` to `lines`.
fn rename_items_to_lines(payload: &mut Value) {
    if let Some(body) = payload.get_mut("body").and_then(Value::as_object_mut)
        && let Some(items) = body.remove("items")
    {
        body.insert("lines".into(), items);
    }
}

#[tokio::test]
async fn renaming_a_field_of_a_command_fails_verification_naming_the_inventory_service() {
    let provider = inventory_commands::producers()
        .edit(RESERVE, rename_items_to_lines)
        .serve()
        .await
        .unwrap();

    let report = verify::messages(&provider, &committed(INVENTORY_SERVICE, ORDER_SERVICE))
        .await
        .unwrap();

    let broken = report
        .into_result()
        .expect_err("the renamed field breaks a consumer");
    assert_eq!(broken.consumers, [INVENTORY_SERVICE]);
    assert_eq!(broken.failures.len(), 1, "{broken}");
    assert_eq!(broken.failures[0].interaction, RESERVE);
    let message = broken.to_string();
    assert!(
        message.starts_with("order-service breaks the contract of inventory-service"),
        "{message}"
    );
    assert!(
        message.contains("items"),
        "the message says what is missing: {message}"
    );

    // And the contract is right to refuse it: the inventory service could not read the command.
    let (order, _) = placed().await.unwrap();
    let sent = contract_pacts::fixtures::last_outbox_message(&order.db, "ReserveStock")
        .await
        .unwrap();
    let mut renamed: Value = serde_json::from_str(&sent.payload).unwrap();
    rename_items_to_lines(&mut renamed);
    let read = decode::<InventoryCommand>(renamed.to_string().as_bytes());
    assert!(read.is_err(), "the inventory service would read {read:?}");
}

/// The inventory service as if someone dropped `available` from the catalog it lists.
struct CatalogWithoutStock;

async fn drop_available(request: Request, next: Next) -> Response {
    let listing = request.uri().path() == "/products";
    let response = next.run(request).await;
    if !listing {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut products: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    for product in products.as_array_mut().into_iter().flatten() {
        if let Some(fields) = product.as_object_mut() {
            fields.remove("available");
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(products.to_string()))
}

impl ServiceFixture for CatalogWithoutStock {
    async fn start(&self, secret: &[u8]) -> Result<Instance, StateError> {
        let mut instance = InventoryFixture.start(secret).await?;
        instance.router = instance
            .router
            .layer(axum::middleware::from_fn(drop_available));
        Ok(instance)
    }

    async fn given(
        &self,
        instance: &Instance,
        state: &ProviderState,
    ) -> Result<std::collections::HashMap<String, Value>, StateError> {
        InventoryFixture.given(instance, state).await
    }
}

#[tokio::test]
async fn dropping_a_field_from_a_response_fails_verification_naming_the_gateway() {
    let provider = HttpProvider::start(
        INVENTORY_SERVICE,
        inventory_service::SERVICE,
        CatalogWithoutStock,
    )
    .await
    .unwrap();

    let report = verify::http(&provider, &committed(GATEWAY, INVENTORY_SERVICE))
        .await
        .unwrap();

    let broken = report
        .into_result()
        .expect_err("the dropped field breaks a consumer");
    assert_eq!(broken.consumers, [GATEWAY]);
    let failed: Vec<&str> = broken
        .failures
        .iter()
        .map(|f| f.interaction.as_str())
        .collect();
    assert_eq!(failed, ["a request for the catalog"], "{broken}");
    let message = broken.to_string();
    assert!(
        message.starts_with("inventory-service breaks the contract of gateway"),
        "{message}"
    );
    assert!(
        message.contains("available"),
        "the message says what is missing: {message}"
    );
}
