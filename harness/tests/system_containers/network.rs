//! `disconnect`: a container cut off the run's network, a fault only this backend has.

use std::time::{Duration, Instant};

use harness::faults::{self, Schedule};
use harness::scenario::Scenario;
use reqwest::Method;

use crate::helpers::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn a_disconnected_inventory_fails_catalog_reads_until_the_timeline_reconnects_it() {
    let Some(mut t) = TestEnv::start().await else {
        return;
    };
    let text = r#"
description = "disconnect test"
[environment]
backend = "containers"
[load]
users = 1
duration = "10s"
[[load.journeys]]
name = "browse_catalog"
weight = 1
[[chaos]]
at = "500ms"
for = "7s"
target = "inventory#1"
fault = "disconnect"
"#;
    let scenario = Scenario::from_toml(std::path::Path::new("t.toml"), text).unwrap();
    scenario.validate().unwrap();
    let schedule = Schedule::of(&scenario).unwrap();
    let t0 = Instant::now();
    let (windows, during) = {
        let env = &mut t.env;
        let api = t.api.clone();
        // Reads through the fault's window until one fails. A read on a connection the gateway
        // opened before the cut hangs (its packets go nowhere) until the gateway gives up on it
        // after 5 s, so the window is longer than that.
        let probe = async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let mut seen = Vec::new();
            while t0.elapsed() < Duration::from_millis(7300) {
                let a = api
                    .send::<()>(Method::GET, "/api/products", "", None, &[])
                    .await
                    .unwrap();
                seen.push((t0.elapsed().as_millis(), a.status.as_u16()));
                if a.status.is_server_error() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        };
        tokio::join!(faults::run(&schedule, env.as_mut(), t0), probe)
    };
    let windows = windows.unwrap();
    assert!(
        during.last().is_some_and(|(_, s)| *s >= 500),
        "catalog reads (ms since start, status) with inventory#1 off the network: {during:?}; \
         {windows:?}"
    );
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0].fault, "disconnect");
    assert_eq!(windows[0].affected, ["inventory#1"]);
    // Reconnected under its name: the gateway reaches it again.
    let after = t
        .eventually(
            "catalog reads after the reconnect",
            || async {
                t.api
                    .send::<()>(Method::GET, "/api/products", "", None, &[])
                    .await
                    .unwrap()
            },
            |a| a.status.is_success(),
        )
        .await;
    assert!(after.body.contains("SKU-1001"), "{}", after.body);
}
