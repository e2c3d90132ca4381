//! The catalog over HTTP: seeding, updating, restocking and reading stock.

use contracts::domain::OrderId;
use contracts::http::{Product, Reservation, StockLevel};
use http::StatusCode;
use serde_json::json;

use crate::helpers::*;

fn levels(body: &serde_json::Value) -> Vec<StockLevel> {
    serde_json::from_value(body.clone()).unwrap()
}

#[tokio::test]
async fn an_admin_seeds_products_that_any_caller_can_read() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        let app = TestApp::new(db);
        let body = json!([
            {"sku": "SKU-2", "name": "Kettle", "unit_price_minor": 2_500, "available": 5},
            {"sku": "SKU-1", "name": "Mug", "unit_price_minor": 800, "available": 40},
        ]);
        let put = app
            .call(
                "PUT",
                "/admin/products",
                Some(&app.admin()),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(put.0, StatusCode::OK, "{}", put.1);
        let created = levels(&put.1);
        assert_eq!(created.len(), 2);
        assert_eq!(created[0].sku.as_str(), "SKU-2");
        assert_eq!((created[0].available, created[0].received), (5, 5));

        let (status, list) = app.get("/products", &app.customer()).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<Product> = serde_json::from_value(list).unwrap();
        let skus: Vec<_> = list.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, vec!["SKU-1", "SKU-2"], "{}", name(&app.db));

        let (status, one) = app.get("/products/SKU-2", &app.token(&[])).await;
        assert_eq!(status, StatusCode::OK);
        let one: Product = serde_json::from_value(one).unwrap();
        assert_eq!(
            (
                one.name.as_str(),
                one.unit_price_minor.minor(),
                one.available
            ),
            ("Kettle", 2_500, 5)
        );
    }
}

#[tokio::test]
async fn updating_a_product_moves_available_and_received_together() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        seed(&db, &[("SKU-1", 800, 10)]).await;
        let app = TestApp::new(db);
        let body =
            json!([{"sku": "SKU-1", "name": "Big mug", "unit_price_minor": 900, "available": 4}]);
        let (status, put) = app
            .call(
                "PUT",
                "/admin/products",
                Some(&app.admin()),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{put}");
        let level = &levels(&put)[0];
        assert_eq!(
            (
                level.name.as_str(),
                level.unit_price_minor.minor(),
                level.available,
                level.received
            ),
            ("Big mug", 900, 4, 4)
        );
        assert_eq!(
            counters(&app.db, "SKU-1").await,
            (4, 0, 0, 4),
            "{}",
            name(&app.db)
        );
    }
}

#[tokio::test]
async fn a_negative_available_or_a_bad_batch_is_refused_whole_with_422() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        seed(&db, &[("SKU-1", 800, 10)]).await;
        let app = TestApp::new(db);
        for body in [
            json!([
                {"sku": "SKU-NEW", "name": "New", "unit_price_minor": 1, "available": 1},
                {"sku": "SKU-1", "name": "Mug", "unit_price_minor": 800, "available": -1},
            ]),
            json!([
                {"sku": "SKU-NEW", "name": "New", "unit_price_minor": 1, "available": 1},
                {"sku": "SKU-NEW", "name": "Again", "unit_price_minor": 1, "available": 1},
            ]),
            json!([{"sku": "SKU-NEW", "name": "", "unit_price_minor": 1, "available": 1}]),
            json!([{"sku": "SKU-NEW", "name": "x", "unit_price_minor": -5, "available": 1}]),
            json!([{"sku": "bad sku", "name": "x", "unit_price_minor": 5, "available": 1}]),
            json!([]),
        ] {
            let res = app
                .call(
                    "PUT",
                    "/admin/products",
                    Some(&app.admin()),
                    Some(&body.to_string()),
                )
                .await;
            assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        }
        assert_eq!(counters(&app.db, "SKU-1").await, (10, 0, 0, 10));
        let (_, stock) = app.get("/admin/stock", &app.admin()).await;
        assert_eq!(
            levels(&stock).len(),
            1,
            "nothing of a refused batch was written"
        );
    }
}

#[tokio::test]
async fn a_restock_adds_to_available_and_received() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        seed(&db, &[("SKU-1", 800, 10)]).await;
        let app = TestApp::new(db);
        let order = OrderId::new();
        handle(&app.db, &reserve(order, &[("SKU-1", 3)])).await;

        let (status, body) = app
            .call(
                "POST",
                "/admin/products/SKU-1/restock",
                Some(&app.admin()),
                Some(r#"{"quantity": 5}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let level: StockLevel = serde_json::from_value(body).unwrap();
        assert_eq!(
            (level.available, level.reserved, level.received),
            (12, 3, 15)
        );

        let zero = app
            .call(
                "POST",
                "/admin/products/SKU-1/restock",
                Some(&app.admin()),
                Some(r#"{"quantity": 0}"#),
            )
            .await;
        assert_error(&zero, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(
            counters(&app.db, "SKU-1").await,
            (12, 3, 0, 15),
            "{}",
            name(&app.db)
        );
    }
}

#[tokio::test]
async fn an_unknown_sku_is_a_404_and_a_malformed_one_a_422() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        let app = TestApp::new(db);
        let read = app.get("/products/SKU-NOPE", &app.customer()).await;
        assert_error(&read, StatusCode::NOT_FOUND, "not_found");
        assert!(
            read.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("SKU-NOPE")
        );
        let restock = app
            .call(
                "POST",
                "/admin/products/SKU-NOPE/restock",
                Some(&app.admin()),
                Some(r#"{"quantity": 1}"#),
            )
            .await;
        assert_error(&restock, StatusCode::NOT_FOUND, "not_found");
        let malformed = app.get("/products/bad%20sku", &app.customer()).await;
        assert_error(&malformed, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
}

#[tokio::test]
async fn admins_see_stock_sorted_by_sku_and_every_reservation() {
    let (_dir, dbs) = databases().await;
    for db in dbs {
        seed(
            &db,
            &[
                ("b-2", 1, 5),
                ("SKU-10", 1, 5),
                ("SKU-9", 1, 5),
                ("a-1", 1, 5),
            ],
        )
        .await;
        let app = TestApp::new(db);
        let order = OrderId::new();
        handle(&app.db, &reserve(order, &[("SKU-9", 2)])).await;

        let (status, stock) = app.get("/admin/stock", &app.admin()).await;
        assert_eq!(status, StatusCode::OK);
        let skus: Vec<String> = levels(&stock).iter().map(|l| l.sku.to_string()).collect();
        assert_eq!(
            skus,
            vec!["SKU-10", "SKU-9", "a-1", "b-2"],
            "{}",
            name(&app.db)
        );

        let (status, list) = app.get("/admin/reservations", &app.admin()).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<Reservation> = serde_json::from_value(list).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].order_id, order);
        assert_eq!(list[0].lines, vec![line("SKU-9", 2)]);
    }
}
