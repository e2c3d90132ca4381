//! A real gateway on a free port in front of fake services that echo what reached them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use contracts::domain::Role;
use contracts::http::ErrorBody;
use gateway::{Application, Config};
use platform::auth::{ServiceAuth, UserClaims, UserTokenIssuer, bearer, generate_ed25519_pem};
use platform::config::CommonConfig;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";
pub const ISSUER: &str = "harness";
pub const AUDIENCE: &str = "shop-api";

/// What a fake service saw of one request.
#[derive(Debug, Deserialize)]
pub struct Echo {
    pub instance: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    /// The service token's identity, when it verified for this service.
    pub caller: Option<EchoCaller>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Debug, Deserialize)]
pub struct EchoCaller {
    pub sub: String,
    pub roles: Vec<Role>,
}

/// One instance of a fake service.
pub struct FakeUpstream {
    pub url: String,
    hits: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Fake {
    service: &'static str,
    instance: &'static str,
    hits: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
}

impl FakeUpstream {
    /// `service` is the audience its service tokens must carry, as in the real service.
    pub async fn spawn(service: &'static str, instance: &'static str) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(true));
        let fake = Fake {
            service,
            instance,
            hits: hits.clone(),
            ready: ready.clone(),
        };
        let app = Router::new().fallback(echo).with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            hits,
            ready,
        }
    }

    /// Requests other than readiness probes that reached this instance.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// What `/health/ready` answers from now on: 200 or 503.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// Echoes the request as JSON. `?status=N` answers with that status, `?replay=1` sets
/// `idempotent-replayed`, `?delay_ms=N` answers late. `/health/ready` answers as `set_ready` says.
async fn echo(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/health/ready" {
        return if fake.ready.load(Ordering::SeqCst) {
            StatusCode::OK.into_response()
        } else {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        };
    }
    fake.hits.fetch_add(1, Ordering::SeqCst);
    let param = |name: &str| {
        uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
        })
    };
    if let Some(ms) = param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let caller = bearer(&headers)
        .ok()
        .and_then(|t| {
            ServiceAuth::new(SECRET.as_bytes(), fake.service)
                .verify(t)
                .ok()
        })
        .map(|c| serde_json::json!({ "sub": c.user_id, "roles": c.roles }));
    let echo = serde_json::json!({
        "instance": fake.instance,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "authorization": header("authorization"),
        "caller": caller,
        "request_id": header("x-request-id"),
        "idempotency_key": header("idempotency-key"),
        "content_type": header("content-type"),
        "body": String::from_utf8(body.to_vec()).unwrap(),
    });
    let status = param("status").map_or(StatusCode::OK, |s| {
        StatusCode::from_u16(s.parse().unwrap()).unwrap()
    });
    let mut response = (status, Json(echo)).into_response();
    if param("replay").is_some() {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
        .headers_mut()
        .insert("x-internal-only", HeaderValue::from_static("1"));
    response
}

/// An address with nothing listening: what a crashed instance looks like.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

pub fn config(
    public_pem: &str,
    order: Vec<String>,
    inventory: Vec<String>,
    payment: Vec<String>,
) -> Config {
    Config {
        common: CommonConfig {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance_id: "gateway#test".into(),
            ready_file: None,
            exit_on_stdin_eof: false,
            shutdown_timeout: Duration::from_secs(1),
            drain_delay: Duration::ZERO,
            service_token_secret: secrecy::SecretString::from(SECRET),
            limits: Default::default(),
        },
        jwt_public_key_pem: public_pem.into(),
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        order_urls: order,
        inventory_urls: inventory,
        payment_urls: payment,
        upstream_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_millis(gateway::config::DEFAULT_ATTEMPT_TIMEOUT_MS),
        max_body_bytes: gateway::config::DEFAULT_MAX_BODY_BYTES,
        // No probes the upstream doubles would see as unexpected requests; tests that are about
        // health checks turn them on.
        resilience: gateway::resilience::ResilienceConfig {
            health_check_interval: None,
            ..Default::default()
        },
        upstreams_file: None,
    }
}

/// The gateway under test and the identity provider whose tokens it trusts.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub issuer: UserTokenIssuer,
    pub private_pem: String,
}

/// Order has two instances; inventory and payment one each.
pub struct World {
    pub app: TestApp,
    pub order: [FakeUpstream; 2],
    pub inventory: FakeUpstream,
    pub payment: FakeUpstream,
}

pub async fn spawn_world() -> World {
    spawn_world_with(|_| {}).await
}

pub async fn spawn_world_with(tweak: impl FnOnce(&mut Config)) -> World {
    let order = [
        FakeUpstream::spawn("order", "order#1").await,
        FakeUpstream::spawn("order", "order#2").await,
    ];
    let inventory = FakeUpstream::spawn("inventory", "inventory#1").await;
    let payment = FakeUpstream::spawn("payment", "payment#1").await;
    let app = spawn_app(
        vec![order[0].url.clone(), order[1].url.clone()],
        vec![inventory.url.clone()],
        vec![payment.url.clone()],
        tweak,
    )
    .await;
    World {
        app,
        order,
        inventory,
        payment,
    }
}

pub async fn spawn_app(
    order: Vec<String>,
    inventory: Vec<String>,
    payment: Vec<String>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let (private_pem, public_pem) = generate_ed25519_pem().unwrap();
    let mut config = config(&public_pem, order, inventory, payment);
    tweak(&mut config);
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped(CancellationToken::new()));
    TestApp {
        base,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        issuer: UserTokenIssuer::from_pem(&private_pem, ISSUER, AUDIENCE).unwrap(),
        private_pem,
    }
}

impl TestApp {
    pub fn token(&self, sub: &str, roles: &[Role]) -> String {
        self.issuer
            .issue(sub, roles, Duration::from_secs(300))
            .unwrap()
    }

    pub fn customer(&self) -> String {
        self.token("cust-1", &[Role::Customer])
    }

    pub fn admin(&self) -> String {
        self.token("admin-1", &[Role::Admin])
    }

    /// A token signed with this app's key but with arbitrary claims.
    pub fn token_with(&self, edit: impl FnOnce(&mut UserClaims)) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = UserClaims {
            sub: "cust-1".into(),
            roles: vec![Role::Customer],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + 300,
            iat: now,
        };
        edit(&mut claims);
        self.issuer.issue_claims(&claims).unwrap()
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(Method::GET, path)
    }
}

/// Reads a successful echo.
pub async fn echo_of(response: reqwest::Response) -> Echo {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Asserts a gateway error with the shared body and returns it.
pub async fn error_of(response: reqwest::Response, expected: StatusCode) -> ErrorBody {
    let status = response.status();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert!(
        response.headers().get("x-request-id").is_some(),
        "errors carry the request id too"
    );
    let text = response.text().await.unwrap();
    assert_eq!(status, expected, "{text}");
    serde_json::from_str(&text).unwrap()
}
