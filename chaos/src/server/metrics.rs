//! Per-proxy counters and their Prometheus text rendering for `GET /metrics`.
//!
//! The byte counters use Toxiproxy's names and labels
//! (`toxiproxy_proxy_received_bytes_total{direction,proxy,listener,upstream}` and
//! `toxiproxy_proxy_sent_bytes_total{...}`) so dashboards written for Toxiproxy work unchanged;
//! they count as data flows rather than when a connection ends. The connection counters
//! (`toxiproxy_proxy_connections_accepted_total`, `toxiproxy_proxy_connections_active`) are
//! chaos-proxy's own. Counters belong to a proxy and disappear when it is deleted.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::model::Stream;

/// Counters of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: [AtomicU64; 2],
    sent: [AtomicU64; 2],
    accepted: AtomicU64,
    active: AtomicU64,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Upstream => 0,
        Stream::Downstream => 1,
    }
}

impl Counters {
    pub fn received(&self, stream: Stream, bytes: usize) {
        self.received[index(stream)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, stream: Stream, bytes: usize) {
        self.sent[index(stream)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts an accepted connection; the returned guard keeps it counted as active.
    pub fn connection(self: &std::sync::Arc<Self>) -> ActiveConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection(std::sync::Arc::clone(self))
    }
}

/// Decrements the active connection gauge when dropped.
pub(crate) struct ActiveConnection(std::sync::Arc<Counters>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the renderer needs to know about one proxy.
pub(crate) struct ProxySample<'a> {
    pub name: &'a str,
    pub listen: &'a str,
    pub upstream: &'a str,
    pub counters: &'a Counters,
}

const RECEIVED: &str = "toxiproxy_proxy_received_bytes_total";
const SENT: &str = "toxiproxy_proxy_sent_bytes_total";
const ACCEPTED: &str = "toxiproxy_proxy_connections_accepted_total";
const ACTIVE: &str = "toxiproxy_proxy_connections_active";

/// Prometheus text exposition format (version 0.0.4), written by `metrics-exporter-prometheus`.
///
/// The counters live in each proxy's [`Counters`] (they go with the proxy, and several servers
/// in one test process must not share them), so every scrape renders them through a fresh
/// recorder of the exporter, the way a Prometheus "collector" reads its values at scrape time:
/// the exporter does the format (help, types, label escaping), this module only the values.
pub(crate) fn render(proxies: &[ProxySample<'_>]) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_counter!(
            RECEIVED,
            Unit::Bytes,
            "Bytes read from the sending side of each proxy direction."
        );
        describe_counter!(
            SENT,
            Unit::Bytes,
            "Bytes written to the receiving side of each proxy direction."
        );
        describe_counter!(
            ACCEPTED,
            Unit::Count,
            "Client connections accepted by each proxy."
        );
        describe_gauge!(
            ACTIVE,
            Unit::Count,
            "Client connections each proxy currently holds open."
        );
        for p in proxies {
            let proxy = [
                ("proxy", p.name.to_string()),
                ("listener", p.listen.to_string()),
                ("upstream", p.upstream.to_string()),
            ];
            for stream in Stream::ALL {
                let i = index(stream);
                let labels: Vec<(&str, String)> =
                    std::iter::once(("direction", stream.to_string()))
                        .chain(proxy.iter().cloned())
                        .collect();
                counter!(RECEIVED, &labels)
                    .absolute(p.counters.received[i].load(Ordering::Relaxed));
                counter!(SENT, &labels).absolute(p.counters.sent[i].load(Ordering::Relaxed));
            }
            counter!(ACCEPTED, &proxy).absolute(p.counters.accepted.load(Ordering::Relaxed));
            gauge!(ACTIVE, &proxy).set(p.counters.active.load(Ordering::Relaxed) as f64);
        }
    });
    handle.render()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn samples_carry_toxiproxys_labels_and_escape_them() {
        let counters = Arc::new(Counters::default());
        counters.received(Stream::Upstream, 7);
        let _active = counters.connection();
        let text = render(&[ProxySample {
            name: "a\"b",
            listen: "127.0.0.1:1",
            upstream: "127.0.0.1:2",
            counters: &counters,
        }]);
        assert!(text.contains(
            "toxiproxy_proxy_received_bytes_total{direction=\"upstream\",proxy=\"a\\\"b\",listener=\"127.0.0.1:1\",upstream=\"127.0.0.1:2\"} 7\n"
        ), "{text}");
        assert!(text.contains("toxiproxy_proxy_connections_active{proxy=\"a\\\"b\",listener=\"127.0.0.1:1\",upstream=\"127.0.0.1:2\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE toxiproxy_proxy_sent_bytes_total counter\n"));
    }
}
