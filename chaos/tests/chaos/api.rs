//! The HTTP API answers with Toxiproxy's status codes and JSON shapes, checked both raw (reqwest)
//! and through the typed client.

use std::time::Duration;

use chaos::{NewProxy, Stream, Toxic, ToxicAttributes, ToxicUpdate};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, echo, within};

const LIMIT: Duration = Duration::from_secs(20);

async fn send(method: reqwest::Method, url: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        // Toxiproxy reads JSON whatever the content type; clients such as curl send a form type.
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

use reqwest::Method as M;

#[tokio::test]
async fn creating_a_proxy_answers_201_and_a_taken_name_409() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let body =
            json!({"name": "db", "listen": "127.0.0.1:0", "upstream": upstream.addr.to_string()})
                .to_string();
        let (status, created) = send(M::POST, &server.url("/proxies"), Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["name"], "db");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["toxics"], json!([]));
        assert_ne!(created["listen"], "127.0.0.1:0");

        let (status, err) = send(M::POST, &server.url("/proxies"), Some(&body)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(err, json!({"error": "proxy already exists", "status": 409}));

        let typed = server
            .client
            .create_proxy(&NewProxy::new(
                "db",
                "127.0.0.1:0",
                upstream.addr.to_string(),
            ))
            .await
            .unwrap_err();
        assert!(typed.is_conflict());
        assert_eq!(typed.status(), Some(409));
        assert_eq!(typed.message(), Some("proxy already exists"));

        let (status, all) = send(M::GET, &server.url("/proxies"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            all["db"]["name"], "db",
            "GET /proxies is an object keyed by name: {all}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn missing_proxies_and_toxics_answer_404_with_toxiproxys_messages() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        let not_found = json!({"error": "proxy not found", "status": 404});
        for (method, path) in [
            (M::GET, "/proxies/nope"),
            (M::DELETE, "/proxies/nope"),
            (M::GET, "/proxies/nope/toxics"),
            (M::GET, "/proxies/nope/toxics/t"),
            (M::DELETE, "/proxies/nope/toxics/t"),
        ] {
            let (status, body) = send(method.clone(), &server.url(path), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(body, not_found, "{method} {path}");
        }
        let (status, body) = send(
            M::POST,
            &server.url("/proxies/nope/toxics"),
            Some(r#"{"type":"latency"}"#),
        )
        .await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found.clone()));
        let (status, body) = send(
            M::POST,
            &server.url("/proxies/nope"),
            Some(r#"{"enabled":false}"#),
        )
        .await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found));

        server.proxy("there", upstream.addr).await;
        let (status, body) = send(M::GET, &server.url("/proxies/there/toxics/t"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"error": "toxic not found", "status": 404}));

        let typed = server.client.proxy("nope").await.unwrap_err();
        assert!(typed.is_not_found());
        assert_eq!(typed.message(), Some("proxy not found"));
        assert_eq!(typed.to_string(), "Toxiproxy answered 404: proxy not found");
        let typed = server.client.remove_toxic("there", "t").await.unwrap_err();
        assert_eq!(typed.status(), Some(404));
        assert_eq!(typed.message(), Some("toxic not found"));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_answers_204_and_reset_answers_204() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        server.proxy("doomed", upstream.addr).await;
        let (status, body) = send(M::DELETE, &server.url("/proxies/doomed"), None).await;
        assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
        let (status, _) = send(M::DELETE, &server.url("/proxies/doomed"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = send(M::POST, &server.url("/reset"), None).await;
        assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn populate_answers_201_keeps_identical_proxies_and_replaces_changed_ones() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let first = echo().await;
        let second = echo().await;
        let body = json!([
            {"name": "a", "listen": "127.0.0.1:0", "upstream": first.addr.to_string()},
            {"name": "b", "listen": "127.0.0.1:0", "upstream": first.addr.to_string(), "enabled": false},
        ])
        .to_string();
        let (status, populated) = send(M::POST, &server.url("/populate"), Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED);
        let proxies = populated["proxies"].as_array().expect("a proxies array");
        assert_eq!(proxies.len(), 2);
        assert_eq!(proxies[0]["name"], "a");
        assert_eq!(proxies[1]["enabled"], false);

        server
            .client
            .add_toxic("a", &Toxic::latency(10, 0))
            .await
            .unwrap();
        let again = server
            .client
            .populate(&[
                NewProxy::new("a", "127.0.0.1:0", first.addr.to_string()),
                NewProxy::new("b", "127.0.0.1:0", second.addr.to_string()),
            ])
            .await
            .unwrap();
        assert_eq!(again[0].toxics.len(), 1, "the identical proxy is kept, toxics and all");
        assert_eq!(again[1].upstream, second.addr.to_string(), "the changed one is replaced");
        assert!(again[1].enabled);

        let (status, err) = send(
            M::POST,
            &server.url("/populate"),
            Some(r#"[{"name":"c"}]"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["error"], "missing required field: upstream at proxy 1");
        assert_eq!(err["status"], 400);
        assert_eq!(server.client.proxies().await.unwrap().len(), 2, "nothing applied");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn version_reports_a_toxiproxy_2_version() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let (status, body) = send(M::GET, &server.url("/version"), None).await;
        assert_eq!(status, StatusCode::OK);
        let version = body["version"].as_str().expect("a version string");
        assert!(version.starts_with("2."), "{version}");
        assert_eq!(server.client.version().await.unwrap(), version);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_answer_400_with_a_json_error() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        server.proxy("p", upstream.addr).await;
        let cases = [
            ("/proxies", "{not json", "bad request body: "),
            (
                "/proxies",
                r#"{"upstream":"127.0.0.1:1"}"#,
                "missing required field: name",
            ),
            (
                "/proxies",
                r#"{"name":"x"}"#,
                "missing required field: upstream",
            ),
            (
                "/proxies",
                r#"{"name":"x","upstream":"nowhere"}"#,
                "invalid upstream address",
            ),
            (
                "/proxies",
                r#"{"name":"x","upstream":"127.0.0.1:1","listen":"not an address"}"#,
                "invalid listen address",
            ),
            ("/proxies/p", r#"{"enabled":"yes"}"#, "bad request body: "),
            (
                "/proxies/p/toxics",
                r#"{"type":"mars"}"#,
                "invalid toxic type",
            ),
            (
                "/proxies/p/toxics",
                r#"{"attributes":{}}"#,
                "invalid toxic type",
            ),
            (
                "/proxies/p/toxics",
                r#"{"type":"latency","stream":"sideways"}"#,
                "stream was invalid, can be either upstream or downstream",
            ),
            (
                "/proxies/p/toxics",
                r#"{"type":"latency","attributes":{"latency":-5}}"#,
                "bad request body: ",
            ),
            (
                "/proxies/p/toxics",
                r#"{"type":"slicer","attributes":{"average_size":0}}"#,
                "bad request body: slicer average_size",
            ),
            ("/proxies/p/toxics", "[]", "bad request body: "),
        ];
        for (path, body, message) in cases {
            let (status, err) = send(M::POST, &server.url(path), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "POST {path} {body}: {err}");
            assert_eq!(err["status"], 400, "{err}");
            let text = err["error"].as_str().unwrap_or_default();
            assert!(text.starts_with(message), "POST {path} {body}: {text:?}");
        }
        let (status, err) = send(M::GET, &server.url("/nowhere"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(err["status"], 404);
        let (status, err) = send(M::PUT, &server.url("/proxies"), Some("{}")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(err["status"], 405);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn toxics_get_toxiproxys_defaults_and_can_be_read_updated_and_removed() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        server.proxy("p", upstream.addr).await;
        let url = server.url("/proxies/p/toxics");

        let (status, created) = send(
            M::POST,
            &url,
            Some(r#"{"type":"latency","attributes":{"latency":1000}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "Toxiproxy answers 200 to a new toxic");
        assert_eq!(
            created,
            json!({"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":1000,"jitter":0}})
        );
        let (status, err) = send(M::POST, &url, Some(r#"{"type":"latency"}"#)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(err, json!({"error": "toxic already exists", "status": 409}));

        let upstream_toxic = server
            .client
            .add_toxic("p", &Toxic::bandwidth(50).on(Stream::Upstream).with_toxicity(0.5))
            .await
            .unwrap();
        assert_eq!(upstream_toxic.name, "bandwidth_upstream");
        let listed = server.client.toxics("p").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["bandwidth_upstream", "latency_downstream"], "upstream first");

        // A partial update keeps the attributes it does not name.
        let (status, updated) = send(
            M::PATCH,
            &server.url("/proxies/p/toxics/latency_downstream"),
            Some(r#"{"attributes":{"jitter":50}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(updated["attributes"], json!({"latency":1000,"jitter":50}));
        let updated = server
            .client
            .update_toxic(
                "p",
                "bandwidth_upstream",
                &ToxicUpdate {
                    toxicity: Some(0.25),
                    attributes: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.toxicity, 0.25);
        assert_eq!(updated.attributes, ToxicAttributes::Bandwidth { rate: 50 });
        assert_eq!(
            server.client.toxic("p", "bandwidth_upstream").await.unwrap(),
            updated
        );

        let (status, _) = send(M::DELETE, &server.url("/proxies/p/toxics/latency_downstream"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        server.client.remove_toxic("p", "bandwidth_upstream").await.unwrap();
        assert!(server.client.toxics("p").await.unwrap().is_empty());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn proxy_and_toxic_names_with_arrows_work_through_the_client() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let upstream = echo().await;
        server.proxy("gateway->order#1", upstream.addr).await;
        let toxic = Toxic::latency(5, 0).named("chaos0-latency/down");
        server
            .client
            .add_toxic("gateway->order#1", &toxic)
            .await
            .unwrap();
        let proxy = server.client.proxy("gateway->order#1").await.unwrap();
        assert_eq!(proxy.toxics, std::slice::from_ref(&toxic));
        assert!(
            server
                .client
                .proxies()
                .await
                .unwrap()
                .contains_key("gateway->order#1")
        );
        server
            .client
            .remove_toxic("gateway->order#1", &toxic.name)
            .await
            .unwrap();
        server
            .client
            .delete_proxy("gateway->order#1")
            .await
            .unwrap();
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn requests_from_browsers_are_refused() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let response = reqwest::Client::new()
            .get(server.url("/proxies"))
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_of_a_server_that_is_not_there_fails_with_a_transport_error() {
    within(LIMIT, "test", async {
        let server = TestServer::spawn().await;
        let client = server.client.clone();
        server.stop().await;
        let err = client.proxies().await.unwrap_err();
        assert!(matches!(err, chaos::Error::Transport(_)), "{err:?}");
        assert_eq!(err.status(), None);
    })
    .await;
}
