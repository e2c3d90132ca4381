//! What a chaos entry's `target` names: links and instances of the environment.
//!
//! Links are named `FROM->TO` after the nodes at their ends: `client->gateway`,
//! `gateway->payment#1`, `order#2->kafka`. A target is a link, a group of links, an instance or a
//! group of instances:
//!
//! | target | link faults act on | instance faults act on |
//! |---|---|---|
//! | `gateway->payment#1` | that link | (refused) |
//! | `gateway->payment` | the gateway's links to every payment instance | (refused) |
//! | `payment->kafka` | every payment instance's link to the broker | (refused) |
//! | `payment#1` | every link from or to `payment#1` | `payment#1` |
//! | `payment` | every link from or to a payment instance | every payment instance |
//! | `kafka` (or `broker`) | every link to the broker | the broker |
//! | `gateway` | every link from or to the gateway | the gateway |
//! | `payment->db` (containers) | every payment instance's link to its database | (refused) |
//! | `db` (containers) | every link to a database | every database |
//! | `payment-db` (containers) | (none: use `payment->db`) | the payment database |
//!
//! A scale fault takes a service as a whole (`payment`), never a link or one instance.

use std::fmt;

use crate::environment::{Instances, Service};
use crate::scenario::Backend;

/// One end of a link, or a process: `client`, `gateway`, `kafka`, or a service with or without
/// an instance number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `Some(2)` for `order#2`; `None` for every instance.
    pub instance: Option<u32>,
}

impl Node {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, instance) = match s.split_once('#') {
            Some((n, i)) => {
                let i: u32 = i.parse().ok().filter(|i| *i >= 1).ok_or_else(|| {
                    format!("bad instance number in {s:?}: expected e.g. order#1")
                })?;
                (n, Some(i))
            }
            None => (s, None),
        };
        let name = if name == "broker" { "kafka" } else { name };
        let known = [
            "client",
            "gateway",
            "kafka",
            "order",
            "inventory",
            "payment",
            "db",
            "order-db",
            "inventory-db",
            "payment-db",
        ];
        if !known.contains(&name) {
            return Err(format!(
                "unknown node {name:?}: expected one of client, gateway, kafka (or broker), \
                 order, inventory, payment, optionally with an instance such as payment#2, or \
                 on the containers backend db, order-db, inventory-db, payment-db"
            ));
        }
        if instance.is_some() && !is_service(name) && instance != Some(1) {
            return Err(format!("there is only one {name}; {s:?} does not exist"));
        }
        Ok(Self {
            name: name.to_string(),
            instance: if is_service(name) { instance } else { None },
        })
    }

    /// Whether a link end or process called `end` (`order#2`, `kafka`, `gateway`) is this node.
    pub fn matches(&self, end: &str) -> bool {
        let (name, instance) = match end.split_once('#') {
            Some((n, i)) => (n, i.parse::<u32>().ok()),
            None => (end, None),
        };
        let name = if name == "broker" { "kafka" } else { name };
        // `db` stands for every database: the `db` end of the links and each `<service>-db`.
        if self.name == "db" {
            return name == "db" || name.ends_with("-db");
        }
        name == self.name
            && (self.instance.is_none() || !is_service(name) || self.instance == instance)
    }
}

fn is_service(name: &str) -> bool {
    Service::ALL.iter().any(|s| s.name() == name)
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instance {
            Some(i) => write!(f, "{}#{i}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A parsed `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `FROM->TO`: the links between the two (groups of) nodes.
    Link { from: Node, to: Node },
    /// A node: its links for link faults, its processes for instance faults.
    Node(Node),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("->") {
            Some((from, to)) => Ok(Self::Link {
                from: Node::parse(from)?,
                to: Node::parse(to)?,
            }),
            None => Ok(Self::Node(Node::parse(s)?)),
        }
    }
}

impl Target {
    /// The links of `links` (names `FROM->TO`) this target means for a link fault.
    pub fn links<'a>(&self, links: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        links
            .into_iter()
            .filter(|l| {
                let Some((from, to)) = l.split_once("->") else {
                    return false;
                };
                match self {
                    Self::Link { from: f, to: t } => f.matches(from) && t.matches(to),
                    Self::Node(n) => n.matches(from) || n.matches(to),
                }
            })
            .map(str::to_string)
            .collect()
    }

    /// The service a target names as a whole (`order`), for a scale fault; `None` for a link,
    /// one instance (`order#2`) or a node that is not a service.
    pub fn service(&self) -> Option<Service> {
        match self {
            Self::Node(Node {
                name,
                instance: None,
            }) => Service::parse(name).ok(),
            _ => None,
        }
    }

    /// The processes of `processes` (`broker`, `order#1`, `gateway#1`) this target means for
    /// an instance fault; links name none.
    pub fn processes<'a>(&self, processes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let Self::Node(n) = self else {
            return Vec::new();
        };
        processes
            .into_iter()
            .filter(|p| n.matches(p))
            .map(str::to_string)
            .collect()
    }
}

/// The links a backend has with `instances`: on both, the client to the gateway, the gateway to
/// every service instance, every service instance to the broker; on `containers` also every
/// service instance to its service's database (`order#1->db`).
pub fn links_of(backend: Backend, instances: &Instances) -> Vec<String> {
    let mut links = local_links(instances);
    if backend == Backend::Containers {
        for service in Service::ALL {
            for n in 1..=instances.of(service) {
                links.push(format!("{}#{n}->db", service.name()));
            }
        }
    }
    links
}

/// The processes a backend has with `instances` that faults may act on: on `containers` also
/// each service's database (`order-db`).
pub fn processes_of(backend: Backend, instances: &Instances) -> Vec<String> {
    let mut names = local_processes(instances);
    if backend == Backend::Containers {
        for service in Service::ALL {
            names.insert(1, format!("{}-db", service.name()));
        }
    }
    names
}

/// The links of the local backend with `instances`: the client to the gateway, the gateway to
/// every service instance, every service instance to the broker.
pub fn local_links(instances: &Instances) -> Vec<String> {
    let mut links = vec!["client->gateway".to_string()];
    for service in Service::ALL {
        for n in 1..=instances.of(service) {
            links.push(format!("gateway->{}#{n}", service.name()));
        }
    }
    for service in Service::ALL {
        for n in 1..=instances.of(service) {
            links.push(format!("{}#{n}->kafka", service.name()));
        }
    }
    links
}

/// The processes of the local backend with `instances`, as [`crate::environment::local::LocalEnvironment`]
/// names them.
pub fn local_processes(instances: &Instances) -> Vec<String> {
    let mut names = vec!["broker".to_string()];
    for service in Service::ALL {
        for n in 1..=instances.of(service) {
            names.push(format!("{}#{n}", service.name()));
        }
    }
    names.push("gateway#1".to_string());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_each() -> Instances {
        Instances::parse("order=2,inventory=2,payment=2").unwrap()
    }

    fn links(target: &str) -> Vec<String> {
        let all = local_links(&two_each());
        target
            .parse::<Target>()
            .unwrap()
            .links(all.iter().map(String::as_str))
    }

    #[test]
    fn link_targets_name_one_link_or_a_group() {
        assert_eq!(links("gateway->payment#2"), ["gateway->payment#2"]);
        assert_eq!(
            links("gateway->payment"),
            ["gateway->payment#1", "gateway->payment#2"]
        );
        assert_eq!(links("order->kafka"), ["order#1->kafka", "order#2->kafka"]);
        assert_eq!(
            links("inventory"),
            [
                "gateway->inventory#1",
                "gateway->inventory#2",
                "inventory#1->kafka",
                "inventory#2->kafka"
            ]
        );
        assert_eq!(links("broker").len(), 6);
        assert_eq!(links("client->gateway"), ["client->gateway"]);
        assert!(links("client->kafka").is_empty());
    }

    #[test]
    fn instance_targets_name_processes() {
        let all = local_processes(&two_each());
        let procs = |t: &str| {
            t.parse::<Target>()
                .unwrap()
                .processes(all.iter().map(String::as_str))
        };
        assert_eq!(procs("order#2"), ["order#2"]);
        assert_eq!(procs("payment"), ["payment#1", "payment#2"]);
        assert_eq!(procs("broker"), ["broker"]);
        assert_eq!(procs("kafka"), ["broker"]);
        assert_eq!(procs("gateway"), ["gateway#1"]);
        assert!(procs("gateway->order").is_empty());
    }

    #[test]
    fn only_a_service_as_a_whole_names_a_service_to_scale() {
        let service = |t: &str| t.parse::<Target>().unwrap().service();
        assert_eq!(service("order"), Some(Service::Order));
        assert_eq!(service("payment"), Some(Service::Payment));
        assert_eq!(service("order#2"), None);
        assert_eq!(service("gateway->order"), None);
        assert_eq!(service("gateway"), None);
        assert_eq!(service("kafka"), None);
    }

    #[test]
    fn bad_targets_say_what_was_expected() {
        let e = "ordr#1".parse::<Target>().unwrap_err();
        assert!(e.contains("unknown node \"ordr\""), "{e}");
        let e = "order#0".parse::<Target>().unwrap_err();
        assert!(e.contains("bad instance number"), "{e}");
        let e = "gateway#2".parse::<Target>().unwrap_err();
        assert!(e.contains("only one gateway"), "{e}");
    }
}
