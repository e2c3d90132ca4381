//! The control API (`--control ADDR`): message-level faults ([`crate::faults`]) set and cleared
//! over HTTP by the test harness. JSON in and out; errors as `{"error": "..."}`.
//!
//! | request | does |
//! |---|---|
//! | `GET /faults` | every fault set, by id: `{"id": {"fronts": [...], "fault": {...}}}` |
//! | `PUT /faults/{id}` | sets (or replaces) fault `id`: body a [`FaultSpec`], e.g. `{"fronts": ["127.0.0.1:40001"], "fault": {"kind": "lost_ack", "probability": 0.3}}`; without `fronts` it applies to every front; 400 naming the problem for a bad fault or an unknown front |
//! | `DELETE /faults/{id}` | clears fault `id` (404 if it was not set) |
//! | `DELETE /faults` | clears every fault |
//!
//! It listens on loopback in every use the harness makes of it, and takes no credentials: it is
//! a test instrument, like Toxiproxy's API, not something to expose.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde_json::json;

use crate::faults::{FaultSpec, Faults};

#[derive(Clone)]
struct Control {
    faults: Arc<Faults>,
    /// The advertised addresses of the broker's fronts, as faults name them.
    fronts: Arc<Vec<String>>,
}

/// The control API's routes over `faults`, for a broker whose fronts advertise `fronts`.
pub fn router(faults: Arc<Faults>, fronts: Vec<String>) -> Router {
    Router::new()
        .route("/faults", get(list).delete(clear_all))
        .route("/faults/{id}", put(set).delete(clear))
        .with_state(Control {
            faults,
            fronts: Arc::new(fronts),
        })
}

async fn list(State(control): State<Control>) -> Json<BTreeMap<String, FaultSpec>> {
    Json(control.faults.list())
}

async fn set(
    State(control): State<Control>,
    Path(id): Path<String>,
    body: Result<Json<FaultSpec>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let spec = match body {
        Ok(Json(spec)) => spec,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    if let Err(message) = spec.fault.check() {
        return bad_request(message);
    }
    if let Some(unknown) = spec
        .fronts
        .iter()
        .flatten()
        .find(|f| !control.fronts.contains(f))
    {
        return bad_request(format!(
            "no front is advertised as {unknown:?}; the fronts are {}",
            control.fronts.join(", ")
        ));
    }
    tracing::info!(%id, fault = ?spec.fault, fronts = ?spec.fronts, "message fault set");
    control.faults.set(&id, spec);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear(State(control): State<Control>, Path(id): Path<String>) -> Response {
    if control.faults.clear(&id) {
        let (acks_lost, fetches_held, copies_written) = control.faults.effects();
        tracing::info!(%id, acks_lost, fetches_held, copies_written,
            "message fault cleared (what every fault did since the broker started)");
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no fault {id:?} is set") })),
        )
            .into_response()
    }
}

async fn clear_all(State(control): State<Control>) -> StatusCode {
    control.faults.clear_all();
    let (acks_lost, fetches_held, copies_written) = control.faults.effects();
    tracing::info!(
        acks_lost,
        fetches_held,
        copies_written,
        "every message fault cleared"
    );
    StatusCode::NO_CONTENT
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}
