//! Reading a [`Snapshot`] through the admin API, and waiting for the system to converge.

use std::future::Future;
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::Context;
use contracts::domain::OrderId;
use contracts::http::{OrderView, ReservationStatus};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::model::{Coverage, Gap, History, Snapshot};
use super::saga::views_caught_up;
use super::sagas_terminal;
use crate::client::ApiClient;

/// Reads orders, stock, reservations, payments and accounts through the gateway's admin
/// endpoints, concurrently.
///
/// Dead letters are not behind the API: the caller reads them from the `*.dlq` topics (each
/// message's `dlq-error` header is the error) and fills in [`Snapshot::dead_letters`]; here the
/// list is empty and marked not read, as is the read model ([`read_model`] lists it), so a
/// check run on this snapshot alone says it could not verify them.
pub async fn snapshot(client: &ApiClient, admin_token: &str) -> anyhow::Result<Snapshot> {
    let (orders, stock, reservations, payments, accounts) = tokio::try_join!(
        async {
            client
                .admin_orders(admin_token)
                .await
                .context("reading the orders")
        },
        async { client.stock(admin_token).await.context("reading the stock") },
        async {
            client
                .reservations(admin_token)
                .await
                .context("reading the reservations")
        },
        async {
            client
                .payments(admin_token, None)
                .await
                .context("reading the payments")
        },
        async {
            client
                .accounts(admin_token)
                .await
                .context("reading the accounts")
        },
    )?;
    Ok(Snapshot {
        orders,
        stock,
        reservations,
        payments,
        accounts,
        ..Snapshot::default()
    })
}

/// The most rows one `GET /api/orders` returns (the order service's `MAX_LIST_LIMIT`).
pub const MAX_LIST: usize = 1_000;

/// The most pages [`read_model`] reads (a million rows) before it calls the rest a gap.
const MAX_PAGES: usize = 1_000;

/// Every row of the read model, as the admin's `GET /api/orders` lists it (every customer's,
/// newest first), page after page (`before` = the last order of the page before), and whether
/// that is all of them: a page that could not be read, or more than [`MAX_PAGES`], is a gap
/// (`could_not_verify`).
pub async fn read_model(client: &ApiClient, admin_token: &str) -> (Vec<OrderView>, Coverage) {
    let mut views: BTreeMap<OrderId, OrderView> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut before: Option<OrderId> = None;
    for page in 0.. {
        if page == MAX_PAGES {
            gaps.push(Gap {
                what: "the read model".into(),
                details: format!("more than {MAX_PAGES} pages of {MAX_LIST} rows"),
            });
            break;
        }
        match list_views(client, admin_token, before).await {
            Ok(rows) => {
                let full = rows.len() >= MAX_LIST;
                before = rows.last().map(|v| v.order_id);
                views.extend(rows.into_iter().map(|v| (v.order_id, v)));
                if !full {
                    break;
                }
            }
            Err(e) => {
                gaps.push(Gap {
                    what: "the read model".into(),
                    details: format!("page {} after {} rows: {e:#}", page + 1, views.len()),
                });
                break;
            }
        }
    }
    let coverage = if gaps.is_empty() {
        Coverage::Complete
    } else {
        Coverage::Incomplete { gaps }
    };
    (views.into_values().collect(), coverage)
}

/// One page of `GET /api/orders?limit=MAX_LIST[&before=ID]`, retried for a while when shed or
/// failed.
async fn list_views(
    client: &ApiClient,
    token: &str,
    before: Option<OrderId>,
) -> anyhow::Result<Vec<OrderView>> {
    let path = match before {
        Some(id) => format!("/api/orders?limit={MAX_LIST}&before={id}"),
        None => format!("/api/orders?limit={MAX_LIST}"),
    };
    let mut last = None;
    for pause in [100, 300, 1_000, 0] {
        match client
            .send::<()>(Method::GET, &path, token, None, &[])
            .await
        {
            Ok(a) if a.status == StatusCode::OK => return a.json(),
            Ok(a) => last = Some(anyhow::anyhow!("GET {path} answered {}", a.status)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("GET {path} not sent")))
}

/// The outcome of [`converge`].
#[derive(Debug, Clone)]
pub struct Converged {
    /// The last snapshot taken: the settled one, or the one at the deadline.
    pub snapshot: Snapshot,
    /// Whether the system settled before the timeout.
    pub settled: bool,
    /// From the first poll to the last snapshot.
    pub waited: Duration,
    pub polls: u32,
}

/// Whether nothing is in flight any more: every saga is DONE with a terminal order and the read
/// model equals the write model for every order ([`sagas_terminal`],
/// [`read_model_convergence`](super::read_model_convergence)), and no stock
/// is still RESERVED and no money still held.
///
/// The last two go beyond the sagas because a saga is DONE before a late success is undone: a
/// `StockReserved` or `PaymentAuthorized` that arrives after the order was cancelled sends a
/// release or a void without reopening the saga. Waiting for them keeps an in-flight
/// compensation from being reported as a leak; a real leak never settles and is reported once
/// the bound has passed.
pub fn settled(snapshot: &Snapshot) -> bool {
    sagas_terminal(&History::default(), snapshot).held
        && views_caught_up(snapshot)
        && snapshot
            .reservations
            .iter()
            .all(|r| r.status != ReservationStatus::Reserved)
        && snapshot.payments.iter().all(|p| p.held_minor == 0)
}

/// Polls [`snapshot`] until the system has [`settled`] or `timeout` passes, and returns the last
/// snapshot either way (dead letters still to be filled in by the caller). Polls back off from
/// 50 ms to 500 ms and never sleep past the deadline. A failed read is retried within the
/// timeout; it is an error only when no snapshot could be read at all.
pub async fn converge(
    client: &ApiClient,
    admin_token: &str,
    timeout: Duration,
) -> anyhow::Result<Converged> {
    poll_until_settled(|| snapshot(client, admin_token), timeout).await
}

async fn poll_until_settled<F, Fut>(mut take: F, timeout: Duration) -> anyhow::Result<Converged>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Snapshot>>,
{
    const FIRST_PAUSE: Duration = Duration::from_millis(50);
    const MAX_PAUSE: Duration = Duration::from_millis(500);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut pause = FIRST_PAUSE;
    let mut polls = 0;
    let mut last: Option<Snapshot> = None;
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        polls += 1;
        match take().await {
            Ok(s) => {
                let done = settled(&s);
                last = Some(s);
                if done {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = format!("{e:#}"), "snapshot failed; polling on");
                last_error = Some(e);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    let waited = started.elapsed();
    match last {
        Some(snapshot) => Ok(Converged {
            settled: settled(&snapshot),
            snapshot,
            waited,
            polls,
        }),
        None => Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no snapshot taken"))
            .context(format!("no snapshot could be read within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use contracts::domain::OrderStatus;

    use super::super::fixture::World;
    use super::*;

    /// A world with one order still authorizing its payment.
    fn unsettled() -> Snapshot {
        let mut w = World::new();
        let id = w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.set_status(id, OrderStatus::Pending);
        w.order_mut(id).saga.step = "AUTHORIZING_PAYMENT".into();
        w.snapshot
    }

    fn settled_world() -> Snapshot {
        let mut w = World::new();
        w.confirmed("cust-1", "k1", &[("SKU-A", 1)]);
        w.snapshot
    }

    #[test]
    fn a_late_reservation_or_hold_after_every_saga_is_done_is_not_settled_yet() {
        assert!(settled(&settled_world()));
        assert!(!settled(&unsettled()));

        let mut w = World::new();
        let id = w.declined("cust-1", "k1", &[("SKU-A", 1)]);
        w.reservation_mut(id).status = ReservationStatus::Reserved;
        assert!(!settled(&w.snapshot));

        let mut w = World::new();
        let id = w.timed_out_at_payment("cust-1", "k1", &[("SKU-A", 1)]);
        w.payment_mut(id).held_minor = 250;
        assert!(!settled(&w.snapshot));
    }

    #[tokio::test]
    async fn converging_polls_until_the_sagas_settle_and_returns_that_snapshot() {
        let calls = AtomicU32::new(0);
        let take = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => anyhow::bail!("gateway not ready"),
                    1 => Ok(unsettled()),
                    _ => Ok(settled_world()),
                }
            }
        };

        let c = poll_until_settled(take, Duration::from_secs(30))
            .await
            .unwrap();

        assert!(c.settled);
        assert_eq!(c.polls, 3);
        assert_eq!(c.snapshot.orders[0].order.status, OrderStatus::Confirmed);
    }

    #[tokio::test]
    async fn converging_gives_up_at_the_deadline_with_the_last_snapshot() {
        let c = poll_until_settled(|| async { Ok(unsettled()) }, Duration::from_millis(200))
            .await
            .unwrap();

        assert!(!c.settled);
        assert!(c.polls >= 2, "{} polls", c.polls);
        assert_eq!(c.snapshot.orders[0].order.status, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn converging_without_any_readable_snapshot_is_an_error_with_the_cause() {
        let err = poll_until_settled(
            || async { anyhow::bail!("connection refused") },
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();

        let text = format!("{err:#}");
        assert!(text.contains("no snapshot could be read"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
