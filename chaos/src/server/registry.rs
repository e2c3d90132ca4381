//! The proxies a server holds: their configuration, their listeners and connections, and their
//! toxics.
//!
//! Every change goes through one async lock on the collection, so API calls apply one at a time
//! in the order they arrive, as in Toxiproxy. A proxy's toxics live in a `watch` channel that
//! every open connection of the proxy subscribes to: a toxic added, updated or removed reaches
//! existing connections too ([`super::link`] re-reads the set between chunks).
//!
//! An enabled proxy has a running listener: an accept task plus one task per connection, all
//! tracked so that disabling the proxy (or shutting the server down) cancels them and waits,
//! with a bound, until every socket is closed. Re-enabling binds the address the proxy had, so a
//! proxy created on port 0 comes back on the same port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::ApiError;
use super::link::{self, LinkCtx};
use super::metrics::{self, Counters};
use crate::model::{NewProxy, Proxy, ProxyUpdate, Stream, Toxic, ToxicAttributes};

/// How long disabling a proxy waits for its connections to close.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a server shutdown waits for every proxy task to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Listen address used when a request leaves it empty.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// A toxic as the proxy holds it: `id` is unique for the server's lifetime, `revision` changes
/// on every update, so a connection can tell a new toxic from an updated one.
#[derive(Debug, Clone)]
pub(crate) struct ActiveToxic {
    pub id: u64,
    pub revision: u64,
    pub toxic: Toxic,
}

/// A proxy's toxics, per stream, each in the order they were added.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToxicSet {
    upstream: Vec<ActiveToxic>,
    downstream: Vec<ActiveToxic>,
}

impl ToxicSet {
    pub fn stream(&self, stream: Stream) -> &[ActiveToxic] {
        match stream {
            Stream::Upstream => &self.upstream,
            Stream::Downstream => &self.downstream,
        }
    }

    fn stream_mut(&mut self, stream: Stream) -> &mut Vec<ActiveToxic> {
        match stream {
            Stream::Upstream => &mut self.upstream,
            Stream::Downstream => &mut self.downstream,
        }
    }

    /// Upstream toxics first, as Toxiproxy lists them.
    fn toxics(&self) -> Vec<Toxic> {
        self.upstream
            .iter()
            .chain(&self.downstream)
            .map(|a| a.toxic.clone())
            .collect()
    }

    fn find(&self, name: &str) -> Option<(Stream, usize)> {
        Stream::ALL.into_iter().find_map(|stream| {
            self.stream(stream)
                .iter()
                .position(|a| a.toxic.name == name)
                .map(|i| (stream, i))
        })
    }

    fn is_empty(&self) -> bool {
        self.upstream.is_empty() && self.downstream.is_empty()
    }
}

/// A toxic update as clients send it: attributes not named keep their value.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ToxicPatch {
    #[serde(default)]
    pub toxicity: Option<f32>,
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
}

struct Running {
    cancel: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

struct ProxyState {
    /// The bound address once started, else what was asked for.
    listen: String,
    /// What the client asked for (e.g. `127.0.0.1:0`), to recognise an identical populate.
    requested_listen: String,
    upstream: String,
    running: Option<Running>,
}

struct ProxyEntry {
    name: String,
    state: Mutex<ProxyState>,
    toxics: watch::Sender<ToxicSet>,
    counters: Arc<Counters>,
}

impl ProxyEntry {
    fn new(proxy: &NewProxy) -> Self {
        Self {
            name: proxy.name.clone(),
            state: Mutex::new(ProxyState {
                listen: proxy.listen.clone(),
                requested_listen: proxy.listen.clone(),
                upstream: proxy.upstream.clone(),
                running: None,
            }),
            toxics: watch::Sender::new(ToxicSet::default()),
            counters: Arc::new(Counters::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ProxyState> {
        // The state holds no invariant a panicking holder could break halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enabled(&self) -> bool {
        self.state().running.is_some()
    }

    fn to_proxy(&self) -> Proxy {
        let (listen, upstream, enabled) = {
            let st = self.state();
            (st.listen.clone(), st.upstream.clone(), st.running.is_some())
        };
        Proxy {
            name: self.name.clone(),
            listen,
            upstream,
            enabled,
            toxics: self.toxics.borrow().toxics(),
        }
    }
}

/// All proxies of one server.
pub(crate) struct Registry {
    proxies: tokio::sync::Mutex<BTreeMap<String, Arc<ProxyEntry>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ids: AtomicU64,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            proxies: tokio::sync::Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            ids: AtomicU64::new(1),
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    async fn entry(&self, name: &str) -> Result<Arc<ProxyEntry>, ApiError> {
        self.proxies
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(ApiError::proxy_not_found)
    }

    pub async fn list(&self) -> BTreeMap<String, Proxy> {
        self.proxies
            .lock()
            .await
            .iter()
            .map(|(name, entry)| (name.clone(), entry.to_proxy()))
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<Proxy, ApiError> {
        Ok(self.entry(name).await?.to_proxy())
    }

    /// Creates a proxy (listening if `enabled`); 409 if the name is taken.
    pub async fn create(&self, proxy: NewProxy) -> Result<Proxy, ApiError> {
        let proxy = validate(proxy, None)?;
        let mut proxies = self.proxies.lock().await;
        if proxies.contains_key(&proxy.name) {
            return Err(ApiError::conflict("proxy already exists"));
        }
        let entry = Arc::new(ProxyEntry::new(&proxy));
        if proxy.enabled {
            self.start(&entry).await?;
        }
        proxies.insert(proxy.name.clone(), Arc::clone(&entry));
        Ok(entry.to_proxy())
    }

    /// Creates or replaces each proxy, after checking all of them. A proxy whose listen address
    /// and upstream are unchanged is kept as it is (toxics, connections and all). On failure the
    /// error comes with the proxies applied before it.
    pub async fn populate(
        &self,
        input: Vec<NewProxy>,
    ) -> Result<Vec<Proxy>, (ApiError, Vec<Proxy>)> {
        let mut checked = Vec::with_capacity(input.len());
        for (i, proxy) in input.into_iter().enumerate() {
            let proxy = validate(proxy, Some(i + 1)).map_err(|err| (err, Vec::new()))?;
            if checked.iter().any(|p: &NewProxy| p.name == proxy.name) {
                return Err((
                    ApiError::bad_request(format!("duplicate proxy name {:?}", proxy.name)),
                    Vec::new(),
                ));
            }
            checked.push(proxy);
        }
        let mut proxies = self.proxies.lock().await;
        let mut applied = Vec::with_capacity(checked.len());
        for proxy in checked {
            if let Some(existing) = proxies.get(&proxy.name) {
                let same = {
                    let st = existing.state();
                    st.upstream == proxy.upstream
                        && (st.listen == proxy.listen || st.requested_listen == proxy.listen)
                };
                if same {
                    applied.push(existing.to_proxy());
                    continue;
                }
                let existing = Arc::clone(existing);
                proxies.remove(&proxy.name);
                self.stop(&existing).await;
            }
            let entry = Arc::new(ProxyEntry::new(&proxy));
            if proxy.enabled
                && let Err(err) = self.start(&entry).await
            {
                return Err((err, applied));
            }
            proxies.insert(proxy.name.clone(), Arc::clone(&entry));
            applied.push(entry.to_proxy());
        }
        Ok(applied)
    }

    /// Changes listen address, upstream or enabled state. A new address or upstream restarts an
    /// enabled proxy (closing its connections), as in Toxiproxy.
    pub async fn update(&self, name: &str, update: ProxyUpdate) -> Result<Proxy, ApiError> {
        let proxies = self.proxies.lock().await;
        let entry = proxies
            .get(name)
            .cloned()
            .ok_or_else(ApiError::proxy_not_found)?;
        let (listen, upstream, enabled) = {
            let st = entry.state();
            let listen = update
                .listen
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| st.listen.clone());
            let upstream = update
                .upstream
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| st.upstream.clone());
            let moved = listen != st.listen || upstream != st.upstream;
            (
                moved.then_some(listen),
                moved.then_some(upstream),
                update.enabled.unwrap_or(st.running.is_some()),
            )
        };
        if let (Some(listen), Some(upstream)) = (listen, upstream) {
            check_upstream(&upstream)?;
            self.stop(&entry).await;
            let mut st = entry.state();
            st.requested_listen.clone_from(&listen);
            st.listen = listen;
            st.upstream = upstream;
        }
        if enabled && !entry.enabled() {
            self.start(&entry).await?;
        } else if !enabled {
            self.stop(&entry).await;
        }
        Ok(entry.to_proxy())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.remove(name).ok_or_else(ApiError::proxy_not_found)?;
        self.stop(&entry).await;
        Ok(())
    }

    /// Enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), ApiError> {
        let proxies = self.proxies.lock().await;
        for entry in proxies.values() {
            if !entry.enabled() {
                self.start(entry).await?;
            }
            entry.toxics.send_if_modified(|set| {
                let changed = !set.is_empty();
                *set = ToxicSet::default();
                changed
            });
        }
        Ok(())
    }

    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, ApiError> {
        Ok(self.entry(proxy).await?.toxics.borrow().toxics())
    }

    pub async fn toxic(&self, proxy: &str, name: &str) -> Result<Toxic, ApiError> {
        let entry = self.entry(proxy).await?;
        let set = entry.toxics.borrow();
        set.find(name)
            .map(|(stream, i)| set.stream(stream)[i].toxic.clone())
            .ok_or_else(ApiError::toxic_not_found)
    }

    /// Adds a toxic (already defaulted and validated); 409 if the name is taken on this proxy.
    pub async fn add_toxic(&self, proxy: &str, toxic: Toxic) -> Result<Toxic, ApiError> {
        let proxies = self.proxies.lock().await;
        let entry = proxies
            .get(proxy)
            .cloned()
            .ok_or_else(ApiError::proxy_not_found)?;
        let id = self.next_id();
        let mut result = Err(ApiError::conflict("toxic already exists"));
        entry.toxics.send_if_modified(|set| {
            if set.find(&toxic.name).is_some() {
                return false;
            }
            set.stream_mut(toxic.stream).push(ActiveToxic {
                id,
                revision: id,
                toxic: toxic.clone(),
            });
            result = Ok(toxic.clone());
            true
        });
        result
    }

    /// Applies a new toxicity and/or attributes to a toxic; its type and stream stay.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        name: &str,
        patch: ToxicPatch,
    ) -> Result<Toxic, ApiError> {
        let proxies = self.proxies.lock().await;
        let entry = proxies
            .get(proxy)
            .cloned()
            .ok_or_else(ApiError::proxy_not_found)?;
        let revision = self.next_id();
        let mut result = Err(ApiError::toxic_not_found());
        entry.toxics.send_if_modified(|set| {
            let Some((stream, i)) = set.find(name) else {
                return false;
            };
            let active = &mut set.stream_mut(stream)[i];
            match patched(&active.toxic, &patch) {
                Ok(toxic) => {
                    active.toxic = toxic.clone();
                    active.revision = revision;
                    result = Ok(toxic);
                    true
                }
                Err(err) => {
                    result = Err(err);
                    false
                }
            }
        });
        result
    }

    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), ApiError> {
        let proxies = self.proxies.lock().await;
        let entry = proxies
            .get(proxy)
            .cloned()
            .ok_or_else(ApiError::proxy_not_found)?;
        let mut found = false;
        entry.toxics.send_if_modified(|set| {
            let Some((stream, i)) = set.find(name) else {
                return false;
            };
            set.stream_mut(stream).remove(i);
            found = true;
            true
        });
        if found {
            Ok(())
        } else {
            Err(ApiError::toxic_not_found())
        }
    }

    pub async fn metrics(&self) -> String {
        let proxies = self.proxies.lock().await;
        let states: Vec<(&ProxyEntry, String, String)> = proxies
            .values()
            .map(|e| {
                let st = e.state();
                (e.as_ref(), st.listen.clone(), st.upstream.clone())
            })
            .collect();
        let samples: Vec<metrics::ProxySample<'_>> = states
            .iter()
            .map(|(e, listen, upstream)| metrics::ProxySample {
                name: &e.name,
                listen,
                upstream,
                counters: &e.counters,
            })
            .collect();
        metrics::render(&samples)
    }

    /// Stops every proxy and waits (bounded) until every task the proxies spawned has ended.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let entries: Vec<Arc<ProxyEntry>> = self.proxies.lock().await.values().cloned().collect();
        for entry in &entries {
            self.stop(entry).await;
        }
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "proxy tasks still running after the shutdown grace period"
            );
        }
    }

    /// Binds the proxy's listen address and starts accepting. The caller holds the collection
    /// lock.
    async fn start(&self, entry: &Arc<ProxyEntry>) -> Result<(), ApiError> {
        let listen = entry.state().listen.clone();
        let addr = resolve_listen(&listen).await?;
        let listener = bind(addr)
            .map_err(|err| ApiError::internal_with_message(format!("listen tcp {addr}: {err}")))?;
        let local = listener
            .local_addr()
            .map_err(|err| ApiError::internal_with_message(format!("listen tcp {addr}: {err}")))?;
        let cancel = self.shutdown.child_token();
        let connections = TaskTracker::new();
        let accept = self.tasks.spawn(accept_loop(
            listener,
            Arc::clone(entry),
            cancel.clone(),
            connections.clone(),
            self.tasks.clone(),
        ));
        let mut st = entry.state();
        st.listen = local.to_string();
        st.running = Some(Running {
            cancel,
            accept,
            connections,
        });
        tracing::info!(proxy = %entry.name, listen = %local, upstream = %st.upstream, "proxy started");
        Ok(())
    }

    /// Closes the listener and every connection of the proxy, waiting (bounded) for them.
    async fn stop(&self, entry: &ProxyEntry) {
        let running = entry.state().running.take();
        let Some(running) = running else {
            return;
        };
        running.cancel.cancel();
        // The accept task owns the listener: once it has ended, the port refuses connections.
        if let Err(err) = running.accept.await {
            tracing::warn!(proxy = %entry.name, error = %err, "the accept task of a proxy failed");
        }
        running.connections.close();
        if tokio::time::timeout(STOP_GRACE, running.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                proxy = %entry.name,
                remaining = running.connections.len(),
                "connections still open after the stop grace period"
            );
        }
        tracing::info!(proxy = %entry.name, "proxy stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    entry: Arc<ProxyEntry>,
    cancel: CancellationToken,
    connections: TaskTracker,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let upstream = entry.state().upstream.clone();
                let ctx = LinkCtx {
                    proxy: entry.name.clone(),
                    upstream,
                    peer,
                    toxics: entry.toxics.subscribe(),
                    counters: Arc::clone(&entry.counters),
                    cancel: cancel.clone(),
                };
                tasks.spawn(connections.track_future(link::serve(socket, ctx)));
            }
            Err(err) => {
                tracing::warn!(proxy = %entry.name, error = %err, "accept failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Checks a proxy definition and fills in defaults. `position` numbers proxies of a populate
/// request in messages, as Toxiproxy does.
fn validate(mut proxy: NewProxy, position: Option<usize>) -> Result<NewProxy, ApiError> {
    let at = position
        .map(|i| format!(" at proxy {i}"))
        .unwrap_or_default();
    if proxy.name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "missing required field: name{at}"
        )));
    }
    if proxy.upstream.is_empty() {
        return Err(ApiError::bad_request(format!(
            "missing required field: upstream{at}"
        )));
    }
    check_upstream(&proxy.upstream)?;
    if proxy.listen.is_empty() {
        DEFAULT_LISTEN.clone_into(&mut proxy.listen);
    }
    Ok(proxy)
}

fn check_upstream(upstream: &str) -> Result<(), ApiError> {
    let valid = upstream
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid upstream address {upstream:?}: expected host:port"
        )))
    }
}

async fn resolve_listen(listen: &str) -> Result<SocketAddr, ApiError> {
    let invalid =
        |why: String| ApiError::bad_request(format!("invalid listen address {listen:?}: {why}"));
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|err| invalid(err.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| invalid("it resolves to no address".to_owned()))
}

/// A listener with `SO_REUSEADDR`, so a proxy disabled and enabled again can bind its old port
/// while connections of the previous listener linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The toxic after a patch: attributes merge field by field into the current ones.
fn patched(toxic: &Toxic, patch: &ToxicPatch) -> Result<Toxic, ApiError> {
    let mut attributes = toxic.attributes.attributes_json();
    match (&patch.attributes, attributes.as_object_mut()) {
        (None | Some(serde_json::Value::Null), _) => {}
        (Some(serde_json::Value::Object(changes)), Some(current)) => {
            for (key, value) in changes {
                current.insert(key.clone(), value.clone());
            }
        }
        (Some(_), _) => {
            return Err(ApiError::bad_request(
                "bad request body: attributes must be an object",
            ));
        }
    }
    let attributes = ToxicAttributes::from_parts(toxic.kind(), attributes)
        .map_err(|err| ApiError::bad_request(format!("bad request body: {err}")))?;
    attributes
        .validate()
        .map_err(|err| ApiError::bad_request(format!("bad request body: {err}")))?;
    Ok(Toxic {
        attributes,
        toxicity: patch.toxicity.unwrap_or(toxic.toxicity),
        ..toxic.clone()
    })
}
