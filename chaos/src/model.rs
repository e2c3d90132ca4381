//! Toxiproxy's JSON bodies as typed values, shared by the [client](crate::Client) and the
//! [server](crate::server).
//!
//! The shapes are those of Toxiproxy 2.x's HTTP API. A toxic looks like this on the wire:
//!
//! ```json
//! {"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":1000,"jitter":0}}
//! ```
//!
//! [`Toxic`] keeps `type` and `attributes` together in one value, [`ToxicAttributes`], so a toxic
//! can never claim to be a `latency` toxic while carrying bandwidth attributes: the JSON `type`
//! is [`ToxicAttributes::kind`]. Deserialising applies Toxiproxy's defaults (stream
//! `downstream`, toxicity 1, name `<type>_<stream>`, missing attributes 0), so the same type
//! reads a client's request and the server's answer. Serialising writes the fields in the order
//! above, and a whole toxicity as an integer (`1`, not `1.0`), as Toxiproxy (Go) does.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which way through a proxy a toxic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → upstream server.
    Upstream,
    /// Upstream server → client (Toxiproxy's default).
    #[default]
    Downstream,
}

impl Stream {
    /// Both directions, upstream first (the order Toxiproxy lists toxics in).
    pub const ALL: [Stream; 2] = [Stream::Upstream, Stream::Downstream];

    /// The wire name: `upstream` or `downstream`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither `upstream` nor `downstream`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream was invalid, can be either upstream or downstream")]
pub struct InvalidStream;

impl FromStr for Stream {
    type Err = InvalidStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "upstream" => Ok(Stream::Upstream),
            "downstream" => Ok(Stream::Downstream),
            _ => Err(InvalidStream),
        }
    }
}

/// A proxy as Toxiproxy reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proxy {
    pub name: String,
    /// The address the proxy listens on. After the proxy has been started this is the bound
    /// address, so a proxy created with `127.0.0.1:0` shows its real port.
    pub listen: String,
    /// Where accepted connections are forwarded to (`host:port`).
    pub upstream: String,
    pub enabled: bool,
    /// Upstream toxics first, then downstream ones, each in the order they were added.
    #[serde(default)]
    pub toxics: Vec<Toxic>,
}

/// The body of `POST /proxies` (and one element of `POST /populate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProxy {
    pub name: String,
    /// `host:port`; port 0 picks a free port (see [`Proxy::listen`]).
    pub listen: String,
    pub upstream: String,
    /// Start listening right away (Toxiproxy's default: true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl NewProxy {
    /// An enabled proxy.
    pub fn new(
        name: impl Into<String>,
        listen: impl Into<String>,
        upstream: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            listen: listen.into(),
            upstream: upstream.into(),
            enabled: true,
        }
    }

    /// The same proxy, created without listening.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
}

/// The body of `POST /proxies/{name}`: only the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl ProxyUpdate {
    /// An update that only enables or disables the proxy.
    pub fn enabled(enabled: bool) -> Self {
        Self {
            enabled: Some(enabled),
            ..Self::default()
        }
    }
}

/// A toxic's type and its attributes. Times are milliseconds except [`ToxicAttributes::Slicer`]'s
/// `delay` (microseconds, as in Toxiproxy). Missing attributes read as 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicAttributes {
    /// Delays each chunk of data by `latency` ± `jitter` ms.
    Latency {
        #[serde(default)]
        latency: u64,
        #[serde(default)]
        jitter: u64,
    },
    /// Limits throughput to `rate` KB/s (1 KB = 1000 bytes). A rate of 0 holds all data back
    /// until the toxic is changed or removed.
    Bandwidth {
        #[serde(default)]
        rate: u64,
    },
    /// Delays the close of the connection by `delay` ms once the sending side has closed.
    SlowClose {
        #[serde(default)]
        delay: u64,
    },
    /// Stops all data and closes the connection after `timeout` ms (0: never closes; the data
    /// stays stopped until the toxic is removed, and removing it closes the connections it
    /// stalled, because bytes were lost).
    Timeout {
        #[serde(default)]
        timeout: u64,
    },
    /// Resets the connection (TCP RST) `timeout` ms after data arrives.
    ResetPeer {
        #[serde(default)]
        timeout: u64,
    },
    /// Slices data into chunks of about `average_size` ± `size_variation` bytes, `delay` µs
    /// apart.
    Slicer {
        #[serde(default)]
        average_size: u64,
        #[serde(default)]
        size_variation: u64,
        #[serde(default)]
        delay: u64,
    },
    /// Closes the connection once `bytes` bytes have gone through.
    LimitData {
        #[serde(default)]
        bytes: u64,
    },
}

impl ToxicAttributes {
    /// The toxic type names this crate knows, as they appear in JSON.
    pub const KINDS: [&'static str; 7] = [
        "latency",
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
    ];

    /// The toxic's type as it appears in JSON (`latency`, `reset_peer`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ToxicAttributes::Latency { .. } => "latency",
            ToxicAttributes::Bandwidth { .. } => "bandwidth",
            ToxicAttributes::SlowClose { .. } => "slow_close",
            ToxicAttributes::Timeout { .. } => "timeout",
            ToxicAttributes::ResetPeer { .. } => "reset_peer",
            ToxicAttributes::Slicer { .. } => "slicer",
            ToxicAttributes::LimitData { .. } => "limit_data",
        }
    }

    /// Reads the attributes of a toxic of type `kind` (`null` or a missing object means all 0).
    pub fn from_parts(kind: &str, attributes: serde_json::Value) -> Result<Self, ToxicError> {
        if !Self::KINDS.contains(&kind) {
            return Err(ToxicError::InvalidType(kind.to_owned()));
        }
        let attributes = match attributes {
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            other => other,
        };
        serde_json::from_value(serde_json::json!({ "type": kind, "attributes": attributes }))
            .map_err(|err| ToxicError::BadAttributes(err.to_string()))
    }

    /// The `attributes` object alone, as Toxiproxy writes it.
    pub fn attributes_json(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("attributes").unwrap_or(serde_json::Value::Null)
            }
            // Serialising a plain enum of integers into a Value cannot fail or produce another
            // shape; an empty object keeps this total.
            _ => serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Checks values that would make the toxic meaningless (Toxiproxy answers 400 for these).
    pub fn validate(&self) -> Result<(), ToxicError> {
        if let &ToxicAttributes::Slicer {
            average_size,
            size_variation,
            ..
        } = self
        {
            if average_size == 0 {
                return Err(ToxicError::Invalid(
                    "slicer average_size must be greater than 0".to_owned(),
                ));
            }
            if size_variation >= average_size {
                return Err(ToxicError::Invalid(
                    "slicer size_variation must be smaller than average_size".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// Why a toxic in a request cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToxicError {
    #[error("invalid toxic type: {0}")]
    InvalidType(String),
    #[error(transparent)]
    InvalidStream(#[from] InvalidStream),
    #[error("bad attributes: {0}")]
    BadAttributes(String),
    #[error("{0}")]
    Invalid(String),
}

/// A toxic attached to a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    /// Unique per proxy (across both streams). Defaults to `<type>_<stream>`.
    pub name: String,
    pub stream: Stream,
    /// Probability (0..=1) that the toxic applies to a connection; decided once per
    /// connection (and again when the toxic is updated).
    pub toxicity: f32,
    pub attributes: ToxicAttributes,
}

impl Toxic {
    /// A downstream toxic that always applies, named `<type>_downstream`.
    pub fn new(attributes: ToxicAttributes) -> Self {
        Self {
            name: default_name(attributes.kind(), Stream::Downstream),
            stream: Stream::Downstream,
            toxicity: 1.0,
            attributes,
        }
    }

    /// `latency` ± `jitter` milliseconds on each chunk of data.
    pub fn latency(latency_ms: u64, jitter_ms: u64) -> Self {
        Self::new(ToxicAttributes::Latency {
            latency: latency_ms,
            jitter: jitter_ms,
        })
    }

    /// At most `rate_kb_per_s` KB/s.
    pub fn bandwidth(rate_kb_per_s: u64) -> Self {
        Self::new(ToxicAttributes::Bandwidth {
            rate: rate_kb_per_s,
        })
    }

    /// Stop all data; close after `timeout_ms` (0: never).
    pub fn timeout(timeout_ms: u64) -> Self {
        Self::new(ToxicAttributes::Timeout {
            timeout: timeout_ms,
        })
    }

    /// TCP RST `timeout_ms` after data arrives.
    pub fn reset_peer(timeout_ms: u64) -> Self {
        Self::new(ToxicAttributes::ResetPeer {
            timeout: timeout_ms,
        })
    }

    /// Delay the close by `delay_ms` after the sender closed.
    pub fn slow_close(delay_ms: u64) -> Self {
        Self::new(ToxicAttributes::SlowClose { delay: delay_ms })
    }

    /// Slices of `average_size` ± `size_variation` bytes, `delay_us` microseconds apart.
    pub fn slicer(average_size: u64, size_variation: u64, delay_us: u64) -> Self {
        Self::new(ToxicAttributes::Slicer {
            average_size,
            size_variation,
            delay: delay_us,
        })
    }

    /// Close after `bytes` bytes.
    pub fn limit_data(bytes: u64) -> Self {
        Self::new(ToxicAttributes::LimitData { bytes })
    }

    /// The toxic's type as it appears in JSON.
    pub fn kind(&self) -> &'static str {
        self.attributes.kind()
    }

    /// The same toxic under another name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same toxic on another stream. A default name follows the stream
    /// (`latency_downstream` becomes `latency_upstream`); a chosen name is kept.
    pub fn on(mut self, stream: Stream) -> Self {
        if self.name == default_name(self.kind(), self.stream) {
            self.name = default_name(self.kind(), stream);
        }
        self.stream = stream;
        self
    }

    /// The same toxic applying to each connection with probability `toxicity`.
    pub fn with_toxicity(mut self, toxicity: f32) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// Builds a toxic from a request body's fields, applying Toxiproxy's defaults.
    pub(crate) fn from_raw(raw: RawToxic) -> Result<Self, ToxicError> {
        let stream = match raw.stream.as_deref() {
            None | Some("") => Stream::Downstream,
            Some(s) => s.parse()?,
        };
        let attributes =
            ToxicAttributes::from_parts(&raw.kind, raw.attributes.unwrap_or_default())?;
        let name = match raw.name {
            Some(name) if !name.is_empty() => name,
            _ => default_name(&raw.kind, stream),
        };
        Ok(Self {
            name,
            stream,
            toxicity: raw.toxicity.unwrap_or(1.0),
            attributes,
        })
    }
}

/// Toxiproxy's default toxic name.
pub fn default_name(kind: &str, stream: Stream) -> String {
    format!("{kind}_{stream}")
}

/// A toxic body as sent by any client, before defaults are applied.
#[derive(Debug, Deserialize)]
pub(crate) struct RawToxic {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub toxicity: Option<f32>,
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
}

impl Serialize for Toxic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Toxic", 5)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("type", self.kind())?;
        s.serialize_field("stream", &self.stream)?;
        s.serialize_field("toxicity", &Toxicity(self.toxicity))?;
        s.serialize_field("attributes", &Content(&self.attributes))?;
        s.end()
    }
}

/// The `attributes` object of a toxic, fields in declaration order (as Toxiproxy writes them).
struct Content<'a>(&'a ToxicAttributes);

impl Serialize for Content<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields: &[(&'static str, u64)] = match *self.0 {
            ToxicAttributes::Latency { latency, jitter } => {
                &[("latency", latency), ("jitter", jitter)]
            }
            ToxicAttributes::Bandwidth { rate } => &[("rate", rate)],
            ToxicAttributes::SlowClose { delay } => &[("delay", delay)],
            ToxicAttributes::Timeout { timeout } | ToxicAttributes::ResetPeer { timeout } => {
                &[("timeout", timeout)]
            }
            ToxicAttributes::Slicer {
                average_size,
                size_variation,
                delay,
            } => &[
                ("average_size", average_size),
                ("size_variation", size_variation),
                ("delay", delay),
            ],
            ToxicAttributes::LimitData { bytes } => &[("bytes", bytes)],
        };
        let mut s = serializer.serialize_struct("Attributes", fields.len())?;
        for (name, value) in fields {
            s.serialize_field(name, value)?;
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Toxic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawToxic::deserialize(deserializer)?;
        if raw.kind.is_empty() {
            return Err(D::Error::missing_field("type"));
        }
        Toxic::from_raw(raw).map_err(D::Error::custom)
    }
}

/// The body of `POST /proxies/{proxy}/toxics/{toxic}`: a new toxicity and/or new attributes
/// (the toxic's type and stream cannot change).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToxicUpdate {
    pub toxicity: Option<f32>,
    pub attributes: Option<ToxicAttributes>,
}

impl Serialize for ToxicUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = usize::from(self.toxicity.is_some()) + usize::from(self.attributes.is_some());
        let mut s = serializer.serialize_struct("ToxicUpdate", len)?;
        if let Some(toxicity) = self.toxicity {
            s.serialize_field("toxicity", &Toxicity(toxicity))?;
        }
        if let Some(attributes) = &self.attributes {
            s.serialize_field("attributes", &Content(attributes))?;
        }
        s.end()
    }
}

/// Writes a whole toxicity as an integer (`1`), as Go's encoder does for a float32.
struct Toxicity(f32);

impl Serialize for Toxicity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        // 2^24: every integer up to here is exact in an f32.
        if value.fract() == 0.0 && value.abs() <= 16_777_216.0 {
            serializer.serialize_i64(value as i64)
        } else {
            // The shortest decimal that reads back as this f32 (0.1, not 0.10000000149011612),
            // also when the serializer widens to f64 (serde_json::Value does).
            let shortest = value.to_string().parse::<f64>().unwrap_or(f64::from(value));
            serializer.serialize_f64(shortest)
        }
    }
}

/// Toxiproxy's error body: `{"error":"proxy not found","status":404}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    pub status: u16,
}

/// The body of `POST /populate`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Populated {
    pub proxies: Vec<Proxy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_TOXIC: &str = r#"{"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":1000,"jitter":0}}"#;

    #[test]
    fn a_toxic_from_toxiproxy_round_trips_byte_for_byte() {
        let toxic: Toxic = serde_json::from_str(REAL_TOXIC).unwrap();
        assert_eq!(
            toxic,
            Toxic::latency(1000, 0),
            "parsed into the typed latency toxic"
        );
        assert_eq!(serde_json::to_string(&toxic).unwrap(), REAL_TOXIC);
    }

    #[test]
    fn every_toxic_type_round_trips_through_json() {
        let toxics = [
            Toxic::latency(10, 5),
            Toxic::bandwidth(100).on(Stream::Upstream),
            Toxic::slow_close(200),
            Toxic::timeout(0).named("partition"),
            Toxic::reset_peer(50).with_toxicity(0.5),
            Toxic::slicer(10, 2, 1000),
            Toxic::limit_data(42),
        ];
        for toxic in toxics {
            let json = serde_json::to_string(&toxic).unwrap();
            let back: Toxic = serde_json::from_str(&json).unwrap();
            assert_eq!(back, toxic, "{json}");
        }
    }

    #[test]
    fn fractional_toxicity_is_written_as_a_short_decimal() {
        let json = serde_json::to_value(Toxic::latency(1, 0).with_toxicity(0.1)).unwrap();
        assert_eq!(json["toxicity"].to_string(), "0.1");
    }

    #[test]
    fn a_minimal_toxic_body_gets_toxiproxys_defaults() {
        let toxic: Toxic =
            serde_json::from_str(r#"{"type":"latency","attributes":{"latency":5}}"#).unwrap();
        assert_eq!(toxic.name, "latency_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
        assert_eq!(
            toxic.attributes,
            ToxicAttributes::Latency {
                latency: 5,
                jitter: 0
            }
        );
        let upstream: Toxic =
            serde_json::from_str(r#"{"type":"timeout","stream":"upstream"}"#).unwrap();
        assert_eq!(upstream.name, "timeout_upstream");
    }

    #[test]
    fn unknown_types_and_streams_are_rejected_with_toxiproxys_words() {
        let err = serde_json::from_str::<Toxic>(r#"{"type":"mars"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid toxic type"), "{err}");
        let err =
            serde_json::from_str::<Toxic>(r#"{"type":"latency","stream":"sideways"}"#).unwrap_err();
        assert!(err.to_string().contains("stream was invalid"), "{err}");
    }

    #[test]
    fn renaming_the_stream_keeps_a_chosen_name_and_moves_a_default_one() {
        assert_eq!(
            Toxic::latency(1, 0).on(Stream::Upstream).name,
            "latency_upstream"
        );
        assert_eq!(
            Toxic::latency(1, 0).named("slow").on(Stream::Upstream).name,
            "slow"
        );
    }

    #[test]
    fn a_toxic_update_sends_only_what_changes() {
        let update = ToxicUpdate {
            toxicity: None,
            attributes: Some(ToxicAttributes::Bandwidth { rate: 5 }),
        };
        assert_eq!(
            serde_json::to_string(&update).unwrap(),
            r#"{"attributes":{"rate":5}}"#
        );
        assert_eq!(
            serde_json::to_string(&ProxyUpdate::enabled(false)).unwrap(),
            r#"{"enabled":false}"#
        );
    }

    #[test]
    fn slicer_attributes_that_cannot_slice_are_invalid() {
        assert!(
            ToxicAttributes::Slicer {
                average_size: 0,
                size_variation: 0,
                delay: 0
            }
            .validate()
            .is_err()
        );
        assert!(
            ToxicAttributes::Slicer {
                average_size: 10,
                size_variation: 10,
                delay: 0
            }
            .validate()
            .is_err()
        );
        assert!(Toxic::slicer(10, 3, 0).attributes.validate().is_ok());
    }
}
