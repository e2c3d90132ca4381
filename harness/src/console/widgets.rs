//! Drawing: [`layout`] decides which panels fit the terminal (one column of essentials from
//! 60×20, two columns from 80×24, three from 120×32), and one function per panel draws it from
//! the [`State`]. Nothing here changes the state.

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Chart, Clear, Dataset, GraphType, List, ListItem, ListState, Paragraph, Wrap,
};

use super::input::BINDINGS;
use super::state::{Breaker, FaultPhase, Mode, SloLive, State, TargetKind, TargetState};

/// Below this the console only says it needs more room.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;

/// Where each panel goes; `None`: it does not fit this terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Panels {
    pub header: Rect,
    pub notice: Rect,
    pub footer: Rect,
    pub too_small: Option<Rect>,
    pub throughput: Option<Rect>,
    pub latency: Option<Rect>,
    pub errors: Option<Rect>,
    pub saga: Option<Rect>,
    /// Outbox, consumer lag and breakers (in the saga panel when there is no room for both).
    pub signals: Option<Rect>,
    pub slos: Option<Rect>,
    pub targets: Option<Rect>,
    pub timeline: Option<Rect>,
}

/// The panels for a terminal of `area`'s size; `slos` only when there are SLOs to show.
pub fn layout(area: Rect, slos: bool) -> Panels {
    let [header, body, notice, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut p = Panels {
        header,
        notice,
        footer,
        ..Panels::default()
    };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        p.too_small = Some(body);
        return p;
    }
    if area.width >= 120 && area.height >= 32 {
        let [left, middle, right] = Layout::horizontal([
            Constraint::Percentage(44),
            Constraint::Percentage(30),
            Constraint::Fill(1),
        ])
        .areas(body);
        let [throughput, latency] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(left);
        let slo_rows = if slos {
            Constraint::Fill(1)
        } else {
            Constraint::Length(0)
        };
        // Room for more of the slowest hops on a tall terminal.
        let signal_rows = if body.height >= 40 { 13 } else { 8 };
        let [errors, saga, signals, slo_area] = Layout::vertical([
            Constraint::Fill(2),
            Constraint::Length(7),
            Constraint::Length(signal_rows),
            slo_rows,
        ])
        .areas(middle);
        let [targets, timeline] =
            Layout::vertical([Constraint::Fill(3), Constraint::Fill(2)]).areas(right);
        p.throughput = Some(throughput);
        p.latency = Some(latency);
        p.errors = Some(errors);
        p.saga = Some(saga);
        p.signals = Some(signals);
        p.slos = slos.then_some(slo_area);
        p.targets = Some(targets);
        p.timeline = Some(timeline);
        return p;
    }
    let right_width = (area.width * 3 / 8).clamp(24, 44);
    let [left, right] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_width)]).areas(body);
    let [throughput, latency, bottom] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length((body.height * 2 / 5).max(6)),
    ])
    .areas(left);
    p.throughput = Some(throughput);
    p.latency = Some(latency);
    if left.width >= 48 {
        let [errors, saga] =
            Layout::horizontal([Constraint::Percentage(52), Constraint::Fill(1)]).areas(bottom);
        p.errors = Some(errors);
        p.saga = Some(saga);
    } else {
        p.saga = Some(bottom);
    }
    if slos && right.height >= 18 {
        let [targets, slo_area, timeline] = Layout::vertical([
            Constraint::Fill(3),
            Constraint::Length(5),
            Constraint::Fill(2),
        ])
        .areas(right);
        p.targets = Some(targets);
        p.slos = Some(slo_area);
        p.timeline = Some(timeline);
    } else {
        let [targets, timeline] =
            Layout::vertical([Constraint::Fill(3), Constraint::Fill(2)]).areas(right);
        p.targets = Some(targets);
        p.timeline = Some(timeline);
    }
    p
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, state: &State) {
    let area = frame.area();
    let p = layout(area, !state.slos.is_empty());
    header(frame, p.header, state);
    notice(frame, p.notice, state);
    footer(frame, p.footer, state);
    if let Some(body) = p.too_small {
        let text = format!(
            "The terminal is {}×{}; the console needs {MIN_WIDTH}×{MIN_HEIGHT} at least. \
             Faults active: {}.",
            area.width,
            area.height,
            state.active().count()
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), body);
        popup(frame, area, state);
        return;
    }
    if let Some(r) = p.throughput {
        throughput(frame, r, state);
    }
    if let Some(r) = p.latency {
        // Without a panel listing the slowest hops, the slowest one goes under the latencies.
        latency(frame, r, state, p.signals.is_none());
    }
    if let Some(r) = p.errors {
        errors(frame, r, state);
    }
    if let Some(r) = p.saga {
        saga(frame, r, state, p.signals.is_none());
    }
    if let Some(r) = p.signals {
        signals(frame, r, state);
    }
    if let Some(r) = p.slos {
        slos(frame, r, state);
    }
    if let Some(r) = p.targets {
        targets(frame, r, state);
    }
    if let Some(r) = p.timeline {
        timeline(frame, r, state);
    }
    popup(frame, area, state);
}

const WARN: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
const BAD: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const GOOD: Style = Style::new().fg(Color::Green);
const DIM: Style = Style::new().fg(Color::DarkGray);

fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn window_label(state: &State) -> String {
    let w = state.window().as_secs();
    if w >= 60 {
        format!("{}m", w / 60)
    } else {
        format!("{w}s")
    }
}

fn header(frame: &mut Frame, area: Rect, state: &State) {
    let h = &state.header;
    let mut spans = vec![Span::styled(
        format!(" {} ", h.title),
        Style::new().bold().reversed(),
    )];
    if !h.verdict.is_empty() {
        let style = if h.verdict == "holding" || h.verdict == "passed" {
            GOOD
        } else {
            BAD
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(h.verdict.clone(), style));
    }
    spans.push(Span::raw(format!(
        " · {} · {}",
        h.backend,
        clock(state.now_s)
    )));
    if let Some(total) = h.total {
        spans.push(Span::raw(format!(
            " · {} left",
            clock(total.as_secs_f64() - state.now_s)
        )));
    }
    let active = state.active().count();
    let phase = if h.phase.is_empty() {
        if active == 0 {
            "steady".to_string()
        } else {
            format!("{active} fault(s) active")
        }
    } else {
        h.phase.clone()
    };
    spans.push(Span::raw(format!(" · {phase}")));
    if state.load_paused {
        spans.push(Span::styled(" · LOAD PAUSED", WARN));
    }
    spans.push(Span::styled(
        format!(" · window {}", window_label(state)),
        DIM,
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn notice(frame: &mut Frame, area: Rect, state: &State) {
    if let Some((text, error)) = &state.notice {
        let style = if *error { BAD } else { Style::new() };
        frame.render_widget(Paragraph::new(Span::styled(text.clone(), style)), area);
    }
}

/// The keys, heal-everything first so that it stays visible on the narrowest terminal.
fn footer(frame: &mut Frame, area: Rect, state: &State) {
    let mut spans = Vec::new();
    let order = ["H", "f ⏎", "h", "↑ k", "w", "e", "p", "?", "q"];
    for keys in order {
        let Some(b) = BINDINGS.iter().find(|b| b.keys == keys) else {
            continue;
        };
        if b.run_only && !state.run {
            continue;
        }
        let (key, label) = match b.keys {
            "↑ k" => ("↑↓".to_string(), "select"),
            "f ⏎" => ("f".to_string(), b.short),
            k => (k.to_string(), b.short),
        };
        let style = if keys == "H" {
            BAD.reversed()
        } else {
            Style::new().reversed()
        };
        spans.push(Span::styled(key, style));
        spans.push(Span::raw(format!(" {label} ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The span of the x axis: the window, ending now.
fn x_bounds(state: &State) -> [f64; 2] {
    let end = state.now_s.max(state.window().as_secs_f64());
    [end - state.window().as_secs_f64(), end]
}

/// The chaos windows on a chart whose plot is `width` wide: a vertical line where each starts
/// and ends, and a dotted band along the top while it lasts (the curves stay visible under it).
fn chaos_marks(state: &State, [x0, x1]: [f64; 2], top: f64, width: u16) -> Vec<Vec<(f64, f64)>> {
    let step = (x1 - x0) / f64::from(width.max(1)) / 2.0;
    let mut band = Vec::new();
    let mut marks = Vec::new();
    for (start, end) in state.chaos_windows() {
        for edge in [start, end] {
            if (x0..=x1).contains(&edge) && edge < state.now_s {
                marks.push(vec![(edge, 0.0), (edge, top)]);
            }
        }
        let mut t = start.max(x0);
        while t <= end.min(x1) {
            band.push((t, top));
            t += step;
        }
    }
    marks.push(band);
    marks
}

fn chaos_datasets(marks: &[Vec<(f64, f64)>]) -> Vec<Dataset<'_>> {
    let style = Style::new().fg(Color::Red);
    marks
        .iter()
        .enumerate()
        .map(|(i, points)| {
            let kind = if i + 1 == marks.len() {
                GraphType::Scatter
            } else {
                GraphType::Line
            };
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(kind)
                .style(style)
                .data(points)
        })
        .collect()
}

fn last(points: &[(f64, f64)]) -> f64 {
    points.last().map_or(0.0, |p| p.1)
}

fn throughput(frame: &mut Frame, area: Rect, state: &State) {
    let requests = state.request_rates();
    let confirmed = state.confirmed_rates();
    let bounds = x_bounds(state);
    let top = requests
        .iter()
        .chain(&confirmed)
        .map(|p| p.1)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let marks = chaos_marks(state, bounds, top, area.width);
    let title = format!(
        "requests/s {:.1} · confirmed orders/s {:.1}",
        last(&requests),
        last(&confirmed)
    );
    let mut datasets = chaos_datasets(&marks);
    datasets.extend([
        Dataset::default()
            .name("req/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&requests),
        Dataset::default()
            .name("confirmed/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Green))
            .data(&confirmed),
    ]);
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(
            Axis::default()
                .bounds(bounds)
                .labels([format!("-{}", window_label(state)), "now".to_string()]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(["0".to_string(), format!("{top:.0}")]),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}s", v / 1000.0)
    } else {
        format!("{v:.0}ms")
    }
}

fn latency(frame: &mut Frame, area: Rect, state: &State, with_hop: bool) {
    let series = state.latencies();
    let pick = |f: fn(&super::state::Quantiles) -> f64| -> Vec<(f64, f64)> {
        series.iter().map(|(t, q)| (*t, f(q))).collect()
    };
    let (p50, p95, p99) = (pick(|q| q.p50), pick(|q| q.p95), pick(|q| q.p99));
    let bounds = x_bounds(state);
    let top = p99.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
    let marks = chaos_marks(state, bounds, top, area.width);
    let scope = state.endpoint.as_deref().unwrap_or("all endpoints");
    let title = format!(
        "latency p50 {} p95 {} p99 {} · {scope}",
        ms(last(&p50)),
        ms(last(&p95)),
        ms(last(&p99))
    );
    let mut datasets = chaos_datasets(&marks);
    datasets.extend([
        line("p50", Color::Green, &p50),
        line("p95", Color::Yellow, &p95),
        line("p99", Color::Magenta, &p99),
    ]);
    let chart = Chart::new(datasets)
        .block({
            let block = Block::bordered().title(title);
            if with_hop {
                block.title_bottom(slowest_hop_line(state))
            } else {
                block
            }
        })
        .x_axis(Axis::default().bounds(bounds))
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(["0".to_string(), ms(top)]),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}

fn line<'a>(name: &'static str, color: Color, data: &'a [(f64, f64)]) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(color))
        .data(data)
}

/// `"GET /api/orders/{id}"` shortened to fit: the method's initial and the path without `/api`.
fn short_endpoint(endpoint: &str, width: usize) -> String {
    if endpoint.chars().count() <= width {
        return endpoint.to_string();
    }
    let short = endpoint.replacen(" /api/", " ", 1);
    short.chars().take(width).collect()
}

fn errors(frame: &mut Frame, area: Rect, state: &State) {
    let answers = state.answers();
    let inner = area.width.saturating_sub(2) as usize;
    // 429s get their own column where there is room, and are listed below where not.
    let wide = inner >= 40;
    let name_width = inner.saturating_sub(if wide { 21 } else { 16 }).max(6);
    let columns = |name: &str, n: &str, err: &str, shed: &str, limited: &str| {
        let mut row = format!("{name:<name_width$} {n:>5} {err:>4} {shed:>4}");
        if wide {
            row.push_str(&format!(" {limited:>4}"));
        }
        row
    };
    let mut lines = vec![Line::styled(
        columns("endpoint", "n", "err", "shed", "429"),
        DIM,
    )];
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for (endpoint, n, by_status) in &answers {
        let count = |f: &dyn Fn(u16) -> bool| -> u64 {
            by_status
                .iter()
                .filter(|(s, _)| f(**s))
                .map(|(_, n)| n)
                .sum()
        };
        let shed = count(&|s| s == 503);
        let limited = count(&|s| s == 429);
        let failed = count(&|s| s == 0 || (s >= 400 && s != 429 && s != 503));
        for (s, c) in by_status {
            if *s == 0 || *s >= 400 {
                *codes.entry(*s).or_default() += c;
            }
        }
        let style = if failed > 0 { BAD } else { Style::new() };
        lines.push(Line::styled(
            columns(
                &short_endpoint(endpoint, name_width),
                &n.to_string(),
                &failed.to_string(),
                &shed.to_string(),
                &limited.to_string(),
            ),
            style,
        ));
    }
    if !codes.is_empty() {
        let listed: Vec<String> = codes
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("no answer×{n}")
                } else {
                    format!("{s}×{n}")
                }
            })
            .collect();
        lines.push(Line::styled(listed.join(" "), WARN));
    }
    let title = format!("answers by endpoint · {}", window_label(state));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(title)),
        area,
    );
}

fn saga(frame: &mut Frame, area: Rect, state: &State, with_signals: bool) {
    let (outcomes, compensations, timeouts) = state.saga_outcomes();
    let latest = state.latest_system();
    let figure = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let get = |s: &str| outcomes.get(s).copied().unwrap_or(0);
    let mut lines = vec![
        Line::raw(format!(
            "in flight {} · oldest {}",
            figure(latest.and_then(|s| s.in_flight)),
            latest
                .and_then(|s| s.oldest_pending_s)
                .map_or("-".into(), |v| format!("{v:.1}s"))
        )),
        Line::raw(format!(
            "confirmed {} · rejected {} · cancelled {}",
            get("CONFIRMED"),
            get("REJECTED"),
            get("CANCELLED")
        )),
        Line::styled(
            format!("compensated {compensations} · step timeouts {timeouts}"),
            if compensations + timeouts > 0 {
                WARN
            } else {
                Style::new()
            },
        ),
    ];
    if with_signals {
        lines.extend(signal_lines(state));
    }
    let title = format!("sagas · {}", window_label(state));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(title)),
        area,
    );
}

fn signal_lines(state: &State) -> Vec<Line<'static>> {
    let Some(s) = state.latest_system() else {
        return vec![Line::styled("no metrics yet", DIM)];
    };
    let pairs = |label: &str, items: &[(String, f64)]| {
        let text = items
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        let busy = items.iter().any(|(_, v)| *v > 0.0);
        Line::styled(
            format!("{label} {}", if text.is_empty() { "-" } else { &text }),
            if busy { WARN } else { Style::new() },
        )
    };
    let mut breakers = vec![Span::raw("breakers ")];
    for (service, b) in &s.breakers {
        let style = match b {
            Breaker::Closed => GOOD,
            Breaker::Open => BAD,
            Breaker::HalfOpen => WARN,
        };
        breakers.push(Span::raw(format!("{service} ")));
        breakers.push(Span::styled(format!("{} ", b.name()), style));
    }
    if s.breakers.is_empty() {
        breakers.push(Span::raw("-"));
    }
    vec![
        Line::from(breakers),
        pairs("outbox", &s.outbox),
        pairs("lag", &s.consumer_lag),
    ]
}

fn signals(frame: &mut Frame, area: Rect, state: &State) {
    let mut lines = signal_lines(state);
    let room = usize::from(area.height.saturating_sub(2)).saturating_sub(lines.len());
    lines.extend(hop_lines(state, room));
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("outbox · lag · breakers · hops")),
        area,
    );
}

/// The slowest hop in one line, its source and figure before its name (a narrow panel cuts
/// the end): from the traces, else from the metrics saying why.
fn slowest_hop_line(state: &State) -> Line<'static> {
    match state.trace_hops() {
        Some((figures, _)) => {
            let f = &figures[0];
            Line::raw(format!(
                "slowest hop, traces: p99 {} {} ×{}",
                ms(f.p99_us as f64 / 1000.0),
                f.hop,
                f.traces
            ))
        }
        None => metrics_hop_line(state),
    }
}

fn metrics_hop_line(state: &State) -> Line<'static> {
    let why = state.hops_from_metrics_because();
    match state.latest_system().and_then(|s| s.slowest_hop.clone()) {
        Some((hop, p95)) => Line::raw(format!(
            "slowest hop, metrics ({why}): p95 {} {hop}",
            ms(p95)
        )),
        None => Line::styled(format!("slowest hop: none yet ({why})"), DIM),
    }
}

/// The slowest hops in at most `rows` lines: a title, then one hop a line.
fn hop_lines(state: &State, rows: usize) -> Vec<Line<'static>> {
    if rows == 0 {
        return Vec::new();
    }
    let Some((figures, traces)) = state.trace_hops() else {
        return vec![metrics_hop_line(state)];
    };
    let mut lines = vec![Line::styled(
        format!(
            "slowest hops, traces {} (n={traces}): p99 p95",
            window_label(state)
        ),
        DIM,
    )];
    // The figures first: a narrow panel cuts the end of a long hop's name, not its numbers.
    lines.extend(figures.iter().take(rows - 1).map(|f| {
        Line::raw(format!(
            "{:>6} {:>6} {} ×{}",
            ms(f.p99_us as f64 / 1000.0),
            ms(f.p95_us as f64 / 1000.0),
            f.hop,
            f.traces
        ))
    }));
    lines
}

fn slos(frame: &mut Frame, area: Rect, state: &State) {
    // What needs the operator's eyes first, since a small panel shows only the first few: the
    // broken ones, then those with the least error budget left (the ones a fault is eating
    // into), then the rest, those of the phase the load is in (or of no phase) before those of
    // another, and last those not yet measurable. The order is stable otherwise.
    let now = state.header.phase.split_whitespace().next().unwrap_or("");
    let elsewhere = |s: &SloLive| {
        ["before", "during", "after"]
            .iter()
            .any(|p| *p != now && s.name.ends_with(&format!("({p})")))
    };
    let mut shown: Vec<&SloLive> = state.slos.iter().collect();
    shown.sort_by(|a, b| {
        let rank = |s: &SloLive| match s.held {
            Some(false) => 0,
            Some(true) => 1,
            None => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then(
                a.budget_left
                    .unwrap_or(1.0)
                    .total_cmp(&b.budget_left.unwrap_or(1.0)),
            )
            .then(elsewhere(a).cmp(&elsewhere(b)))
    });
    let count = |held: Option<bool>| state.slos.iter().filter(|s| s.held == held).count();
    let title = if state.slos.is_empty() {
        "SLOs so far".to_string()
    } else {
        format!(
            "SLOs · {} broken · {} ok · {} waiting",
            count(Some(false)),
            count(Some(true)),
            count(None)
        )
    };
    let lines: Vec<Line> = shown
        .into_iter()
        .map(|s| {
            let (mark, style) = match s.held {
                Some(true) => ("ok  ", GOOD),
                Some(false) => ("FAIL", BAD),
                None => ("wait", DIM),
            };
            let budget = s
                .budget_left
                .map_or(String::new(), |b| format!(" · budget {:.0}%", b * 100.0));
            Line::from(vec![
                Span::styled(mark, style),
                Span::raw(format!(" {} {}{budget}", s.name, s.detail)),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(title)),
        area,
    );
}

fn state_style(state: &TargetState) -> Style {
    match state {
        TargetState::Running => GOOD,
        TargetState::Unknown => DIM,
        TargetState::Faulted(_) => WARN,
        TargetState::Down | TargetState::Paused | TargetState::Cut => BAD,
    }
}

fn targets(frame: &mut Frame, area: Rect, state: &State) {
    let inner = area.width.saturating_sub(2) as usize;
    // The kind column goes first when names would not fit.
    let with_kind = inner >= 30;
    let items: Vec<ListItem> = state
        .targets
        .iter()
        .map(|t| {
            let kind = match t.kind {
                TargetKind::Service => "svc ",
                TargetKind::Process => "proc",
                TargetKind::Link => "link",
            };
            let label = t.state.label();
            let kind_width = if with_kind { 5 } else { 0 };
            let name_width = inner
                .saturating_sub(label.chars().count() + kind_width + 2)
                .max(6);
            let name: String = t.name.chars().take(name_width).collect();
            let mut spans = Vec::new();
            if with_kind {
                spans.push(Span::styled(format!("{kind} "), DIM));
            }
            spans.push(Span::raw(format!("{name:<name_width$} ")));
            spans.push(Span::styled(label, state_style(&t.state)));
            ListItem::new(Line::from(spans))
        })
        .collect();
    let mut list_state = ListState::default();
    if !state.targets.is_empty() {
        list_state.select(Some(state.selected));
    }
    let faulty = state.targets.iter().filter(|t| !t.state.healthy()).count();
    let title = format!("targets · {faulty} not healthy");
    let list = List::new(items)
        .block(Block::bordered().title(title))
        .highlight_style(Style::new().reversed())
        .highlight_symbol("›");
    frame.render_stateful_widget(list, area, &mut list_state);
}

fn timeline(frame: &mut Frame, area: Rect, state: &State) {
    let now = state.now_s;
    let mut entries: Vec<_> = state.timeline.iter().collect();
    // Active first, then what is planned next, then the latest healed.
    entries.sort_by(|a, b| {
        let rank = |p: FaultPhase| match p {
            FaultPhase::Active => 0,
            FaultPhase::Planned => 1,
            FaultPhase::Healed => 2,
        };
        rank(a.phase)
            .cmp(&rank(b.phase))
            .then_with(|| match a.phase {
                FaultPhase::Healed => b
                    .healed_s
                    .partial_cmp(&a.healed_s)
                    .unwrap_or(std::cmp::Ordering::Equal),
                _ => a
                    .start_s
                    .partial_cmp(&b.start_s)
                    .unwrap_or(std::cmp::Ordering::Equal),
            })
    });
    let lines: Vec<Line> = entries
        .iter()
        .map(|e| {
            let manual = if e.manual { " (manual)" } else { "" };
            match e.phase {
                FaultPhase::Active => {
                    let left = e.until_s.map_or("until healed".to_string(), |u| {
                        format!("{:.0}s left", (u - now).max(0.0))
                    });
                    Line::from(vec![
                        Span::styled(format!("ACTIVE {left} "), BAD),
                        Span::raw(format!("{}{manual}", e.label)),
                    ])
                }
                FaultPhase::Planned => Line::from(vec![
                    Span::styled("next   ", WARN),
                    Span::raw(format!("{} in {:.0}s", e.label, (e.start_s - now).max(0.0))),
                ]),
                FaultPhase::Healed => Line::from(vec![
                    Span::styled(
                        format!(
                            "healed {:.0}s–{:.0}s ",
                            e.start_s,
                            e.healed_s.unwrap_or(now)
                        ),
                        GOOD,
                    ),
                    Span::raw(format!("{}{manual}", e.label)),
                ]),
            }
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::styled("no fault yet: select a target, press f", DIM)]
    } else {
        lines
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title("chaos timeline")),
        area,
    );
}

/// A box of `width`×`height` in the middle of `area`, clipped to it.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn popup(frame: &mut Frame, area: Rect, state: &State) {
    match &state.mode {
        Mode::Normal => {}
        Mode::Help => {
            let mut lines: Vec<Line> = BINDINGS
                .iter()
                .filter(|b| state.run || !b.run_only)
                .map(|b| {
                    Line::from(vec![
                        Span::styled(format!("{:<6}", b.keys), Style::new().bold()),
                        Span::raw(b.help),
                    ])
                })
                .collect();
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "In the fault menu: ↑↓ choose, ⏎ edit it, Esc back. In the form: ↑↓/Tab field, \
                 type to edit, ⏎ inject, Esc cancel, Ctrl-H heal everything.",
                DIM,
            ));
            let help = Paragraph::new(lines)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title("keys · any key closes"));
            // As tall as the lines once wrapped inside the borders, not one row per line.
            let width = area.width.min(100);
            let height = help.line_count(width.saturating_sub(2));
            let r = centered(area, width, u16::try_from(height).unwrap_or(u16::MAX));
            frame.render_widget(Clear, r);
            frame.render_widget(help, r);
        }
        Mode::Menu(menu) => {
            let items: Vec<ListItem> = menu
                .faults
                .iter()
                .map(|f| ListItem::new(f.name()))
                .collect();
            let r = centered(area, 40, menu.faults.len() as u16 + 2);
            let mut list_state = ListState::default();
            list_state.select(Some(menu.selected));
            frame.render_widget(Clear, r);
            frame.render_stateful_widget(
                List::new(items)
                    .block(Block::bordered().title(format!("fault on {}", menu.target)))
                    .highlight_style(Style::new().reversed())
                    .highlight_symbol("›"),
                r,
                &mut list_state,
            );
        }
        Mode::Form(form) => {
            let mut lines: Vec<Line> = form
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let style = if i == form.selected {
                        Style::new().reversed()
                    } else {
                        Style::new()
                    };
                    let value = if f.name == super::state::FOR && f.value.is_empty() {
                        "(until healed)".to_string()
                    } else {
                        f.value.clone()
                    };
                    Line::from(vec![
                        Span::raw(format!("{:>15} = ", f.name)),
                        Span::styled(value, style),
                    ])
                })
                .collect();
            lines.push(Line::styled("⏎ inject · Esc cancel", DIM));
            let r = centered(area, 50, lines.len() as u16 + 2);
            frame.render_widget(Clear, r);
            frame.render_widget(
                Paragraph::new(lines).block(Block::bordered().title(format!(
                    "{} on {}",
                    form.fault.name(),
                    form.target
                ))),
                r,
            );
        }
        Mode::ConfirmQuit => {
            let r = centered(area, 50, 4);
            frame.render_widget(Clear, r);
            frame.render_widget(
                Paragraph::new(
                    "Quit interrupts the run: the load and faults stop, it heals and tears down. \
                     y to quit, any other key to stay.",
                )
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title("quit?")),
                r,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::console::state::{
        ChaosEvent, Header, HopSource, HopsTick, Quantiles, SystemTick, TargetRow, TrafficTick,
        Update, WINDOWS,
    };

    /// The screen as text, one line per row.
    fn screen(state: &State, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, state)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer.cell((x, y)).map_or(" ", |c| c.symbol()))
                    .collect::<String>()
            })
            .collect()
    }

    fn shows(lines: &[String], text: &str) -> bool {
        lines.iter().any(|l| l.contains(text))
    }

    fn row(name: &str, kind: TargetKind, state: TargetState) -> TargetRow {
        TargetRow {
            name: name.into(),
            kind,
            state,
        }
    }

    /// A console attached to a `harness up` with one instance each, after 30 s of traffic.
    fn attached() -> State {
        let mut s = State::new(
            Header {
                title: "harness up".into(),
                backend: "local".into(),
                total: None,
                phase: String::new(),
                verdict: String::new(),
            },
            false,
        );
        s.apply(Update::Targets(vec![
            row("order", TargetKind::Service, TargetState::Running),
            row("order#1", TargetKind::Process, TargetState::Running),
            row("payment#1", TargetKind::Process, TargetState::Running),
            row("gateway->payment#1", TargetKind::Link, TargetState::Running),
        ]));
        for t in 1..=30 {
            let t = f64::from(t);
            s.apply(Update::Traffic(TrafficTick {
                t,
                interval_s: 1.0,
                counts: vec![
                    ("POST /api/orders".into(), 201, 20),
                    ("POST /api/orders".into(), 503, 2),
                    ("GET /api/products".into(), 502, 1),
                ],
                latency: Some(Quantiles {
                    p50: 12.0,
                    p95: 40.0,
                    p99: 95.0,
                }),
                ..TrafficTick::default()
            }));
            s.apply(Update::System(SystemTick {
                t,
                interval_s: 1.0,
                completed: [("CONFIRMED".to_string(), 18)].into_iter().collect(),
                in_flight: Some(7.0),
                breakers: vec![("payment".into(), Breaker::Closed)],
                ..SystemTick::default()
            }));
        }
        s
    }

    #[test]
    fn the_main_screen_shows_throughput_latency_answers_and_sagas_at_80_by_24() {
        let lines = screen(&attached(), 80, 24);
        assert!(shows(&lines, "harness up"), "{lines:#?}");
        assert!(shows(&lines, "requests/s 23.0"), "{lines:#?}");
        assert!(shows(&lines, "confirmed orders/s 18.0"), "{lines:#?}");
        assert!(shows(&lines, "p99 95ms"), "{lines:#?}");
        assert!(shows(&lines, "in flight 7"), "{lines:#?}");
        assert!(
            shows(&lines, "503×60"),
            "shed answers are listed: {lines:#?}"
        );
        assert!(shows(&lines, "HEAL ALL"), "{lines:#?}");
        assert!(shows(&lines, "no fault yet"), "{lines:#?}");
    }

    #[test]
    fn an_active_fault_shows_on_its_link_and_in_the_timeline_with_its_countdown() {
        let mut s = attached();
        s.apply(Update::Chaos(ChaosEvent::Applied {
            id: "manual-1".into(),
            label: "latency gateway->payment#1".into(),
            at_s: 20.0,
            until_s: Some(50.0),
            manual: true,
            affected: vec!["gateway->payment#1".into()],
        }));
        s.apply(Update::Targets(vec![row(
            "gateway->payment#1",
            TargetKind::Link,
            TargetState::Faulted("latency".into()),
        )]));
        let lines = screen(&s, 100, 30);
        assert!(shows(&lines, "ACTIVE 20s left latency"), "{lines:#?}");
        assert!(shows(&lines, "gateway->payment#1 (manual)"), "{lines:#?}");
        assert!(shows(&lines, "FAULT latency"), "{lines:#?}");
        assert!(shows(&lines, "1 fault(s) active"), "{lines:#?}");

        s.apply(Update::Chaos(ChaosEvent::HealedAll { at_s: 31.0 }));
        let lines = screen(&s, 100, 30);
        assert!(shows(&lines, "healed 20s–31s latency"), "{lines:#?}");
    }

    #[test]
    fn a_killed_process_reads_down_and_its_service_not_up() {
        let mut s = attached();
        s.apply(Update::Targets(vec![
            row(
                "order",
                TargetKind::Service,
                TargetState::Faulted("1/1 down".into()),
            ),
            row("order#1", TargetKind::Process, TargetState::Down),
            row("payment#1", TargetKind::Process, TargetState::Paused),
        ]));
        let lines = screen(&s, 80, 24);
        assert!(shows(&lines, "order#1"), "{lines:#?}");
        assert!(shows(&lines, "DOWN"), "{lines:#?}");
        assert!(shows(&lines, "PAUSED"), "{lines:#?}");
        assert!(shows(&lines, "FAULT 1/1 down"), "{lines:#?}");
        assert!(shows(&lines, "3 not healthy"), "{lines:#?}");
    }

    #[test]
    fn a_broken_slo_shows_in_the_header_and_its_panel_during_a_run() {
        let mut s = attached();
        s.run = true;
        s.header.title = "payment-latency".into();
        s.header.total = Some(std::time::Duration::from_secs(90));
        s.apply(Update::Slos(vec![
            SloLive {
                name: "p99 POST /api/orders".into(),
                detail: "812ms > 500ms".into(),
                held: Some(false),
                budget_left: None,
            },
            SloLive {
                name: "error rate".into(),
                detail: "0.4% <= 1%".into(),
                held: Some(true),
                budget_left: Some(0.6),
            },
        ]));
        let lines = screen(&s, 160, 48);
        assert!(
            shows(&lines, "FAIL p99 POST /api/orders 812ms > 500ms"),
            "{lines:#?}"
        );
        assert!(shows(&lines, "budget 60%"), "{lines:#?}");
        for (w, h) in [(80, 24), (160, 48)] {
            let lines = screen(&s, w, h);
            assert!(shows(&lines, "1 SLO(s) broken"), "{w}x{h}: {lines:#?}");
            assert!(
                shows(&lines, "FAIL p99 POST /api/orders"),
                "{w}x{h}: {lines:#?}"
            );
            assert!(shows(&lines, "00:01:00 left"), "{w}x{h}: {lines:#?}");
            assert!(shows(&lines, "pause load"), "{w}x{h}: {lines:#?}");
        }
    }

    /// A small panel shows only the first few SLOs: the broken one and the one a fault is
    /// eating into come before those holding with their whole budget and those still waiting.
    #[test]
    fn the_slo_panel_puts_broken_and_strained_slos_first_and_counts_them_all() {
        let mut s = attached();
        s.run = true;
        let slo = |name: &str, held: Option<bool>, budget_left: Option<f64>| SloLive {
            name: name.into(),
            detail: String::new(),
            held,
            budget_left,
        };
        s.apply(Update::Slos(vec![
            slo("calm-before", Some(true), Some(1.0)),
            slo("waiting-after", None, None),
            slo("strained-during", Some(true), Some(0.2)),
            slo("broken-during", Some(false), None),
        ]));
        let lines = screen(&s, 100, 30);
        assert!(
            shows(&lines, "SLOs · 1 broken · 2 ok · 1 waiting"),
            "{lines:#?}"
        );
        let at = |name: &str| lines.iter().position(|l| l.contains(name));
        let (broken, strained) = (at("broken-during"), at("strained-during"));
        assert!(broken.is_some() && strained.is_some(), "{lines:#?}");
        assert!(broken < strained, "{lines:#?}");
        if let Some(calm) = at("calm-before") {
            assert!(strained < Some(calm), "{lines:#?}");
        }
        if let Some(waiting) = at("waiting-after") {
            assert!(at("calm-before") < Some(waiting), "{lines:#?}");
        }
    }

    /// During a fault, the SLOs of that phase come before the calm ones of the phase before it,
    /// whose whole budget is left too.
    #[test]
    fn among_slos_holding_with_their_budget_those_of_the_phase_now_come_first() {
        let mut s = attached();
        s.run = true;
        s.header.phase = "during slow payment".into();
        let slo = |name: &str| SloLive {
            name: name.into(),
            detail: String::new(),
            held: Some(true),
            budget_left: Some(1.0),
        };
        s.apply(Update::Slos(vec![
            slo("p99 <= 250ms (before)"),
            slo("error rate <= 0 (after)"),
            slo("saga completion p99 <= 4s (during)"),
            slo("error rate <= 0.01"),
        ]));
        // Tall enough for all four (a narrow panel wraps a long name onto a second line).
        let lines = screen(&s, 120, 60);
        let at = |name: &str| lines.iter().position(|l| l.contains(name));
        let (during, whole_run, before, after) = (
            at("saga completion p99 <= 4s"),
            at("error rate <= 0.01"),
            at("p99 <= 250ms"),
            at("error rate <= 0 "),
        );
        assert!(before.is_some() && after.is_some(), "{lines:#?}");
        assert!(during < whole_run && whole_run < before, "{lines:#?}");
        assert!(whole_run < after, "{lines:#?}");
    }

    fn figure(hop: &str, p99_ms: u64, traces: u64) -> crate::console::state::HopFigure {
        crate::console::state::HopFigure {
            hop: hop.into(),
            p99_us: p99_ms * 1000,
            p95_us: p99_ms * 500,
            traces,
        }
    }

    fn traced(s: &mut State) {
        let figures = vec![
            figure("order outbox wait order.events", 840, 310),
            figure("inventory process inventory.commands", 120, 300),
            figure("gateway → order", 45, 320),
            figure("payment db", 12, 290),
        ];
        s.apply(Update::Hops(HopsTick {
            source: HopSource::Traces,
            by_window: WINDOWS.iter().map(|_| (figures.clone(), 320)).collect(),
        }));
    }

    #[test]
    fn the_slowest_hop_comes_from_the_traces_and_says_so() {
        let mut s = attached();
        // The metrics' figure, which the traces replace.
        s.apply(Update::System(SystemTick {
            t: 31.0,
            interval_s: 1.0,
            slowest_hop: Some(("transit to inventory".into(), 9.0)),
            ..SystemTick::default()
        }));
        traced(&mut s);
        let lines = screen(&s, 80, 24);
        assert!(
            shows(&lines, "slowest hop, traces: p99 840ms order outbox wait"),
            "{lines:#?}"
        );
        assert!(!shows(&lines, "transit to inventory"), "{lines:#?}");

        // A larger terminal lists the top few, with the window and the traces counted.
        let lines = screen(&s, 160, 48);
        assert!(
            shows(&lines, "slowest hops, traces 1m (n=320): p99 p95"),
            "{lines:#?}"
        );
        for hop in [
            " 840ms  420ms order outbox wait order.events",
            " 120ms   60ms inventory process inventory.com",
            "  45ms   22ms gateway → order ×320",
        ] {
            assert!(shows(&lines, hop), "{hop}: {lines:#?}");
        }
    }

    #[test]
    fn without_traces_the_slowest_hop_is_the_metrics_figure_and_says_why() {
        let mut s = attached();
        s.apply(Update::System(SystemTick {
            t: 31.0,
            interval_s: 1.0,
            slowest_hop: Some(("transit to inventory".into(), 9.0)),
            ..SystemTick::default()
        }));
        s.apply(Update::Hops(HopsTick {
            source: HopSource::Metrics("traces are off".into()),
            by_window: Vec::new(),
        }));
        for (w, h) in [(80, 24), (160, 48)] {
            let lines = screen(&s, w, h);
            assert!(
                shows(&lines, "slowest hop, metrics (traces are off): p95 9ms"),
                "{w}x{h}: {lines:#?}"
            );
        }
    }

    #[test]
    fn a_saga_slo_broken_live_and_a_metric_slo_not_yet_measurable() {
        let mut s = attached();
        s.run = true;
        s.header.total = Some(std::time::Duration::from_secs(90));
        s.apply(Update::Slos(vec![
            SloLive {
                name: "saga completion p99 <= 1s".into(),
                detail: "now 2.8s (n=42)".into(),
                held: Some(false),
                budget_left: Some(0.0),
            },
            SloLive {
                name: "metric outbox_pending_messages <= 100 (after)".into(),
                detail: "not yet measurable: no scrape had this metric".into(),
                held: None,
                budget_left: None,
            },
        ]));
        let lines = screen(&s, 160, 48);
        for text in [
            "FAIL saga completion p99 <= 1s now 2.8s (n=42)",
            "budget 0%",
            "wait metric outbox_pending_messages <= 100",
            "not yet measurable: no scrape had this",
        ] {
            assert!(shows(&lines, text), "{text}: {lines:#?}");
        }
        assert!(shows(&lines, "1 SLO(s) broken"), "{lines:#?}");

        // Nothing measurable yet is neither a pass nor a fail.
        s.apply(Update::Slos(vec![SloLive {
            name: "metric outbox_pending_messages <= 100 (after)".into(),
            detail: "not yet measurable: no scrape had this metric".into(),
            held: None,
            budget_left: None,
        }]));
        let lines = screen(&s, 80, 24);
        assert!(shows(&lines, "no SLO measurable yet"), "{lines:#?}");
        assert!(!shows(&lines, "holding"), "{lines:#?}");
    }

    #[test]
    fn a_paused_broker_reads_paused() {
        let mut s = attached();
        s.apply(Update::Targets(vec![
            row("order#1", TargetKind::Process, TargetState::Running),
            row("broker", TargetKind::Process, TargetState::Paused),
        ]));
        let lines = screen(&s, 80, 24);
        let broker = lines
            .iter()
            .find(|l| l.contains("broker"))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(broker.contains("PAUSED"), "{lines:#?}");
    }

    #[test]
    fn a_tiny_terminal_says_what_it_needs_and_keeps_heal_everything() {
        let lines = screen(&attached(), 50, 12);
        assert!(shows(&lines, "needs 60×20"), "{lines:#?}");
        assert!(lines[11].starts_with("H HEAL ALL"), "{lines:#?}");
        let lines = screen(&attached(), 60, 20);
        assert!(!shows(&lines, "needs 60×20"), "{lines:#?}");
        assert!(shows(&lines, "requests/s"), "{lines:#?}");
        assert!(shows(&lines, "order#1"), "{lines:#?}");
        assert!(shows(&lines, "HEAL ALL"), "{lines:#?}");
    }

    #[test]
    fn the_layout_uses_the_room_there_is_without_overlaps() {
        for (w, h) in [(60, 20), (80, 24), (120, 32), (250, 80)] {
            let p = layout(Rect::new(0, 0, w, h), true);
            assert!(p.too_small.is_none(), "{w}x{h}");
            let panels: Vec<Rect> = [
                p.throughput,
                p.latency,
                p.errors,
                p.saga,
                p.signals,
                p.slos,
                p.targets,
                p.timeline,
            ]
            .into_iter()
            .flatten()
            .collect();
            for (i, a) in panels.iter().enumerate() {
                assert!(a.width >= 10 && a.height >= 3, "{w}x{h}: {a:?}");
                for b in &panels[i + 1..] {
                    assert!(!a.intersects(*b), "{w}x{h}: {a:?} overlaps {b:?}");
                }
            }
            assert!(p.throughput.is_some() && p.targets.is_some() && p.timeline.is_some());
            assert_eq!(p.errors.is_some(), w >= 80, "{w}x{h}");
            assert_eq!(p.signals.is_some(), w >= 120, "{w}x{h}");
        }
        assert!(layout(Rect::new(0, 0, 59, 30), false).too_small.is_some());
    }

    #[test]
    fn the_help_is_tall_enough_for_its_wrapped_lines_on_an_80_column_terminal() {
        let mut s = attached();
        s.run = true;
        s.mode = Mode::Help;
        let lines = screen(&s, 80, 32);
        // The last words of the last line, which wraps at 80 columns.
        assert!(shows(&lines, "heal everything."), "{lines:#?}");
        for b in BINDINGS {
            let words: String = b
                .help
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(shows(&lines, &words), "{}: {lines:#?}", b.keys);
        }
    }

    #[test]
    fn the_help_lists_every_key_of_the_table() {
        let mut s = attached();
        s.mode = Mode::Help;
        let lines = screen(&s, 120, 32);
        for b in BINDINGS.iter().filter(|b| !b.run_only) {
            assert!(
                shows(&lines, &b.help[..30.min(b.help.len())]),
                "{}: {lines:#?}",
                b.keys
            );
        }
    }
}
