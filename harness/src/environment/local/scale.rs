//! Instances added and removed while the local environment runs.
//!
//! The gateway reads its instance lists from `<run dir>/upstreams.json` ([`discovery`]), each
//! URL where the instance's `gateway-><instance>` link listens on 127.0.0.1.
//!
//! Scaling up ([`ScalePlan`]) starts instances `#n+1..=#count` as they start at boot
//! ([`LocalEnvironment::instance_spec`]), waits until each is ready, links it (its
//! `gateway-><instance>` link is created, its `<instance>->kafka` link was reserved at boot) and
//! only then writes it into the file, so the gateway never sends to an instance that cannot
//! answer yet. Scaling down takes the highest-numbered instances out of the file first, waits
//! [`DISCOVERY_GRACE`] so the gateway stops choosing them, then stops them gracefully (SIGTERM)
//! and removes their processes and links.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::process::Supervised;
use super::{LocalEnvironment, STOP_GRACE};
use crate::environment::discovery::{
    self, DISCOVERY_GRACE, ScalePlan, UPSTREAMS_FILE_NAME, set_upstream_vars,
};
use crate::environment::{Faultable, Service};

impl LocalEnvironment {
    /// Where the gateway finds its instance lists.
    pub fn upstreams_file(&self) -> PathBuf {
        self.run_dir.path().join(UPSTREAMS_FILE_NAME)
    }

    /// Each service's instances as the gateway reaches them (through their `gateway->...`
    /// links), in instance order.
    pub(super) fn upstream_lists(&self) -> BTreeMap<Service, Vec<String>> {
        discovery::upstream_lists(&self.links)
    }

    /// Writes the instance lists into the upstreams file, and into the gateway's variables so
    /// that a restarted gateway starts with them too.
    pub(super) fn publish_upstreams(&mut self) -> anyhow::Result<()> {
        let lists = self.upstream_lists();
        discovery::write_upstreams_file(&self.upstreams_file(), &lists)?;
        if let Some(gateway) = self
            .processes
            .iter_mut()
            .find(|p| p.spec.name == super::GATEWAY)
        {
            set_upstream_vars(&mut gateway.spec.env, &lists);
        }
        Ok(())
    }

    /// Sends the processes to scrape to whoever watches them: an instance added is scraped
    /// from when it is ready, one removed no more once it leaves.
    pub(super) fn publish_metrics_targets(&self) {
        self.scrape_targets
            .send_replace(crate::environment::Environment::metrics_targets(self));
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
    /// them was started is gone again.
    async fn scale_up(
        &mut self,
        service: Service,
        numbers: RangeInclusive<usize>,
    ) -> anyhow::Result<()> {
        let specs: Vec<_> = numbers.map(|n| self.instance_spec(service, n)).collect();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let added = async {
            self.start_instances(specs).await?;
            let proxies = self.chaos_client()?;
            for name in &names {
                self.link_instance(&proxies, name).await?;
                let kafka = self
                    .kafka_links
                    .get(name)
                    .with_context(|| format!("no link to the broker was reserved for {name}"))?
                    .clone();
                self.links.push(kafka);
            }
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

    /// Takes `names` out of the upstreams file, waits `grace`, stops them gracefully, and
    /// removes their processes and links (their links to the broker stay reserved, outside
    /// [`Self::links`], for when they are added again).
    async fn remove_instances(&mut self, names: &[String], grace: Duration) -> anyhow::Result<()> {
        let gateway_links: Vec<String> = names.iter().map(|n| format!("gateway->{n}")).collect();
        let their_links = discovery::links_of_instances(names);
        self.links.retain(|l| !their_links.contains(&l.name));
        self.publish_upstreams()?;
        tokio::time::sleep(grace).await;
        let (mut leaving, staying): (Vec<Supervised>, Vec<Supervised>) =
            std::mem::take(&mut self.processes)
                .into_iter()
                .partition(|p| names.contains(&p.spec.name));
        self.processes = staying;
        self.publish_metrics_targets();
        futures::future::join_all(leaving.iter_mut().map(|p| p.stop(STOP_GRACE))).await;
        for p in &leaving {
            self.retired_logs
                .insert(p.spec.name.clone(), p.spec.log_file.clone());
        }
        // After the stop: the link carried the instance's last answers while it drained.
        let proxies = self.chaos_client()?;
        for link in &gateway_links {
            match proxies.delete_proxy(link).await {
                Err(e) if !e.is_not_found() => {
                    return Err(e).with_context(|| format!("deleting the proxy {link}"));
                }
                _ => {}
            }
        }
        tracing::info!(removed = ?names, "scaled down");
        Ok(())
    }
}
