//! One trace as a tree of spans, and its text rendering for `harness trace ORDER_ID`.
//!
//! The tree is built from parent links. A span whose parent never arrived (dropped by a full
//! store, lost by an exporter, or still in a batch not yet sent) becomes a root of its own and
//! is marked as an orphan, so that nothing received is hidden. The earliest root is not marked
//! even when it has a parent id: the entry span's parent is normally a remote caller that does
//! not export spans (the load generator, curl with a `traceparent`).

use std::collections::HashMap;

use super::store::{ORDER_ID, SpanRecord, StatusCode};
use crate::slo::format_micros;

/// A trace's spans, linked.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: Vec<Node>,
    roots: Vec<usize>,
    start_unix_ns: u64,
}

/// One span in a [`Tree`].
#[derive(Debug, Clone)]
pub struct Node {
    pub span: SpanRecord,
    /// Its parent span id is set but the parent is not in the trace.
    pub orphan: bool,
    children: Vec<usize>,
}

impl Tree {
    /// Links `spans` (one trace; a span id seen twice is kept once). Children and roots are
    /// ordered by start time.
    pub fn build(spans: Vec<SpanRecord>) -> Self {
        let mut nodes: Vec<Node> = Vec::with_capacity(spans.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(spans.len());
        for span in spans {
            if index.contains_key(&span.span_id) {
                continue;
            }
            index.insert(span.span_id.clone(), nodes.len());
            nodes.push(Node {
                span,
                orphan: false,
                children: Vec::new(),
            });
        }
        let start_unix_ns = nodes
            .iter()
            .map(|n| n.span.start_unix_ns)
            .min()
            .unwrap_or(0);

        let parents: Vec<Option<usize>> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let parent = n.span.parent_span_id.as_ref()?;
                index.get(parent).copied().filter(|&p| p != i)
            })
            .collect();
        for (i, parent) in parents.iter().enumerate() {
            match parent {
                Some(p) => nodes[*p].children.push(i),
                None => nodes[i].orphan = nodes[i].span.parent_span_id.is_some(),
            }
        }
        let by_start = |nodes: &[Node], ids: &mut Vec<usize>| {
            ids.sort_by(|&a, &b| {
                let (a, b) = (&nodes[a].span, &nodes[b].span);
                (a.start_unix_ns, &a.span_id).cmp(&(b.start_unix_ns, &b.span_id))
            });
        };
        for i in 0..nodes.len() {
            let mut children = std::mem::take(&mut nodes[i].children);
            by_start(&nodes, &mut children);
            nodes[i].children = children;
        }
        let mut roots: Vec<usize> = (0..nodes.len()).filter(|&i| parents[i].is_none()).collect();
        by_start(&nodes, &mut roots);
        if let Some(&entry) = roots.first() {
            nodes[entry].orphan = false;
        }

        let mut tree = Self {
            nodes,
            roots,
            start_unix_ns,
        };
        tree.break_cycles(&parents);
        tree
    }

    /// Spans caught in a parent cycle (only malformed data does that) are unreachable from any
    /// root; each cycle is cut at its earliest span, which becomes an orphan root.
    fn break_cycles(&mut self, parents: &[Option<usize>]) {
        let mut reached = vec![false; self.nodes.len()];
        for (_, i) in self.walk_ids() {
            reached[i] = true;
        }
        while let Some(cut) = (0..self.nodes.len())
            .filter(|&i| !reached[i])
            .min_by_key(|&i| (self.nodes[i].span.start_unix_ns, i))
        {
            if let Some(p) = parents[cut] {
                self.nodes[p].children.retain(|&c| c != cut);
            }
            self.nodes[cut].orphan = true;
            self.roots.push(cut);
            for (_, i) in self.walk_from(cut) {
                reached[i] = true;
            }
        }
    }

    /// Every span, depth first in start order, with its depth (0 for a root).
    pub fn walk(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.walk_ids()
            .into_iter()
            .map(|(d, i)| (d, &self.nodes[i]))
    }

    pub fn roots(&self) -> impl Iterator<Item = &Node> {
        self.roots.iter().map(|&i| &self.nodes[i])
    }

    pub fn children<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a Node> {
        node.children.iter().map(|&i| &self.nodes[i])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The earliest start of any span.
    pub fn start_unix_ns(&self) -> u64 {
        self.start_unix_ns
    }

    /// The latest end of any span minus the earliest start.
    pub fn duration_ns(&self) -> u64 {
        let end = self
            .nodes
            .iter()
            .map(|n| n.span.end_unix_ns)
            .max()
            .unwrap_or(0);
        end.saturating_sub(self.start_unix_ns)
    }

    /// The first `order_id` attribute in start order.
    pub fn order_id(&self) -> Option<&str> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.span.start_unix_ns, n.span.attr(ORDER_ID)?)))
            .min_by_key(|(start, _)| *start)
            .map(|(_, id)| id)
    }

    fn walk_ids(&self) -> Vec<(usize, usize)> {
        self.roots
            .iter()
            .flat_map(|&root| self.walk_from(root))
            .collect()
    }

    /// Iterative, so that a very deep trace cannot overflow the stack.
    fn walk_from(&self, root: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut stack = vec![(0, root)];
        while let Some((depth, i)) = stack.pop() {
            out.push((depth, i));
            stack.extend(self.nodes[i].children.iter().rev().map(|&c| (depth + 1, c)));
        }
        out
    }
}

/// Widest `service (instance) name` column, indentation included; longer ones are cut so that
/// a line with its timings fits in 100 columns.
/// How much of a span's error message a line shows.
const MESSAGE_WIDTH: usize = 60;

/// Indentation per level for the first levels; deeper ones indent by one column, so a long
/// saga (twenty-odd levels) still fits a terminal.
const WIDE_LEVELS: usize = 8;

/// What [`render_text`] shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Show every database span; by default they are folded into a `(N db: T)` note on their
    /// parent's line, because a saga has several per handler.
    pub db: bool,
}

/// One line per span: `+offset` from the trace's start and duration first (so they line up),
/// then the span indented by depth: instance and name, and a few telling attributes in
/// brackets: the HTTP status, the message kind, the order (on the first line), errors, orphans.
pub fn render_text(tree: &Tree, options: RenderOptions) -> String {
    let mut out = String::new();
    // Depth of a hidden span: its descendants are hidden with it.
    let mut hidden_below: Option<usize> = None;
    for (row, (depth, node)) in tree.walk().enumerate() {
        if let Some(d) = hidden_below {
            if depth > d {
                continue;
            }
            hidden_below = None;
        }
        let span = &node.span;
        if !options.db && is_db(span) {
            hidden_below = Some(depth);
            continue;
        }
        let offset = format!(
            "+{}",
            micros(span.start_unix_ns.saturating_sub(tree.start_unix_ns()))
        );
        let indent = depth.min(WIDE_LEVELS) * 2 + depth.saturating_sub(WIDE_LEVELS);
        // The order goes on the entry span's line only: every handler span below carries it.
        let order_id = if row == 0 { tree.order_id() } else { None };
        let db = if options.db {
            String::new()
        } else {
            db_note(tree, node)
        };
        let who = span.instance.as_deref().unwrap_or(&span.service);
        let line = format!(
            "{offset:>9} {:>8}  {:indent$}{who} {}{}{db}",
            micros(span.duration_ns()),
            "",
            span.name,
            details(node, order_id),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How many database spans [`render_text`] folded away.
pub fn hidden_db_spans(tree: &Tree) -> usize {
    tree.walk().filter(|(_, n)| is_db(&n.span)).count()
}

fn is_db(span: &SpanRecord) -> bool {
    span.attr("db.system.name").is_some()
}

/// `  (3 db: 1.2ms)` for a span whose children include database spans.
fn db_note(tree: &Tree, node: &Node) -> String {
    let (count, ns) = tree
        .children(node)
        .filter(|c| is_db(&c.span))
        .fold((0, 0u64), |(n, t), c| (n + 1, t + c.span.duration_ns()));
    if count == 0 {
        String::new()
    } else {
        format!("  ({count} db: {})", micros(ns))
    }
}

fn micros(ns: u64) -> String {
    format_micros(ns as f64 / 1_000.0)
}

/// The bracketed attributes: the HTTP status, the message kind, the topic when the name does
/// not already say it, the order on a root, and problems.
fn details(node: &Node, order_id: Option<&str>) -> String {
    let span = &node.span;
    let mut parts = Vec::new();
    if let Some(status) = span.attr("http.response.status_code") {
        parts.push(format!("http {status}"));
    }
    if let Some(kind) = span.attr("message.kind").filter(|k| !k.is_empty()) {
        parts.push(kind.to_string());
    }
    if let Some(topic) = span.attr("messaging.destination.name")
        && !span.name.contains(topic)
    {
        parts.push(format!("topic {topic}"));
    }
    if let Some(order_id) = order_id {
        parts.push(format!("order {order_id}"));
    }
    if span.status == StatusCode::Error {
        match &span.status_message {
            Some(m) => parts.push(format!("error: {}", truncate(m, MESSAGE_WIDTH))),
            None => parts.push("error".to_string()),
        }
    }
    if node.orphan {
        parts.push("orphan: parent missing".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  [{}]", parts.join(", "))
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::store::{Attributes, SpanKind};

    fn record(
        id: &str,
        parent: Option<&str>,
        service: &str,
        name: &str,
        ms: (u64, u64),
    ) -> SpanRecord {
        SpanRecord {
            trace_id: "ab".repeat(16),
            span_id: id.to_string(),
            parent_span_id: parent.map(str::to_string),
            service: service.to_string(),
            instance: Some(format!("{service}#1")),
            name: name.to_string(),
            kind: SpanKind::Internal,
            start_unix_ns: 1_700_000_000_000_000_000 + ms.0 * 1_000_000,
            end_unix_ns: 1_700_000_000_000_000_000 + ms.1 * 1_000_000,
            attributes: Attributes::default(),
            status: StatusCode::Unset,
            status_message: None,
        }
    }

    fn with_attrs(mut span: SpanRecord, attrs: &[(&str, &str)]) -> SpanRecord {
        span.attributes = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        span
    }

    #[test]
    fn a_trace_renders_as_an_indented_tree_with_its_orphans_marked() {
        let order = "0f8e6a2c-1111-4000-8000-000000000001";
        let spans = vec![
            // Arrives first but starts later: children are ordered by start time.
            with_attrs(
                record("c2", Some("b1"), "gateway", "POST", (20, 40)),
                &[("http.response.status_code", "201")],
            ),
            with_attrs(
                record(
                    "a0",
                    Some("loadgen"),
                    "gateway",
                    "POST /api/orders",
                    (0, 50),
                ),
                &[("http.response.status_code", "201")],
            ),
            record("b1", Some("a0"), "gateway", "POST", (2, 15)),
            with_attrs(
                record("d3", Some("b1"), "order", "POST /orders", (3, 14)),
                &[(ORDER_ID, order)],
            ),
            with_attrs(
                record(
                    "e4",
                    Some("gone"),
                    "inventory",
                    "process inventory.commands",
                    (60, 80),
                ),
                &[
                    ("messaging.destination.name", "inventory.commands"),
                    ("message.kind", "ReleaseStock"),
                ],
            ),
        ];
        let tree = Tree::build(spans);
        assert_eq!(tree.len(), 5);
        assert_eq!(tree.duration_ns(), 80_000_000);
        let text = render_text(&tree, RenderOptions::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[0],
            format!("     +0us     50ms  gateway#1 POST /api/orders  [http 201, order {order}]")
        );
        assert!(
            !lines[0].contains("orphan"),
            "the entry span's remote parent: {text}"
        );
        assert_eq!(lines[1], "     +2ms     13ms    gateway#1 POST");
        assert_eq!(lines[2], "     +3ms     11ms      order#1 POST /orders");
        assert_eq!(
            lines[3],
            "    +20ms     20ms      gateway#1 POST  [http 201]"
        );
        assert_eq!(
            lines[4],
            "    +60ms     20ms  inventory#1 process inventory.commands  [ReleaseStock, orphan: parent missing]",
            "the name says the topic, the kind says the message"
        );
    }

    #[test]
    fn database_spans_are_folded_into_their_parent_unless_asked_for() {
        let db = |id: &str, ms| {
            with_attrs(
                record(id, Some("a0"), "order", "INSERT outbox", ms),
                &[("db.system.name", "sqlite")],
            )
        };
        let tree = Tree::build(vec![
            record("a0", None, "order", "handle", (0, 10)),
            db("b1", (1, 2)),
            db("c2", (3, 5)),
            record("d3", Some("a0"), "order", "publish order.events", (6, 9)),
        ]);
        assert_eq!(hidden_db_spans(&tree), 2);
        let folded = render_text(&tree, RenderOptions::default());
        assert_eq!(folded.lines().count(), 2, "{folded}");
        assert!(
            folded
                .lines()
                .next()
                .unwrap()
                .ends_with("handle  (2 db: 3ms)"),
            "{folded}"
        );
        let all = render_text(&tree, RenderOptions { db: true });
        assert_eq!(all.lines().count(), 4, "{all}");
        assert!(!all.contains("db:"), "{all}");
    }

    #[test]
    fn deep_levels_indent_by_one_column_so_long_sagas_fit() {
        let mut spans = vec![record("s0", None, "order", "root", (0, 100))];
        for i in 1..=12 {
            spans.push(record(
                &format!("s{i}"),
                Some(&format!("s{}", i - 1)),
                "order",
                &format!("level {i}"),
                (i, 100),
            ));
        }
        let text = render_text(&Tree::build(spans), RenderOptions::default());
        let indent = |line: &str| line[20..].chars().take_while(|c| *c == ' ').count();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(indent(lines[8]), 16, "{text}");
        assert_eq!(indent(lines[12]), 20, "{text}");
    }

    #[test]
    fn spans_in_a_parent_cycle_still_appear() {
        let tree = Tree::build(vec![
            record("a0", None, "order", "root", (0, 10)),
            record("b1", Some("c2"), "order", "x", (1, 2)),
            record("c2", Some("b1"), "order", "y", (3, 4)),
        ]);
        let walked: Vec<_> = tree
            .walk()
            .map(|(d, n)| (d, n.span.span_id.as_str()))
            .collect();
        assert_eq!(walked, vec![(0, "a0"), (0, "b1"), (1, "c2")]);
        assert!(tree.roots().nth(1).unwrap().orphan);
    }
}
