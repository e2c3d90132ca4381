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

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(mut options: EnvOptions) -> Self {
        options.build = false;
        let env = environment::start(Backend::Local, options)
            .await
            .unwrap_or_else(|e| panic!("environment did not start: {e:#}"));
        let api = env.client().unwrap();
        let admin = env.identity().admin_token().unwrap();
        Self { env, api, admin }
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
