//! A real service behind a loopback port, for `pact_verifier` to call.
//!
//! The service is its own `router(state)` over a fresh SQLite database: the whole HTTP API its
//! binary serves, without the Kafka loops running beside it (the API only reads and writes the
//! database; the services' own HTTP tests run it the same way). Each interaction gets a fresh
//! instance, so one interaction's data never leaks into the next. Beside the service this module
//! serves the provider-state endpoint of Pact's state change protocol: before an interaction the
//! verifier posts each of its provider states there (the first call starts the instance, and
//! [`ServiceFixture::given`] seeds the state through the service's own code), then sends the
//! request, then posts a teardown, which drops the instance.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use pact_models::provider_states::ProviderState;
use platform::db::Db;
use serde_json::Value;
use tokio::sync::Mutex;
use tower::ServiceExt;

use crate::fixtures::{FixtureError, FreshDb};

/// Why a provider state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "provider state {0:?} is not known to this provider: add it to the provider test's \
         state handler, or fix its name in the consumer test"
    )]
    Unknown(String),
    #[error("provider state {state:?} needs the parameter {param:?} ({expected})")]
    Param {
        state: String,
        param: String,
        expected: &'static str,
    },
    #[error("setting up provider state {state:?} failed: {reason}")]
    Setup { state: String, reason: String },
    #[error(transparent)]
    Fixture(#[from] FixtureError),
}

impl StateError {
    /// A failure of the service's own code while seeding `state`.
    pub fn setup(state: &ProviderState, reason: impl std::fmt::Display) -> Self {
        Self::Setup {
            state: state.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Reads a string parameter of a provider state.
pub fn param_str<'a>(state: &'a ProviderState, name: &str) -> Result<&'a str, StateError> {
    state
        .params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| StateError::Param {
            state: state.name.clone(),
            param: name.into(),
            expected: "a string",
        })
}

/// Reads an integer parameter of a provider state.
pub fn param_i64(state: &ProviderState, name: &str) -> Result<i64, StateError> {
    state
        .params
        .get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| StateError::Param {
            state: state.name.clone(),
            param: name.into(),
            expected: "an integer",
        })
}

/// One instance of the service under test: its database and its router over it.
pub struct Instance {
    pub router: Router,
    fresh: FreshDb,
}

impl Instance {
    pub fn new(fresh: FreshDb, router: Router) -> Self {
        Self { router, fresh }
    }

    pub fn db(&self) -> &Db {
        &self.fresh.db
    }
}

/// How to start one service and bring it into the provider states its contracts name.
pub trait ServiceFixture: Send + Sync + 'static {
    /// A fresh instance that checks service tokens with `secret`.
    fn start(&self, secret: &[u8]) -> impl Future<Output = Result<Instance, StateError>> + Send;

    /// Seeds `state` through the service's own code. The returned values feed the interaction's
    /// provider-state expressions (e.g. `${order_id}` in a path).
    fn given(
        &self,
        instance: &Instance,
        state: &ProviderState,
    ) -> impl Future<Output = Result<HashMap<String, Value>, StateError>> + Send;
}

type Slot = Arc<Mutex<Option<Instance>>>;

/// The service under test on a loopback port, one fresh instance per interaction, and beside it
/// the provider-state endpoint the verifier calls before and after each interaction.
pub struct HttpProvider<F: ServiceFixture> {
    name: String,
    service: String,
    secret: Vec<u8>,
    addr: SocketAddr,
    states_addr: SocketAddr,
    states: Arc<States<F>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl<F: ServiceFixture> HttpProvider<F> {
    /// Serves `fixture`'s service as `name` (its name in the pacts, e.g. `inventory-service`);
    /// `service` is the audience of its tokens (e.g. `inventory`).
    pub async fn start(name: &str, service: &str, fixture: F) -> Result<Self, std::io::Error> {
        // Per run, so only the verifier's re-minting filter makes tokens the provider accepts.
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let slot: Slot = Arc::new(Mutex::new(None));
        let states = Arc::new(States {
            fixture,
            secret: secret.as_bytes().to_vec(),
            slot: slot.clone(),
            errors: std::sync::Mutex::new(Vec::new()),
        });
        let (addr, service_server) =
            serve(Router::new().fallback(forward).with_state(slot)).await?;
        let (states_addr, states_server) = serve(
            Router::new()
                .route("/", post(state_change::<F>))
                .with_state(states.clone()),
        )
        .await?;
        Ok(Self {
            name: name.into(),
            service: service.into(),
            secret: secret.into_bytes(),
            addr,
            states_addr,
            states,
            servers: vec![service_server, states_server],
        })
    }

    /// The provider's name in the pacts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The audience of the service's tokens.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The secret the service checks tokens with (for the verifier's request filter).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the verifier posts provider-state changes.
    pub fn state_change_url(&self) -> String {
        format!("http://{}/", self.states_addr)
    }

    /// Why provider states failed so far: the verifier itself keeps only "a state change handler
    /// failed".
    pub fn state_errors(&self) -> Vec<String> {
        self.states
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

impl<F: ServiceFixture> Drop for HttpProvider<F> {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

async fn serve(app: Router) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("contract-pacts: a provider-side server stopped: {e}");
        }
    });
    Ok((addr, server))
}

async fn forward(State(slot): State<Slot>, request: Request) -> Response {
    let router = slot.lock().await.as_ref().map(|i| i.router.clone());
    match router {
        Some(router) => match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "contract-pacts: no provider state was set up before this request",
        )
            .into_response(),
    }
}

/// The provider's side of the state change protocol.
struct States<F: ServiceFixture> {
    fixture: F,
    secret: Vec<u8>,
    slot: Slot,
    errors: std::sync::Mutex<Vec<String>>,
}

/// What the verifier posts: `{"state": ..., "params": {...}, "action": "setup" | "teardown"}`.
#[derive(Debug, serde::Deserialize)]
struct StateChange {
    state: String,
    #[serde(default)]
    params: HashMap<String, Value>,
    action: String,
}

impl<F: ServiceFixture> States<F> {
    /// Starts an instance on an interaction's first setup call and seeds `state` into it.
    async fn set_up(&self, state: &ProviderState) -> Result<HashMap<String, Value>, StateError> {
        let mut slot = self.slot.lock().await;
        let instance = match slot.take() {
            Some(instance) => instance,
            None => self.fixture.start(&self.secret).await?,
        };
        let instance = slot.insert(instance);
        if state.name.is_empty() {
            // The verifier's call for an interaction without provider states.
            return Ok(HashMap::new());
        }
        self.fixture.given(instance, state).await
    }
}

async fn state_change<F: ServiceFixture>(
    State(states): State<Arc<States<F>>>,
    Json(change): Json<StateChange>,
) -> Response {
    if change.action == "teardown" {
        states.slot.lock().await.take();
        return Json(serde_json::json!({})).into_response();
    }
    let state = ProviderState {
        name: change.state,
        params: change.params,
    };
    match states.set_up(&state).await {
        Ok(values) => Json(values).into_response(),
        Err(e) => {
            if let Ok(mut errors) = states.errors.lock() {
                errors.push(e.to_string());
            }
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}
