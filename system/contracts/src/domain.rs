//! Domain values. Each one validates when it is parsed or deserialized, so a handler that holds a
//! `Quantity` never has to ask whether it is positive.
//!
//! Each also describes itself as a JSON Schema (utoipa's `ToSchema`, written by hand because the
//! rules live in the parsers, not in the field types): the gateway's OpenAPI document states the
//! same bounds the parsers enforce, so a client generated from it, or a fuzzer, knows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use uuid::Uuid;

/// A schema of `type` with a description; the callers add the bounds.
fn described(kind: Type, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(kind))
        .description(Some(description))
}

/// Implements `ToSchema` with the schema the given expression builds.
macro_rules! schema {
    ($name:ident, $schema:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::Object($schema.build()))
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub reason: String,
}

impl InvalidValue {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// An integer from JSON. JSON Schema counts `3.0` as the integer 3 (a generator of valid data
/// may send it, and a JavaScript client may well), so this does too, as long as the float is
/// exact (at most 2^53); `3.5` and strings are refused.
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Integer;

    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large for an integer")))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && v.abs() <= EXACT {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }

    d.deserialize_any(Integer)
}

/// The id of an order: a UUID, created by the order service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| InvalidValue::new("order id", e.to_string()))
    }
}

schema!(
    OrderId,
    described(Type::String, "An order id (a UUID).")
        .format(Some(SchemaFormat::Custom("uuid".into())))
);

fn validate_token(what: &'static str, s: &str, max: usize) -> Result<(), InvalidValue> {
    if s.is_empty() {
        return Err(InvalidValue::new(what, "must not be empty"));
    }
    if s.len() > max {
        return Err(InvalidValue::new(what, format!("longer than {max} bytes")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(InvalidValue::new(
            what,
            format!("character {c:?} is not allowed (use letters, digits, '-', '_', '.', ':')"),
        ));
    }
    Ok(())
}

macro_rules! token_newtype {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidValue> {
                let s = s.into();
                validate_token($what, &s, $max)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        schema!(
            $name,
            described(
                Type::String,
                concat!("A ", $what, ": 1 to ", $max, " letters, digits, '-', '_', '.' or ':'."),
            )
            .min_length(Some(1))
            .max_length(Some($max))
            // What `validate_token` allows (ASCII only, so bytes and characters agree).
            .pattern(Some(concat!("^[A-Za-z0-9._:-]{1,", $max, "}$")))
        );
    };
}

token_newtype!(
    /// A customer id: the `sub` of the customer's token.
    CustomerId,
    "customer id",
    64
);
token_newtype!(
    /// A stock keeping unit, e.g. `SKU-1001`.
    Sku,
    "sku",
    64
);

/// A positive number of units, at most 10 000 per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn new(n: i64) -> Result<Self, InvalidValue> {
        if n <= 0 {
            return Err(InvalidValue::new(
                "quantity",
                format!("{n} is not positive"),
            ));
        }
        if n > i64::from(Self::MAX) {
            return Err(InvalidValue::new(
                "quantity",
                format!("{n} is more than {}", Self::MAX),
            ));
        }
        Ok(Self(n as u32))
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

schema!(
    Quantity,
    described(Type::Integer, "A number of units: 1 to 10000.")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(Quantity::MAX))
);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = integer(d)?;
        Self::new(n).map_err(serde::de::Error::custom)
    }
}

/// An amount of money in minor units (cents). Never a float; never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_minor(minor: i64) -> Result<Self, InvalidValue> {
        if minor < 0 {
            return Err(InvalidValue::new("amount", format!("{minor} is negative")));
        }
        Ok(Self(minor))
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_mul(self, qty: Quantity) -> Option<Money> {
        self.0.checked_mul(qty.get()).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

schema!(
    Money,
    described(
        Type::Integer,
        "An amount of money in minor units (cents); never negative.",
    )
    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
    .minimum(Some(0))
    .maximum(Some(i64::MAX))
);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = integer(d)?;
        Self::from_minor(n).map_err(serde::de::Error::custom)
    }
}

/// The roles a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// The status of an order as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PENDING" => Ok(Self::Pending),
            "CONFIRMED" => Ok(Self::Confirmed),
            "REJECTED" => Ok(Self::Rejected),
            "CANCELLED" => Ok(Self::Cancelled),
            other => Err(InvalidValue::new(
                "order status",
                format!("unknown status {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_refuses_zero_negative_and_huge_values() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert!(Quantity::new(10_001).is_err());
        assert_eq!(Quantity::new(7).map(Quantity::get), Ok(7));
    }

    #[test]
    fn quantity_deserialization_reports_the_reason() {
        let err = serde_json::from_str::<Quantity>("0")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not positive")));
    }

    #[test]
    fn a_whole_float_is_an_integer_as_json_schema_says_and_anything_else_is_refused() {
        assert_eq!(
            serde_json::from_str::<Quantity>("2137.0")
                .map(Quantity::get)
                .ok(),
            Some(2137)
        );
        assert_eq!(
            serde_json::from_str::<Money>("1.0").map(Money::minor).ok(),
            Some(1)
        );
        for bad in ["1.5", "\"7\"", "1e300", "-0.5", "18446744073709551615"] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Quantity>("0.0")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not positive")));
    }

    #[test]
    fn money_is_never_negative_and_formats_minor_units() {
        assert!(Money::from_minor(-1).is_err());
        assert_eq!(
            Money::from_minor(12_345).map(|m| m.to_string()),
            Ok("123.45".into())
        );
        let q = Quantity::new(3).ok();
        let total = q.and_then(|q| Money::from_minor(250).ok()?.checked_mul(q));
        assert_eq!(total.map(Money::minor), Some(750));
    }

    #[test]
    fn sku_and_customer_ids_refuse_empty_long_and_odd_characters() {
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("SKU 1").is_err());
        assert!(Sku::parse("x".repeat(65)).is_err());
        assert!(Sku::parse("SKU-1001").is_ok());
        assert!(CustomerId::parse("cust-7").is_ok());
        assert!(serde_json::from_str::<Sku>("\"a/b\"").is_err());
    }

    #[test]
    fn order_status_round_trips_and_knows_terminal_states() {
        for s in ["PENDING", "CONFIRMED", "REJECTED", "CANCELLED"] {
            assert_eq!(s.parse::<OrderStatus>().map(|x| x.as_str()), Ok(s));
        }
        assert!("DONE".parse::<OrderStatus>().is_err());
        assert!(!OrderStatus::Pending.is_terminal());
        assert!(OrderStatus::Cancelled.is_terminal());
    }
}
