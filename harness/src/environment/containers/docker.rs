//! The few Docker operations the containers backend needs, over the engine's API (bollard).
//!
//! Why not testcontainers: it is built on the same bollard, but pins bollard's newest API
//! version and never negotiates, so an engine that speaks an older API (Debian 12's Docker 20.10
//! answers up to 1.41) refuses every call with "client version 1.5x is too new". bollard's
//! `negotiate_version` talks to any engine from 1.24 on. What testcontainers would add, a
//! container whose lifetime is a value's, is [`super::ContainersEnvironment`]'s `Drop`, which
//! removes everything of its run by label.
//!
//! Every container and network carries three labels: [`LABEL_HARNESS`], the run id
//! ([`LABEL_RUN`]) and the pid of the harness that made it ([`LABEL_PID`]). [`Docker::sweep`]
//! removes what a harness that is no longer running left behind (one killed with SIGKILL), and
//! leaves the runs of harnesses still running alone, so parallel tests do not remove each
//! other's containers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HostConfig, Ipam,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;

/// Marks everything a harness made.
pub const LABEL_HARNESS: &str = "io.reference-system.harness";
/// The run a container or network belongs to.
pub const LABEL_RUN: &str = "io.reference-system.run";
/// The pid of the harness process that made it.
pub const LABEL_PID: &str = "io.reference-system.pid";

/// How long pulling an image that is not there may take before we give up.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// One container to run.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The container's name in the engine (unique per run).
    pub name: String,
    pub image: String,
    /// Arguments after the image's entrypoint; empty keeps the image's default command.
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Names other containers of the network reach it by.
    pub aliases: Vec<String>,
    /// Container port to the host port it is published on, on 127.0.0.1 only.
    pub ports: Vec<(u16, u16)>,
    /// Host directories mounted into it, as the engine takes them: `/host/dir:/in/container:ro`.
    pub binds: Vec<String>,
    /// Cores it may use (`docker run --cpus`); `None`: no limit of its own.
    pub cpus: Option<f64>,
}

/// What state a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Paused,
    /// Created, exited, dead or being removed.
    Down,
}

/// A Docker engine, with the API version negotiated.
#[derive(Clone)]
pub struct Docker {
    api: bollard::Docker,
}

impl Docker {
    /// Connects to the engine at `DOCKER_HOST` or the local socket and agrees on an API version.
    pub async fn connect() -> anyhow::Result<Self> {
        let api = bollard::Docker::connect_with_local_defaults()
            .context("no Docker engine configured (DOCKER_HOST or /var/run/docker.sock)")?;
        let api = tokio::time::timeout(Duration::from_secs(10), api.negotiate_version())
            .await
            .map_err(|_| anyhow::anyhow!("the Docker engine did not answer within 10 s"))?
            .context(
                "no Docker engine answers (is the daemon running, and may we use its socket?)",
            )?;
        Ok(Self { api })
    }

    /// The labels of everything run `run_id` makes.
    pub fn labels(run_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_HARNESS.to_string(), "true".to_string()),
            (LABEL_RUN.to_string(), run_id.to_string()),
            (LABEL_PID.to_string(), std::process::id().to_string()),
        ])
    }

    /// Makes sure `image` is there: used as it is when present (a locally built image is never
    /// pulled), pulled otherwise.
    pub async fn ensure_image(&self, image: &str, hint: &str) -> anyhow::Result<()> {
        if self.api.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (name, tag) = split_tag(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut progress = self.api.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                bail!("the image {image} is not here and pulling it failed ({e}); {hint}")
            }
            Err(_) => bail!("the image {image} is not here and pulling it timed out; {hint}"),
        }
    }

    /// Creates a bridge network and returns the host's address on it (its gateway).
    pub async fn create_network(&self, name: &str, run_id: &str) -> anyhow::Result<String> {
        self.api
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(Self::labels(run_id)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the network {name}"))?;
        let inspect = self
            .api
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .with_context(|| format!("inspecting the network {name}"))?;
        inspect
            .ipam
            .and_then(|Ipam { config, .. }| config)
            .into_iter()
            .flatten()
            .find_map(|c| c.gateway.filter(|g| !g.contains(':')))
            .with_context(|| format!("the network {name} has no IPv4 gateway"))
    }

    /// Creates and starts a container on `network` with the run's labels.
    pub async fn run(
        &self,
        spec: &ContainerSpec,
        network: &str,
        run_id: &str,
    ) -> anyhow::Result<()> {
        let port_bindings = spec
            .ports
            .iter()
            .map(|(container, host)| {
                (
                    format!("{container}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(host.to_string()),
                    }]),
                )
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(Self::labels(run_id)),
            exposed_ports: Some(spec.ports.iter().map(|(c, _)| format!("{c}/tcp")).collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
                network_mode: Some(network.to_string()),
                init: Some(true),
                // As `docker run --cpus` does: billionths of a core. Validated to at most 256.
                #[allow(clippy::cast_possible_truncation)]
                nano_cpus: spec.cpus.map(|c| (c * 1e9).round() as i64),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_string(),
                    EndpointSettings {
                        aliases: Some(spec.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        self.api
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating the container {} ({})", spec.name, spec.image))?;
        self.start(&spec.name).await
    }

    pub async fn start(&self, name: &str) -> anyhow::Result<()> {
        self.api
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .with_context(|| format!("starting the container {name}"))
    }

    /// SIGKILL.
    pub async fn kill(&self, name: &str) -> anyhow::Result<()> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        self.api
            .kill_container(name, Some(options))
            .await
            .with_context(|| format!("killing the container {name}"))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<()> {
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
            .build();
        self.api
            .stop_container(name, Some(options))
            .await
            .with_context(|| format!("stopping the container {name}"))
    }

    /// Removes the container (and its anonymous volumes), running or not; one that is not
    /// there is no error.
    pub async fn remove(&self, name: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.api.remove_container(name, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the container {name}")),
        }
    }

    pub async fn pause(&self, name: &str) -> anyhow::Result<()> {
        self.api
            .pause_container(name)
            .await
            .with_context(|| format!("pausing the container {name}"))
    }

    pub async fn unpause(&self, name: &str) -> anyhow::Result<()> {
        self.api
            .unpause_container(name)
            .await
            .with_context(|| format!("unpausing the container {name}"))
    }

    async fn inspect(
        &self,
        name: &str,
    ) -> anyhow::Result<bollard::models::ContainerInspectResponse> {
        self.api
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .with_context(|| format!("inspecting the container {name}"))
    }

    pub async fn state(&self, name: &str) -> anyhow::Result<State> {
        let inspect = self.inspect(name).await?;
        Ok(match inspect.state.and_then(|s| s.status) {
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => {
                State::Running
            }
            Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
            _ => State::Down,
        })
    }

    /// Cuts the container off the network: nothing reaches it, it reaches nothing.
    pub async fn disconnect(&self, network: &str, name: &str) -> anyhow::Result<()> {
        self.api
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: name.to_string(),
                    force: Some(true),
                },
            )
            .await
            .with_context(|| format!("disconnecting {name} from {network}"))
    }

    /// Joins the container to the network again under its aliases.
    pub async fn reconnect(
        &self,
        network: &str,
        name: &str,
        aliases: &[String],
    ) -> anyhow::Result<()> {
        self.api
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: name.to_string(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: Some(aliases.to_vec()),
                        ..Default::default()
                    }),
                },
            )
            .await
            .with_context(|| format!("connecting {name} to {network}"))
    }

    /// Whether the container is attached to the network.
    pub async fn is_connected(&self, network: &str, name: &str) -> anyhow::Result<bool> {
        let inspect = self.inspect(name).await?;
        Ok(inspect
            .network_settings
            .and_then(|n| n.networks)
            .is_some_and(|n| n.contains_key(network)))
    }

    /// The container's output so far (stdout and stderr), the last `tail` lines.
    pub async fn logs(&self, name: &str, tail: usize) -> anyhow::Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.api.logs(name, Some(options));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading the logs of {name}"))?;
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(out)
    }

    /// Writes everything the container printed so far (stdout and stderr) to `path`.
    pub async fn logs_to_file(&self, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("all")
            .build();
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut stream = self.api.logs(name, Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading the logs of {name}"))?;
            file.write_all(&chunk.into_bytes())
                .await
                .with_context(|| format!("writing {}", path.display()))?;
        }
        file.flush()
            .await
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Removes every container and network of the run; returns how many things it removed.
    pub async fn remove_run(&self, run_id: &str) -> anyhow::Result<usize> {
        self.remove_labelled(&format!("{LABEL_RUN}={run_id}"), |_| true)
            .await
    }

    /// Removes what harnesses that are no longer running left behind; returns how many things
    /// it removed.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        self.remove_labelled(LABEL_HARNESS, |labels| {
            labels
                .get(LABEL_PID)
                .and_then(|p| p.parse::<i32>().ok())
                .is_none_or(|pid| !alive(pid))
        })
        .await
    }

    async fn remove_labelled(
        &self,
        label: &str,
        select: impl Fn(&HashMap<String, String>) -> bool,
    ) -> anyhow::Result<usize> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let containers = self
            .api
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .context("listing containers")?;
        let mut removed = 0;
        let mut first_error = None;
        for c in containers {
            let (Some(id), labels) = (c.id, c.labels.unwrap_or_default()) else {
                continue;
            };
            if !select(&labels) {
                continue;
            }
            let options = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.api.remove_container(&id, Some(options)).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_error
                        .get_or_insert(anyhow::Error::from(e).context("removing a container"));
                }
            }
        }
        let networks = self
            .api
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .context("listing networks")?;
        for n in networks {
            let (Some(id), labels) = (n.id, n.labels.unwrap_or_default()) else {
                continue;
            };
            if !select(&labels) {
                continue;
            }
            match self.api.remove_network(&id).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_error.get_or_insert(anyhow::Error::from(e).context("removing a network"));
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }
}

/// `name:tag`, the tag defaulting to `latest` (a registry port is not a tag).
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Whether a process with this pid exists on this machine.
fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // It exists but is not ours to signal.
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_name_and_tag() {
        assert_eq!(split_tag("postgres:16"), ("postgres", "16"));
        assert_eq!(split_tag("apache/kafka"), ("apache/kafka", "latest"));
        assert_eq!(
            split_tag("localhost:5000/reference-system/services"),
            ("localhost:5000/reference-system/services", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/x:dev"),
            ("localhost:5000/x", "dev")
        );
    }

    #[test]
    fn this_process_is_alive_and_an_impossible_pid_is_not() {
        assert!(alive(i32::try_from(std::process::id()).unwrap()));
        assert!(!alive(i32::MAX - 1));
    }
}
