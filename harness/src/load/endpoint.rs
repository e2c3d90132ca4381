//! The requests the load sends, named by method and gateway route with its placeholders: the
//! names goose groups requests by, [`Measurements`](crate::metrics::Measurements) keys its
//! statistics by, and scenario SLOs refer to.

use contracts::domain::{OrderId, Sku};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    ListProducts,
    GetProduct,
    PlaceOrder,
    GetOrder,
    ListOrders,
    Restock,
    Payments,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Self::ListProducts,
        Self::GetProduct,
        Self::PlaceOrder,
        Self::GetOrder,
        Self::ListOrders,
        Self::Restock,
        Self::Payments,
    ];

    /// `"POST /api/orders"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListProducts => "GET /api/products",
            Self::GetProduct => "GET /api/products/{sku}",
            Self::PlaceOrder => "POST /api/orders",
            Self::GetOrder => "GET /api/orders/{id}",
            Self::ListOrders => "GET /api/orders",
            Self::Restock => "POST /api/admin/products/{sku}/restock",
            Self::Payments => "GET /api/admin/payments",
        }
    }

    /// The endpoint a `"METHOD /path"` name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The paths with their placeholders filled in.
pub fn product_path(sku: &Sku) -> String {
    format!("/api/products/{sku}")
}

pub fn order_path(id: OrderId) -> String {
    format!("/api/orders/{id}")
}

pub fn restock_path(sku: &Sku) -> String {
    format!("/api/admin/products/{sku}/restock")
}

pub fn payments_path(order: OrderId) -> String {
    format!("/api/admin/payments?order_id={order}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names_are_the_gateway_routes_and_paths_fill_their_placeholders() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
        }
        assert_eq!(Endpoint::from_name("GET /api/nope"), None);
        let sku = Sku::parse("SKU-1001").unwrap();
        let fill = |route: &str, value: &str| {
            route
                .split_once(' ')
                .unwrap()
                .1
                .replace("{sku}", value)
                .replace("{id}", value)
        };
        assert_eq!(
            product_path(&sku),
            fill(Endpoint::GetProduct.name(), "SKU-1001")
        );
        assert_eq!(
            restock_path(&sku),
            fill(Endpoint::Restock.name(), "SKU-1001")
        );
        let id = OrderId::new();
        assert_eq!(
            order_path(id),
            fill(Endpoint::GetOrder.name(), &id.to_string())
        );
    }
}
