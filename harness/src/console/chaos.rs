//! The console's hands: one task that owns what faults act on, takes [`Command`]s from the view,
//! applies each fault as `harness chaos inject` does (the same parsing and checks), heals it when
//! its duration is up, and tells the view over the measurements channel. The view never waits
//! for a fault: killing and restarting an instance takes seconds.
//!
//! During a run the heal keys heal the faults injected here and then the scenario's own active
//! ones, which its timeline heals on request ([`Hands::heal_scheduled`]); the faults planned for
//! later still fire at their time.
//!
//! When the view goes (its command sender dropped), the faults injected here that are still
//! active are healed before the task ends, so quitting the console leaves nothing behind (during
//! a run, the end of its load has healed them already: [`Hands::healed_by_the_run`]); the
//! windows of every fault injected here are returned, for a run's report (marked manual).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::state::{ChaosEvent, Command, FaultRequest, Update};
use crate::cli::InjectArgs;
use crate::control::Remote;
use crate::faults::{self, Applied, Faultable, Planned};
use crate::report::ChaosWindow;
use crate::scenario::{Backend, HumanDuration};

/// What the console's fault keys act on.
#[async_trait::async_trait]
pub trait Hands: Faultable {
    fn backend(&self) -> Backend;
    /// Whether the heal keys heal the faults injected here and then asks the run's timeline to
    /// heal its own ([`Self::heal_scheduled`]), or heal everything the target names directly.
    fn own_faults_only(&self) -> bool {
        false
    }
    /// During a run: has the scenario's timeline heal its active faults that `target` names (all
    /// of them, then everything, without one) now; returns their labels.
    async fn heal_scheduled(&mut self, target: Option<&str>) -> anyhow::Result<Vec<String>> {
        let _ = target;
        Ok(Vec::new())
    }
    /// Heals the links and processes `target` names; returns what it healed.
    async fn heal_target(&mut self, target: &str) -> anyhow::Result<Vec<String>>;
    /// Whether what is still active when the view lets go has been healed already: a run heals
    /// everything when its load ends (or is interrupted), and a new environment replaces the
    /// old one; an attached console heals what it injected itself.
    fn healed_by_the_run(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl Hands for Remote {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn heal_target(&mut self, target: &str) -> anyhow::Result<Vec<String>> {
        crate::game_day::heal_target(self, target).await
    }
}

/// A fault injected from the console and not healed yet.
struct Active {
    id: String,
    planned: Planned,
    applied: Applied,
    /// When it heals by itself.
    until: Option<Instant>,
    start_s: f64,
}

/// Serves the view's commands until it drops its sender; returns the windows of the faults
/// injected here.
pub async fn serve(
    mut hands: impl Hands,
    mut commands: mpsc::Receiver<Command>,
    updates: mpsc::Sender<Update>,
    origin: Instant,
) -> Vec<ChaosWindow> {
    let mut worker = Worker {
        active: Vec::new(),
        windows: Vec::new(),
        // Toxic names must not collide with those of an earlier console or `harness chaos`.
        next: usize::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 1_000_000),
        )
        .unwrap_or(0),
        updates,
        origin,
    };
    loop {
        let due = worker.active.iter().filter_map(|a| a.until).min();
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => worker.command(&mut hands, command).await,
                None => break,
            },
            () = sleep_until(due) => worker.heal_due(&mut hands).await,
        }
    }
    let left: Vec<Active> = std::mem::take(&mut worker.active);
    for active in left {
        if hands.healed_by_the_run() {
            worker.ended(active).await;
        } else {
            worker.heal(&mut hands, active).await;
        }
    }
    worker.windows
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when.into()).await,
        None => std::future::pending().await,
    }
}

struct Worker {
    active: Vec<Active>,
    windows: Vec<ChaosWindow>,
    next: usize,
    updates: mpsc::Sender<Update>,
    origin: Instant,
}

impl Worker {
    fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    async fn send(&self, update: Update) {
        // The view may be gone already (quitting); then nobody needs to know.
        let _ = self.updates.send(update).await;
    }

    async fn notice(&self, text: String, error: bool) {
        self.send(Update::Notice { text, error }).await;
    }

    async fn command(&mut self, hands: &mut impl Hands, command: Command) {
        match command {
            Command::Inject(request) => {
                if let Err(e) = self.inject(hands, &request).await {
                    self.notice(
                        format!("{} on {}: {e:#}", request.fault, request.target),
                        true,
                    )
                    .await;
                }
            }
            Command::Heal(target) if hands.own_faults_only() => {
                let own = self
                    .heal_own(hands, |a| {
                        a.planned.entry.target.get_ref() == &target
                            || a.applied.what.contains(&target)
                    })
                    .await;
                let scheduled = hands.heal_scheduled(Some(&target)).await;
                self.healed_in_run(&target, own, scheduled).await;
            }
            Command::HealAll if hands.own_faults_only() => {
                let own = self.heal_own(hands, |_| true).await;
                let scheduled = hands.heal_scheduled(None).await;
                self.healed_in_run("everything", own, scheduled).await;
            }
            Command::Heal(target) => match hands.heal_target(&target).await {
                Ok(healed) => {
                    self.forget(|a| {
                        a.planned.entry.target.get_ref() == &target
                            || a.applied.what.iter().any(|w| healed.contains(w))
                    })
                    .await;
                    self.notice(format!("healed {}", healed.join(", ")), false)
                        .await;
                }
                Err(e) => self.notice(format!("heal {target}: {e:#}"), true).await,
            },
            Command::HealAll => match hands.heal_all().await {
                Ok(()) => {
                    self.forget(|_| true).await;
                    let at_s = self.now_s();
                    self.send(Update::Chaos(ChaosEvent::HealedAll { at_s }))
                        .await;
                    self.notice(
                        "healed everything: every proxy reset, every process running".into(),
                        false,
                    )
                    .await;
                }
                Err(e) => self.notice(format!("heal everything: {e:#}"), true).await,
            },
            // The run's load, not the faults: the app handles it.
            Command::PauseLoad(_) => {}
        }
    }

    async fn inject(&mut self, hands: &mut impl Hands, r: &FaultRequest) -> anyhow::Result<()> {
        let duration = match r.duration.trim() {
            "" => None,
            d => Some(
                d.parse::<HumanDuration>()
                    .map_err(|e| anyhow::anyhow!("for: {e}"))?,
            ),
        };
        let args = InjectArgs {
            target: r.target.clone(),
            fault: r.fault.clone(),
            attributes: r.attributes.clone(),
            duration,
        };
        let planned = crate::game_day::parse_fault(hands.backend(), &hands.process_names(), &args)?;
        self.next = (self.next + 1) % 1_000_000;
        let start_s = self.now_s();
        let applied =
            faults::apply_fault(hands, &planned, self.next, self.origin.elapsed()).await?;
        let id = format!("manual-{}", self.next);
        let until_s = duration.map(|d| start_s + d.as_std().as_secs_f64());
        self.send(Update::Chaos(ChaosEvent::Applied {
            id: id.clone(),
            label: planned.label.clone(),
            at_s: start_s,
            until_s,
            manual: true,
            affected: applied.what.clone(),
        }))
        .await;
        self.notice(
            format!("applied {}", applied.describe(&planned.label)),
            false,
        )
        .await;
        self.active.push(Active {
            id,
            until: duration.map(|d| Instant::now() + Duration::from(d)),
            planned,
            applied,
            start_s,
        });
        Ok(())
    }

    /// Heals the faults injected here that `which` picks, quietly; returns their labels.
    async fn heal_own(
        &mut self,
        hands: &mut impl Hands,
        which: impl Fn(&Active) -> bool,
    ) -> Vec<String> {
        let (picked, rest): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| which(a));
        self.active = rest;
        let mut healed = Vec::new();
        for active in picked {
            match faults::heal_fault(hands, &active.planned, &active.applied).await {
                Ok(()) => healed.push(active.planned.label.clone()),
                Err(e) => {
                    self.notice(format!("healing {}: {e:#}", active.planned.label), true)
                        .await;
                }
            }
            self.ended(active).await;
        }
        healed
    }

    /// Says what a heal key healed during a run: the faults injected here, then the scenario's.
    async fn healed_in_run(
        &self,
        target: &str,
        own: Vec<String>,
        scheduled: anyhow::Result<Vec<String>>,
    ) {
        let (scheduled, error) = match scheduled {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let healed: Vec<String> = own
            .into_iter()
            .map(|l| format!("{l} (manual)"))
            .chain(
                scheduled
                    .into_iter()
                    .map(|l| format!("{l} (scenario's, by hand)")),
            )
            .collect();
        let text = match (&error, healed.is_empty()) {
            (Some(e), _) => format!("heal {target}: the scenario's faults: {e:#}"),
            (None, true) => format!(
                "nothing active to heal{}; the scenario's later faults fire on time",
                if target == "everything" {
                    String::new()
                } else {
                    format!(" on {target}")
                }
            ),
            (None, false) => format!("healed {}", healed.join(", ")),
        };
        self.notice(text, error.is_some()).await;
    }

    async fn heal_due(&mut self, hands: &mut impl Hands) {
        let now = Instant::now();
        let (due, rest): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| a.until.is_some_and(|u| u <= now));
        self.active = rest;
        for active in due {
            self.heal(hands, active).await;
        }
    }

    async fn heal(&mut self, hands: &mut impl Hands, active: Active) {
        match faults::heal_fault(hands, &active.planned, &active.applied).await {
            Ok(()) => {
                self.notice(format!("healed {}", active.planned.label), false)
                    .await
            }
            Err(e) => {
                self.notice(format!("healing {}: {e:#}", active.planned.label), true)
                    .await;
            }
        }
        self.ended(active).await;
    }

    /// Faults healed by other means (heal keys): no longer active.
    async fn forget(&mut self, healed: impl Fn(&Active) -> bool) {
        let (gone, rest): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| healed(a));
        self.active = rest;
        for active in gone {
            self.ended(active).await;
        }
    }

    async fn ended(&mut self, active: Active) {
        let end_s = self.now_s();
        self.send(Update::Chaos(ChaosEvent::Healed {
            id: active.id.clone(),
            at_s: end_s,
        }))
        .await;
        let entry = &active.planned.entry;
        self.windows.push(ChaosWindow {
            start_s: active.start_s,
            end_s,
            label: format!("{} (manual)", active.planned.label),
            fault: entry.fault.get_ref().name().to_string(),
            target: entry.target.get_ref().clone(),
            affected: active.applied.what.clone(),
            planned_start_s: active.start_s,
            planned_end_s: end_s,
            healed_by_hand: false,
        });
    }
}
