//! Instances added and removed while the containerized environment runs.
//!
//! The same plan as the local backend's ([`discovery::ScalePlan`]), with containers. Scaling up
//! creates the new instances' links to their database and to the broker through Toxiproxy's
//! API (the broker's listener for each instance there may be was opened at start, see
//! [`super::Slot`]), runs their containers on the run's network as instances run at boot, waits
//! until each is ready, creates their `gateway-><instance>` links and only then writes them into
//! the upstreams file, which the gateway's container reads through its mount of the run's
//! discovery directory. Scaling down takes the highest-numbered instances out of the file first,
//! waits [`DISCOVERY_GRACE`] so the gateway stops choosing them, stops their containers
//! gracefully (`docker stop`: SIGTERM, so readiness goes down and in-flight work drains), keeps
//! their logs for the report, removes the containers and deletes their links. Either way the
//! metrics targets are sent again, so a scraper watching them follows.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{ContainersEnvironment, Member, STOP_GRACE, Slot, own_links};
use crate::environment::discovery::{self, DISCOVERY_GRACE, ScalePlan, UPSTREAMS_FILE_NAME};
use crate::environment::{Environment, Faultable, Service};

impl ContainersEnvironment {
    /// The host directory mounted read-only into the gateway's container.
    pub(super) fn discovery_dir(&self) -> PathBuf {
        self.run_dir.path().join("discovery")
    }

    /// Where the harness writes the gateway's instance lists (on the host).
    pub fn upstreams_file(&self) -> PathBuf {
        self.discovery_dir().join(UPSTREAMS_FILE_NAME)
    }

    /// Writes the instance lists into the upstreams file. A gateway container started again
    /// after a kill starts with the lists it was created with, and takes the file's on its
    /// first look (at once).
    pub(super) fn publish_upstreams(&self) -> anyhow::Result<()> {
        discovery::write_upstreams_file(
            &self.upstreams_file(),
            &discovery::upstream_lists(&self.links),
        )
    }

    /// Sends the containers to scrape to whoever watches them: an instance added is scraped
    /// from when it is ready, one removed no more once it leaves.
    pub(super) fn publish_metrics_targets(&self) {
        self.scrape_targets.send_replace(self.metrics_targets());
    }

    /// [`Faultable::scale`] on this backend; see the module documentation.
    pub(super) async fn scale_service(
        &mut self,
        service: Service,
        count: usize,
    ) -> anyhow::Result<()> {
        match ScalePlan::new(service, self.instance_count(service), count)? {
            ScalePlan::Up(numbers) => self.scale_up(service, numbers).await,
            ScalePlan::Down(leaving) => self.remove_instances(&leaving, DISCOVERY_GRACE).await,
            ScalePlan::Stay => Ok(()),
        }
    }

    /// Starts, links and publishes the instances `numbers` of `service`; on failure, whatever of
    /// them was made is gone again.
    async fn scale_up(
        &mut self,
        service: Service,
        numbers: RangeInclusive<usize>,
    ) -> anyhow::Result<()> {
        let slots: Vec<Slot> = numbers.map(|n| Slot { service, n }).collect();
        let names: Vec<String> = slots.iter().map(|s| s.name()).collect();
        let added = async {
            let proxies = self.chaos_client()?;
            self.create_links(&proxies, &own_links(&slots)).await?;
            for slot in &slots {
                self.launch_instance(*slot).await?;
            }
            self.wait_for(|m| names.contains(&m.name)).await?;
            let gateway_links: Vec<_> = slots.iter().map(|s| s.gateway_link()).collect();
            self.create_links(&proxies, &gateway_links).await?;
            self.sort_links();
            self.publish_metrics_targets();
            self.publish_upstreams()
        }
        .await;
        if let Err(e) = added {
            // The gateway never heard of them: the file is written last.
            if let Err(cleanup) = self.remove_instances(&names, Duration::ZERO).await {
                tracing::warn!(error = %format!("{cleanup:#}"), "removing the instances that did not start");
            }
            return Err(e.context(format!("adding {}", names.join(", "))));
        }
        tracing::info!(%service, added = ?names, "scaled up");
        Ok(())
    }

    /// Takes `names` out of the upstreams file, waits `grace`, stops their containers
    /// gracefully, keeps their logs, removes the containers and deletes their links. Goes on
    /// when one step fails for one of them, so nothing of theirs is left; reports the first
    /// failure.
    async fn remove_instances(&mut self, names: &[String], grace: Duration) -> anyhow::Result<()> {
        let their_links = discovery::links_of_instances(names);
        self.links.retain(|l| !their_links.contains(&l.name));
        self.publish_upstreams()?;
        tokio::time::sleep(grace).await;
        let (leaving, staying): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| names.contains(&m.name));
        self.members = staying;
        self.publish_metrics_targets();
        let mut first_error = None;
        let stops = leaving
            .iter()
            .map(|m| self.docker.stop(&m.container, STOP_GRACE));
        for (m, stopped) in leaving.iter().zip(futures::future::join_all(stops).await) {
            // One that never started, or was killed, has nothing to stop; removing it is all.
            if let Err(e) = stopped {
                tracing::debug!(error = %format!("{e:#}"), "stopping {}", m.container);
            }
        }
        for m in &leaving {
            if let Err(e) = self.retire(m).await {
                first_error.get_or_insert(e);
            }
        }
        // After the stop: the link carried the instance's last answers while it drained.
        let proxies = self.chaos_client()?;
        for link in &their_links {
            match proxies.delete_proxy(link).await {
                Err(e) if !e.is_not_found() => {
                    first_error.get_or_insert(
                        anyhow::Error::from(e).context(format!("deleting the proxy {link}")),
                    );
                }
                _ => {}
            }
        }
        tracing::info!(removed = ?names, "scaled down");
        first_error.map_or(Ok(()), Err)
    }

    /// Keeps the log of a stopped instance's container in the run directory, then removes the
    /// container (also when its log could not be kept).
    async fn retire(&mut self, m: &Member) -> anyhow::Result<()> {
        let kept = self.keep_log(m).await;
        let removed = self
            .docker
            .remove(&m.container)
            .await
            .with_context(|| format!("removing {} ({})", m.name, m.container));
        removed.and(kept)
    }

    async fn keep_log(&mut self, m: &Member) -> anyhow::Result<()> {
        let dir = self.run_dir.path().join("retired");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(crate::environment::log_file_name(&m.name));
        // Written aside first: an instance added again that never started must not empty the
        // log its earlier run left.
        let part = log.with_extension("log.part");
        if let Err(e) = self.docker.logs_to_file(&m.container, &part).await {
            // A container that was never created has no log.
            tracing::debug!(error = %format!("{e:#}"), "saving the log of {}", m.name);
            return Ok(());
        }
        std::fs::rename(&part, &log)
            .with_context(|| format!("renaming {} to {}", part.display(), log.display()))?;
        self.retired_logs.insert(m.name.clone(), log);
        Ok(())
    }
}
