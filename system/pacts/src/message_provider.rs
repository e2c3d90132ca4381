//! The provider side of a message contract: the provider's real code produces each message.
//!
//! `pact_verifier` verifies a message interaction by posting `{"description": ..., "providerStates":
//! [...]}` to the provider and comparing the answer's body with the contract (and the
//! base64-encoded JSON of the `Pact-Message-Metadata` header with the contract's metadata). This
//! module serves that endpoint on a loopback port. Each description is registered with the
//! provider states it stands for and a producer: a function that runs the provider's own code on
//! a fresh database (the saga reacting to events, a command handler) and reads back the message it
//! wrote to its outbox, which is exactly the payload the outbox relay would publish. The topic of
//! the outbox row becomes the message's `topic` metadata.
//!
//! A description the provider has no producer for, or states that differ from the registered
//! ones, fail that interaction with a message saying so.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::Value;

use crate::fixtures::{FixtureError, Produced, TOPIC};

/// The header `pact_verifier` reads a message's metadata from.
pub const METADATA_HEADER: &str = "pact-message-metadata";

type ProduceFuture = Pin<Box<dyn Future<Output = Result<Produced, FixtureError>> + Send>>;
type Producer = Arc<dyn Fn() -> ProduceFuture + Send + Sync>;
type Edit = Arc<dyn Fn(&mut Value) + Send + Sync>;

struct Entry {
    states: Vec<String>,
    produce: Producer,
    edit: Option<Edit>,
}

/// Registers what a provider produces, then serves it.
pub struct MessageProviderBuilder {
    name: String,
    entries: HashMap<String, Entry>,
}

impl MessageProviderBuilder {
    /// A provider named as in the pacts (e.g. `order-service`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            entries: HashMap::new(),
        }
    }

    /// `description` is produced by `produce`, standing for the provider `states`.
    pub fn message<F, Fut>(mut self, description: &str, states: &[&str], produce: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Produced, FixtureError>> + Send + 'static,
    {
        let produce: Producer = Arc::new(move || Box::pin(produce()));
        self.entries.insert(
            description.into(),
            Entry {
                states: states.iter().map(|s| s.to_string()).collect(),
                produce,
                edit: None,
            },
        );
        self
    }

    /// Changes what the provider's code produced for `description` before it is served: how a
    /// test shows what verification says about a breaking change.
    pub fn edit(
        mut self,
        description: &str,
        edit: impl Fn(&mut Value) + Send + Sync + 'static,
    ) -> Self {
        if let Some(entry) = self.entries.get_mut(description) {
            entry.edit = Some(Arc::new(edit));
        }
        self
    }

    pub async fn serve(self) -> Result<MessageProvider, std::io::Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", post(produce))
            .with_state(Arc::new(self.entries));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("contract-pacts: the message provider's server stopped: {e}");
            }
        });
        Ok(MessageProvider {
            name: self.name,
            addr,
            server,
        })
    }
}

/// A running message provider endpoint.
pub struct MessageProvider {
    name: String,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl MessageProvider {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for MessageProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageRequest {
    description: String,
    #[serde(default)]
    provider_states: Vec<RequestedState>,
}

#[derive(Debug, serde::Deserialize)]
struct RequestedState {
    name: String,
}

fn refuse(status: StatusCode, message: String) -> Response {
    eprintln!("contract-pacts: {message}");
    (status, message).into_response()
}

async fn produce(
    State(entries): State<Arc<HashMap<String, Entry>>>,
    Json(request): Json<MessageRequest>,
) -> Response {
    let Some(entry) = entries.get(&request.description) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "the provider has no producer for message {:?}: register one in its provider test",
                request.description
            ),
        );
    };
    let states: Vec<String> = request
        .provider_states
        .into_iter()
        .map(|s| s.name)
        .collect();
    if states != entry.states {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "message {:?} is asked for in provider states {states:?}, but the provider \
                 produces it for {:?}",
                request.description, entry.states
            ),
        );
    }
    let produced = match (entry.produce)().await {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("producing message {:?} failed: {e}", request.description),
            );
        }
    };
    let mut payload: Value = match serde_json::from_str(&produced.payload) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the outbox payload of {:?} is not JSON: {e}", produced.kind),
            );
        }
    };
    if let Some(edit) = &entry.edit {
        edit(&mut payload);
    }
    let metadata = serde_json::json!({ TOPIC: produced.topic }).to_string();
    let encoded = base64::engine::general_purpose::STANDARD.encode(metadata);
    let mut response = Json(payload).into_response();
    match HeaderValue::from_str(&encoded) {
        Ok(value) => {
            response.headers_mut().insert(METADATA_HEADER, value);
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metadata of {:?}: {e}", produced.kind),
            );
        }
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
