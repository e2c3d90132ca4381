//! `gateway` → `payment-service`: the credit limits the harness seeds, and the accounts and
//! payment ledgers the exactly-once-money check reads.

use std::collections::HashMap;

use contract_pacts::files::ConsumerPact;
use contract_pacts::fixtures::FreshDb;
use contract_pacts::http_provider::{
    HttpProvider, Instance, ServiceFixture, StateError, param_i64, param_str,
};
use contract_pacts::names::{GATEWAY, PAYMENT_SERVICE};
use contract_pacts::tokens::authorization;
use contracts::domain::{CustomerId, Money, OrderId, Role};
use contracts::http::{AccountBalance, AccountUpsert, LedgerEntryKind, PaymentRecord};
use contracts::messages::{Envelope, PaymentCommand};
use pact_consumer::builders::PactBuilder;
use pact_consumer::patterns::JsonPattern;
use pact_consumer::prelude::*;
use pact_models::provider_states::ProviderState;
use payment_service::{AppState, accounts};
use platform::auth::ServiceAuth;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const SERVICE: &str = payment_service::SERVICE;

pub const ACCOUNT_EXISTS: &str = "a customer has an account";
pub const PAYMENT_AUTHORIZED: &str = "a payment was authorized for an order";

fn account_params() -> Value {
    json!({ "customer_id": CUSTOMER, "credit_limit_minor": CREDIT_LIMIT })
}

fn payment_params() -> Value {
    json!({ "order_id": ORDER_ID, "customer_id": CUSTOMER, "amount_minor": TOTAL })
}

fn account_balance(held: i64) -> JsonPattern {
    json_pattern!({
        "customer_id": like!(CUSTOMER),
        "credit_limit_minor": like!(CREDIT_LIMIT),
        "held_minor": like!(held),
        "captured_minor": like!(0),
    })
}

fn payment_record(order_id: JsonPattern) -> JsonPattern {
    json_pattern!({
        "order_id": order_id,
        "customer_id": like!(CUSTOMER),
        "entries": each_like!({
            "seq": like!(1),
            "kind": term!("^(AUTHORIZED|DECLINED|CAPTURED|VOIDED)$", "AUTHORIZED"),
            "amount_minor": like!(TOTAL),
            "occurred_at_ms": like!(EXAMPLE_TIME_MS),
        }),
        "captured_minor": like!(0),
        "held_minor": like!(TOTAL),
    })
}

/// What the gateway's clients need from the payment service.
pub fn contract(pact: &mut PactBuilder) {
    let admin = || authorization(SERVICE, ADMIN, &[Role::Admin]).unwrap();
    pact.interaction("an admin sets the customers' credit limits", "", |mut i| {
        i.request
            .put()
            .path("/admin/accounts")
            .header("authorization", admin())
            .header("content-type", "application/json")
            .json_body(each_like!({
                "customer_id": like!(CUSTOMER),
                "credit_limit_minor": like!(CREDIT_LIMIT),
            }));
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(account_balance(0)));
        i
    });
    pact.interaction("an admin reads the accounts", "", |mut i| {
        i.given_with_params(ACCOUNT_EXISTS, &account_params());
        i.request
            .get()
            .path("/admin/accounts")
            .header("authorization", admin());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(account_balance(0)));
        i
    });
    pact.interaction("an admin reads every payment", "", |mut i| {
        i.given_with_params(ACCOUNT_EXISTS, &account_params());
        i.given_with_params(PAYMENT_AUTHORIZED, &payment_params());
        i.request
            .get()
            .path("/admin/payments")
            .header("authorization", admin());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(payment_record(order_id_pattern())));
        i
    });
    pact.interaction("an admin reads the payment of one order", "", |mut i| {
        i.given_with_params(ACCOUNT_EXISTS, &account_params());
        i.given_with_params(PAYMENT_AUTHORIZED, &payment_params());
        i.request
            .get()
            .path("/admin/payments")
            .query_param("order_id", ORDER_ID)
            .header("authorization", admin());
        i.response
            .ok()
            .header("content-type", "application/json")
            .json_body(each_like!(payment_record(ORDER_ID.into())));
        i
    });
}

#[tokio::test]
async fn the_gateway_gets_its_clients_the_accounts_and_payments_they_seed_and_check() {
    let mut pact = ConsumerPact::new(GATEWAY, PAYMENT_SERVICE).unwrap();
    contract(pact.builder());
    let server = pact.builder().start_mock_server(None, None);
    let gw = gateway(NOWHERE, NOWHERE, &base_url(&server.url())).await;
    let admin = gw.admin();
    let get = |path: &str| gw.request(Method::GET, path).bearer_auth(&admin);

    let seed = [AccountUpsert {
        customer_id: customer(),
        credit_limit_minor: money(CREDIT_LIMIT),
    }];
    let put = gw
        .request(Method::PUT, "/api/admin/accounts")
        .bearer_auth(&admin)
        .json(&seed);
    let seeded: Vec<AccountBalance> = expect(put, 200).await.read();
    assert_eq!(seeded[0].credit_limit_minor, money(CREDIT_LIMIT));

    let accounts: Vec<AccountBalance> = expect(get("/api/admin/accounts"), 200).await.read();
    assert_eq!(accounts[0].customer_id, customer());

    let payments: Vec<PaymentRecord> = expect(get("/api/admin/payments"), 200).await.read();
    assert_eq!(payments[0].entries[0].kind, LedgerEntryKind::Authorized);

    let one = get(&format!("/api/admin/payments?order_id={ORDER_ID}"));
    let payments: Vec<PaymentRecord> = expect(one, 200).await.read();
    assert_eq!(payments[0].order_id, order_id());

    drop(server);
    pact.check().unwrap_or_else(|e| panic!("{e}"));
}

/// The payment service's router over a fresh database, seeded through its own code.
pub struct PaymentFixture;

impl ServiceFixture for PaymentFixture {
    async fn start(&self, secret: &[u8]) -> Result<Instance, StateError> {
        let fresh = FreshDb::new(&payment_service::SQLITE, &payment_service::POSTGRES).await?;
        let state = AppState::new(fresh.db.clone(), ServiceAuth::new(secret, SERVICE));
        let router = payment_service::router(state);
        Ok(Instance::new(fresh, router))
    }

    async fn given(
        &self,
        instance: &Instance,
        state: &ProviderState,
    ) -> Result<HashMap<String, Value>, StateError> {
        let db = instance.db();
        let customer = CustomerId::parse(param_str(state, "customer_id")?)
            .map_err(|e| StateError::setup(state, e))?;
        match state.name.as_str() {
            ACCOUNT_EXISTS => {
                let account = AccountUpsert {
                    customer_id: customer,
                    credit_limit_minor: Money::from_minor(param_i64(state, "credit_limit_minor")?)
                        .map_err(|e| StateError::setup(state, e))?,
                };
                accounts::upsert(db, &[account])
                    .await
                    .map_err(|e| StateError::setup(state, e))?;
            }
            PAYMENT_AUTHORIZED => {
                let order_id: OrderId = param_str(state, "order_id")?
                    .parse()
                    .map_err(|e| StateError::setup(state, e))?;
                let authorize = PaymentCommand::AuthorizePayment {
                    order_id,
                    customer_id: customer,
                    amount_minor: Money::from_minor(param_i64(state, "amount_minor")?)
                        .map_err(|e| StateError::setup(state, e))?,
                };
                payment_service::handle_command(db, &Envelope::new(authorize, platform::now_ms()))
                    .await
                    .map_err(|e| StateError::setup(state, e))?;
            }
            other => return Err(StateError::Unknown(other.into())),
        }
        Ok(HashMap::new())
    }
}

#[tokio::test]
async fn the_payment_service_answers_every_request_the_gateway_forwards_as_agreed() {
    let provider = HttpProvider::start(PAYMENT_SERVICE, SERVICE, PaymentFixture)
        .await
        .unwrap();
    crate::support::assert_http_pact_holds(GATEWAY, &provider).await;
}
