//! A typed client for Toxiproxy 2.x's HTTP API (and `chaos-proxy`, which speaks the same API).
//!
//! One method per endpoint; proxy and toxic names are percent-encoded into the path, so names
//! such as `gateway->order` work. Updates use `POST`, which every 2.x release accepts (`PATCH`
//! only exists in later ones). A non-2xx answer becomes [`Error::Api`] with the server's status
//! and its `error` message.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{ApiErrorBody, NewProxy, Populated, Proxy, ProxyUpdate, Toxic, ToxicUpdate};

/// Toxiproxy's default API address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8474";

/// How long one API call may take before it fails with [`Error::Transport`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL given to [`Client::new`] is not an `http(s)://host:port` URL.
    #[error("invalid Toxiproxy base URL `{url}`: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    /// The server answered with an error status.
    #[error("Toxiproxy answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The request did not get an answer (connection refused, timeout, ...).
    #[error("request to Toxiproxy failed")]
    Transport(#[from] reqwest::Error),
    /// The server answered 2xx with a body that is not what the API documents.
    #[error("unexpected answer from Toxiproxy to {method} {url} ({status}): {body}")]
    Decode {
        method: String,
        url: String,
        status: u16,
        body: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's message of an [`Error::Api`].
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The proxy or toxic does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A proxy or toxic of that name already exists (409).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// A Toxiproxy API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for the API at `base_url` (`http://127.0.0.1:8474`; a bare `host:port` is
    /// taken as `http://host:port`).
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(Error::Transport)?;
        Self::with_http_client(base_url, http)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest` client.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason,
        };
        let with_scheme = if base_url.contains("://") {
            base_url.to_owned()
        } else {
            format!("http://{base_url}")
        };
        let mut base = Url::parse(&with_scheme).map_err(|err| invalid(err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".to_owned()));
        }
        if base.host_str().is_none() {
            return Err(invalid("no host".to_owned()));
        }
        base.set_query(None);
        base.set_fragment(None);
        Ok(Self { http, base })
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /version`: the server's version string.
    pub async fn version(&self) -> Result<String, Error> {
        let (_, _, body) = self.call(Method::GET, &["version"], None::<&()>).await?;
        // 2.x answers {"version": "..."}; releases before 2.1.5 answered the bare string.
        #[derive(serde::Deserialize)]
        struct Version {
            version: String,
        }
        Ok(match serde_json::from_slice::<Version>(&body) {
            Ok(v) => v.version,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        })
    }

    /// `GET /proxies`: every proxy by name.
    pub async fn proxies(&self) -> Result<BTreeMap<String, Proxy>, Error> {
        self.json(Method::GET, &["proxies"], None::<&()>).await
    }

    /// `POST /proxies` (201). 409 if the name is taken.
    pub async fn create_proxy(&self, proxy: &NewProxy) -> Result<Proxy, Error> {
        self.json(Method::POST, &["proxies"], Some(proxy)).await
    }

    /// `GET /proxies/{name}`.
    pub async fn proxy(&self, name: &str) -> Result<Proxy, Error> {
        self.json(Method::GET, &["proxies", name], None::<&()>)
            .await
    }

    /// `POST /proxies/{name}`: changes listen address, upstream or enabled state.
    pub async fn update_proxy(&self, name: &str, update: &ProxyUpdate) -> Result<Proxy, Error> {
        self.json(Method::POST, &["proxies", name], Some(update))
            .await
    }

    /// Enables (listens again on the same address) or disables (stops listening and closes
    /// every connection) a proxy.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Proxy, Error> {
        self.update_proxy(name, &ProxyUpdate::enabled(enabled))
            .await
    }

    /// `DELETE /proxies/{name}` (204).
    pub async fn delete_proxy(&self, name: &str) -> Result<(), Error> {
        self.call(Method::DELETE, &["proxies", name], None::<&()>)
            .await
            .map(drop)
    }

    /// `POST /populate` (201): creates the proxies, replacing those of the same name whose
    /// listen address or upstream differ, and keeping identical ones as they are.
    pub async fn populate(&self, proxies: &[NewProxy]) -> Result<Vec<Proxy>, Error> {
        let populated: Populated = self
            .json(Method::POST, &["populate"], Some(&proxies))
            .await?;
        Ok(populated.proxies)
    }

    /// `POST /reset` (204): enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), Error> {
        self.call(Method::POST, &["reset"], None::<&()>)
            .await
            .map(drop)
    }

    /// `GET /proxies/{proxy}/toxics`.
    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, Error> {
        self.json(Method::GET, &["proxies", proxy, "toxics"], None::<&()>)
            .await
    }

    /// `POST /proxies/{proxy}/toxics`: the toxic as the server stored it. 409 if the proxy has a
    /// toxic of that name.
    pub async fn add_toxic(&self, proxy: &str, toxic: &Toxic) -> Result<Toxic, Error> {
        self.json(Method::POST, &["proxies", proxy, "toxics"], Some(toxic))
            .await
    }

    /// `GET /proxies/{proxy}/toxics/{name}`.
    pub async fn toxic(&self, proxy: &str, name: &str) -> Result<Toxic, Error> {
        self.json(
            Method::GET,
            &["proxies", proxy, "toxics", name],
            None::<&()>,
        )
        .await
    }

    /// `POST /proxies/{proxy}/toxics/{name}`: new toxicity and/or attributes.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        name: &str,
        update: &ToxicUpdate,
    ) -> Result<Toxic, Error> {
        self.json(
            Method::POST,
            &["proxies", proxy, "toxics", name],
            Some(update),
        )
        .await
    }

    /// `DELETE /proxies/{proxy}/toxics/{name}` (204).
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), Error> {
        self.call(
            Method::DELETE,
            &["proxies", proxy, "toxics", name],
            None::<&()>,
        )
        .await
        .map(drop)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InvalidBaseUrl {
                url: self.base.to_string(),
                reason: "cannot be a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Error> {
        let (url, status, bytes) = self.call(method.clone(), segments, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
            source,
        })
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(Url, StatusCode, bytes::Bytes), Error> {
        let url = self.url(segments)?;
        let mut request = self.http.request(method, url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return Ok((url, status, bytes));
        }
        Err(api_error(status, &bytes))
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> Error {
    let message = match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text
            }
        }
    };
    Error::Api {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_arrows_and_slashes_are_encoded_into_one_path_segment() {
        let client = Client::new("http://127.0.0.1:8474/").unwrap();
        let url = client
            .url(&["proxies", "gateway->order", "toxics", "a/b"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8474/proxies/gateway-%3Eorder/toxics/a%2Fb"
        );
    }

    #[test]
    fn a_bare_host_and_port_is_taken_as_http() {
        let client = Client::new("127.0.0.1:8474").unwrap();
        assert_eq!(client.base_url().as_str(), "http://127.0.0.1:8474/");
    }

    #[test]
    fn a_base_url_with_another_scheme_is_rejected() {
        assert!(matches!(
            Client::new("ftp://127.0.0.1:8474"),
            Err(Error::InvalidBaseUrl { .. })
        ));
    }

    #[test]
    fn error_bodies_in_toxiproxys_shape_give_status_and_message() {
        let err = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"proxy not found","status":404}"#,
        );
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.message(), Some("proxy not found"));
        assert!(err.is_not_found());
        let plain = api_error(StatusCode::METHOD_NOT_ALLOWED, b"");
        assert_eq!(plain.message(), Some("Method Not Allowed"));
    }
}
