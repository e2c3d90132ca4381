//! The game-day console: a live terminal view (ratatui on crossterm) of a running `harness up`
//! (`harness console`) or of a run (`harness run SCENARIO --tui`), with keys that inject and heal
//! faults.
//!
//! Data sources send [`state::Update`]s over one channel; the [`App`] drains it once per frame
//! (10 frames a second), so a burst of measurements costs one redraw, and a slow terminal never
//! holds back whoever measures. Keys go the other way as [`state::Command`]s to the task that
//! owns the fault actions ([`chaos`]), so the view never waits for a kill or a restart.
//!
//! # Layout
//! - [`state`]: what is shown (measurements, targets, timeline, selection, menus), apart from
//!   how; key handling changes only it.
//! - [`input`]: the key table the help screen is generated from, and key handling.
//! - [`widgets`]: the layout for the terminal's size and one function per panel.
//! - [`source`]: what an attached console polls (env file, `/metrics`, the Toxiproxy API, the
//!   collector's hops).
//! - [`chaos`]: the fault task (inject from the menu, heal on time, heal keys).
//! - [`live`]: the view of a run (`harness run --tui`) and the tap the run feeds it through.
//! - [`slos`]: a run's SLOs judged live, by the code that judges the run at its end.
//! - [`terminal`]: raw mode and the alternate screen, restored on exit, panic and signals.
//!
//! Quitting heals the faults injected from the console that are still active (a game day's
//! `harness chaos inject` without `--for` leaves its fault; the console does not), so nothing is
//! left behind.

pub mod chaos;
pub mod input;
pub mod live;
pub mod slos;
pub mod source;
pub mod state;
pub mod terminal;
pub mod widgets;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{Event, EventStream};
use futures::StreamExt;
use ratatui::Frame;
use ratatui::Terminal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::state::{Command, Effect, Header, State, Update};
use crate::cli::ConsoleArgs;
use crate::control::Remote;

/// Time between frames: 10 frames a second.
pub const FRAME: Duration = Duration::from_millis(100);

/// How the view's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `q`, Ctrl-C as a key, or a confirmed quit during a run.
    Quit,
    /// The stop token: SIGTERM, SIGINT, or the run ended.
    Stopped,
}

/// The view: its state, the measurements channel it drains, and where its commands go.
pub struct App {
    pub state: State,
    updates: mpsc::Receiver<Update>,
    commands: mpsc::Sender<Command>,
    origin: Instant,
    /// Frames drawn, for the benchmark.
    pub frames: u64,
}

impl App {
    pub fn new(
        state: State,
        updates: mpsc::Receiver<Update>,
        commands: mpsc::Sender<Command>,
        origin: Instant,
    ) -> Self {
        Self {
            state,
            updates,
            commands,
            origin,
            frames: 0,
        }
    }

    /// Draws a frame, then waits for the next frame tick, a key or `stop`, until quit or
    /// stopped.
    pub async fn run<B: ratatui::backend::Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Exit>
    where
        B::Error: Send + Sync + 'static,
    {
        let mut events = EventStream::new();
        let mut frames = tokio::time::interval(FRAME);
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            self.drain();
            terminal
                .draw(|frame| self.render(frame))
                .context("drawing the console")?;
            self.frames += 1;
            tokio::select! {
                _ = frames.tick() => {}
                () = stop.cancelled() => return Ok(Exit::Stopped),
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if self.handle_event(event) {
                            return Ok(Exit::Quit);
                        }
                    }
                    Some(Err(e)) => return Err(e).context("reading the terminal's events"),
                    None => return Ok(Exit::Stopped),
                },
            }
        }
    }

    /// Takes in every measurement that arrived since the last frame.
    pub fn drain(&mut self) {
        while let Ok(update) = self.updates.try_recv() {
            self.state.apply(update);
        }
        self.state.now_s = self.state.now_s.max(self.origin.elapsed().as_secs_f64());
    }

    pub fn render(&self, frame: &mut Frame) {
        widgets::draw(frame, &self.state);
    }

    /// Handles a terminal event; true when the user quits.
    pub fn handle_event(&mut self, event: Event) -> bool {
        let Event::Key(key) = event else {
            return false;
        };
        let mut quit = false;
        for effect in self.state.handle_key(key) {
            match effect {
                Effect::Quit => quit = true,
                Effect::Command(command) => {
                    if self.commands.try_send(command).is_err() {
                        self.state.notice = Some((
                            "busy with the previous fault action; try again in a moment".into(),
                            true,
                        ));
                    }
                }
            }
        }
        quit
    }
}

/// `harness console`: the view of a running `harness up`, through its env file.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be wrong is said before the terminal changes.
    let remote = Remote::from_env_file(&args.env_file)?;
    let env = source::EnvFile::read(&args.env_file)?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "harness console needs a terminal; `harness chaos links` prints the links and \
             processes without one"
        );
    }
    let origin = Instant::now();
    let (updates_tx, updates) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(16);
    let stop_polling = CancellationToken::new();
    let shutdown = platform::shutdown::install(false);
    let poller = tokio::spawn(source::poll(
        args.env_file.clone(),
        updates_tx.clone(),
        origin,
        stop_polling.clone(),
    ));
    let worker = tokio::spawn(chaos::serve(remote, commands_rx, updates_tx, origin));
    let header = Header {
        title: "harness up".into(),
        backend: env.backend.clone(),
        total: None,
        phase: String::new(),
        verdict: String::new(),
    };
    let mut app = App::new(State::new(header, false), updates, commands, origin);
    let shown = match terminal::Guard::enter() {
        Ok(mut guard) => app.run(&mut guard.terminal, &shutdown).await,
        Err(e) => Err(e),
    };
    // The view is gone: the worker heals what was injected here, then ends.
    drop(app);
    stop_polling.cancel();
    let healed = worker.await.context("the fault task")?;
    if let Err(e) = poller.await {
        tracing::warn!(error = %e, "the console's poller ended abnormally");
    }
    shown?;
    if !healed.is_empty() {
        println!(
            "{} fault(s) injected from the console; every one is healed: {}",
            healed.len(),
            healed
                .iter()
                .map(|w| w.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
