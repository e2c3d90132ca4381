//! The HTTP API of the order service (paths as in `contracts::http`).
//!
//! | route | who | served from |
//! |---|---|---|
//! | `POST /orders` (`Idempotency-Key`) | customer | the write model, one transaction ([`crate::place`]); 503 + `Retry-After` when [`crate::admission`] refuses |
//! | `GET /orders/{id}` | the owning customer or an admin | the read model only |
//! | `GET /orders[?limit=]` | customer: their own; admin without the customer role: everyone's | the read model only |
//! | `GET /admin/orders[?status=]` | admin | write model + saga + read model copy |
//!
//! Another customer's order answers 404, not 403, so ids cannot be probed.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, FromRequestParts, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use contracts::domain::{CustomerId, OrderId, OrderStatus};
use contracts::http::{AdminOrder, OrderView, PlaceOrderRequest};
use platform::auth::{Admin, Caller, ServiceAuth};
use platform::db::Db;
use platform::http::{
    ApiError, ApiJson, ApiPath, IDEMPOTENCY_KEY, health_routes, with_common_layers,
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::admission::{Admission, AdmissionConfig};
use crate::place::{self, PlaceError, Placed};
use crate::saga::SagaPolicy;
use crate::store;

/// Set on a response that is the stored answer to an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Default and maximum page size of `GET /orders`.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
pub const MAX_LIST_LIMIT: i64 = 1_000;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: ServiceAuth,
    pub policy: SagaPolicy,
    /// Wakes the outbox relay after a commit that enqueued messages.
    pub relay: Arc<Notify>,
    /// Refuses orders that could not be finished in time.
    pub admission: Admission,
}

impl AppState {
    pub fn new(db: Db, auth: ServiceAuth, policy: SagaPolicy, relay: Arc<Notify>) -> Self {
        Self {
            db,
            auth,
            policy,
            relay,
            admission: Admission::new(AdmissionConfig::defaults(policy.step_timeout_ms)),
        }
    }

    /// Replaces the default admission control (the service shares one with its watch loop).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }
}

impl FromRef<AppState> for ServiceAuth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// A caller with the customer role (403 otherwise), checked before the body is read.
#[derive(Debug, Clone)]
pub struct Customer(pub CustomerId);

impl<S> FromRequestParts<S> for Customer
where
    ServiceAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self(caller.customer_id()?))
    }
}

pub fn router(state: AppState) -> Router {
    let db = state.db.clone();
    let api = Router::new()
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/admin/orders", get(admin_orders))
        .with_state(state);
    let health = health_routes(move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    with_common_layers(api.merge(health))
}

/// The `Idempotency-Key` header, if sent; 400 when it is not 1..=128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send at most one Idempotency-Key header".into(),
        ));
    }
    let key = value.to_str().map_err(|_| {
        ApiError::BadRequest("Idempotency-Key must be visible ASCII characters".into())
    })?;
    place::validate_idempotency_key(key).map_err(ApiError::BadRequest)?;
    Ok(Some(key))
}

async fn place_order(
    State(state): State<AppState>,
    Customer(customer): Customer,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let _ticket = match state.admission.admit() {
        Ok(ticket) => ticket,
        Err(refusal) => return Ok(refused(refusal)),
    };
    let placed = place::place_order(&state.db, &state.policy, &customer, key, &request)
        .await
        .map_err(|e| match e {
            PlaceError::Invalid(m) => ApiError::Validation(m),
            e @ PlaceError::KeyReused(_) => ApiError::Validation(e.to_string()),
            PlaceError::Db(e) => ApiError::from(e),
        })?;
    if !placed.replayed {
        state.relay.notify_one();
    }
    Ok(placed_response(placed))
}

/// 503 with `Retry-After: 1`: the client may come back in a second, when the backlog is read
/// again.
fn refused(refusal: crate::admission::Refusal) -> Response {
    let mut response = platform::http::error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        refusal.message(),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn placed_response(placed: Placed) -> Response {
    let status = StatusCode::from_u16(placed.status).unwrap_or(StatusCode::CREATED);
    let mut response = (status, placed.body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", placed.order_id)) {
        headers.insert(LOCATION, location);
    }
    if placed.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Admins see every order; everyone else needs the customer role and sees their own.
fn viewer(caller: &Caller) -> Result<Option<CustomerId>, ApiError> {
    if caller.is_admin() {
        return Ok(None);
    }
    caller.customer_id().map(Some)
}

#[tracing::instrument(skip_all, fields(order_id = %id))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<OrderView>, ApiError> {
    let order_id: OrderId = id
        .parse()
        .map_err(|e: contracts::domain::InvalidValue| ApiError::BadRequest(e.to_string()))?;
    let owner = viewer(&caller)?;
    let not_found = || ApiError::NotFound(format!("order {order_id} not found"));
    // Not projected yet (the projector lags under load): the order as it was accepted, from
    // the write model, rather than a 404 for an order the client was just told exists.
    let view = match store::view(&state.db, order_id).await? {
        Some(view) => view,
        None => store::accepted_view(&state.db, order_id)
            .await?
            .ok_or_else(not_found)?,
    };
    if owner.is_some_and(|c| c != view.customer_id) {
        return Err(not_found());
    }
    Ok(ApiJson(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<i64>,
    /// The last order of the previous page.
    before: Option<String>,
}

async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<ApiJson<Vec<OrderView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}"
        )));
    }
    // An admin who is also a customer lists their own orders like any customer.
    let owner = match caller.customer_id() {
        Ok(c) => Some(c),
        Err(_) => viewer(&caller)?,
    };
    let before = params
        .before
        .as_deref()
        .map(|b| {
            b.parse::<OrderId>()
                .map_err(|_| ApiError::BadRequest(format!("before: {b:?} is not an order id")))
        })
        .transpose()?;
    match store::views(&state.db, owner.as_ref(), before, limit).await? {
        Some(views) => Ok(ApiJson(views)),
        None => Err(ApiError::NotFound(format!(
            "before: no order {} to list after",
            params.before.unwrap_or_default()
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminParams {
    status: Option<String>,
}

async fn admin_orders(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<AdminParams>, QueryRejection>,
) -> Result<ApiJson<Vec<AdminOrder>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = params
        .status
        .as_deref()
        .map(str::parse::<OrderStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(ApiJson(store::admin_orders(&state.db, status).await?))
}
