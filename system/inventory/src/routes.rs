//! The HTTP API (paths and bodies in `contracts::http`).
//!
//! | path | who |
//! |---|---|
//! | `GET /products`, `GET /products/{sku}` | any caller with a valid service token |
//! | `PUT /admin/products`, `POST /admin/products/{sku}/restock` | admin |
//! | `GET /admin/stock`, `GET /admin/reservations` | admin |
//! | `/health/live`, `/health/ready` | anyone (ready = the database answers) |
//!
//! A malformed SKU in the path is a 422; a well-formed one the catalog does not know is a 404; a
//! path that does not decode at all is a 400.

use axum::extract::{FromRef, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use contracts::domain::Sku;
use contracts::http::{Product, ProductUpsert, Reservation, RestockRequest, StockLevel};
use platform::auth::{Admin, Caller, ServiceAuth};
use platform::db::{Db, retry};
use platform::http::{ApiError, ApiJson, ApiPath, health_routes, with_common_layers};

use crate::{catalog, commands};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: ServiceAuth,
}

impl AppState {
    pub fn new(db: Db, auth: ServiceAuth) -> Self {
        Self { db, auth }
    }
}

impl FromRef<AppState> for ServiceAuth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The whole HTTP surface, with health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let db = state.db.clone();
    let api = Router::new()
        .route("/products", get(list_products))
        .route("/products/{sku}", get(get_product))
        .route("/admin/products", put(upsert_products))
        .route("/admin/products/{sku}/restock", post(restock))
        .route("/admin/stock", get(stock))
        .route("/admin/reservations", get(reservations))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state);
    let health = health_routes(move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    with_common_layers(api.merge(health))
}

fn parse_sku(raw: String) -> Result<Sku, ApiError> {
    Ok(Sku::parse(raw)?)
}

fn unknown(sku: &Sku) -> ApiError {
    ApiError::NotFound(format!("no product with sku {sku}"))
}

#[tracing::instrument(skip_all)]
async fn list_products(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(catalog::products(&state.db).await?))
}

#[tracing::instrument(skip_all, fields(sku = %raw))]
async fn get_product(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Product>, ApiError> {
    let sku = parse_sku(raw)?;
    catalog::product(&state.db, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&sku))
}

#[tracing::instrument(skip_all, fields(products = items.len()))]
async fn upsert_products(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(items): ApiJson<Vec<ProductUpsert>>,
) -> Result<Json<Vec<StockLevel>>, ApiError> {
    catalog::validate_upserts(&items).map_err(ApiError::Validation)?;
    let levels = retry(5, || catalog::upsert(&state.db, &items)).await?;
    Ok(Json(levels))
}

#[tracing::instrument(skip_all, fields(sku = %raw))]
async fn restock(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<RestockRequest>,
) -> Result<Json<StockLevel>, ApiError> {
    let sku = parse_sku(raw)?;
    retry(5, || catalog::restock(&state.db, &sku, req.quantity))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&sku))
}

#[tracing::instrument(skip_all)]
async fn stock(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<StockLevel>>, ApiError> {
    Ok(Json(catalog::stock_levels(&state.db).await?))
}

#[tracing::instrument(skip_all)]
async fn reservations(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<Reservation>>, ApiError> {
    Ok(Json(commands::reservations(&state.db).await?))
}
