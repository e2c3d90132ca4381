//! The data every environment starts with, and the identity provider that issues tokens.
//!
//! The seed is chosen so that load exercises every saga outcome: most customers have room on
//! their credit limit (orders confirm), a few have a tiny limit (payments decline, so the saga
//! compensates), and a few SKUs have little stock (reservations get rejected).

use std::time::Duration;

use anyhow::Context;
use contracts::domain::{CustomerId, Money, Role, Sku};
use contracts::http::{AccountUpsert, ProductUpsert};
use platform::auth::{UserTokenIssuer, generate_ed25519_pem};
use serde::Serialize;

use crate::client::ApiClient;

pub const ISSUER: &str = "harness";
pub const AUDIENCE: &str = "shop-api";
pub const ADMIN_SUBJECT: &str = "ops-admin";
/// The customer `customer_token` belongs to: plenty of credit.
pub const GOOD_CUSTOMER: &str = "cust-0001";
/// The customer `declining_customer_token` belongs to: a limit of 10.00.
pub const DECLINING_CUSTOMER: &str = "cust-broke-01";
/// A SKU with only a few units, to provoke rejections.
pub const SCARCE_SKU: &str = "SKU-SCARCE-1";
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Signs user tokens with a key pair made for this environment; the gateway gets the public key.
#[derive(Clone)]
pub struct IdentityProvider {
    issuer: UserTokenIssuer,
    private_pem: String,
    public_pem: String,
}

impl IdentityProvider {
    pub fn new() -> anyhow::Result<Self> {
        let (private_pem, public_pem) =
            generate_ed25519_pem().context("generating the token signing key")?;
        let issuer = UserTokenIssuer::from_pem(&private_pem, ISSUER, AUDIENCE)
            .context("loading the token signing key")?;
        Ok(Self {
            issuer,
            private_pem,
            public_pem,
        })
    }

    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    pub fn private_key_pem(&self) -> &str {
        &self.private_pem
    }

    pub fn customer_token(&self, customer_id: &str) -> anyhow::Result<String> {
        Ok(self
            .issuer
            .issue(customer_id, &[Role::Customer], TOKEN_TTL)?)
    }

    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(self
            .issuer
            .issue(ADMIN_SUBJECT, &[Role::Admin], TOKEN_TTL)?)
    }

    pub fn issuer(&self) -> &UserTokenIssuer {
        &self.issuer
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerInfo {
    pub customer_id: String,
    pub credit_limit_minor: i64,
    pub token: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductInfo {
    pub sku: String,
    pub unit_price_minor: i64,
    pub initial_stock: i64,
}

/// Products and customers to create.
#[derive(Debug, Clone)]
pub struct Seed {
    pub products: Vec<ProductUpsert>,
    pub accounts: Vec<AccountUpsert>,
}

impl Seed {
    /// 10 well-stocked products, 2 scarce ones; 50 customers with room, 5 with a limit of 10.00.
    pub fn standard() -> Self {
        let mut products = Vec::new();
        for n in 1..=10i64 {
            products.push(product(
                &format!("SKU-{}", 1000 + n),
                &format!("Widget {n}"),
                250 * n,
                1_000_000,
            ));
        }
        products.push(product(SCARCE_SKU, "Limited edition 1", 9_900, 3));
        products.push(product("SKU-SCARCE-2", "Limited edition 2", 14_900, 3));
        let mut accounts = Vec::new();
        for n in 1..=50 {
            accounts.push(account(&format!("cust-{n:04}"), 100_000_000_000));
        }
        for n in 1..=5 {
            accounts.push(account(&format!("cust-broke-{n:02}"), 1_000));
        }
        Self { products, accounts }
    }

    pub async fn apply(&self, client: &ApiClient, admin_token: &str) -> anyhow::Result<()> {
        client.put_products(admin_token, &self.products).await?;
        client.put_accounts(admin_token, &self.accounts).await?;
        Ok(())
    }

    pub fn customer_infos(&self, idp: &IdentityProvider) -> Vec<CustomerInfo> {
        self.accounts
            .iter()
            .map(|a| CustomerInfo {
                customer_id: a.customer_id.to_string(),
                credit_limit_minor: a.credit_limit_minor.minor(),
                token: idp
                    .customer_token(a.customer_id.as_str())
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub fn product_infos(&self) -> Vec<ProductInfo> {
        self.products
            .iter()
            .map(|p| ProductInfo {
                sku: p.sku.to_string(),
                unit_price_minor: p.unit_price_minor.minor(),
                initial_stock: p.available,
            })
            .collect()
    }
}

fn product(sku: &str, name: &str, price: i64, available: i64) -> ProductUpsert {
    ProductUpsert {
        sku: Sku::parse(sku).unwrap_or_else(|e| unreachable!("seed sku {sku}: {e}")),
        name: name.into(),
        unit_price_minor: Money::from_minor(price).unwrap_or_default(),
        available,
    }
}

fn account(id: &str, limit: i64) -> AccountUpsert {
    AccountUpsert {
        customer_id: CustomerId::parse(id)
            .unwrap_or_else(|e| unreachable!("seed customer {id}: {e}")),
        credit_limit_minor: Money::from_minor(limit).unwrap_or_default(),
    }
}
