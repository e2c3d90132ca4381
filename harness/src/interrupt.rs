//! How a run is interrupted: Ctrl-C (SIGINT), SIGTERM, or a caller such as the game-day
//! console's `q`, all through one [`Interrupt`].
//!
//! The first interruption asks the run to stop early: the load and the chaos timeline stop at
//! once, the faults are healed, the checks that still mean something run with a short bound, and
//! the reports say `interrupted` ([`crate::run`]). The second one asks it to stop now: no checks,
//! no report, only the teardown. Both leave nothing running: the environment is stopped in every
//! case.
//!
//! Why not [`platform::shutdown::install`]: goose installs its own SIGINT handler (the `ctrlc`
//! crate, replacing the process's) when a load starts. Its first Ctrl-C stops the load
//! gracefully, so the run went on to judge and report a shortened load as if it had run its
//! course, and its second one calls `process::exit(1)`, skipping every destructor (temp dirs,
//! the environment's teardown). `ctrlc` takes one handler per process: installing ours first
//! makes goose's attempt fail harmlessly (it logs and goes on), so every SIGINT comes here.
//! SIGTERM, which goose leaves alone, is read with tokio as usual. A third Ctrl-C exits at once,
//! for a teardown that hangs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The exit code of an interrupted run, whatever interrupted it: 128 + SIGINT, the shell's
/// convention for a command stopped by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// An interruption of a run, shared by whoever may interrupt it (signals, a console) and the
/// run itself. Cloning it shares it.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Cancelled at the first interruption: stop the run early and report.
    stop: CancellationToken,
    /// Cancelled at the second: skip the checks and the report, only tear down.
    abandon: CancellationToken,
    count: AtomicU32,
    /// What interrupted first (`SIGINT`, `SIGTERM`, or a caller's reason) and when.
    first: Mutex<Option<(String, Instant)>>,
}

impl Interrupt {
    /// An interruption nothing triggers but [`Interrupt::interrupt`]: for callers that have their
    /// own way of asking (a console) and for tests.
    pub fn new() -> Self {
        Self::default()
    }

    /// An interruption triggered by SIGINT, SIGTERM and SIGHUP too (and, like [`Interrupt::new`], by
    /// [`Interrupt::interrupt`]). Must be called within a tokio runtime, before the load starts.
    /// A signal whose handler cannot be installed is warned about on stderr; the other still
    /// works.
    pub fn install() -> Self {
        let interrupt = Self::new();
        if let Err(e) = listen_for_sigint(&interrupt) {
            eprintln!("warning: Ctrl-C cannot interrupt this run: {e}");
        }
        // SIGHUP: the terminal the run was started from went away (a closed window, a killed
        // tmux session). Its default action kills the harness with no teardown, leaving every
        // process and temp dir it started behind; it interrupts the run like SIGTERM instead.
        use tokio::signal::unix::SignalKind;
        for (kind, name) in [
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            match tokio::signal::unix::signal(kind) {
                Ok(mut signals) => {
                    let i = interrupt.clone();
                    tokio::spawn(async move {
                        while signals.recv().await.is_some() {
                            i.interrupt(name);
                        }
                    });
                }
                Err(e) => eprintln!("warning: {name} cannot interrupt this run: {e}"),
            }
        }
        interrupt
    }

    /// Interrupts the run: the first call stops it early (it still reports), a later one makes
    /// it only tear down. `by` says what interrupted it (`SIGINT`, `console`) in the report.
    pub fn interrupt(&self, by: &str) {
        let n = self.inner.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            if let Ok(mut first) = self.inner.first.lock() {
                *first = Some((by.to_string(), Instant::now()));
            }
            self.inner.stop.cancel();
        } else {
            self.inner.abandon.cancel();
        }
    }

    /// Whether the run was interrupted.
    pub fn is_interrupted(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Cancelled at the first interruption.
    pub fn stopped(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Cancelled at the second interruption: only tear down.
    pub fn abandoned(&self) -> &CancellationToken {
        &self.inner.abandon
    }

    /// What interrupted the run first, once it was.
    pub fn by(&self) -> Option<String> {
        self.first().map(|(by, _)| by)
    }

    /// When the run was first interrupted, once it was.
    pub fn at(&self) -> Option<Instant> {
        self.first().map(|(_, at)| at)
    }

    fn first(&self) -> Option<(String, Instant)> {
        self.inner.first.lock().ok().and_then(|f| f.clone())
    }

    /// How many times the run was interrupted.
    fn count(&self) -> u32 {
        self.inner.count.load(Ordering::SeqCst)
    }
}

/// The interruption SIGINT goes to: the process's one `ctrlc` handler forwards to whichever
/// [`Interrupt`] installed itself last.
static SIGINT_TARGET: Mutex<Option<Interrupt>> = Mutex::new(None);
/// Whether the `ctrlc` handler is ours: installed once per process.
static SIGINT_HANDLER: OnceLock<Result<(), String>> = OnceLock::new();

fn listen_for_sigint(interrupt: &Interrupt) -> Result<(), String> {
    if let Ok(mut target) = SIGINT_TARGET.lock() {
        *target = Some(interrupt.clone());
    }
    SIGINT_HANDLER
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                let target = SIGINT_TARGET.lock().ok().and_then(|t| t.clone());
                let Some(target) = target else { return };
                if target.count() >= 2 {
                    // The way out of a teardown that hangs. The processes it started still
                    // stop (their stdin closes with this process); temporary files may stay.
                    eprintln!("interrupted a third time: exiting now, without waiting");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                target.interrupt("SIGINT");
            })
            .map_err(|e| e.to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_interruption_stops_the_run_and_the_second_abandons_it() {
        let i = Interrupt::new();
        assert!(!i.is_interrupted());
        assert_eq!(i.by(), None);

        i.clone().interrupt("console");
        assert!(i.is_interrupted());
        assert!(
            !i.abandoned().is_cancelled(),
            "one interruption still reports"
        );
        assert_eq!(i.by().as_deref(), Some("console"));

        i.interrupt("SIGINT");
        assert!(i.abandoned().is_cancelled());
        assert_eq!(
            i.by().as_deref(),
            Some("console"),
            "the first says what interrupted"
        );
    }
}
