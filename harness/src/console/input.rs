//! Keys: one table of actions ([`BINDINGS`]) that both the key handling and the help screen read,
//! as bottom and gitui do, so the help never disagrees with what the keys do.
//!
//! In the fault menu and form the keys are the usual ones (arrows, Enter, Esc, typing); `H`
//! (heal everything) works everywhere but in a form's text, where Ctrl-H does.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Command, Effect, Form, Menu, Mode, State, WINDOWS, faults_for};

/// What a key does on the main screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Fault,
    Heal,
    HealAll,
    Window,
    Endpoint,
    PauseLoad,
    Help,
    Quit,
}

/// A key of the main screen: the keys, how the footer and help show them, and what they do.
pub struct Binding {
    pub codes: &'static [KeyCode],
    pub keys: &'static str,
    pub short: &'static str,
    pub help: &'static str,
    pub action: Action,
    /// Only during a run.
    pub run_only: bool,
}

pub const BINDINGS: &[Binding] = &[
    Binding {
        codes: &[KeyCode::Up, KeyCode::Char('k')],
        keys: "↑ k",
        short: "",
        help: "select the previous link, service or instance",
        action: Action::Up,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Down, KeyCode::Char('j')],
        keys: "↓ j",
        short: "",
        help: "select the next link, service or instance",
        action: Action::Down,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Enter, KeyCode::Char('f')],
        keys: "f ⏎",
        short: "fault",
        help: "inject a fault into the selected target: choose it, edit its attributes and duration",
        action: Action::Fault,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('h')],
        keys: "h",
        short: "heal",
        help: "heal the selected target; during a run also the scenario's active faults on it",
        action: Action::Heal,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('H')],
        keys: "H",
        short: "HEAL ALL",
        help: "heal everything now, in a run the scenario's active faults too (later ones still fire)",
        action: Action::HealAll,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('w')],
        keys: "w",
        short: "window",
        help: "change the time window of the charts and counts (1m, 5m, 15m, 30s)",
        action: Action::Window,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('e')],
        keys: "e",
        short: "endpoint",
        help: "show the latency of one endpoint, the next one, or all of them",
        action: Action::Endpoint,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('p')],
        keys: "p",
        short: "pause load",
        help: "pause or resume the load (open model: arrivals meanwhile count as paused, not dropped)",
        action: Action::PauseLoad,
        run_only: true,
    },
    Binding {
        codes: &[KeyCode::Char('?')],
        keys: "?",
        short: "help",
        help: "this help; any key closes it",
        action: Action::Help,
        run_only: false,
    },
    Binding {
        codes: &[KeyCode::Char('q')],
        keys: "q",
        short: "quit",
        help: "quit (heals the faults injected here; during a run, asks, then interrupts it as Ctrl-C does)",
        action: Action::Quit,
        run_only: false,
    },
];

/// The main screen's action for a key.
pub fn action(key: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .find(|b| b.codes.contains(&key.code))
        .map(|b| b.action)
}

fn is_ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}

impl State {
    /// Handles one key; what the app must do besides is returned.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        // Raw mode turns Ctrl-C into a key: it interrupts, as the signal would.
        if is_ctrl(&key, 'c') {
            return vec![Effect::Quit];
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal(key),
            Mode::Help => Vec::new(),
            Mode::ConfirmQuit => match key.code {
                KeyCode::Char('y' | 'q') | KeyCode::Enter => vec![Effect::Quit],
                _ => Vec::new(),
            },
            Mode::Menu(menu) => self.menu(menu, key),
            Mode::Form(form) => self.form(form, key),
        }
    }

    fn normal(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(action) = action(&key) else {
            return Vec::new();
        };
        let n = self.targets.len();
        match action {
            Action::Up => self.selected = (self.selected + n.max(1) - 1) % n.max(1),
            Action::Down => self.selected = (self.selected + 1) % n.max(1),
            Action::Fault => {
                if let Some(t) = self.selected_target() {
                    self.mode = Mode::Menu(Menu {
                        target: t.name.clone(),
                        faults: faults_for(t.kind, &t.name),
                        selected: 0,
                    });
                }
            }
            Action::Heal => {
                if let Some(t) = self.selected_target() {
                    let name = t.name.clone();
                    self.notice = Some((format!("healing {name}..."), false));
                    return vec![Effect::Command(Command::Heal(name))];
                }
            }
            Action::HealAll => return self.heal_all(),
            Action::Window => self.window = (self.window + 1) % WINDOWS.len(),
            Action::Endpoint => {
                let endpoints = self.endpoints();
                self.endpoint = match &self.endpoint {
                    None => endpoints.first().cloned(),
                    Some(e) => endpoints
                        .iter()
                        .position(|x| x == e)
                        .and_then(|i| endpoints.get(i + 1))
                        .cloned(),
                };
            }
            Action::PauseLoad if self.run => {
                self.load_paused = !self.load_paused;
                return vec![Effect::Command(Command::PauseLoad(self.load_paused))];
            }
            Action::PauseLoad => {
                self.notice = Some((
                    "no load to pause: this console watches a `harness up`".into(),
                    false,
                ));
            }
            Action::Help => self.mode = Mode::Help,
            Action::Quit if self.run && !self.finished => self.mode = Mode::ConfirmQuit,
            Action::Quit => return vec![Effect::Quit],
        }
        Vec::new()
    }

    fn heal_all(&mut self) -> Vec<Effect> {
        self.notice = Some(("healing everything...".into(), false));
        vec![Effect::Command(Command::HealAll)]
    }

    fn menu(&mut self, mut menu: Menu, key: KeyEvent) -> Vec<Effect> {
        let n = menu.faults.len().max(1);
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => return Vec::new(),
            KeyCode::Char('H') => return self.heal_all(),
            KeyCode::Up | KeyCode::Char('k') => menu.selected = (menu.selected + n - 1) % n,
            KeyCode::Down | KeyCode::Char('j') => menu.selected = (menu.selected + 1) % n,
            KeyCode::Enter | KeyCode::Right => {
                if let Some(fault) = menu.faults.get(menu.selected) {
                    self.mode = Mode::Form(Form::new(menu.target, *fault));
                    return Vec::new();
                }
            }
            _ => {}
        }
        self.mode = Mode::Menu(menu);
        Vec::new()
    }

    fn form(&mut self, mut form: Form, key: KeyEvent) -> Vec<Effect> {
        let n = form.fields.len().max(1);
        if is_ctrl(&key, 'h') {
            return self.heal_all();
        }
        match key.code {
            KeyCode::Esc => return Vec::new(),
            KeyCode::Enter => {
                let request = form.request();
                self.notice = Some((
                    format!("injecting {} into {}...", request.fault, request.target),
                    false,
                ));
                return vec![Effect::Command(Command::Inject(request))];
            }
            KeyCode::Up | KeyCode::BackTab => form.selected = (form.selected + n - 1) % n,
            KeyCode::Down | KeyCode::Tab => form.selected = (form.selected + 1) % n,
            KeyCode::Backspace => {
                if let Some(f) = form.fields.get_mut(form.selected) {
                    f.value.pop();
                }
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                if let Some(f) = form.fields.get_mut(form.selected) {
                    f.value.push(c);
                }
            }
            _ => {}
        }
        self.mode = Mode::Form(form);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::state::{FaultRequest, Header, TargetKind, TargetRow, TargetState, Update};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn state(run: bool) -> State {
        let mut s = State::new(
            Header {
                title: "t".into(),
                backend: "local".into(),
                total: None,
                phase: String::new(),
                verdict: String::new(),
            },
            run,
        );
        s.apply(Update::Targets(vec![
            TargetRow {
                name: "order#1".into(),
                kind: TargetKind::Process,
                state: TargetState::Running,
            },
            TargetRow {
                name: "gateway->payment#1".into(),
                kind: TargetKind::Link,
                state: TargetState::Running,
            },
        ]));
        s
    }

    #[test]
    fn a_fault_is_chosen_edited_and_injected_from_the_menu() {
        let mut s = state(false);
        s.handle_key(key(KeyCode::Down));
        s.handle_key(key(KeyCode::Char('f')));
        assert!(matches!(&s.mode, Mode::Menu(m) if m.target == "gateway->payment#1"));
        s.handle_key(key(KeyCode::Enter));
        // latency: edit its delay to 350ms.
        for _ in 0..5 {
            s.handle_key(key(KeyCode::Backspace));
        }
        for c in "350ms".chars() {
            s.handle_key(key(KeyCode::Char(c)));
        }
        let effects = s.handle_key(key(KeyCode::Enter));
        assert_eq!(
            effects,
            vec![Effect::Command(Command::Inject(FaultRequest {
                target: "gateway->payment#1".into(),
                fault: "latency".into(),
                attributes: vec![
                    "latency=350ms".into(),
                    "jitter=0ms".into(),
                    "direction=both".into()
                ],
                duration: "30s".into(),
            }))]
        );
        assert_eq!(s.mode, Mode::Normal);
    }

    #[test]
    fn heal_everything_works_from_the_menu_and_quit_asks_during_a_run() {
        let mut s = state(true);
        s.handle_key(key(KeyCode::Char('f')));
        assert_eq!(
            s.handle_key(key(KeyCode::Char('H'))),
            vec![Effect::Command(Command::HealAll)]
        );
        assert!(s.handle_key(key(KeyCode::Char('q'))).is_empty());
        assert_eq!(s.mode, Mode::ConfirmQuit);
        assert_eq!(s.handle_key(key(KeyCode::Char('y'))), vec![Effect::Quit]);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(state(false).handle_key(ctrl_c), vec![Effect::Quit]);
        assert_eq!(
            state(false).handle_key(key(KeyCode::Char('q'))),
            vec![Effect::Quit]
        );
    }
}
