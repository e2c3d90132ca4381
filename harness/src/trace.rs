//! `harness trace ID`: one order's trace as a tree, from a running `harness up`.
//!
//! The services export their spans to the harness's collector; the env file names it
//! (`otlp_endpoint`). An order id is looked up through the `order_id` attribute the order,
//! inventory and payment services put on their spans; a 32-digit hex id is taken as a trace id.
//! An order's saga is one trace (a client that retried with a new trace context may have made
//! more, printed one after the other); every read of the order (`GET /api/orders/{id}`) is a
//! trace of its own that names it too, listed after the saga in one line each.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;

use crate::EXIT_CANNOT_RUN;
use crate::cli::TraceArgs;
use crate::telemetry::collector::{fetch_trace, fetch_trace_ids_for_order};
use crate::telemetry::store::{SpanKind, SpanRecord};
use crate::telemetry::tree::{RenderOptions, Tree, hidden_db_spans, render_text};

#[derive(Deserialize)]
struct EnvFile {
    otlp_endpoint: Option<String>,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let base = collector_of(&args.env_file)?;
    let id = args.id.trim();
    let trace_ids = if is_trace_id(id) {
        vec![id.to_ascii_lowercase()]
    } else {
        fetch_trace_ids_for_order(&base, id)
            .await
            .with_context(|| format!("asking the collector at {base}; is `harness up` running?"))?
    };
    if trace_ids.is_empty() {
        eprintln!(
            "no trace has a span with order_id {id:?} (yet): check the id, or wait a second for \
             the services to export"
        );
        return Ok(ExitCode::from(EXIT_CANNOT_RUN));
    }
    let mut found = Vec::new();
    for trace_id in &trace_ids {
        match fetch_trace(&base, trace_id).await? {
            Some(spans) => found.push((trace_id, spans)),
            None => eprintln!("trace {trace_id}: not in the collector"),
        }
    }
    if found.is_empty() {
        return Ok(ExitCode::from(EXIT_CANNOT_RUN));
    }
    if args.json {
        let all: Vec<_> = found.iter().map(|(_, spans)| spans).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        let options = RenderOptions { db: args.db };
        let (reads, sagas): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(_, spans)| only_reads(spans));
        for (trace_id, spans) in sagas {
            let tree = Tree::build(spans);
            let folded = if args.db {
                String::new()
            } else {
                format!(
                    ", {} database spans folded into their parents: --db shows them",
                    hidden_db_spans(&tree)
                )
            };
            println!("trace {trace_id} ({} spans{folded})", tree.len());
            println!("   offset duration  span");
            print!("{}", render_text(&tree, options));
        }
        if !reads.is_empty() {
            println!("reads of the order, one trace each (`harness trace TRACE_ID` shows one):");
        }
        for (trace_id, spans) in reads {
            let tree = Tree::build(spans);
            let entry = tree
                .roots()
                .next()
                .map_or_else(String::new, |r| r.span.name.clone());
            println!(
                "  {trace_id}  {entry}  {}",
                crate::slo::format_micros(tree.duration_ns() as f64 / 1_000.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A trace whose every request is a read (`GET`/`HEAD`): someone looking at the order, not its
/// saga.
fn only_reads(spans: &[SpanRecord]) -> bool {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .all(|s| s.name.starts_with("GET ") || s.name.starts_with("HEAD "))
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn collector_of(env_file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(env_file).with_context(|| {
        format!(
            "reading {}; start the system with `harness up --env-file {}` first",
            env_file.display(),
            env_file.display()
        )
    })?;
    let env: EnvFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an env file of `harness up`", env_file.display()))?;
    env.otlp_endpoint.with_context(|| {
        format!(
            "{} names no otlp_endpoint: that `harness up` collects no traces",
            env_file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_32_hex_digits_and_anything_else_an_order_id() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_trace_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473"));
    }
}
