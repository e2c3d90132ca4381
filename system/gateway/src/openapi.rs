//! The OpenAPI 3.1 document of the gateway's API, served at [`PATH`].
//!
//! Generated with utoipa from the types that travel: the bodies are `contracts::http`'s types,
//! whose schemas (and those of the domain values, `contracts::domain`) state the bounds their
//! parsers enforce. What each operation answers has two halves:
//! - its own answers, written on the functions of [`operations`] (the gateway forwards every
//!   route through one handler, so these functions carry nothing but the description);
//! - the edge's answers, added by [`Edge`] from the route table the gateway enforces
//!   ([`ROUTES`]): the security requirement of its [`Access`], 401 and 403, 405 with `Allow`
//!   for a method the route does not serve (undocumented: OpenAPI describes operations, not
//!   their absence), 413, 429, and 502, 503, 504 for what the resilience layers answer when a
//!   service is down, shedding, or slow.
//!
//! A unit test checks that the document and [`ROUTES`] name the same paths and methods, so a
//! route cannot be added to one and forgotten in the other. The property-based fuzzer of the
//! system tests (schemathesis) reads this document and holds the live system to it.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use contracts::http::{AccountUpsert, ErrorBody, ProductUpsert};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::routes::{Access, ROUTES, Route};

/// Where the gateway serves the document.
pub const PATH: &str = "/api/openapi.json";

/// The name of the bearer JWT security scheme.
pub const BEARER: &str = "bearer";

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);
    &DOCUMENT
}

/// `GET /api/openapi.json`: public, like the catalog (a client needs it before it has a token).
pub async fn serve() -> Response {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string_pretty(document()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            "{}".into()
        })
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        JSON.as_str(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reference shop API",
        description = "The e-commerce order flow behind the API gateway: the public catalog, \
            customers' orders (an order saga across the inventory and payment services), and \
            the operators' admin routes. User tokens are EdDSA JWTs from the identity provider; \
            roles come from their `roles` claim. Every error body is an `ErrorBody`.",
    ),
    paths(
        operations::list_products,
        operations::get_product,
        operations::upsert_products,
        operations::restock,
        operations::stock,
        operations::reservations,
        operations::place_order,
        operations::list_orders,
        operations::get_order,
        operations::admin_orders,
        operations::list_accounts,
        operations::upsert_accounts,
        operations::rebuild_accounts,
        operations::payments,
    ),
    components(schemas(ErrorBody, ProductUpserts, AccountUpserts)),
    modifiers(&Edge),
    tags(
        (name = "catalog", description = "Products and their prices; anyone may read them."),
        (name = "orders", description = "Placing and following orders (customer or admin role)."),
        (name = "admin", description = "Operators' views and changes (admin role)."),
    ),
)]
struct ApiDoc;

/// `PUT /admin/products`: 1 to 1000 products, each SKU at most once (a rule JSON Schema cannot
/// state; breaking it is a 422).
pub struct ProductUpserts;

/// `PUT /admin/accounts`: 1 to 1000 accounts, each customer at most once (422 otherwise).
pub struct AccountUpserts;

/// An array of 1 to `max` items of the component `T`.
fn batch<T: ToSchema>(max: usize) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(T::name()))
        .min_items(Some(1))
        .max_items(Some(max))
        .into()
}

impl PartialSchema for ProductUpserts {
    fn schema() -> RefOr<Schema> {
        batch::<ProductUpsert>(1_000)
    }
}

impl ToSchema for ProductUpserts {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ProductUpsert::name().into(), ProductUpsert::schema()));
        <ProductUpsert as ToSchema>::schemas(schemas);
    }
}

impl PartialSchema for AccountUpserts {
    fn schema() -> RefOr<Schema> {
        batch::<AccountUpsert>(1_000)
    }
}

impl ToSchema for AccountUpserts {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((AccountUpsert::name().into(), AccountUpsert::schema()));
        <AccountUpsert as ToSchema>::schemas(schemas);
    }
}

/// One function per operation, for utoipa's `#[utoipa::path]`: what the service behind the
/// route answers. Never called: the gateway forwards every route through [`crate::proxy`].
#[allow(dead_code)]
mod operations {
    use contracts::domain::{OrderId, OrderStatus, Sku};
    use contracts::http::{
        AccountBalance, AdminOrder, ErrorBody, OrderView, PaymentRecord, PlaceOrderRequest,
        Product, RebuildReport, Reservation, RestockRequest, StockLevel,
    };

    use super::{AccountUpserts, ProductUpserts};

    /// The catalog.
    #[utoipa::path(
        get, path = "/api/products", tag = "catalog", operation_id = "listProducts",
        responses((status = 200, description = "Every product", body = Vec<Product>)),
    )]
    fn list_products() {}

    /// One product.
    #[utoipa::path(
        get, path = "/api/products/{sku}", tag = "catalog", operation_id = "getProduct",
        params(("sku" = Sku, Path, description = "The product's SKU")),
        responses(
            (status = 200, description = "The product", body = Product),
            (status = 404, description = "No product has this SKU", body = ErrorBody),
            (status = 422, description = "The SKU is malformed", body = ErrorBody),
        ),
    )]
    fn get_product() {}

    /// Creates products or overwrites their name, price and available stock, all or none.
    #[utoipa::path(
        put, path = "/api/admin/products", tag = "admin", operation_id = "upsertProducts",
        request_body = ProductUpserts,
        responses(
            (status = 200, description = "The stock of each product, in request order", body = Vec<StockLevel>),
            (status = 422, description = "A product is invalid, or a SKU appears twice", body = ErrorBody),
        ),
    )]
    fn upsert_products() {}

    /// Adds units to a product's stock.
    #[utoipa::path(
        post, path = "/api/admin/products/{sku}/restock", tag = "admin", operation_id = "restock",
        params(("sku" = Sku, Path, description = "The product's SKU")),
        request_body = RestockRequest,
        responses(
            (status = 200, description = "The product's stock afterwards", body = StockLevel),
            (status = 404, description = "No product has this SKU", body = ErrorBody),
            (status = 422, description = "The SKU or the quantity is invalid", body = ErrorBody),
        ),
    )]
    fn restock() {}

    /// Stock counters of every product: `received == available + reserved + sold`.
    #[utoipa::path(
        get, path = "/api/admin/stock", tag = "admin", operation_id = "stock",
        responses((status = 200, description = "Every product's stock", body = Vec<StockLevel>)),
    )]
    fn stock() {}

    /// Every stock reservation the order saga made.
    #[utoipa::path(
        get, path = "/api/admin/reservations", tag = "admin", operation_id = "reservations",
        responses((status = 200, description = "Every reservation", body = Vec<Reservation>)),
    )]
    fn reservations() {}

    /// Places an order (the caller needs the customer role); its saga runs afterwards, so the
    /// answer is `PENDING` and `GET /api/orders/{id}` follows it.
    #[utoipa::path(
        post, path = "/api/orders", tag = "orders", operation_id = "placeOrder",
        params((
            "Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retry safe: a request with a key already used returns the \
                first answer and places nothing (1 to 128 visible ASCII characters)",
            min_length = 1, max_length = 128, pattern = r"^[!-~]{1,128}$",
        )),
        request_body = PlaceOrderRequest,
        responses(
            (status = 201, description = "Placed (or the first answer to this Idempotency-Key)", body = OrderView,
                headers(
                    ("Location" = String, description = "The order's path on the order service"),
                    ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request"),
                )),
            (status = 400, description = "The body is not JSON, or the Idempotency-Key is malformed", body = ErrorBody),
            (status = 422, description = "An order line is invalid, a SKU appears twice, or the \
                Idempotency-Key was used with another body", body = ErrorBody),
        ),
    )]
    fn place_order() {}

    /// The caller's orders, newest first (an admin without the customer role sees everyone's).
    #[utoipa::path(
        get, path = "/api/orders", tag = "orders", operation_id = "listOrders",
        params(("limit" = Option<i64>, Query, description = "At most this many (default 100)",
            minimum = 1, maximum = 1000),
            ("before" = Option<OrderId>, Query,
            description = "The last order of the previous page: list the ones after it")),
        responses(
            (status = 200, description = "The orders", body = Vec<OrderView>),
            (status = 400, description = "The query string is invalid", body = ErrorBody),
            (status = 404, description = "`before` names no order", body = ErrorBody),
        ),
    )]
    fn list_orders() {}

    /// One order, from the read model; one the read model has not projected yet is shown as it
    /// was accepted (PENDING, read-your-writes). Another customer's order is 404, like a
    /// missing one.
    #[utoipa::path(
        get, path = "/api/orders/{id}", tag = "orders", operation_id = "getOrder",
        params(("id" = OrderId, Path, description = "The order id")),
        responses(
            (status = 200, description = "The order", body = OrderView),
            (status = 400, description = "The id is not a UUID", body = ErrorBody),
            (status = 404, description = "No such order of the caller's", body = ErrorBody),
        ),
    )]
    fn get_order() {}

    /// Every order as the write model has it, with its saga and the read model's copy.
    #[utoipa::path(
        get, path = "/api/admin/orders", tag = "admin", operation_id = "adminOrders",
        params(("status" = Option<OrderStatus>, Query, description = "Only orders in this status")),
        responses(
            (status = 200, description = "The orders", body = Vec<AdminOrder>),
            (status = 400, description = "The query string is invalid", body = ErrorBody),
        ),
    )]
    fn admin_orders() {}

    /// Every customer's account balance (the projection of the payment ledger).
    #[utoipa::path(
        get, path = "/api/admin/accounts", tag = "admin", operation_id = "listAccounts",
        responses((status = 200, description = "Every account", body = Vec<AccountBalance>)),
    )]
    fn list_accounts() {}

    /// Creates accounts or changes their credit limits, all or none.
    #[utoipa::path(
        put, path = "/api/admin/accounts", tag = "admin", operation_id = "upsertAccounts",
        request_body = AccountUpserts,
        responses(
            (status = 200, description = "Every account afterwards", body = Vec<AccountBalance>),
            (status = 422, description = "An account is invalid, or a customer appears twice", body = ErrorBody),
        ),
    )]
    fn upsert_accounts() {}

    /// Replays the payment ledger into fresh balances and says whether they equal the
    /// projection.
    #[utoipa::path(
        post, path = "/api/admin/accounts/rebuild", tag = "admin", operation_id = "rebuildAccounts",
        responses((status = 200, description = "The replayed balances", body = RebuildReport)),
    )]
    fn rebuild_accounts() {}

    /// The payment ledgers, of one order or of all.
    #[utoipa::path(
        get, path = "/api/admin/payments", tag = "admin", operation_id = "payments",
        params(("order_id" = Option<OrderId>, Query, description = "Only this order's payment")),
        responses(
            (status = 200, description = "The payments", body = Vec<PaymentRecord>),
            (status = 400, description = "The query string is invalid", body = ErrorBody),
            (status = 422, description = "The order id is not a UUID", body = ErrorBody),
        ),
    )]
    fn payments() {}
}

/// Adds what the edge answers to every operation, from the route table: see the module docs.
struct Edge;

impl Modify for Edge {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user token (EdDSA JWT) from the identity provider, with the \
                         expected issuer and audience and a `roles` claim",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
                continue;
            };
            for operation in operations_of(item) {
                add_edge_answers(route, operation);
            }
        }
    }
}

fn operations_of(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

fn with_retry_after(response: utoipa::openapi::Response) -> utoipa::openapi::Response {
    let mut response = response;
    response.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before trying again"))
            .build(),
    );
    response
}

fn add_edge_answers(route: &Route, operation: &mut Operation) {
    let bearer = SecurityRequirement::new::<_, _, &str>(BEARER, []);
    operation.security = Some(match route.access {
        // No token, or a valid one.
        Access::PublicRead => vec![SecurityRequirement::default(), bearer],
        Access::Customer | Access::Admin => vec![bearer],
    });
    let responses = &mut operation.responses.responses;
    let mut add = |status: u16, response: utoipa::openapi::Response| {
        responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    let has_input = operation.request_body.is_some()
        || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_input {
        add(
            400,
            error("The request cannot be read: malformed JSON, path or query string"),
        );
    }
    add(
        401,
        error(match route.access {
            Access::PublicRead => "The token sent is not valid (missing is fine here)",
            Access::Customer | Access::Admin => {
                "The bearer token is missing, malformed, expired, wrongly signed, or for \
                 another issuer or audience"
            }
        }),
    );
    match route.access {
        Access::PublicRead => {}
        Access::Customer => add(
            403,
            error("The token has neither the customer nor the admin role"),
        ),
        Access::Admin => add(403, error("The token does not have the admin role")),
    }
    if operation.request_body.is_some() {
        add(413, error("The body is larger than the gateway accepts"));
    }
    add(
        429,
        with_retry_after(error(
            "This customer sent too many requests; wait as Retry-After says",
        )),
    );
    add(
        502,
        error("No instance of the service behind the route could be reached"),
    );
    add(
        503,
        with_retry_after(error(
            "Shed: the service's circuit breaker is open, its bulkhead is full, or it refused \
             the request to stay within its limits; try again after Retry-After",
        )),
    );
    add(504, error("The service did not answer in time"));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn methods_in_document() -> BTreeSet<(String, String)> {
        let json = serde_json::to_value(document()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    out.insert((path.clone(), method.to_uppercase()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_describes_exactly_the_routes_and_methods_the_gateway_serves() {
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|r| {
                r.methods
                    .iter()
                    .map(|m| (r.path.to_string(), m.to_string()))
            })
            .collect();
        assert_eq!(methods_in_document(), routes);
    }

    #[test]
    fn protected_routes_require_a_bearer_token_and_say_401_and_403() {
        let json = serde_json::to_value(document()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(
            json["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        for route in ROUTES {
            for method in route.methods {
                let op = &json["paths"][route.path][method.as_str().to_lowercase()];
                let security = op["security"].as_array().unwrap();
                let anonymous = security.iter().any(|s| s.as_object().unwrap().is_empty());
                assert_eq!(
                    anonymous,
                    route.access == Access::PublicRead,
                    "{method} {}",
                    route.path
                );
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "429", "502", "503", "504"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {}: {status}",
                        route.path
                    );
                }
                assert_eq!(
                    responses.contains_key("403"),
                    route.access != Access::PublicRead,
                    "{method} {}",
                    route.path
                );
            }
        }
    }

    #[test]
    fn the_schemas_state_the_bounds_the_parsers_enforce() {
        let json = serde_json::to_value(document()).unwrap();
        let schemas = &json["components"]["schemas"];
        assert_eq!(schemas["Quantity"]["minimum"], 1);
        assert_eq!(schemas["Quantity"]["maximum"], 10_000);
        assert_eq!(schemas["Money"]["minimum"], 0);
        assert_eq!(schemas["Sku"]["pattern"], "^[A-Za-z0-9._:-]{1,64}$");
        assert_eq!(schemas["OrderId"]["format"], "uuid");
        assert_eq!(schemas["PlaceOrderRequest"]["additionalProperties"], false);
        assert_eq!(
            schemas["PlaceOrderRequest"]["properties"]["items"]["maxItems"],
            50
        );
        assert_eq!(schemas["ProductUpserts"]["minItems"], 1);
        assert_eq!(
            schemas["ProductUpsert"]["properties"]["name"]["maxLength"],
            200
        );
    }
}
