//! A typed client of the gateway's API, for seeding, checks and tests.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use contracts::domain::OrderId;
use contracts::http::{
    AccountBalance, AccountUpsert, AdminOrder, OrderLine, OrderView, PaymentRecord,
    PlaceOrderRequest, ProductUpsert, Reservation, StockLevel,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A raw answer: status, headers of interest and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub replayed: bool,
    pub request_id: Option<String>,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("unexpected body ({}): {}", self.status, self.body))
    }
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `token` may be empty for none. The body is sent as JSON.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            body,
            replayed,
            request_id,
        })
    }

    /// Sends raw bytes with a content type (for malformed-body tests).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: &'static str,
    ) -> anyhow::Result<Answer> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        Ok(Answer {
            status: resp.status(),
            replayed: false,
            request_id: None,
            body: resp.text().await.unwrap_or_default(),
        })
    }

    async fn expect<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let a = self.send(method.clone(), path, token, body, &[]).await?;
        if !a.status.is_success() {
            bail!("{method} {path} answered {}: {}", a.status, a.body);
        }
        a.json()
    }

    /// Polls `/health/ready` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self
                .http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready within {timeout:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn place_order(
        &self,
        token: &str,
        items: Vec<OrderLine>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let body = PlaceOrderRequest { items };
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        self.send(Method::POST, "/api/orders", token, Some(&body), &headers)
            .await
    }

    pub async fn get_order(&self, token: &str, id: OrderId) -> anyhow::Result<Answer> {
        self.send::<()>(Method::GET, &format!("/api/orders/{id}"), token, None, &[])
            .await
    }

    pub async fn my_orders(&self, token: &str) -> anyhow::Result<Vec<OrderView>> {
        self.expect::<_, ()>(Method::GET, "/api/orders", token, None)
            .await
    }

    /// Polls the read model until the order is terminal (or the timeout passes).
    pub async fn wait_terminal(
        &self,
        token: &str,
        id: OrderId,
        timeout: Duration,
    ) -> anyhow::Result<OrderView> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let a = self.get_order(token, id).await?;
            if a.status == StatusCode::OK {
                let view: OrderView = a.json()?;
                if view.status.is_terminal() {
                    return Ok(view);
                }
                last = Some(view.status);
            }
            if Instant::now() > deadline {
                bail!("order {id} not terminal within {timeout:?} (last seen: {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_orders(&self, admin: &str) -> anyhow::Result<Vec<AdminOrder>> {
        self.expect::<_, ()>(Method::GET, "/api/admin/orders", admin, None)
            .await
    }

    pub async fn admin_order(
        &self,
        admin: &str,
        id: OrderId,
    ) -> anyhow::Result<Option<AdminOrder>> {
        Ok(self
            .admin_orders(admin)
            .await?
            .into_iter()
            .find(|o| o.order.order_id == id))
    }

    pub async fn stock(&self, admin: &str) -> anyhow::Result<Vec<StockLevel>> {
        self.expect::<_, ()>(Method::GET, "/api/admin/stock", admin, None)
            .await
    }

    pub async fn reservations(&self, admin: &str) -> anyhow::Result<Vec<Reservation>> {
        self.expect::<_, ()>(Method::GET, "/api/admin/reservations", admin, None)
            .await
    }

    pub async fn payments(
        &self,
        admin: &str,
        order: Option<OrderId>,
    ) -> anyhow::Result<Vec<PaymentRecord>> {
        let path = match order {
            Some(id) => format!("/api/admin/payments?order_id={id}"),
            None => "/api/admin/payments".into(),
        };
        self.expect::<_, ()>(Method::GET, &path, admin, None).await
    }

    pub async fn accounts(&self, admin: &str) -> anyhow::Result<Vec<AccountBalance>> {
        self.expect::<_, ()>(Method::GET, "/api/admin/accounts", admin, None)
            .await
    }

    pub async fn put_products(
        &self,
        admin: &str,
        products: &[ProductUpsert],
    ) -> anyhow::Result<Vec<StockLevel>> {
        self.expect(Method::PUT, "/api/admin/products", admin, Some(products))
            .await
    }

    pub async fn put_accounts(
        &self,
        admin: &str,
        accounts: &[AccountUpsert],
    ) -> anyhow::Result<Vec<AccountBalance>> {
        self.expect(Method::PUT, "/api/admin/accounts", admin, Some(accounts))
            .await
    }
}
