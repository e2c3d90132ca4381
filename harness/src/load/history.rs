//! `history.jsonl`: every client operation of a run as a Jepsen-style history, so that a checker
//! other than ours can read what the load generator saw.
//!
//! One JSON object per line, in the order things happened (the lines are written under one
//! lock, the invocation just before the request is sent and the completion just after its answer
//! is read):
//!
//! ```json
//! {"index":0,"type":"invoke","process":3,"time":1200500,"f":"place_order","value":{"customer":"cust-0003","key":"5f0c…","lines":[{"sku":"SKU-1002","quantity":2}]}}
//! {"index":1,"type":"ok","process":3,"time":9400100,"f":"place_order","value":{"order_id":"0193…","status":"PENDING","replayed":false},"status":201}
//! ```
//!
//! - `type`: `invoke`, then one of `ok` (it took effect), `fail` (it certainly did not: 4xx,
//!   429, 503) or `info` (nobody knows: no answer, 500, 502, 504).
//! - `process`: the logical client. Each goose user is a process, numbered from 0; after an
//!   `info` it cannot know whether its operation is still running, so, as in Jepsen, it goes on
//!   as a new process (the next free number). `"watch"` is the saga watch listing the PENDING
//!   orders during the load, `"follower"` the reads that follow the pending orders after it.
//! - `time`: nanoseconds since the load started, on the harness's monotonic clock.
//! - `f`: `place_order`, `get_order`, `restock`, `list_products`, `get_product`,
//!   `list_orders`, `payments`, and `pending_orders` (`"watch"`), `admin_orders`
//!   (`"follower"`).
//! - `value`: what was asked (`invoke`) and what was learnt (`ok`): a placed order's id, status
//!   and whether it was a replay; an order's status; the orders that left PENDING
//!   (`{"left_pending": [...]}`) or were seen terminal (`{"terminal": [{"order_id", "status"}]}`);
//!   `null` for reads whose answer the harness does not use. A `fail` or `info` has `value`
//!   `null`, `status` (0: no answer) and, when there was no answer, `error`.
//!
//! Cost: lines are serialized straight into a 256 KiB buffered file under the lock, from values
//! borrowed from the request (no intermediate strings); at 1000 requests/s that is 2000 short
//! lines a second. A write error turns the log off with one warning; the run goes on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use contracts::domain::{CustomerId, OrderId, OrderStatus, Sku};
use contracts::http::OrderLine;
use serde::{Deserialize, Serialize};

use crate::checks::model::Completion;

/// The history file's name in the report folder.
pub const FILE_NAME: &str = "history.jsonl";

/// What an operation asked for, borrowed from the request.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Op<'a> {
    PlaceOrder {
        customer: &'a CustomerId,
        key: &'a str,
        lines: &'a [OrderLine],
    },
    GetOrder {
        order_id: OrderId,
    },
    Restock {
        sku: &'a Sku,
        quantity: i64,
    },
    /// A read whose answer the harness does not use: the value is `null`.
    Read,
}

/// What an `ok` operation learnt.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Learnt<'a> {
    Order {
        order_id: OrderId,
        status: OrderStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        replayed: Option<bool>,
    },
    Restocked {
        sku: &'a Sku,
        quantity: i64,
    },
    LeftPending {
        left_pending: &'a [OrderId],
    },
    Terminal {
        terminal: &'a [Shown],
    },
    Nothing,
}

/// An order seen with a terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    pub order_id: OrderId,
    pub status: OrderStatus,
}

/// Who ran an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    User(u64),
    Watch,
    Follower,
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::User(n) => s.serialize_u64(*n),
            Self::Watch => s.serialize_str("watch"),
            Self::Follower => s.serialize_str("follower"),
        }
    }
}

#[derive(Serialize)]
struct Line<'a, V: Serialize> {
    index: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    process: Process,
    time: u64,
    f: &'a str,
    value: V,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// One line as read back (what a test or another tool sees).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub process: serde_json::Value,
    pub time: u64,
    pub f: String,
    pub value: serde_json::Value,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Reads a history file back, line by line.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: {l}", path.display(), i + 1))
        })
        .collect()
}

/// The history writer the load shares; a no-op when the run keeps no history.
pub struct HistoryLog {
    out: Mutex<Option<Out>>,
    next_process: AtomicU64,
}

struct Out {
    file: BufWriter<Box<dyn Write + Send>>,
    index: u64,
    started: Instant,
}

impl HistoryLog {
    /// A log that writes nothing.
    pub fn off() -> Self {
        Self::with(None)
    }

    /// A log written to `path` (created or truncated).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self::with(Some(Box::new(file))))
    }

    fn with(sink: Option<Box<dyn Write + Send>>) -> Self {
        Self {
            out: Mutex::new(sink.map(|s| Out {
                file: BufWriter::with_capacity(256 * 1024, s),
                index: 0,
                started: Instant::now(),
            })),
            next_process: AtomicU64::new(0),
        }
    }

    /// Times count from `at`, the start of the load.
    pub fn start(&self, at: Instant) {
        if let Some(out) = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            out.started = at;
        }
    }

    /// A process number nobody had yet.
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    pub fn invoke(&self, process: Process, f: &str, at: Instant, op: Op<'_>) {
        self.write(process, "invoke", f, at, op, None, None);
    }

    /// The completion of the operation `process` invoked last: `ok` with what it learnt, or
    /// `fail`/`info` with the status (0: none) and the transport error.
    #[allow(clippy::too_many_arguments)] // one line's fields, each plain
    pub fn complete(
        &self,
        process: Process,
        f: &str,
        at: Instant,
        completion: Completion,
        learnt: Learnt<'_>,
        status: u16,
        error: Option<&str>,
    ) {
        let learnt = if completion == Completion::Ok {
            learnt
        } else {
            Learnt::Nothing
        };
        let status = (status != 0).then_some(status);
        self.write(process, completion.as_str(), f, at, learnt, status, error);
    }

    #[allow(clippy::too_many_arguments)]
    fn write<V: Serialize>(
        &self,
        process: Process,
        kind: &'static str,
        f: &str,
        at: Instant,
        value: V,
        status: Option<u16>,
        error: Option<&str>,
    ) {
        let mut guard = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(out) = guard.as_mut() else {
            return;
        };
        let started = out.started;
        let line = Line {
            index: out.index,
            kind,
            process,
            time: u64::try_from(at.saturating_duration_since(started).as_nanos())
                .unwrap_or(u64::MAX),
            f,
            value,
            status,
            error,
        };
        let written = serde_json::to_writer(&mut out.file, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.file.write_all(b"\n"));
        match written {
            Ok(()) => out.index += 1,
            Err(e) => {
                tracing::warn!("the history file stops here: {e}");
                *guard = None;
            }
        }
    }

    /// Writes what is buffered out.
    pub fn flush(&self) {
        let mut guard = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(out) = guard.as_mut()
            && let Err(e) = out.file.flush()
        {
            tracing::warn!("the history file could not be flushed: {e}");
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use contracts::domain::Quantity;
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_operation_is_an_invoke_and_a_completion_that_read_back_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let log = HistoryLog::create(&path).unwrap();
        let t0 = Instant::now();
        log.start(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let customer = CustomerId::parse("cust-0001").unwrap();
        let sku = Sku::parse("SKU-1001").unwrap();
        let lines = vec![OrderLine {
            sku: sku.clone(),
            quantity: Quantity::new(2).unwrap(),
        }];
        let order_id = OrderId::new();
        let p = Process::User(log.new_process());
        let place = Op::PlaceOrder {
            customer: &customer,
            key: "k1",
            lines: &lines,
        };
        log.invoke(p, "place_order", at(1), place);
        let placed = Learnt::Order {
            order_id,
            status: OrderStatus::Pending,
            replayed: Some(false),
        };
        log.complete(p, "place_order", at(9), Completion::Ok, placed, 201, None);
        log.invoke(p, "get_order", at(10), Op::GetOrder { order_id });
        let lost = Some("operation timed out");
        log.complete(p, "get_order", at(25), Completion::Info, placed, 0, lost);
        let next = Process::User(log.new_process());
        log.invoke(next, "list_products", at(30), Op::Read);
        log.complete(
            next,
            "list_products",
            at(31),
            Completion::Fail,
            Learnt::Nothing,
            503,
            None,
        );
        let gone = [order_id];
        log.invoke(Process::Watch, "pending_orders", at(40), Op::Read);
        let left = Learnt::LeftPending {
            left_pending: &gone,
        };
        log.complete(
            Process::Watch,
            "pending_orders",
            at(41),
            Completion::Ok,
            left,
            200,
            None,
        );
        log.flush();

        let h = read(&path).unwrap();

        let kinds: Vec<(&str, &str)> = h.iter().map(|e| (e.kind.as_str(), e.f.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("invoke", "place_order"),
                ("ok", "place_order"),
                ("invoke", "get_order"),
                ("info", "get_order"),
                ("invoke", "list_products"),
                ("fail", "list_products"),
                ("invoke", "pending_orders"),
                ("ok", "pending_orders"),
            ]
        );
        assert!(h.iter().enumerate().all(|(i, e)| e.index == i as u64));
        assert!(h.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(h[0].time, 1_000_000);
        assert_eq!(h[0].process, 0);
        assert_eq!(h[0].value["customer"], "cust-0001");
        assert_eq!(h[0].value["key"], "k1");
        assert_eq!(h[0].value["lines"][0]["sku"], "SKU-1001");
        assert_eq!(h[0].value["lines"][0]["quantity"], 2);
        assert_eq!(h[1].value["order_id"], order_id.to_string());
        assert_eq!(h[1].value["status"], "PENDING");
        assert_eq!(h[1].status, Some(201));
        assert_eq!(h[2].value["order_id"], order_id.to_string());
        // What an `info` learnt is unknown, whatever the caller passed; it says why.
        assert_eq!(h[3].value, serde_json::Value::Null);
        assert_eq!((h[3].status, h[3].error.as_deref()), (None, lost));
        assert_eq!(h[4].process, 1, "a new process after an info");
        assert_eq!(h[5].status, Some(503));
        assert_eq!(h[6].process, "watch");
        assert_eq!(h[7].value["left_pending"][0], order_id.to_string());
    }

    #[test]
    fn a_log_that_is_off_writes_nothing_and_still_numbers_processes() {
        let log = HistoryLog::off();
        log.invoke(Process::Follower, "admin_orders", Instant::now(), Op::Read);
        log.flush();
        assert_eq!((log.new_process(), log.new_process()), (0, 1));
    }
}
