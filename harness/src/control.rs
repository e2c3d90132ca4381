//! Game days: `harness up` serves a small control API on loopback so that `harness chaos`, run
//! from another terminal, can fault the processes it supervises (a killed instance must be
//! restarted by its supervisor, on the same port); links are faulted through the chaos-proxy's
//! Toxiproxy API directly. Both addresses are in the env file.
//!
//! | request | effect |
//! |---|---|
//! | `POST /processes/{name}/kill` | SIGKILL (stays down until `restart` or `heal`) |
//! | `POST /processes/{name}/stop` | SIGTERM, graceful |
//! | `POST /processes/{name}/pause`, `/resume` | SIGSTOP, SIGCONT |
//! | `POST /processes/{name}/restart` | start a killed or stopped process again |
//! | `POST /processes/{name}/heal` | resume it if it runs, restart it if not |
//! | `POST /processes/{name}/disconnect`, `/reconnect` | off the run's network and back (containers backend) |
//! | `POST /heal` | every proxy reset, every process running and resumed |
//! | `POST /scale/{service}/{count}` | run `count` instances of `service` (1 to 8): new ones join the gateway's rotation once ready, the highest-numbered leave it and stop gracefully |
//!
//! Answers are `204` or a JSON error `{"error": "..."}` with 400 (a bad service or count), 404
//! (unknown process or action) or 500. The env file and `prometheus.yml` are written when the
//! API starts and again after each scaling, so `harness chaos` and a Prometheus of one's own see
//! the instances there are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::environment::{EnvInfo, Environment, Faultable, Instances, LinkInfo, Service};

/// The environment `harness up` runs, shared with the control API's handlers.
pub type Shared = Arc<Mutex<Box<dyn Environment>>>;

/// What the handlers share: the environment, and where it is described for others.
#[derive(Clone)]
struct Control {
    env: Shared,
    /// The control API's own URL, for the env file.
    url: String,
    env_file: Option<PathBuf>,
}

/// Serves the control API for `env` on `127.0.0.1:0` until `stop` is cancelled, after writing
/// `prometheus.yml` and, when given, the env file; returns where it listens and what the env
/// file says.
pub async fn serve(
    env: Shared,
    stop: CancellationToken,
    env_file: Option<PathBuf>,
) -> anyhow::Result<(SocketAddr, EnvInfo)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the control API")?;
    let addr = listener.local_addr()?;
    let control = Control {
        env,
        url: format!("http://{addr}"),
        env_file,
    };
    let info = {
        let env = control.env.lock().await;
        publish(env.as_ref(), &control)?
    };
    let app = Router::new()
        .route("/processes/{name}/{action}", post(process_action))
        .route("/heal", post(heal))
        .route("/scale/{service}/{count}", post(scale))
        .with_state(control);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the control API stopped");
        }
    });
    Ok((addr, info))
}

/// Writes `prometheus.yml` and the env file (when there is one) for `env` as it is now.
fn publish(env: &dyn Environment, control: &Control) -> anyhow::Result<EnvInfo> {
    let mut info = env.info();
    info.control_url = Some(control.url.clone());
    let prometheus = env
        .write_prometheus_config()
        .context("writing prometheus.yml")?;
    info.prometheus_config = Some(prometheus.display().to_string());
    if let Some(path) = &control.env_file {
        let json = serde_json::to_string_pretty(&info).context("serializing the env file")?;
        // Written aside and renamed, so `harness chaos` never reads half of it.
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, json)
            .with_context(|| format!("writing the env file {}", temp.display()))?;
        std::fs::rename(&temp, path)
            .with_context(|| format!("writing the env file {}", path.display()))?;
    }
    Ok(info)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn process_action(
    State(control): State<Control>,
    Path((name, action)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut env = control.env.lock().await;
    if !env.process_names().contains(&name) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no process named {name:?}; there are {}",
                env.process_names().join(", ")
            ),
        ));
    }
    let done = match action.as_str() {
        "kill" => env.kill(&name).await,
        "stop" => env.stop_instance(&name).await,
        "pause" => env.pause(&name).await,
        "resume" => env.resume(&name).await,
        "restart" => env.restart(&name).await,
        "heal" => env.heal_process(&name).await,
        "disconnect" => env.disconnect(&name).await,
        "reconnect" => env.reconnect(&name).await,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown action {other:?}: expected kill, stop, pause, resume, restart, heal, \
                     disconnect or reconnect"
                ),
            ));
        }
    };
    done.map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

/// Heals everything; the env file is written again, as healing may scale services back.
async fn heal(State(control): State<Control>) -> Result<StatusCode, ApiError> {
    let internal = |e: anyhow::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let mut env = control.env.lock().await;
    let healed = env.heal_all().await;
    publish(env.as_ref(), &control).map_err(internal)?;
    healed.map(|()| StatusCode::NO_CONTENT).map_err(internal)
}

async fn scale(
    State(control): State<Control>,
    Path((service, count)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (service, count) =
        scale_request(&service, &count).map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    let internal = |e: anyhow::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let mut env = control.env.lock().await;
    env.scale(service, count).await.map_err(internal)?;
    publish(env.as_ref(), &control).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The service and count of `POST /scale/{service}/{count}`.
fn scale_request(service: &str, count: &str) -> Result<(Service, usize), String> {
    let service = Service::parse(service)?;
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| format!("{service}: {count:?} is not a number of instances"))?;
    Instances::check_count(count).map_err(|m| format!("{service}: {m}"))?;
    Ok((service, count))
}

/// A `harness up` seen through its env file: links through the Toxiproxy API, processes through
/// the control API.
pub struct Remote {
    /// The env file it was read from, read again after a scaling.
    env_file: PathBuf,
    /// The backend `harness up` runs (`local`, `containers`): which faults and targets exist.
    pub backend: crate::scenario::Backend,
    pub toxiproxy_url: String,
    pub control_url: String,
    pub links: Vec<LinkInfo>,
    pub processes: Vec<String>,
    http: reqwest::Client,
}

/// The parts of the env file `harness chaos` reads.
#[derive(Deserialize)]
struct EnvFile {
    /// Absent in env files written before there were two backends.
    #[serde(default = "local_backend")]
    backend: crate::scenario::Backend,
    toxiproxy_url: String,
    control_url: Option<String>,
    links: Vec<LinkInfo>,
    processes: Vec<ProcessName>,
}

fn local_backend() -> crate::scenario::Backend {
    crate::scenario::Backend::Local
}

#[derive(Deserialize)]
struct ProcessName {
    name: String,
}

impl Remote {
    /// Reads the env file `harness up --env-file` wrote.
    pub fn from_env_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {}; start the system with `harness up --env-file {}` first",
                path.display(),
                path.display()
            )
        })?;
        let env: EnvFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an env file of `harness up`", path.display()))?;
        Ok(Self {
            env_file: path.to_path_buf(),
            backend: env.backend,
            toxiproxy_url: env.toxiproxy_url,
            control_url: env.control_url.with_context(|| {
                format!(
                    "{} has no control_url: it was not written by `harness up`",
                    path.display()
                )
            })?,
            links: env.links,
            processes: env.processes.into_iter().map(|p| p.name).collect(),
            http: reqwest::Client::new(),
        })
    }

    /// POSTs to the control API at the path made of `segments`, each percent-encoded
    /// (`order#1` has a `#`).
    async fn post(&self, segments: &[&str]) -> anyhow::Result<()> {
        let mut url = reqwest::Url::parse(&self.control_url)
            .with_context(|| format!("the env file's control_url {:?}", self.control_url))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("control_url {} cannot be a base", self.control_url))?
            .pop_if_empty()
            .extend(segments);
        let answer = self
            .http
            .post(url.clone())
            .send()
            .await
            .with_context(|| format!("reaching `harness up` at {url}; is it still running?"))?;
        if answer.status().is_success() {
            return Ok(());
        }
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no detail").to_string();
        anyhow::bail!("{url}: {status}: {message}")
    }

    /// Resumes the process if it runs, restarts it if not.
    pub async fn heal_process(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "heal"]).await
    }
}

#[async_trait::async_trait]
impl Faultable for Remote {
    fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    fn process_names(&self) -> Vec<String> {
        self.processes.clone()
    }

    fn chaos_client(&self) -> anyhow::Result<chaos::Client> {
        chaos::Client::new(&self.toxiproxy_url).context("creating the chaos-proxy client")
    }

    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "kill"]).await
    }

    async fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "pause"]).await
    }

    async fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "resume"]).await
    }

    async fn stop_instance(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "stop"]).await
    }

    async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "restart"]).await
    }

    async fn disconnect(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "disconnect"]).await
    }

    async fn reconnect(&mut self, name: &str) -> anyhow::Result<()> {
        self.post(&["processes", name, "reconnect"]).await
    }

    async fn heal_all(&mut self) -> anyhow::Result<()> {
        self.post(&["heal"]).await
    }

    /// Then reads the env file again, which `harness up` rewrote with the new instances.
    async fn scale(&mut self, service: Service, count: usize) -> anyhow::Result<()> {
        self.post(&["scale", service.name(), &count.to_string()])
            .await?;
        *self = Self::from_env_file(&self.env_file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_scale_request_says_what_was_wrong() {
        assert_eq!(scale_request("order", "3"), Ok((Service::Order, 3)));
        let e = scale_request("shipping", "2").unwrap_err();
        assert!(e.contains("\"shipping\" is not a service"), "{e}");
        let e = scale_request("order", "many").unwrap_err();
        assert!(e.contains("\"many\" is not a number"), "{e}");
        for bad in ["0", "9"] {
            let e = scale_request("payment", bad).unwrap_err();
            assert!(e.contains("between 1 and 8"), "{e}");
        }
    }
}
