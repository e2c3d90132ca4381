//! The resilience layers seen from outside: rate limit, circuit breaker, bulkhead, active
//! health checks, a changing instance list, retries switched off, the admission throttle.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use contracts::domain::Role;
use gateway::resilience::{BreakerConfig, ResilienceConfig};
use gateway::throttle::ThrottleConfig;

use crate::helpers::{FakeUpstream, dead_url, echo_of, error_of, spawn_app, spawn_world_with};

#[tokio::test]
async fn a_customer_over_the_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    let world = spawn_world_with(|c| {
        let two = NonZeroU32::new(2).unwrap();
        c.resilience.rate_limit = Some((two, two));
    })
    .await;
    let app = &world.app;
    let noisy = app.token("noisy", &[Role::Customer]);
    for _ in 0..2 {
        let r = app
            .get("/api/orders")
            .bearer_auth(&noisy)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let refused = app
        .get("/api/orders")
        .bearer_auth(&noisy)
        .send()
        .await
        .unwrap();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body = error_of(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body.error.code, "rate_limited");
    assert_eq!(retry_after.unwrap(), "1");

    let quiet = app.token("quiet", &[Role::Customer]);
    let r = app
        .get("/api/orders")
        .bearer_auth(&quiet)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "another customer has a bucket of its own"
    );
    for _ in 0..5 {
        let r = app.get("/api/products").send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "anonymous catalog reads are not limited"
        );
    }
    assert_eq!(world.order[0].hits() + world.order[1].hits(), 3);
}

#[tokio::test]
async fn an_open_breaker_answers_503_at_once_without_calling_the_failing_service() {
    let world = spawn_world_with(|c| {
        c.resilience.breaker = Some(BreakerConfig {
            min_calls: 4,
            open_for: Duration::from_secs(30),
            ..BreakerConfig::default()
        });
    })
    .await;
    let app = &world.app;
    for _ in 0..4 {
        let r = app
            .get("/api/admin/payments?status=500")
            .bearer_auth(app.admin())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "passed through"
        );
    }
    let short_circuited = app
        .get("/api/admin/payments")
        .bearer_auth(app.admin())
        .send()
        .await
        .unwrap();
    assert!(short_circuited.headers().contains_key("retry-after"));
    let body = error_of(short_circuited, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body.error.code, "circuit_open");
    assert_eq!(
        world.payment.hits(),
        4,
        "the open breaker did not call payment"
    );

    let r = app
        .get("/api/orders")
        .bearer_auth(app.customer())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the order service has a breaker of its own"
    );
}

#[tokio::test]
async fn client_errors_never_open_the_breaker() {
    let world = spawn_world_with(|c| {
        c.resilience.breaker = Some(BreakerConfig {
            min_calls: 4,
            ..BreakerConfig::default()
        });
    })
    .await;
    let app = &world.app;
    for _ in 0..8 {
        let r = app
            .get("/api/admin/payments?status=404")
            .bearer_auth(app.admin())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        world.payment.hits(),
        8,
        "client errors never open the breaker"
    );
}

#[tokio::test]
async fn a_full_bulkhead_refuses_at_once_and_other_services_keep_their_lanes() {
    let world = spawn_world_with(|c| {
        c.resilience.bulkhead = Some([8, 8, 1]);
    })
    .await;
    let app = &world.app;
    let slow = {
        let request = app
            .get("/api/admin/payments?delay_ms=800")
            .bearer_auth(app.admin());
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = app
        .get("/api/admin/payments")
        .bearer_auth(app.admin())
        .send()
        .await
        .unwrap();
    let body = error_of(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body.error.code, "bulkhead_full");
    let r = app.get("/api/products").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "inventory has its own bulkhead");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn health_checks_take_a_not_ready_instance_out_of_rotation_and_bring_it_back() {
    let world = spawn_world_with(|c| {
        c.resilience.health_check_interval = Some(Duration::from_millis(50));
    })
    .await;
    let app = &world.app;
    world.order[0].set_ready(false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..6 {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        assert_eq!(echo_of(r).await.instance, "order#2");
    }
    assert_eq!(world.order[0].hits(), 0, "out of rotation while not ready");

    world.order[0].set_ready(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..6 {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(world.order[0].hits(), 3, "back in rotation");
}

/// An instance too busy to answer its readiness probe in time while it keeps answering requests
/// stays in rotation: taking it out would pile its share onto the others.
#[tokio::test]
async fn a_probe_that_times_out_while_the_instance_keeps_answering_does_not_count() {
    let busy = serve(
        axum::Router::new()
            .route(
                "/health/ready",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "ready"
                }),
            )
            .fallback(|| async { "busy" }),
    )
    .await;
    let other = FakeUpstream::spawn("order", "order#2").await;
    let inventory = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![busy, other.url.clone()],
        vec![inventory.url.clone()],
        vec![inventory.url.clone()],
        |c| c.resilience.health_check_interval = Some(Duration::from_millis(50)),
    )
    .await;
    let mut busy_answers = 0;
    for _ in 0..40 {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        if r.text().await.unwrap() == "busy" {
            busy_answers += 1;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Every probe of it timed out (50 ms) from the first; counted, two would have taken it out.
    assert_eq!(busy_answers, 20);
}

#[tokio::test]
async fn an_instance_added_to_the_list_file_gets_traffic_without_a_restart() {
    let first = FakeUpstream::spawn("order", "order#1").await;
    let added = FakeUpstream::spawn("order", "order#2").await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upstreams.json");
    let config_file = file.clone();
    let app = spawn_app(
        vec![first.url.clone()],
        vec![other.url.clone()],
        vec![other.url.clone()],
        move |c| c.upstreams_file = Some(config_file),
    )
    .await;
    std::fs::write(&file, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = app
        .get("/api/orders")
        .bearer_auth(app.customer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a bad file changes nothing");

    let list = serde_json::json!({ "order": [first.url, added.url] });
    std::fs::write(&file, list.to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..4 {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(added.hits(), 2, "the added instance takes its turn");
    assert_eq!(first.hits(), 3);
}

#[tokio::test]
async fn with_retries_off_a_request_that_meets_a_dead_instance_fails() {
    let live = FakeUpstream::spawn("order", "order#2").await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![dead_url().await, live.url.clone()],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |c| {
            c.resilience = ResilienceConfig {
                health_check_interval: None,
                breaker: None,
                ..ResilienceConfig::default()
            };
            c.resilience.retries.enabled = false;
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = app
            .request(Method::GET, "/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    // The first request starts at the dead instance and has no second attempt; the dead one is
    // then ejected and tried last, which with one attempt means never.
    assert_eq!(statuses[0], StatusCode::BAD_GATEWAY, "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn shedding() -> axum::Router {
    axum::Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
    })
}

/// A POST with an Idempotency-Key whose first attempt is slow (past the attempt timeout) is
/// hedged to the second instance, which sheds it: the refusal is not passed on while the first
/// attempt can still answer, and its answer is what the client gets. Before hedging the first
/// attempt was abandoned, and the client heard 504 for an order that had been placed.
#[tokio::test]
async fn a_slow_attempt_is_hedged_and_its_answer_wins_over_the_hedges_refusal() {
    let slow = serve(axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (StatusCode::CREATED, "placed")
    }))
    .await;
    let shedding = serve(shedding()).await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![slow, shedding],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;
    let r = app
        .request(Method::POST, "/api/orders")
        .bearer_auth(app.customer())
        .header("idempotency-key", "k-slow")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.text().await.unwrap(), "placed");
}

/// A slow instance that keeps answering stays in turn (it is busy, not gone): requests still
/// reach it after one of its answers came late. A silent one (frozen) is left behind by the
/// hedge and tried last for a while.
#[tokio::test]
async fn a_slow_but_answering_instance_keeps_its_turn_and_a_silent_one_is_ejected() {
    fn counting(delay_from: usize, hits: Arc<AtomicUsize>, name: &'static str) -> axum::Router {
        axum::Router::new().fallback(move || {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            async move {
                if n >= delay_from {
                    tokio::time::sleep(Duration::from_millis(1300)).await;
                }
                name
            }
        })
    }
    async fn get(app: &crate::helpers::TestApp) -> String {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;

    // Answers its first request at once and the second late.
    let busy_hits = Arc::new(AtomicUsize::new(0));
    let busy = serve(counting(1, busy_hits.clone(), "busy")).await;
    let quick = serve(counting(usize::MAX, Arc::default(), "quick")).await;
    let app = spawn_app(
        vec![busy, quick.clone()],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;
    assert_eq!(get(&app).await, "busy");
    assert_eq!(get(&app).await, "quick");
    // Its turn again: late, so hedged to the quick one, which answers first.
    assert_eq!(get(&app).await, "quick");
    assert_eq!(get(&app).await, "quick");
    // It answered a moment ago: not ejected, so the round-robin comes back to it.
    get(&app).await;
    assert_eq!(busy_hits.load(Ordering::SeqCst), 3);

    // Never answers anything.
    let frozen_hits = Arc::new(AtomicUsize::new(0));
    let frozen = serve(counting(0, frozen_hits.clone(), "frozen")).await;
    let app = spawn_app(
        vec![frozen, quick],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&app).await, "quick");
    }
    // Hedged away from once, then tried last: it never got another request.
    assert_eq!(frozen_hits.load(Ordering::SeqCst), 1);
}

/// A POST with an Idempotency-Key whose first attempt broke after the request was sent (the
/// first instance may have placed the order) and whose retry was shed by the second instance:
/// the client must hear 504 (unknown), not the 503 that would tell it nothing was placed.
#[tokio::test]
async fn a_refused_retry_after_a_broken_attempt_is_answered_504_not_503() {
    // Reads the request, then closes the connection without an answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let breaking = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    let shedding = serve(shedding()).await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![breaking, shedding],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |_| {},
    )
    .await;
    let r = app
        .request(Method::POST, "/api/orders")
        .bearer_auth(app.customer())
        .header("idempotency-key", "k-ambiguous")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
}

/// An order service that refuses every new order (503 + `Retry-After`) while `refusing` is set
/// and takes every one otherwise, counting the requests that reach it by method.
fn admitting(
    refusing: Arc<AtomicBool>,
    posts: Arc<AtomicUsize>,
    gets: Arc<AtomicUsize>,
) -> axum::Router {
    axum::Router::new().route(
        "/orders",
        axum::routing::post(move || {
            posts.fetch_add(1, Ordering::SeqCst);
            let refuse = refusing.load(Ordering::SeqCst);
            async move {
                if refuse {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        "{}",
                    )
                } else {
                    (StatusCode::CREATED, [("x-placed", "1")], "{}")
                }
            }
        })
        .get(move || {
            gets.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::OK, [("x-listed", "1")], "[]") }
        }),
    )
}

/// While the order service refuses new orders, the gateway refuses them itself, with the same
/// 503 + `Retry-After`, for a hold after each refusal, letting one through per hold to ask
/// again; reads are never held back; once the service takes orders again, the first probe after
/// the hold finds out and every order reaches it again.
#[tokio::test]
async fn while_the_order_service_refuses_orders_the_gateway_spares_it_the_refusals() {
    // The process's recorder, so the gateway's counter is exported (before the gateway takes
    // its handle). Other tests' gateways share it; none of them is refused orders.
    platform::metrics::install();
    let refusing = Arc::new(AtomicBool::new(true));
    let (posts, gets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let order = serve(admitting(refusing.clone(), posts.clone(), gets.clone())).await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let hold = Duration::from_millis(100);
    let app = spawn_app(
        vec![order],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |c| {
            c.resilience.health_check_interval = None;
            c.resilience.admission_throttle = Some(ThrottleConfig { hold });
        },
    )
    .await;
    let place = || {
        app.request(Method::POST, "/api/orders")
            .bearer_auth(app.customer())
            .body("{}")
            .send()
    };
    let started = std::time::Instant::now();
    let mut refused_here = 0;
    for _ in 0..300 {
        let r = place().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()["retry-after"],
            "1",
            "a refusal says when to come back"
        );
        let body = r.text().await.unwrap();
        if body != "{}" {
            // Refused at the edge: the gateway's own error body.
            assert!(body.contains("\"overloaded\""), "{body}");
            refused_here += 1;
        }
    }
    let took = started.elapsed();
    let reached = posts.load(Ordering::SeqCst);
    assert_eq!(refused_here + reached, 300);
    // One probe per hold, and the first order.
    let probes = (took.as_millis() / hold.as_millis()) as usize + 1;
    assert!(
        (1..=probes).contains(&reached),
        "{reached} of 300 refused orders reached the service in {took:?}, at most {probes} \
         expected"
    );

    for _ in 0..20 {
        let r = app
            .get("/api/orders")
            .bearer_auth(app.customer())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "reads are never held back");
    }
    assert_eq!(gets.load(Ordering::SeqCst), 20);

    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gateway_admission_throttled_total{service=\"order\"}"))
        .unwrap_or_else(|| panic!("no throttle counter in:\n{metrics}"));
    let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        counted >= f64::from(refused_here as u32),
        "{line}: {refused_here} refused here"
    );

    refusing.store(false, Ordering::SeqCst);
    tokio::time::sleep(hold + Duration::from_millis(20)).await;
    let before = posts.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(place().await.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(posts.load(Ordering::SeqCst) - before, 50);
}

/// With the throttle off every order reaches the service, refused or not.
#[tokio::test]
async fn with_the_admission_throttle_off_every_refused_order_reaches_the_service() {
    let refusing = Arc::new(AtomicBool::new(true));
    let (posts, gets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let order = serve(admitting(refusing, posts.clone(), gets)).await;
    let other = FakeUpstream::spawn("inventory", "inventory#1").await;
    let app = spawn_app(
        vec![order],
        vec![other.url.clone()],
        vec![other.url.clone()],
        |c| {
            c.resilience.health_check_interval = None;
            c.resilience.admission_throttle = None;
        },
    )
    .await;
    for _ in 0..100 {
        let r = app
            .request(Method::POST, "/api/orders")
            .bearer_auth(app.customer())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(posts.load(Ordering::SeqCst), 100);
}
