//! Instances added and removed while the local environment runs, and the file that tells the
//! gateway which instances there are.
//!
//! The gateway reads its instance lists from `<run dir>/upstreams.json` (`UPSTREAMS_FILE`), a
//! file it looks at every 500 ms and takes again whenever it changed:
//! `{"inventory": ["http://127.0.0.1:P"], "order": [...], "payment": [...]}`, each URL where
//! the instance's `gateway-><instance>` link listens. The file is replaced in one rename, so the
//! gateway never reads half of it.
//!
//! Scaling up starts instances `#n+1..=#count` as they start at boot
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
use crate::environment::{Faultable, Instances, Service};

/// The gateway's variable naming the file of instance lists.
pub const UPSTREAMS_FILE_VAR: &str = "UPSTREAMS_FILE";

/// The gateway's variables with the instance lists it starts with.
const URL_VARS: [(Service, &str); 3] = [
    (Service::Order, "ORDER_URLS"),
    (Service::Inventory, "INVENTORY_URLS"),
    (Service::Payment, "PAYMENT_URLS"),
];

/// How long an instance taken out of the upstreams file keeps running: the gateway looks at
/// the file every 500 ms, so three looks later it sends nothing new there.
pub const DISCOVERY_GRACE: Duration = Duration::from_millis(1500);

/// Sets the gateway's start-up variables (`ORDER_URLS`, ...) to `lists`.
pub fn set_upstream_vars(
    env: &mut BTreeMap<String, String>,
    lists: &BTreeMap<Service, Vec<String>>,
) {
    for (service, var) in URL_VARS {
        env.insert(
            var.into(),
            lists.get(&service).map(|u| u.join(",")).unwrap_or_default(),
        );
    }
}

/// The upstreams file's text: each service by name with its URLs.
pub fn upstreams_json(lists: &BTreeMap<Service, Vec<String>>) -> String {
    let by_name: BTreeMap<&str, &Vec<String>> =
        lists.iter().map(|(s, urls)| (s.name(), urls)).collect();
    serde_json::json!(by_name).to_string()
}

impl LocalEnvironment {
    /// Where the gateway finds its instance lists.
    pub fn upstreams_file(&self) -> PathBuf {
        self.run_dir.path().join("upstreams.json")
    }

    /// Each service's instances as the gateway reaches them (through their `gateway->...`
    /// links), in instance order.
    pub(super) fn upstream_lists(&self) -> BTreeMap<Service, Vec<String>> {
        let mut lists: BTreeMap<Service, Vec<(u32, String)>> = BTreeMap::new();
        for link in &self.links {
            let Some((service, n)) = link
                .name
                .strip_prefix("gateway->")
                .and_then(|instance| instance.split_once('#'))
            else {
                continue;
            };
            if let (Ok(service), Ok(n)) = (Service::parse(service), n.parse::<u32>()) {
                lists
                    .entry(service)
                    .or_default()
                    .push((n, format!("http://{}", link.listen)));
            }
        }
        lists
            .into_iter()
            .map(|(service, mut urls)| {
                urls.sort();
                (service, urls.into_iter().map(|(_, url)| url).collect())
            })
            .collect()
    }

    /// Writes the instance lists into the upstreams file, and into the gateway's variables so
    /// that a restarted gateway starts with them too.
    pub(super) fn publish_upstreams(&mut self) -> anyhow::Result<()> {
        let lists = self.upstream_lists();
        let path = self.upstreams_file();
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, upstreams_json(&lists))
            .with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, &path)
            .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))?;
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
        Instances::check_count(count).map_err(|e| anyhow::anyhow!("scaling {service}: {e}"))?;
        let now = self.instance_count(service);
        if count > now {
            self.scale_up(service, now + 1..=count).await
        } else if count < now {
            let leaving: Vec<String> = (count + 1..=now)
                .rev()
                .map(|n| format!("{service}#{n}"))
                .collect();
            self.remove_instances(&leaving, DISCOVERY_GRACE).await
        } else {
            Ok(())
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
        let kafka_links: Vec<String> = names.iter().map(|n| format!("{n}->kafka")).collect();
        self.links
            .retain(|l| !gateway_links.contains(&l.name) && !kafka_links.contains(&l.name));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstreams_file_names_each_service_with_its_urls() {
        let lists = BTreeMap::from([
            (Service::Order, vec!["http://127.0.0.1:1".to_string()]),
            (
                Service::Payment,
                vec![
                    "http://127.0.0.1:2".to_string(),
                    "http://127.0.0.1:3".into(),
                ],
            ),
        ]);
        let json: serde_json::Value = serde_json::from_str(&upstreams_json(&lists)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "order": ["http://127.0.0.1:1"],
                "payment": ["http://127.0.0.1:2", "http://127.0.0.1:3"],
            })
        );
        let mut env = BTreeMap::new();
        set_upstream_vars(&mut env, &lists);
        assert_eq!(env["ORDER_URLS"], "http://127.0.0.1:1");
        assert_eq!(env["PAYMENT_URLS"], "http://127.0.0.1:2,http://127.0.0.1:3");
        assert_eq!(env["INVENTORY_URLS"], "");
    }
}
