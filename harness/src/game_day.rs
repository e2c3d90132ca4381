//! `harness chaos links|inject|heal|reset|scale`: manual chaos against a running `harness up`,
//! for game days. Faults are written as on the command line the way a scenario's `[[chaos]]`
//! entry writes them, and checked by the same rules:
//!
//! ```text
//! harness chaos inject gateway->payment latency latency=200ms jitter=50ms --for 30s
//! harness chaos inject order#1 kill
//! harness chaos heal order#1
//! harness chaos scale order=3,payment=2
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::{ChaosArgs, ChaosCommand, HealArgs, InjectArgs, ScaleArgs};
use crate::control::Remote;
use crate::faults::{self, Faultable, Planned, target::Target};
use crate::scenario::Scenario;

pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let mut remote = Remote::from_env_file(&args.env_file)?;
    match args.command {
        ChaosCommand::Links => links(&remote).await?,
        ChaosCommand::Inject(a) => inject(&mut remote, a).await?,
        ChaosCommand::Heal(a) => heal(&mut remote, a).await?,
        ChaosCommand::Reset => {
            remote.chaos_client()?.reset().await?;
            println!("every proxy enabled, every toxic removed");
        }
        ChaosCommand::Scale(a) => scale(&mut remote, &a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn links(remote: &Remote) -> anyhow::Result<()> {
    let proxies = remote.chaos_client()?.proxies().await?;
    println!(
        "{:<24} {:<22} {:<22} {:<8} toxics",
        "link", "listen", "upstream", "enabled"
    );
    for link in &remote.links {
        let proxy = proxies.get(&link.name);
        let toxics = proxy.map_or_else(
            || "(no such proxy)".to_string(),
            |p| {
                p.toxics
                    .iter()
                    .map(|t| format!("{} {} {}", t.name, t.stream.as_str(), t.attributes.kind()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        println!(
            "{:<24} {:<22} {:<22} {:<8} {toxics}",
            link.name,
            link.listen,
            link.upstream,
            proxy.map_or("-", |p| if p.enabled { "yes" } else { "NO" }),
        );
    }
    println!("processes: {}", remote.processes.join(", "));
    Ok(())
}

/// The fault as a one-entry scenario, so the command line is checked like a scenario file, for
/// an environment on `backend` running `processes` (also the console's fault menu).
pub fn parse_fault(
    backend: crate::scenario::Backend,
    processes: &[String],
    a: &InjectArgs,
) -> anyhow::Result<Planned> {
    let count = |service: &str| {
        processes
            .iter()
            .filter(|p| p.starts_with(&format!("{service}#")))
            .count()
            .max(1)
    };
    let quote = |v: &str| {
        if v.parse::<f64>().is_ok() {
            v.to_string()
        } else {
            format!("{v:?}")
        }
    };
    let mut entry = format!(
        "[[chaos]]\nat = \"0s\"\ntarget = {:?}\nfault = {:?}\n",
        a.target, a.fault
    );
    if let Some(d) = &a.duration {
        entry.push_str(&format!("for = {:?}\n", d.to_string()));
    }
    for attr in &a.attributes {
        let (k, v) = attr.split_once('=').with_context(|| {
            format!("bad attribute {attr:?}: expected NAME=VALUE, e.g. latency=200ms")
        })?;
        entry.push_str(&format!("{} = {}\n", k.trim(), quote(v.trim())));
    }
    let text = format!(
        "description = \"harness chaos inject\"\n[environment]\nbackend = \"{}\"\ninstances = {{ order = {}, inventory = {}, payment = {} }}\n[load]\nusers = 1\nduration = \"1440m\"\n[[load.journeys]]\nname = \"browse_catalog\"\nweight = 1\n{entry}",
        backend.name(),
        count("order"),
        count("inventory"),
        count("payment"),
    );
    let scenario = Scenario::from_toml(std::path::Path::new("inject"), &text)
        .and_then(|s| s.validate().map(|()| s))
        .map_err(|e| {
            // The location is in the generated text, which means nothing to the user.
            let shown = e.to_string();
            let message = shown
                .splitn(4, ':')
                .nth(3)
                .unwrap_or(&shown)
                .trim()
                .to_string();
            anyhow::anyhow!("{message}")
        })?;
    let entry = scenario
        .chaos
        .first()
        .context("the fault did not parse")?
        .get_ref()
        .clone();
    Planned::new(entry, Duration::from_secs(24 * 3600))
}

async fn inject(remote: &mut Remote, a: InjectArgs) -> anyhow::Result<()> {
    let planned = parse_fault(remote.backend, &remote.processes, &a)?;
    // Unique toxic names, so faults injected one after the other can be healed one by one.
    let index = usize::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000),
    )
    .unwrap_or(0);
    let started = Instant::now();
    let applied = faults::apply_fault(remote, &planned, index, Duration::ZERO).await?;
    println!("applied {}", applied.describe(&planned.label));
    let Some(d) = a.duration else {
        println!(
            "it stays until `harness chaos heal {}` (or `harness chaos heal` for everything)",
            a.target
        );
        return Ok(());
    };
    let shutdown = platform::shutdown::install(false);
    tokio::select! {
        () = tokio::time::sleep(d.as_std()) => {}
        () = shutdown.cancelled() => println!("interrupted: healing now"),
    }
    faults::heal_fault(remote, &planned, &applied).await?;
    println!(
        "healed {} after {:.1} s",
        planned.label,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each service in turn, as given.
async fn scale(remote: &mut Remote, a: &ScaleArgs) -> anyhow::Result<()> {
    let counts = a.counts().map_err(|m| anyhow::anyhow!(m))?;
    for (service, count) in counts {
        let before = remote.instance_count(service);
        remote
            .scale(service, count)
            .await
            .with_context(|| format!("scaling {service} to {count}"))?;
        println!(
            "{service}: {before} -> {} instances",
            remote.instance_count(service)
        );
    }
    Ok(())
}

async fn heal(remote: &mut Remote, a: HealArgs) -> anyhow::Result<()> {
    let Some(target) = a.target else {
        remote.heal_all().await?;
        println!("healed everything: every proxy enabled without toxics, every process running");
        return Ok(());
    };
    let healed = heal_target(remote, &target).await?;
    println!("healed {}", healed.join(", "));
    Ok(())
}

/// Heals what `target` names: its links' toxics removed and proxies enabled, its processes
/// resumed or restarted. Returns the links and processes healed (also the console's heal key).
pub async fn heal_target(remote: &mut Remote, target: &str) -> anyhow::Result<Vec<String>> {
    let parsed: Target = target.parse().map_err(|m: String| anyhow::anyhow!(m))?;
    let client = remote.chaos_client()?;
    let links = parsed.links(remote.links.iter().map(|l| l.name.as_str()));
    for link in &links {
        for toxic in client.toxics(link).await? {
            client.remove_toxic(link, &toxic.name).await?;
        }
        client.set_enabled(link, true).await?;
    }
    let processes = parsed.processes(remote.processes.iter().map(String::as_str));
    for p in &processes {
        remote.heal_process(p).await?;
    }
    if links.is_empty() && processes.is_empty() {
        anyhow::bail!("{target} names no link or process of this environment");
    }
    Ok(links.into_iter().chain(processes).collect())
}
