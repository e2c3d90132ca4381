//! The admin HTTP API (paths and bodies in `contracts::http`). Every route but health needs a
//! service token with the admin role.
//!
//! | path | body |
//! |---|---|
//! | `PUT /admin/accounts` | `Vec<AccountUpsert>` → `Vec<AccountBalance>` |
//! | `GET /admin/accounts` | `Vec<AccountBalance>` |
//! | `GET /admin/payments[?order_id=]` | `Vec<PaymentRecord>` |
//! | `POST /admin/accounts/rebuild` | `RebuildReport` |
//! | `/health/live`, `/health/ready` | ready = the database answers |

use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::domain::OrderId;
use contracts::http::{AccountBalance, AccountUpsert, PaymentRecord, RebuildReport};
use platform::auth::{Admin, ServiceAuth};
use platform::db::{Db, retry};
use platform::http::{ApiError, ApiJson, health_routes, with_common_layers};
use serde::Deserialize;

use crate::accounts;

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
        .route("/admin/accounts", get(list_accounts).put(upsert_accounts))
        .route("/admin/accounts/rebuild", post(rebuild))
        .route("/admin/payments", get(payments))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state);
    let health = health_routes(move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    with_common_layers(api.merge(health))
}

#[tracing::instrument(skip_all, fields(accounts = items.len()))]
async fn upsert_accounts(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(items): ApiJson<Vec<AccountUpsert>>,
) -> Result<Json<Vec<AccountBalance>>, ApiError> {
    accounts::validate_upserts(&items).map_err(ApiError::Validation)?;
    Ok(Json(
        retry(5, || accounts::upsert(&state.db, &items)).await?,
    ))
}

#[tracing::instrument(skip_all)]
async fn list_accounts(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<AccountBalance>>, ApiError> {
    Ok(Json(accounts::accounts(&state.db).await?))
}

#[derive(Debug, Deserialize)]
struct PaymentsQuery {
    order_id: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn payments(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<PaymentsQuery>, QueryRejection>,
) -> Result<Json<Vec<PaymentRecord>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let order_id = query
        .order_id
        .as_deref()
        .map(OrderId::from_str)
        .transpose()?;
    Ok(Json(accounts::payments(&state.db, order_id).await?))
}

#[tracing::instrument(skip_all)]
async fn rebuild(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<RebuildReport>, ApiError> {
    Ok(Json(retry(5, || accounts::rebuild(&state.db)).await?))
}
