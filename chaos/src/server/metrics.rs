//! Per-proxy counters and their Prometheus text rendering for `GET /metrics`.
//!
//! The byte counters use Toxiproxy's names and labels
//! (`toxiproxy_proxy_received_bytes_total{direction,proxy,listener,upstream}` and
//! `toxiproxy_proxy_sent_bytes_total{...}`) so dashboards written for Toxiproxy work unchanged;
//! they count as data flows rather than when a connection ends. The connection counters
//! (`toxiproxy_proxy_connections_accepted_total`, `toxiproxy_proxy_connections_active`) are
//! chaos-proxy's own. Counters belong to a proxy and disappear when it is deleted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(proxies: &[ProxySample<'_>]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "toxiproxy_proxy_received_bytes_total",
        "Bytes read from the sending side of each proxy direction.",
        "counter",
    );
    for p in proxies {
        for stream in Stream::ALL {
            let value = p.counters.received[index(stream)].load(Ordering::Relaxed);
            sample(
                &mut out,
                "toxiproxy_proxy_received_bytes_total",
                Some(stream),
                p,
                value,
            );
        }
    }
    family(
        &mut out,
        "toxiproxy_proxy_sent_bytes_total",
        "Bytes written to the receiving side of each proxy direction.",
        "counter",
    );
    for p in proxies {
        for stream in Stream::ALL {
            let value = p.counters.sent[index(stream)].load(Ordering::Relaxed);
            sample(
                &mut out,
                "toxiproxy_proxy_sent_bytes_total",
                Some(stream),
                p,
                value,
            );
        }
    }
    family(
        &mut out,
        "toxiproxy_proxy_connections_accepted_total",
        "Client connections accepted by each proxy.",
        "counter",
    );
    for p in proxies {
        let value = p.counters.accepted.load(Ordering::Relaxed);
        sample(
            &mut out,
            "toxiproxy_proxy_connections_accepted_total",
            None,
            p,
            value,
        );
    }
    family(
        &mut out,
        "toxiproxy_proxy_connections_active",
        "Client connections each proxy currently holds open.",
        "gauge",
    );
    for p in proxies {
        let value = p.counters.active.load(Ordering::Relaxed);
        sample(
            &mut out,
            "toxiproxy_proxy_connections_active",
            None,
            p,
            value,
        );
    }
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, stream: Option<Stream>, p: &ProxySample<'_>, value: u64) {
    let _ = write!(out, "{name}{{");
    if let Some(stream) = stream {
        let _ = write!(out, "direction=\"{stream}\",");
    }
    let _ = writeln!(
        out,
        "proxy=\"{}\",listener=\"{}\",upstream=\"{}\"}} {value}",
        escape(p.name),
        escape(p.listen),
        escape(p.upstream)
    );
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
