//! The terminal while the console runs: raw mode and the alternate screen, given back on every
//! way out. [`Guard`] restores it when dropped (a normal exit, an error, `q`, Ctrl-C as a key,
//! SIGTERM ending the loop), and a panic hook restores it before the panic message is printed,
//! so the message lands on the normal screen instead of vanishing with the alternate one.
//!
//! The view draws on its own handle of the terminal (a duplicate of stdout taken when it
//! starts). During a run ([`Guard::capture_output`]) the process's stdout and stderr go to a
//! file instead, so the run's lines cannot scribble over the view; they are given back when the
//! view goes (also on panic), and the caller prints what was captured.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};

use anyhow::Context;
use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

pub type Term = Terminal<CrosstermBackend<File>>;

/// The terminal in raw mode on the alternate screen, restored on drop.
pub struct Guard {
    pub terminal: Term,
}

/// Whether the console holds the terminal, so a panic after it gave it back writes nothing.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The terminal as it was when the view started: where the view draws and restores.
static TTY: Mutex<Option<File>> = Mutex::new(None);
/// The process's own stdout and stderr while they are captured.
static SAVED: Mutex<Option<(OwnedFd, OwnedFd)>> = Mutex::new(None);
/// Where the captured output goes.
static CAPTURED: Mutex<Option<File>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn tty() -> anyhow::Result<File> {
    let fd = nix::unistd::dup(std::io::stdout()).context("duplicating stdout")?;
    Ok(File::from(fd))
}

impl Guard {
    /// Takes the terminal.
    pub fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        *lock(&TTY) = Some(tty()?);
        enable_raw_mode().context("putting the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = (|| {
            let mut out = tty()?;
            execute!(out, EnterAlternateScreen, Hide)
                .context("switching to the alternate screen")?;
            Terminal::new(CrosstermBackend::new(out)).context("opening the terminal")
        })();
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Sends the process's stdout and stderr to a temporary file until the view goes; call
    /// after [`Guard::enter`]. [`take_captured`] reads what was written.
    pub fn capture_output(&self) -> anyhow::Result<()> {
        let file = tempfile::tempfile().context("a file for the run's output")?;
        let out = nix::unistd::dup(std::io::stdout()).context("duplicating stdout")?;
        let err = nix::unistd::dup(std::io::stderr()).context("duplicating stderr")?;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        nix::unistd::dup2_stdout(&file).context("sending stdout to a file")?;
        if let Err(e) = nix::unistd::dup2_stderr(&file) {
            let _ = nix::unistd::dup2_stdout(&out);
            return Err(e).context("sending stderr to a file");
        }
        *lock(&SAVED) = Some((out, err));
        *lock(&CAPTURED) = Some(file);
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// What the process wrote while its output was captured (empty if it was not).
pub fn take_captured() -> String {
    let Some(mut file) = lock(&CAPTURED).take() else {
        return String::new();
    };
    let mut text = String::new();
    if file.rewind().is_ok() {
        let _ = std::io::Read::read_to_string(&mut file, &mut text);
    }
    text
}

/// Raw mode off, the normal screen back, the cursor shown, then stdout and stderr back; nothing
/// when already done.
///
/// The screen comes back first: a line another thread writes meanwhile (the run announcing its
/// interruption, say) then lands in the captured file, which the caller prints, or on the
/// normal screen. Given back the other way round, such a line could reach the terminal while
/// the alternate screen was still up, and vanish with it.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let tty = lock(&TTY).take();
        match tty {
            Some(mut tty) => {
                let _ = execute!(tty, LeaveAlternateScreen, Show);
            }
            None => {
                give_back_output();
                let _ = execute!(std::io::stdout(), LeaveAlternateScreen, Show);
            }
        }
    }
    give_back_output();
}

/// Stdout and stderr back where they were before [`Guard::capture_output`].
fn give_back_output() {
    if let Some((out, err)) = lock(&SAVED).take() {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let _ = nix::unistd::dup2_stdout(&out);
        let _ = nix::unistd::dup2_stderr(&err);
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
