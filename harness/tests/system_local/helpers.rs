use std::time::{Duration, Instant};

use contracts::domain::{OrderId, Quantity, Sku};
use contracts::http::{OrderLine, OrderView, StockLevel};
use harness::client::ApiClient;
use harness::environment::{self, EnvOptions, Environment};
use harness::scenario::Backend;

pub const SAGA_DEADLINE: Duration = Duration::from_secs(30);

pub struct TestEnv {
    pub env: Box<dyn Environment>,
    pub api: ApiClient,
    pub admin: String,
}

/// Set to `1` to skip the containerized tests when no Docker engine answers (CI never does).
pub const SKIP_DOCKER: &str = "HARNESS_SKIP_DOCKER";

impl TestEnv {
    /// One instance of each service on the test binary's backend ([`crate::BACKEND`]); `None`
    /// only when the backend is `containers`, no Docker engine answers and [`SKIP_DOCKER`] is
    /// set, after a loud message saying the test was skipped.
    pub async fn start() -> Option<Self> {
        Self::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(mut options: EnvOptions) -> Option<Self> {
        options.build = false;
        if crate::BACKEND == Backend::Containers
            && let Err(e) = harness::environment::containers::docker::Docker::connect().await
        {
            if std::env::var(SKIP_DOCKER).is_ok_and(|v| v == "1") {
                eprintln!(
                    "\n!!! SKIPPED: this containerized test needs a Docker engine ({e:#}); \
                     {SKIP_DOCKER}=1 is set, so it passes without running !!!\n"
                );
                return None;
            }
            panic!(
                "the containerized tests need a Docker engine, and none answers: {e:#}\n\
                 start one, or set {SKIP_DOCKER}=1 to skip these tests"
            );
        }
        let env = environment::start(crate::BACKEND, options)
            .await
            .unwrap_or_else(|e| panic!("environment did not start: {e:#}"));
        let api = env.client().unwrap();
        let admin = env.identity().admin_token().unwrap();
        Some(Self { env, api, admin })
    }

    pub fn customer(&self, id: &str) -> String {
        self.env.identity().customer_token(id).unwrap()
    }

    /// Places an order with a fresh `Idempotency-Key`, as a careful client does: the gateway may
    /// then retry it on another instance when the first one's connection fails.
    pub async fn place(&self, token: &str, items: &[(&str, i64)]) -> OrderView {
        let key = uuid::Uuid::new_v4().to_string();
        let answer = self
            .api
            .place_order(token, lines(items), Some(&key))
            .await
            .unwrap();
        assert_eq!(
            answer.status.as_u16(),
            201,
            "POST /api/orders: {}",
            answer.body
        );
        answer.json().unwrap()
    }

    pub async fn terminal(&self, token: &str, id: OrderId) -> OrderView {
        self.api
            .wait_terminal(token, id, SAGA_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn stock_of(&self, sku: &str) -> StockLevel {
        self.api
            .stock(&self.admin)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.sku.as_str() == sku)
            .unwrap_or_else(|| panic!("no stock row for {sku}"))
    }

    /// Polls until `check` holds, failing with the last value seen.
    pub async fn eventually<T: std::fmt::Debug, F, Fut>(
        &self,
        what: &str,
        mut probe: F,
        check: impl Fn(&T) -> bool,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let deadline = Instant::now() + SAGA_DEADLINE;
        loop {
            let v = probe().await;
            if check(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("{what}: not reached within {SAGA_DEADLINE:?}; last seen {v:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn lines(items: &[(&str, i64)]) -> Vec<OrderLine> {
    items
        .iter()
        .map(|(sku, q)| OrderLine {
            sku: Sku::parse(*sku).unwrap(),
            quantity: Quantity::new(*q).unwrap(),
        })
        .collect()
}
