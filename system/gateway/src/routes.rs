//! The route table: which service owns each `/api` path and who may call it.
//!
//! Paths are the services' own (see `contracts::http`) with `/api` in front; the gateway strips
//! the prefix and forwards the rest of the path and the query string unchanged. Each route
//! names its methods: any other answers 405 with `Allow` at the edge, and never reaches a
//! service. The OpenAPI document ([`crate::openapi`]) is checked against this table.

use axum::http::Method;
use axum::routing::MethodFilter;
use contracts::domain::Role;

/// A service behind the gateway. Its name is the audience of the service tokens minted for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Order, Service::Inventory, Service::Payment];

    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Inventory => "inventory",
            Self::Payment => "payment",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads need no user token (the catalog); a token that is sent must still be valid. Writes
    /// need a valid token with any role, and the service decides.
    PublicRead,
    /// A customer or an admin.
    Customer,
    Admin,
}

impl Access {
    /// Whether this request may go through without a user token.
    pub fn is_anonymous_ok(self, method: &Method) -> bool {
        self == Self::PublicRead && (method == Method::GET || method == Method::HEAD)
    }

    /// Whether a caller with these roles may use the route.
    pub fn allows(self, roles: &[Role]) -> bool {
        match self {
            Self::PublicRead => true,
            Self::Customer => roles.contains(&Role::Customer) || roles.contains(&Role::Admin),
            Self::Admin => roles.contains(&Role::Admin),
        }
    }

    pub fn denial(self) -> &'static str {
        match self {
            Self::PublicRead => "",
            Self::Customer => "this needs the customer or admin role",
            Self::Admin => "this needs the admin role",
        }
    }
}

/// One entry of the route table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The gateway path as an axum pattern, `/api` included.
    pub path: &'static str,
    /// The methods the service serves on it (`GET` includes `HEAD`).
    pub methods: &'static [Method],
    pub service: Service,
    pub access: Access,
}

impl Route {
    /// Whether a request on this route starts a saga: what admission control guards
    /// ([`crate::throttle`] at the edge, the order service's own behind it).
    pub fn starts_saga(&self, method: &Method) -> bool {
        self.path == "/api/orders" && method == Method::POST
    }

    /// The methods as axum's filter.
    pub fn method_filter(&self) -> MethodFilter {
        self.methods
            .iter()
            .filter_map(|m| MethodFilter::try_from(m.clone()).ok())
            .reduce(MethodFilter::or)
            .unwrap_or(MethodFilter::GET)
    }
}

pub const API_PREFIX: &str = "/api";

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const PUT: &[Method] = &[Method::PUT];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const GET_PUT: &[Method] = &[Method::GET, Method::PUT];

const fn route(
    path: &'static str,
    methods: &'static [Method],
    service: Service,
    access: Access,
) -> Route {
    Route {
        path,
        methods,
        service,
        access,
    }
}

/// Every route the gateway forwards; anything else under `/api` is 404.
pub const ROUTES: &[Route] = &[
    route("/api/products", GET, Service::Inventory, Access::PublicRead),
    route(
        "/api/products/{sku}",
        GET,
        Service::Inventory,
        Access::PublicRead,
    ),
    route(
        "/api/admin/products",
        PUT,
        Service::Inventory,
        Access::Admin,
    ),
    route(
        "/api/admin/products/{sku}/restock",
        POST,
        Service::Inventory,
        Access::Admin,
    ),
    route("/api/admin/stock", GET, Service::Inventory, Access::Admin),
    route(
        "/api/admin/reservations",
        GET,
        Service::Inventory,
        Access::Admin,
    ),
    route("/api/orders", GET_POST, Service::Order, Access::Customer),
    route("/api/orders/{id}", GET, Service::Order, Access::Customer),
    route("/api/admin/orders", GET, Service::Order, Access::Admin),
    route(
        "/api/admin/accounts",
        GET_PUT,
        Service::Payment,
        Access::Admin,
    ),
    route(
        "/api/admin/accounts/rebuild",
        POST,
        Service::Payment,
        Access::Admin,
    ),
    route("/api/admin/payments", GET, Service::Payment, Access::Admin),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_path_needs_the_admin_role_and_only_the_catalog_is_public() {
        for r in ROUTES {
            assert!(r.path.starts_with("/api/"), "{}", r.path);
            if r.path.starts_with("/api/admin/") {
                assert_eq!(r.access, Access::Admin, "{}", r.path);
            }
            if r.access == Access::PublicRead {
                assert!(r.path.starts_with("/api/products"), "{}", r.path);
            }
        }
    }

    #[test]
    fn only_placing_an_order_starts_a_saga() {
        let starting: Vec<_> = ROUTES
            .iter()
            .flat_map(|r| r.methods.iter().map(move |m| (r, m)))
            .filter(|(r, m)| r.starts_saga(m))
            .map(|(r, m)| format!("{m} {}", r.path))
            .collect();
        assert_eq!(starting, ["POST /api/orders"]);
    }

    #[test]
    fn customers_and_admins_may_order_but_only_admins_administer() {
        assert!(Access::Customer.allows(&[Role::Customer]));
        assert!(Access::Customer.allows(&[Role::Admin]));
        assert!(!Access::Customer.allows(&[]));
        assert!(!Access::Admin.allows(&[Role::Customer]));
        assert!(Access::PublicRead.is_anonymous_ok(&Method::GET));
        assert!(!Access::PublicRead.is_anonymous_ok(&Method::POST));
        assert!(!Access::Admin.is_anonymous_ok(&Method::GET));
    }
}
