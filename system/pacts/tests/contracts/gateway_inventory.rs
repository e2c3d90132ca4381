//! `gateway` → `inventory-service`: the catalog the journeys browse, the seeding and restocking
//! admins do, and the stock and reservations the invariant checks read.

use std::collections::HashMap;

use contract_pacts::files::ConsumerPact;
use contract_pacts::fixtures::FreshDb;
use contract_pacts::http_provider::{
    HttpProvider, Instance, ServiceFixture, StateError, param_i64, param_str,
};
use contract_pacts::names::{GATEWAY, INVENTORY_SERVICE};
use contract_pacts::tokens::authorization;
use contracts::domain::{Money, OrderId, Quantity, Role, Sku};
use contracts::http::{ErrorBody, OrderLine, Product, ProductUpsert, Reservation, StockLevel};
use contracts::messages::{Envelope, InventoryCommand};
use inventory_service::{AppState, catalog};
use pact_consumer::builders::PactBuilder;
use pact_consumer::patterns::JsonPattern;
use pact_consumer::prelude::*;
use pact_models::provider_states::ProviderState;
use platform::auth::ServiceAuth;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const SERVICE: &str = inventory_service::SERVICE;

pub const PRODUCT_IN_CATALOG: &str = "a product is in the catalog";
pub const NO_SUCH_PRODUCT: &str = "the catalog has no such product";
pub const RESERVATION_HELD: &str = "an order holds a reservation";
pub const UNKNOWN_SKU: &str = "SKU-404";
pub const RESTOCK: i64 = 5;

pub fn product_params() -> Value {
    json!({ "sku": SKU, "name": PRODUCT_NAME, "unit_price_minor": UNIT_PRICE, "available": STOCK })
}

fn product(sku: JsonPattern, available: i64) -> JsonPattern {
    json_pattern!({
        "sku": sku,
        "name": like!(PRODUCT_NAME),
        "unit_price_minor": like!(UNIT_PRICE),
        "available": like!(available),
    })
}

fn stock_level(sku: JsonPattern, available: i64, received: i64) -> JsonPattern {
    json_pattern!({
        "sku": sku,
        "name": like!(PRODUCT_NAME),
        "unit_price_minor": like!(UNIT_PRICE),
        "available": like!(available),
        "reserved": like!(0),
        "sold": like!(0),
        "received": like!(received),
    })
}

/// What the gateway's clients need from the inventory service.
pub fn contract(pact: &mut PactBuilder) {
    let anonymous = authorization(SERVICE, gateway::proxy::ANONYMOUS_SUBJECT, &[]).unwrap();
    let customer = || authorization(SERVICE, CUSTOMER, &[Role::Customer]).unwrap();
    let admin = || authorization(SERVICE, ADMIN, &[Role::Admin]).unwrap();
    pact.interaction("a request for the catalog", "", |mut i| {
        i.given_with_params(PRODUCT_IN_CATALOG, &product_params());
        i.request
            .get()
            .path("/products")
            .header("authorization", anonymous)
            .header(
                "x-request-id",
                term!(REQUEST_ID, "5b0c6f9e-6d1a-4f53-9a43-3c1f2f0e8a71"),
            );
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(product(like!(SKU).into(), STOCK)));
        i
    });
    pact.interaction("a request for one product", "", |mut i| {
        i.given_with_params(PRODUCT_IN_CATALOG, &product_params());
        i.request
            .get()
            .path(format!("/products/{SKU}"))
            .header("authorization", customer());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(product(SKU.into(), STOCK));
        i
    });
    pact.interaction(
        "a request for a product the catalog does not have",
        "",
        |mut i| {
            i.given_with_params(NO_SUCH_PRODUCT, &json!({ "sku": UNKNOWN_SKU }));
            i.request
                .get()
                .path(format!("/products/{UNKNOWN_SKU}"))
                .header("authorization", customer());
            i.response
                .not_found()
                .header("content-type", "application/json")
                .json_body(error_body("not_found", "no product with sku SKU-404"));
            i
        },
    );
    pact.interaction("an admin seeds the catalog", "", |mut i| {
        i.request
            .put()
            .path("/admin/products")
            .header("authorization", admin())
            .header("content-type", "application/json")
            .json_body(each_like!({
                "sku": like!(SKU),
                "name": like!(PRODUCT_NAME),
                "unit_price_minor": like!(UNIT_PRICE),
                "available": like!(STOCK),
            }));
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(stock_level(like!(SKU).into(), STOCK, STOCK)));
        i
    });
    pact.interaction("an admin restocks a product", "", |mut i| {
        i.given_with_params(PRODUCT_IN_CATALOG, &product_params());
        i.request
            .post()
            .path(format!("/admin/products/{SKU}/restock"))
            .header("authorization", admin())
            .header("content-type", "application/json")
            .json_body(json_pattern!({ "quantity": like!(RESTOCK) }));
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(stock_level(SKU.into(), STOCK + RESTOCK, STOCK + RESTOCK));
        i
    });
    pact.interaction("an admin reads the stock levels", "", |mut i| {
        i.given_with_params(PRODUCT_IN_CATALOG, &product_params());
        i.request
            .get()
            .path("/admin/stock")
            .header("authorization", admin());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(stock_level(like!(SKU).into(), STOCK, STOCK)));
        i
    });
    pact.interaction("an admin reads the reservations", "", |mut i| {
        i.given_with_params(PRODUCT_IN_CATALOG, &product_params());
        i.given_with_params(
            RESERVATION_HELD,
            &json!({ "order_id": ORDER_ID, "sku": SKU, "quantity": QUANTITY }),
        );
        i.request
            .get()
            .path("/admin/reservations")
            .header("authorization", admin());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!({
                "order_id": order_id_pattern(),
                "status": term!("^(RESERVED|REJECTED|RELEASED|COMMITTED)$", "RESERVED"),
                "lines": each_like!(order_line()),
            }));
        i
    });
}

#[tokio::test]
async fn the_gateway_gets_its_clients_the_catalog_stock_and_reservations_they_read() {
    let mut pact = ConsumerPact::new(GATEWAY, INVENTORY_SERVICE).unwrap();
    contract(pact.builder());
    let server = pact.builder().start_mock_server(None, None);
    let gw = gateway(NOWHERE, &base_url(&server.url()), NOWHERE).await;
    let (customer, admin) = (gw.customer(), gw.admin());
    let get = |path: &str| gw.request(Method::GET, path);

    let catalog: Vec<Product> = expect(get("/api/products"), 200).await.read();
    assert_eq!(
        (catalog[0].sku.as_str(), catalog[0].available),
        (SKU, STOCK)
    );

    let one = get(&format!("/api/products/{SKU}")).bearer_auth(&customer);
    assert_eq!(expect(one, 200).await.read::<Product>().sku.as_str(), SKU);

    let unknown = get(&format!("/api/products/{UNKNOWN_SKU}")).bearer_auth(&customer);
    let error: ErrorBody = expect(unknown, 404).await.read();
    assert_eq!(error.error.code, "not_found");

    let seed = [ProductUpsert {
        sku: sku(),
        name: PRODUCT_NAME.into(),
        unit_price_minor: money(UNIT_PRICE),
        available: STOCK,
    }];
    let put = gw
        .request(Method::PUT, "/api/admin/products")
        .bearer_auth(&admin)
        .json(&seed);
    let levels: Vec<StockLevel> = expect(put, 200).await.read();
    let l = &levels[0];
    assert_eq!(l.received, l.available + l.reserved + l.sold, "{l:?}");

    let restock = gw
        .request(Method::POST, &format!("/api/admin/products/{SKU}/restock"))
        .bearer_auth(&admin)
        .json(&json!({ "quantity": RESTOCK }));
    let level: StockLevel = expect(restock, 200).await.read();
    assert_eq!(level.available, STOCK + RESTOCK);

    let stock: Vec<StockLevel> = expect(get("/api/admin/stock").bearer_auth(&admin), 200)
        .await
        .read();
    assert_eq!(stock[0].sku.as_str(), SKU);

    let reservations = get("/api/admin/reservations").bearer_auth(&admin);
    let reservations: Vec<Reservation> = expect(reservations, 200).await.read();
    assert_eq!(reservations[0].lines, vec![line()]);

    drop(server);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The inventory service's router over a fresh database, seeded through its own code.
pub struct InventoryFixture;

impl ServiceFixture for InventoryFixture {
    async fn start(&self, secret: &[u8]) -> Result<Instance, StateError> {
        let fresh = FreshDb::new(&inventory_service::SQLITE, &inventory_service::POSTGRES).await?;
        let state = AppState::new(fresh.db.clone(), ServiceAuth::new(secret, SERVICE));
        let router = inventory_service::router(state);
        Ok(Instance::new(fresh, router))
    }

    async fn given(
        &self,
        instance: &Instance,
        state: &ProviderState,
    ) -> Result<HashMap<String, Value>, StateError> {
        let db = instance.db();
        match state.name.as_str() {
            PRODUCT_IN_CATALOG => {
                let product = ProductUpsert {
                    sku: Sku::parse(param_str(state, "sku")?)
                        .map_err(|e| StateError::setup(state, e))?,
                    name: param_str(state, "name")?.into(),
                    unit_price_minor: Money::from_minor(param_i64(state, "unit_price_minor")?)
                        .map_err(|e| StateError::setup(state, e))?,
                    available: param_i64(state, "available")?,
                };
                catalog::upsert(db, &[product])
                    .await
                    .map_err(|e| StateError::setup(state, e))?;
            }
            NO_SUCH_PRODUCT => {
                let sku = Sku::parse(param_str(state, "sku")?)
                    .map_err(|e| StateError::setup(state, e))?;
                if catalog::product(db, &sku)
                    .await
                    .map_err(|e| StateError::setup(state, e))?
                    .is_some()
                {
                    return Err(StateError::setup(state, format!("{sku} is in the catalog")));
                }
            }
            RESERVATION_HELD => {
                let order_id: OrderId = param_str(state, "order_id")?
                    .parse()
                    .map_err(|e| StateError::setup(state, e))?;
                let line = OrderLine {
                    sku: Sku::parse(param_str(state, "sku")?)
                        .map_err(|e| StateError::setup(state, e))?,
                    quantity: Quantity::new(param_i64(state, "quantity")?)
                        .map_err(|e| StateError::setup(state, e))?,
                };
                let reserve = InventoryCommand::ReserveStock {
                    order_id,
                    items: vec![line],
                };
                inventory_service::handle_command(db, &Envelope::new(reserve, platform::now_ms()))
                    .await
                    .map_err(|e| StateError::setup(state, e))?;
            }
            other => return Err(StateError::Unknown(other.into())),
        }
        Ok(HashMap::new())
    }
}

#[tokio::test]
async fn the_inventory_service_answers_every_request_the_gateway_forwards_as_agreed() {
    let provider = HttpProvider::start(INVENTORY_SERVICE, SERVICE, InventoryFixture)
        .await
        .unwrap();
    crate::support::assert_http_pact_holds(GATEWAY, &provider).await;
}
