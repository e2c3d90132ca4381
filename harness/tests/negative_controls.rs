//! End-to-end negative controls: `harness run` exits 1 and names the right invariant when the
//! system really misbehaves during a run.
//!
//! Nothing in the services plants a bug. Each test starts a short run of the real binary on the
//! local backend and, once the first orders have finished and while the load is still running,
//! misbehaves from outside the way an adversary or a broken neighbour would: it writes to a
//! service's SQLite database behind the service's back, or publishes a forged message onto one
//! of the system's topics. It then reads the run's `report.json` and asserts that the invariant
//! that must catch it failed with the expected kind of violation on the subject it tampered
//! with, that the terminal output names that invariant, and that every violation of every
//! invariant is about what was tampered with: no innocent order, SKU or customer blamed, nothing
//! the checks could not verify.
//!
//! How a test reaches the environment of a `harness run`: the local backend keeps its state in a
//! `harness-run-*` directory under the temp dir (`data/<service>.db`, `ready/broker.json`, see
//! `harness/src/environment/local`), and each run gets a `TMPDIR` of its own, so that directory
//! is the only one there. The run prints `environment up in` once the system is seeded and ready.
//!
//! | tamper | from | invariant: kind |
//! |---|---|---|
//! | a CONFIRMED order's row deleted | order db | `no_lost_orders`: `lost` |
//! | a CAPTURED ledger entry raised by 1 (triggers dropped and put back) | payment db | `exactly_once_money`: `wrong_amount` |
//! | `AuthorizePayment` + `CapturePayment` for an order never placed | `payment.commands` | `exactly_once_money`: `money_without_order` |
//! | 7 units added to `available` and `received` of a SKU | inventory db | `stock_conservation`: `not_conserved` |
//! | a CONFIRMED order set CANCELLED, nothing compensated | order db | `compensation`: `stock_not_released`, `money_not_returned` |
//! | a CONFIRMED order set back to PENDING | order db | `sagas_terminal`: `pending` (and `read_model_convergence`: `stale`) |
//! | a forged `OrderChanged` (CANCELLED, newer version) | `order.events` | `read_model_convergence`: `stale` |
//! | a CONFIRMED order's read-model row deleted | order db | `read_model_convergence`: `missing_in_view` |
//! | a CANCELLED order copied (row, saga, view) under a new id | order db | `idempotency`: `duplicate_order_suspected` (and `no_lost_orders`: `unexpected`) |
//! | JSON that is no command | `inventory.commands` | `no_dead_letters`: `dead_letter` |
//!
//! | a CONFIRMED order's lines rewritten in both models | order db | `no_lost_orders`: `altered` |
//! | a CONFIRMED order moved to another customer in both models | order db | `no_lost_orders`: `altered` |
//!
//! Each run is about half a minute on a debug build (a 12 s load of two users); cargo runs two
//! at a time, so the twelve take about three minutes on two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contracts::domain::{CustomerId, Money, OrderId};
use contracts::http::OrderView;
use contracts::messages::{Envelope, OrderEvent, PaymentCommand, topics};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// A small steady load (like `scenarios/smoke.toml`, without SLOs, so only an invariant can
/// fail the run) and a short convergence bound, so a run that must fail does not wait long.
const SCENARIO: &str = r#"
description = "a short steady load while a test misbehaves from outside"

[environment]
backend = "local"

[load]
users = 2
ramp_up = "1s"
duration = "12s"
think_time = "200ms..400ms"

[[load.journeys]]
name = "place_order"
weight = 2

[[load.journeys]]
name = "follow_order"
weight = 1

[checks]
convergence_timeout = "10s"
invariants = "all"
"#;

/// The longest a whole run may take (start-up, load, convergence, checks, teardown).
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// The longest the test waits for an order to finish the way it needs.
const ORDER_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// An adversary deletes a CONFIRMED order from the order service's database: an order the
/// gateway acknowledged is gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_order_deleted_from_the_order_database_is_reported_lost() {
    let mut run = Run::start("deleted-order");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system
        .order_sql("DELETE FROM orders WHERE order_id = ?", &victim.id)
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    done.assert_failed("no_lost_orders", "lost", &Subject::Order(victim.id.clone()));
    // Its read-model row, payment and sale now belong to no order: those checks may say so.
    done.assert_blames_only(&victim.touched());
}

/// An adversary raises a captured amount in the append-only payment ledger, getting past its
/// triggers by dropping and re-creating them.
#[tokio::test(flavor = "multi_thread")]
async fn a_captured_amount_changed_in_the_ledger_is_the_wrong_amount() {
    let mut run = Run::start("changed-capture");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system.raise_capture(&victim.id, 1).await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    done.assert_failed(
        "exactly_once_money",
        "wrong_amount",
        &Subject::Order(victim.id.clone()),
    );
    done.assert_blames_only(&victim.touched());
}

/// A broken neighbour publishes payment commands for an order that was never placed: the
/// payment service authorizes and captures money for nothing.
#[tokio::test(flavor = "multi_thread")]
async fn forged_payment_commands_are_money_without_an_order() {
    let mut run = Run::start("forged-payment");
    let system = run.environment().await;
    system.finished_order("CONFIRMED").await;
    let ghost = OrderId::new();
    let customer = harness::seed::GOOD_CUSTOMER;
    system
        .publish(
            topics::PAYMENT_COMMANDS,
            ghost,
            &[
                PaymentCommand::AuthorizePayment {
                    order_id: ghost,
                    customer_id: CustomerId::parse(customer).unwrap(),
                    amount_minor: Money::from_minor(4_200).unwrap(),
                },
                PaymentCommand::CapturePayment { order_id: ghost },
            ],
        )
        .await;
    system
        .wait_for(
            "the forged capture in the ledger",
            &system.payment,
            "SELECT COUNT(*) FROM payment_events WHERE order_id = ? AND kind = 'CAPTURED'",
            &ghost.to_string(),
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let ghost = Subject::Order(ghost.to_string());
    done.assert_failed("exactly_once_money", "money_without_order", &ghost);
    done.assert_blames_only(&[ghost, Subject::Customer(customer.into())]);
}

/// An adversary adds units to a SKU's stock and to its `received` count together, so the
/// inventory database's own CHECK (`received = available + reserved + sold`) still holds; only
/// the stock the harness itself seeded says it is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn stock_added_behind_the_harness_back_is_not_conserved() {
    let mut run = Run::start("added-stock");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    let sku = victim.skus[0].clone();
    let changed = sqlx::query(
        "UPDATE products SET available = available + 7, received = received + 7 WHERE sku = ?",
    )
    .bind(&sku)
    .execute(&system.inventory)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1, "no product {sku}");
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let sku = Subject::Sku(sku);
    done.assert_failed("stock_conservation", "not_conserved", &sku);
    done.assert_blames_only(&[sku]);
}

/// An adversary marks a CONFIRMED order CANCELLED in the order database and nothing
/// compensates it: its stock stays sold and its money captured.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_cancelled_without_compensation_is_reported() {
    let mut run = Run::start("uncompensated");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system
        .order_sql(
            "UPDATE orders SET status = 'CANCELLED', reason = 'cancelled by hand' \
             WHERE order_id = ?",
            &victim.id,
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let order = Subject::Order(victim.id.clone());
    done.assert_failed("compensation", "stock_not_released", &order);
    done.assert_failed("compensation", "money_not_returned", &order);
    done.assert_blames_only(&victim.touched());
}

/// An adversary flips a CONFIRMED order back to PENDING: a saga that had finished is not
/// terminal any more, and a status a client was shown changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_order_flipped_back_to_pending_is_not_terminal() {
    let mut run = Run::start("flipped-back");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system
        .order_sql(
            "UPDATE orders SET status = 'PENDING' WHERE order_id = ?",
            &victim.id,
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let order = Subject::Order(victim.id.clone());
    done.assert_failed("sagas_terminal", "pending", &order);
    // The read model still says CONFIRMED.
    done.assert_failed("read_model_convergence", "stale", &order);
    done.assert_blames_only(&victim.touched());
}

/// A broken neighbour publishes a forged `OrderChanged` onto `order.events` with a newer
/// version: the read model now shows a CONFIRMED order as CANCELLED.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_order_event_leaves_the_read_model_stale() {
    let mut run = Run::start("forged-event");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    let (body, version): (String, i64) =
        sqlx::query_as("SELECT body, version FROM order_view WHERE order_id = ?")
            .bind(&victim.id)
            .fetch_one(&system.order)
            .await
            .unwrap();
    let mut view: Value = serde_json::from_str(&body).unwrap();
    view["status"] = "CANCELLED".into();
    view["reason"] = "forged".into();
    let view: OrderView = serde_json::from_value(view).unwrap();
    let order_id = view.order_id;
    system
        .publish(
            topics::ORDER_EVENTS,
            order_id,
            &[OrderEvent::OrderChanged {
                order_id,
                version: version + 1,
                order: view,
            }],
        )
        .await;
    system
        .wait_for(
            "the forged status in the read model",
            &system.order,
            "SELECT COUNT(*) FROM order_view WHERE order_id = ? AND status = 'CANCELLED'",
            &victim.id,
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let order = Subject::Order(victim.id.clone());
    done.assert_failed("read_model_convergence", "stale", &order);
    done.assert_blames_only(&[order]);
}

/// An adversary deletes an order's row from the read model.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_model_row_deleted_is_missing_in_the_view() {
    let mut run = Run::start("deleted-view");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system
        .order_sql("DELETE FROM order_view WHERE order_id = ?", &victim.id)
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let order = Subject::Order(victim.id.clone());
    done.assert_failed("read_model_convergence", "missing_in_view", &order);
    done.assert_blames_only(&[order]);
}

/// An adversary copies a finished order (its row, its saga and its read-model row) under a new
/// id, as a POST handled twice would: an order nobody acknowledged, with the customer and lines
/// of one that was.
#[tokio::test(flavor = "multi_thread")]
async fn a_copied_order_is_a_suspected_duplicate() {
    let mut run = Run::start("copied-order");
    let system = run.environment().await;
    // A CANCELLED order holds neither stock nor money, so its copy owes none either: only the
    // copy's existence is wrong.
    let original = system.finished_order("CANCELLED").await;
    let copy = OrderId::new().to_string();
    system.copy_order(&original.id, &copy).await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let copy = Subject::Order(copy);
    done.assert_failed("idempotency", "duplicate_order_suspected", &copy);
    done.assert_failed("no_lost_orders", "unexpected", &copy);
    done.assert_blames_only(&[copy]);
}

/// A broken neighbour publishes a message no consumer can handle onto `inventory.commands`
/// (well-formed JSON, no command), in a scenario that injected no poison.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_no_consumer_understands_ends_as_a_dead_letter() {
    let mut run = Run::start("dead-letter");
    let system = run.environment().await;
    system.finished_order("CONFIRMED").await;
    let producer = system.producer();
    let key = OrderId::new().to_string();
    producer
        .send(
            FutureRecord::to(topics::INVENTORY_COMMANDS)
                .key(&key)
                .payload(r#"{"hello":"inventory"}"#),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    run.assert_load_still_running().await;

    let done = run.finish().await;

    let dead_letter = Subject::DeadLetter(topics::dead_letter(topics::INVENTORY_COMMANDS));
    done.assert_failed("no_dead_letters", "dead_letter", &dead_letter);
    done.assert_blames_only(&[dead_letter]);
}

// The next two passed every check (exit 0) until no_lost_orders compared an acknowledged
// order's customer and lines with what the client sent.

/// An adversary rewrites a CONFIRMED order's lines, in the write model and the read model alike:
/// the customer is shown an order for other goods than they asked for and paid.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_rewritten_to_other_items_is_reported() {
    let mut run = Run::start("rewritten-items");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    system
        .rewrite_order(
            &victim.id,
            "items = json_set(items, '$[0].quantity', json_extract(items, '$[0].quantity') + 3)",
            "body = json_set(body, '$.items[0].quantity', \
             json_extract(body, '$.items[0].quantity') + 3)",
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    done.assert_failed(
        "no_lost_orders",
        "altered",
        &Subject::Order(victim.id.clone()),
    );
    done.assert_blames_only(&victim.touched());
}

/// An adversary moves a CONFIRMED order to another customer, in the write model and the read
/// model alike: the customer who placed and paid it no longer has it.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_moved_to_another_customer_is_reported() {
    let mut run = Run::start("moved-order");
    let system = run.environment().await;
    let victim = system.finished_order("CONFIRMED").await;
    let other = if victim.customer == "cust-0002" {
        "cust-0003"
    } else {
        "cust-0002"
    };
    system
        .rewrite_order(
            &victim.id,
            &format!("customer_id = '{other}'"),
            &format!("customer_id = '{other}', body = json_set(body, '$.customer_id', '{other}')"),
        )
        .await;
    run.assert_load_still_running().await;

    let done = run.finish().await;

    done.assert_failed(
        "no_lost_orders",
        "altered",
        &Subject::Order(victim.id.clone()),
    );
    let mut touched = victim.touched();
    touched.push(Subject::Customer(other.into()));
    done.assert_blames_only(&touched);
}

// ---------------------------------------------------------------------------------------------
// A `harness run` as a child process
// ---------------------------------------------------------------------------------------------

/// A `harness run` under way. Dropping it interrupts the run (SIGINT, so the harness tears its
/// environment down) and kills it if it does not end.
struct Run {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join(format!("{name}.toml"));
        std::fs::write(&scenario, SCENARIO).unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("run")
            .arg(&scenario)
            .arg("--no-build")
            .arg("--reports-dir")
            .arg(dir.path().join("reports"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            started: Instant::now(),
            dir,
        }
    }

    fn remaining(&self) -> Duration {
        RUN_DEADLINE.saturating_sub(self.started.elapsed())
    }

    /// The next line of stdout, `None` at its end; fails the test at the run's deadline.
    async fn next_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout(self.remaining(), self.lines.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the run did not end within {RUN_DEADLINE:?}; stdout so far:\n{}",
                    self.stdout.join("\n")
                )
            });
        if let Some(l) = &line {
            self.stdout.push(l.clone());
        }
        line
    }

    /// The environment, once the run says it is up.
    async fn environment(&mut self) -> System {
        loop {
            match self.next_line().await {
                Some(l) if l.starts_with("environment up in") => break,
                Some(_) => {}
                None => panic!(
                    "the run ended before its environment was up:\n{}\n{}",
                    self.stdout.join("\n"),
                    self.stderr.take().unwrap().join().unwrap()
                ),
            }
        }
        let runs: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("harness-run-"))
            })
            .collect();
        let [run_dir] = runs.as_slice() else {
            panic!("expected one harness-run-* directory, found {runs:?}");
        };
        System::open(run_dir).await
    }

    /// The tampering happened while the load ran, not after it.
    async fn assert_load_still_running(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.stdout.push(l);
        }
        assert!(
            !self.stdout.iter().any(|l| l.starts_with("load done")),
            "the load ended before the test acted:\n{}",
            self.stdout.join("\n")
        );
    }

    /// Waits for the run to end; its exit code, output and report.
    async fn finish(mut self) -> Finished {
        while self.next_line().await.is_some() {}
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(!self.remaining().is_zero(), "the run did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Shown with `--nocapture`, and with a failing test's output.
        for l in self.stdout.iter().filter(|l| l.contains(" invariant ")) {
            eprintln!("{l}");
        }
        let stdout = self.stdout.join("\n");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        let reports = self.dir.path().join("reports");
        let report = std::fs::read_dir(&reports)
            .ok()
            .and_then(|mut d| d.next())
            .map(|d| d.unwrap().path().join("report.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "no report.json in {}:\n{stdout}\n{stderr}",
                    reports.display()
                )
            });
        Finished {
            code: status.code(),
            stdout,
            stderr,
            report,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The system under the run, reached from outside
// ---------------------------------------------------------------------------------------------

/// The services' databases and the broker of a run's environment.
struct System {
    order: SqlitePool,
    inventory: SqlitePool,
    payment: SqlitePool,
    brokers: String,
}

/// A finished order the test picked to tamper with.
struct Victim {
    id: String,
    customer: String,
    skus: Vec<String>,
}

impl Victim {
    /// What a tamper with this order may rightly be blamed on: the order, its SKUs, its customer.
    fn touched(&self) -> Vec<Subject> {
        let mut out = vec![
            Subject::Order(self.id.clone()),
            Subject::Customer(self.customer.clone()),
        ];
        out.extend(self.skus.iter().cloned().map(Subject::Sku));
        out
    }
}

impl System {
    async fn open(run_dir: &Path) -> Self {
        let db = |service: &str| {
            let path = run_dir.join(format!("data/{service}.db"));
            async move {
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .busy_timeout(Duration::from_secs(10));
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
            }
        };
        let ready = std::fs::read_to_string(run_dir.join("ready/broker.json")).unwrap();
        let ready: Value = serde_json::from_str(&ready).unwrap();
        Self {
            order: db("order").await,
            inventory: db("inventory").await,
            payment: db("payment").await,
            brokers: ready["addr"].as_str().unwrap().to_string(),
        }
    }

    /// The oldest order that finished with `status` and that nothing will touch again: its saga
    /// is DONE and the read model holds its last version.
    async fn finished_order(&self, status: &str) -> Victim {
        let deadline = Instant::now() + ORDER_DEADLINE;
        loop {
            let found: Option<(String, String, String)> = sqlx::query_as(
                "SELECT o.order_id, o.customer_id, o.items FROM orders o \
                 JOIN sagas s ON s.order_id = o.order_id \
                 JOIN order_view v ON v.order_id = o.order_id \
                 WHERE o.status = ? AND s.step = 'DONE' AND v.version = o.version \
                 ORDER BY o.created_at_ms LIMIT 1",
            )
            .bind(status)
            .fetch_optional(&self.order)
            .await
            .unwrap();
            if let Some((id, customer, items)) = found {
                let items: Vec<Value> = serde_json::from_str(&items).unwrap();
                let skus = items
                    .iter()
                    .map(|l| l["sku"].as_str().unwrap().to_string())
                    .collect();
                return Victim { id, customer, skus };
            }
            assert!(
                Instant::now() < deadline,
                "no {status} order finished within {ORDER_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one statement on the order database about `order_id`; it must change one row.
    async fn order_sql(&self, sql: &str, order_id: &str) {
        let changed = sqlx::query(sql)
            .bind(order_id)
            .execute(&self.order)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(changed, 1, "{sql} changed {changed} rows");
    }

    /// Changes one order in the write model (`orders`, `set_order`) and in the read model
    /// (`order_view`, `set_view`) in one transaction, so the two still agree.
    async fn rewrite_order(&self, order_id: &str, set_order: &str, set_view: &str) {
        let mut tx = self.order.begin().await.unwrap();
        for sql in [
            format!("UPDATE orders SET {set_order} WHERE order_id = ?"),
            format!("UPDATE order_view SET {set_view} WHERE order_id = ?"),
        ] {
            let changed = sqlx::query(&sql)
                .bind(order_id)
                .execute(&mut *tx)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(changed, 1, "{sql} changed {changed} rows");
        }
        tx.commit().await.unwrap();
    }

    /// Raises the CAPTURED ledger entry of `order_id` by `by` minor units, past the triggers
    /// that keep the ledger append-only (dropped and put back in the same transaction).
    async fn raise_capture(&self, order_id: &str, by: i64) {
        let trigger = "payment_events_no_update";
        let mut tx = self.payment.begin().await.unwrap();
        let (definition,): (String,) =
            sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .bind(trigger)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        let changed = sqlx::query(
            "UPDATE payment_events SET amount_minor = amount_minor + ? \
             WHERE order_id = ? AND kind = 'CAPTURED'",
        )
        .bind(by)
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(changed, 1, "no CAPTURED entry for {order_id}");
        sqlx::query(&definition).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Copies the order `from` (its row, its saga, its read-model row) as the order `to`.
    async fn copy_order(&self, from: &str, to: &str) {
        let mut tx = self.order.begin().await.unwrap();
        for sql in [
            "INSERT INTO orders (order_id, customer_id, status, items, total_minor, reason, \
             created_at_ms, updated_at_ms, version) \
             SELECT ?1, customer_id, status, items, total_minor, reason, created_at_ms, \
             updated_at_ms, version FROM orders WHERE order_id = ?2",
            "INSERT INTO sagas (order_id, step, attempts, deadline_at_ms, last_error, \
             stock_committed, payment_captured, stock_released, void_requested, payment_voided, \
             version, updated_at_ms, traceparent, timeout_claimed_until_ms) \
             SELECT ?1, step, attempts, deadline_at_ms, last_error, stock_committed, \
             payment_captured, stock_released, void_requested, payment_voided, version, \
             updated_at_ms, traceparent, timeout_claimed_until_ms FROM sagas WHERE order_id = ?2",
            "INSERT INTO order_view (order_id, customer_id, status, body, version, created_at_ms) \
             SELECT ?1, customer_id, status, json_set(body, '$.order_id', ?1), version, \
             created_at_ms FROM order_view WHERE order_id = ?2",
        ] {
            let changed = sqlx::query(sql)
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(changed, 1, "{sql} copied {changed} rows");
        }
        tx.commit().await.unwrap();
    }

    /// Polls until `count_sql` (one `?`, bound to `arg`) counts at least one row.
    async fn wait_for(&self, what: &str, db: &SqlitePool, count_sql: &str, arg: &str) {
        let deadline = Instant::now() + ORDER_DEADLINE;
        loop {
            let (n,): (i64,) = sqlx::query_as(count_sql)
                .bind(arg)
                .fetch_one(db)
                .await
                .unwrap();
            if n > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not there within {ORDER_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn producer(&self) -> FutureProducer {
        platform::messaging::kafka::producer(&self.brokers, "negative-control").unwrap()
    }

    /// Publishes `bodies` in order onto `topic`, keyed by `order_id` as the services key them
    /// (so they land on one partition, in order), each in a fresh envelope.
    async fn publish<T: serde::Serialize>(&self, topic: &str, order_id: OrderId, bodies: &[T]) {
        let producer = self.producer();
        let key = order_id.to_string();
        for body in bodies {
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            let payload = serde_json::to_vec(&Envelope::new(body, now)).unwrap();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the run said
// ---------------------------------------------------------------------------------------------

/// What a violation is about, as `report.json` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Order(String),
    Sku(String),
    Customer(String),
    /// A dead letter on this topic (any partition and offset).
    DeadLetter(String),
}

impl Subject {
    fn of(violation: &Value) -> Option<Self> {
        let field = |name: &str| violation[name].as_str().map(str::to_string);
        match violation["subject"].as_str()? {
            "order" => field("order_id").map(Self::Order),
            "sku" => field("sku").map(Self::Sku),
            "customer" => field("customer_id").map(Self::Customer),
            "dead_letter" => field("topic").map(Self::DeadLetter),
            _ => None,
        }
    }
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

impl Finished {
    fn context(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout\n{}\n--- stderr (last lines)\n{}\n--- invariants\n{}",
            self.code,
            self.stdout,
            self.stderr
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            serde_json::to_string_pretty(&self.report["invariants"]).unwrap()
        )
    }

    fn verdict(&self, invariant: &str) -> &Value {
        self.report["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == invariant)
            .unwrap_or_else(|| panic!("no verdict for {invariant}\n{}", self.context()))
    }

    /// The run exited 1, said so on the terminal, and `invariant` failed with a violation of
    /// `kind` about `subject`.
    fn assert_failed(&self, invariant: &str, kind: &str, subject: &Subject) {
        assert_eq!(self.code, Some(1), "{}", self.context());
        assert_eq!(self.report["exit_code"], 1, "{}", self.context());
        assert!(
            self.stdout
                .contains(&format!("FAIL invariant {invariant}:")),
            "{invariant} not named as failed\n{}",
            self.context()
        );
        let verdict = self.verdict(invariant);
        assert_eq!(verdict["held"], false, "{}", self.context());
        let found = verdict["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["kind"] == kind && Subject::of(v).as_ref() == Some(subject));
        assert!(
            found,
            "{invariant} has no {kind} violation about {subject:?}\n{}",
            self.context()
        );
    }

    /// Every violation of every invariant is about one of `touched`: the tamper is not blamed
    /// on anything else, and no check failed for want of evidence.
    fn assert_blames_only(&self, touched: &[Subject]) {
        for verdict in self.report["invariants"].as_array().unwrap() {
            for v in verdict["violations"].as_array().unwrap() {
                let subject = Subject::of(v);
                assert!(
                    subject.as_ref().is_some_and(|s| touched.contains(s)),
                    "{} blames something the test did not touch: {v}\n{}",
                    verdict["name"],
                    self.context()
                );
            }
        }
    }
}
