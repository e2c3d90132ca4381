//! Service discovery as every backend does it: the file that tells the gateway which instances
//! there are, and what scaling a service to a count means.
//!
//! The gateway reads its instance lists from the file its `UPSTREAMS_FILE` names, looks at it
//! every 500 ms and takes it again whenever it changed:
//! `{"inventory": ["http://..."], "order": [...], "payment": [...]}`, each URL where the
//! instance's `gateway-><instance>` link listens as the gateway reaches it (`127.0.0.1:P` on the
//! local backend, `toxiproxy:P` on the containers backend). The file is replaced in one rename,
//! so the gateway never reads half of it.
//!
//! Scaling follows one plan on every backend ([`ScalePlan`]): up starts the missing
//! instances (`#n+1..=#count`), waits until each is ready and linked, and only then writes them
//! into the file, so the gateway never sends to an instance that cannot answer yet; down takes
//! the highest-numbered instances out of the file first, waits [`DISCOVERY_GRACE`] so the
//! gateway stops choosing them, and only then stops them gracefully.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{Instances, LinkInfo, Service};

/// The gateway's variable naming the file of instance lists.
pub const UPSTREAMS_FILE_VAR: &str = "UPSTREAMS_FILE";

/// The file's name, wherever a backend keeps it.
pub const UPSTREAMS_FILE_NAME: &str = "upstreams.json";

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

/// Each service's instances as the gateway reaches them, from the `gateway-><instance>` links
/// among `links`, in instance order.
pub fn upstream_lists(links: &[LinkInfo]) -> BTreeMap<Service, Vec<String>> {
    let mut lists: BTreeMap<Service, Vec<(u32, String)>> = BTreeMap::new();
    for link in links {
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

/// Replaces the upstreams file at `path` with `lists` in one rename.
pub fn write_upstreams_file(
    path: &Path,
    lists: &BTreeMap<Service, Vec<String>>,
) -> anyhow::Result<()> {
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, upstreams_json(lists))
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
}

/// What scaling a service from `now` instances to a count does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalePlan {
    /// Start these instance numbers.
    Up(RangeInclusive<usize>),
    /// Remove these instances, highest-numbered first (`order#3`, `order#2`).
    Down(Vec<String>),
    /// Already at the count.
    Stay,
}

impl ScalePlan {
    /// From `now` instances of `service` to `count`, which must be one an environment may run.
    pub fn new(service: Service, now: usize, count: usize) -> anyhow::Result<Self> {
        Instances::check_count(count).map_err(|e| anyhow::anyhow!("scaling {service}: {e}"))?;
        Ok(if count > now {
            Self::Up(now + 1..=count)
        } else if count < now {
            Self::Down(
                (count + 1..=now)
                    .rev()
                    .map(|n| format!("{service}#{n}"))
                    .collect(),
            )
        } else {
            Self::Stay
        })
    }
}

/// The names of every link of the instances `names`: to the gateway, the broker and (on the
/// containers backend) the database.
pub fn links_of_instances(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            [
                format!("gateway->{n}"),
                format!("{n}->kafka"),
                format!("{n}->db"),
            ]
        })
        .collect()
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

    #[test]
    fn the_lists_come_from_the_gateways_links_in_instance_order() {
        let link = |name: &str, listen: &str| LinkInfo {
            name: name.into(),
            listen: listen.into(),
            upstream: String::new(),
        };
        let links = [
            link("client->gateway", "127.0.0.1:9"),
            link("gateway->order#10", "toxiproxy:21010"),
            link("gateway->order#2", "toxiproxy:21002"),
            link("order#2->kafka", "toxiproxy:22002"),
            link("gateway->payment#1", "toxiproxy:21009"),
        ];
        let lists = upstream_lists(&links);
        assert_eq!(
            lists[&Service::Order],
            ["http://toxiproxy:21002", "http://toxiproxy:21010"]
        );
        assert_eq!(lists[&Service::Payment], ["http://toxiproxy:21009"]);
        assert!(!lists.contains_key(&Service::Inventory));
    }

    #[test]
    fn a_scale_plan_adds_the_next_numbers_and_removes_the_highest_first() {
        assert_eq!(
            ScalePlan::new(Service::Order, 1, 3).unwrap(),
            ScalePlan::Up(2..=3)
        );
        assert_eq!(
            ScalePlan::new(Service::Order, 3, 1).unwrap(),
            ScalePlan::Down(vec!["order#3".into(), "order#2".into()])
        );
        assert_eq!(
            ScalePlan::new(Service::Order, 2, 2).unwrap(),
            ScalePlan::Stay
        );
        let e = ScalePlan::new(Service::Payment, 1, 9).unwrap_err();
        assert!(format!("{e}").contains("scaling payment"), "{e}");
        assert_eq!(
            links_of_instances(&["order#2".into()]),
            ["gateway->order#2", "order#2->kafka", "order#2->db"]
        );
    }
}
