//! That the contracts cover what crosses the wire: every message kind on every topic has a
//! contract with the service that consumes it, and every route the gateway forwards is in a
//! contract with the service that owns it (or is listed below with the reason no client needs
//! it).

use std::collections::BTreeSet;

use contract_pacts::files::{committed, committed_dir};
use contract_pacts::names::{
    GATEWAY, INVENTORY_SERVICE, ORDER_PROJECTOR, ORDER_SERVICE, PAYMENT_SERVICE,
};
use contracts::messages::{
    InventoryCommand, InventoryEvent, OrderEvent, PaymentCommand, PaymentEvent, topics,
};
use gateway::routes::ROUTES;
use serde_json::Value;

/// Every message kind, with its topic and the service consuming that topic. The matches below are
/// exhaustive, so a new kind does not compile until it is listed here (and then this test fails
/// until it has a contract).
const EVERY_MESSAGE: [(&str, &str, &str); 15] = [
    (
        topics::INVENTORY_COMMANDS,
        "ReserveStock",
        INVENTORY_SERVICE,
    ),
    (
        topics::INVENTORY_COMMANDS,
        "ReleaseStock",
        INVENTORY_SERVICE,
    ),
    (topics::INVENTORY_COMMANDS, "CommitStock", INVENTORY_SERVICE),
    (topics::INVENTORY_EVENTS, "StockReserved", ORDER_SERVICE),
    (topics::INVENTORY_EVENTS, "StockRejected", ORDER_SERVICE),
    (topics::INVENTORY_EVENTS, "StockReleased", ORDER_SERVICE),
    (topics::INVENTORY_EVENTS, "StockCommitted", ORDER_SERVICE),
    (
        topics::PAYMENT_COMMANDS,
        "AuthorizePayment",
        PAYMENT_SERVICE,
    ),
    (topics::PAYMENT_COMMANDS, "CapturePayment", PAYMENT_SERVICE),
    (topics::PAYMENT_COMMANDS, "VoidPayment", PAYMENT_SERVICE),
    (topics::PAYMENT_EVENTS, "PaymentAuthorized", ORDER_SERVICE),
    (topics::PAYMENT_EVENTS, "PaymentDeclined", ORDER_SERVICE),
    (topics::PAYMENT_EVENTS, "PaymentCaptured", ORDER_SERVICE),
    (topics::PAYMENT_EVENTS, "PaymentVoided", ORDER_SERVICE),
    (topics::ORDER_EVENTS, "OrderChanged", ORDER_PROJECTOR),
];

/// Never called: it is here so that the compiler's exhaustiveness check stops at this file when a
/// message kind is added, next to the list it must join.
#[allow(dead_code)]
fn listed_above(
    a: InventoryCommand,
    b: InventoryEvent,
    c: PaymentCommand,
    d: PaymentEvent,
    e: OrderEvent,
) -> [&'static str; 5] {
    [
        match a {
            InventoryCommand::ReserveStock { .. } => "ReserveStock",
            InventoryCommand::ReleaseStock { .. } => "ReleaseStock",
            InventoryCommand::CommitStock { .. } => "CommitStock",
        },
        match b {
            InventoryEvent::StockReserved { .. } => "StockReserved",
            InventoryEvent::StockRejected { .. } => "StockRejected",
            InventoryEvent::StockReleased { .. } => "StockReleased",
            InventoryEvent::StockCommitted { .. } => "StockCommitted",
        },
        match c {
            PaymentCommand::AuthorizePayment { .. } => "AuthorizePayment",
            PaymentCommand::CapturePayment { .. } => "CapturePayment",
            PaymentCommand::VoidPayment { .. } => "VoidPayment",
        },
        match d {
            PaymentEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            PaymentEvent::PaymentDeclined { .. } => "PaymentDeclined",
            PaymentEvent::PaymentCaptured { .. } => "PaymentCaptured",
            PaymentEvent::PaymentVoided { .. } => "PaymentVoided",
        },
        match e {
            OrderEvent::OrderChanged { .. } => "OrderChanged",
        },
    ]
}

/// Routes no client of the gateway calls, so no consumer has a contract for them.
const UNUSED_ROUTES: [(&str, &str); 1] = [(
    "/api/admin/accounts/rebuild",
    "operators call it by hand; the harness and its checks never do",
)];

fn pacts() -> Vec<Value> {
    let mut all: Vec<Value> = std::fs::read_dir(committed_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
        .collect();
    assert!(!all.is_empty(), "no pact in {}", committed_dir().display());
    all.sort_by_key(|p| p["consumer"]["name"].to_string());
    all
}

fn interactions(pact: &Value) -> &[Value] {
    pact["interactions"].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn every_message_kind_has_a_contract_with_the_service_that_consumes_its_topic() {
    let mut covered = BTreeSet::new();
    for pact in pacts() {
        let consumer = pact["consumer"]["name"].as_str().unwrap().to_string();
        for i in interactions(&pact) {
            if i["type"] == "Asynchronous/Messages" {
                let topic = i["metadata"]["topic"].as_str().unwrap_or("<no topic>");
                let kind = i["contents"]["content"]["body"]["type"]
                    .as_str()
                    .unwrap_or("<no type>");
                covered.insert((topic.to_string(), kind.to_string(), consumer.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = EVERY_MESSAGE
        .iter()
        .map(|(t, k, c)| (t.to_string(), k.to_string(), c.to_string()))
        .collect();
    let missing: Vec<_> = expected.difference(&covered).collect();
    let unexpected: Vec<_> = covered.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "messages without a contract with their consumer: {missing:?}; contracts for \
         messages nobody sends or on the wrong topic: {unexpected:?}"
    );
}

/// `/api/orders/{id}` → a regex for the service's own path, `^/orders/[^/]+$`.
fn upstream_pattern(route: &str) -> String {
    let path = route
        .strip_prefix(gateway::routes::API_PREFIX)
        .unwrap_or(route);
    let parts: Vec<String> = path
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "[^/]+".to_string()
            } else {
                segment.to_string()
            }
        })
        .collect();
    format!("^{}$", parts.join("/"))
}

#[test]
fn every_route_the_gateway_forwards_is_in_a_contract_with_the_service_that_owns_it() {
    let mut uncovered = Vec::new();
    for route in ROUTES {
        if UNUSED_ROUTES.iter().any(|(path, _)| *path == route.path) {
            continue;
        }
        let provider = format!("{}-service", route.service.name());
        let pact: Value =
            serde_json::from_str(&std::fs::read_to_string(committed(GATEWAY, &provider)).unwrap())
                .unwrap();
        let pattern = pact_consumer::patterns::build_regex(upstream_pattern(route.path));
        let covered = interactions(&pact).iter().any(|i| {
            i["request"]["path"]
                .as_str()
                .is_some_and(|p| pattern.is_match(p))
        });
        if !covered {
            uncovered.push(format!("{} (owned by {provider})", route.path));
        }
    }
    assert!(
        uncovered.is_empty(),
        "routes the gateway forwards that no contract covers: {uncovered:?}; add an interaction \
         for what the client reads, or list the route in UNUSED_ROUTES with the reason"
    );
    for (path, _) in UNUSED_ROUTES {
        assert!(
            ROUTES.iter().any(|r| r.path == path),
            "{path} is listed as unused but the gateway has no such route"
        );
    }
}
