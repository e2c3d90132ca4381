//! The named proxies every link of the local backend goes through, on the chaos-proxy (a
//! Toxiproxy-compatible server, so any Toxiproxy client can fault them too).
//!
//! Proxies listen on a port the chaos-proxy picks (`127.0.0.1:0`) and report it back. The
//! links to the broker need the broker's help: a Kafka client connects to the address the broker
//! advertises, not the one it bootstrapped from, so the broker opens a "front" per instance that
//! advertises that instance's proxy (`embedded-broker --front`), and the proxy's upstream is
//! pointed at the front once the broker has opened it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::process::Spec;

/// The link from the load generator (and every other client) to the gateway.
pub const CLIENT_LINK: &str = "client->gateway";

/// An upstream for a proxy created before its real upstream exists; nothing listens on the
/// discard port of loopback, so a connection through it fails at once.
pub const PLACEHOLDER_UPSTREAM: &str = "127.0.0.1:9";

/// One link and its proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// `client->gateway`, `gateway->payment#1`, `order#2->kafka`.
    pub name: String,
    /// Where the proxy listens: what the link's client connects to.
    pub listen: String,
    /// Where the proxy forwards to.
    pub upstream: String,
}

/// Creates the proxy `name` on a free port and returns the address it listens on.
pub async fn create(
    client: &chaos::Client,
    name: &str,
    upstream: &str,
) -> anyhow::Result<SocketAddr> {
    let proxy = client
        .create_proxy(&chaos::NewProxy::new(name, "127.0.0.1:0", upstream))
        .await
        .with_context(|| format!("creating the proxy {name}"))?;
    proxy
        .listen
        .parse()
        .with_context(|| format!("the proxy {name} listens on {:?}", proxy.listen))
}

/// Points the proxy `name` at `upstream`.
pub async fn set_upstream(
    client: &chaos::Client,
    name: &str,
    upstream: &str,
) -> anyhow::Result<()> {
    client
        .update_proxy(
            name,
            &chaos::ProxyUpdate {
                upstream: Some(upstream.to_string()),
                ..chaos::ProxyUpdate::default()
            },
        )
        .await
        .with_context(|| format!("pointing the proxy {name} at {upstream}"))?;
    Ok(())
}

#[derive(Deserialize)]
struct BrokerReady {
    #[serde(default)]
    fronts: Vec<Front>,
}

#[derive(Deserialize)]
struct Front {
    advertised: String,
    listen: String,
}

/// The fronts the broker announced in its ready file: advertised address → where it listens.
pub fn broker_fronts(ready_file: &Path) -> anyhow::Result<BTreeMap<SocketAddr, SocketAddr>> {
    let text = std::fs::read_to_string(ready_file)
        .with_context(|| format!("reading {}", ready_file.display()))?;
    let ready: BrokerReady = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the broker's ready file", ready_file.display()))?;
    ready
        .fronts
        .into_iter()
        .map(|f| {
            let advertised = f
                .advertised
                .parse()
                .with_context(|| format!("front advertised as {:?}", f.advertised))?;
            let listen = f
                .listen
                .parse()
                .with_context(|| format!("front listening on {:?}", f.listen))?;
            Ok((advertised, listen))
        })
        .collect()
}

/// Rewrites the broker's `--front ADVERTISED` arguments to `ADVERTISED@LISTEN`, so a restart
/// opens each front where its proxy points.
pub fn pin_fronts(spec: &mut Spec, fronts: &BTreeMap<SocketAddr, SocketAddr>) {
    let mut after_flag = false;
    for arg in &mut spec.args {
        if after_flag
            && let Ok(advertised) = arg.parse::<SocketAddr>()
            && let Some(listen) = fronts.get(&advertised)
        {
            *arg = format!("{advertised}@{listen}");
        }
        after_flag = arg == "--front";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fronts_are_pinned_for_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("broker.json");
        std::fs::write(
            &ready,
            r#"{"addr":"127.0.0.1:9092","pid":1,"fronts":[{"advertised":"127.0.0.1:4001","listen":"127.0.0.1:5001"}]}"#,
        )
        .unwrap();
        let fronts = broker_fronts(&ready).unwrap();
        let mut spec = Spec {
            name: "broker".into(),
            program: "embedded-broker".into(),
            args: vec!["--front".into(), "127.0.0.1:4001".into(), "--x".into()],
            env: BTreeMap::new(),
            ready_file: ready,
            log_file: dir.path().join("log"),
            cpu_budget: None,
        };
        pin_fronts(&mut spec, &fronts);
        assert_eq!(
            spec.args,
            ["--front", "127.0.0.1:4001@127.0.0.1:5001", "--x"]
        );
    }
}
