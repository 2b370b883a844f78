//! Rendering: human tables (the default), or the API's JSON as JSON or YAML for scripts.

use std::io::IsTerminal;

use clap::ValueEnum;
use comfy_table::{Cell, ContentArrangement, Table, presets};
use serde_json::Value;

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
    /// The API's JSON as YAML.
    Yaml,
}

/// Table look: boxes on a terminal, plain aligned columns otherwise (easy to `grep`/`awk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// UTF-8 boxes.
    Boxed,
    /// Space-aligned columns.
    Plain,
}

impl Style {
    /// Boxed when standard output is a terminal.
    pub fn detect() -> Style {
        if std::io::stdout().is_terminal() {
            Style::Boxed
        } else {
            Style::Plain
        }
    }
}

/// The API's JSON, pretty-printed.
pub fn to_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

/// The API's JSON as a YAML document.
pub fn to_yaml(v: &Value) -> String {
    serde_norway::to_string(v).expect("JSON values serialize as YAML")
}

/// Renders `v` as JSON or YAML (`None` for the table format).
pub fn machine(format: Format, v: &Value) -> Option<String> {
    match format {
        Format::Table => None,
        Format::Json => Some(to_json(v)),
        Format::Yaml => Some(to_yaml(v)),
    }
}

fn new_table(style: Style) -> Table {
    let mut t = Table::new();
    match style {
        Style::Boxed => {
            t.load_style(presets::UTF8_FULL_CONDENSED);
            // Wrap to the terminal's width, unless it reports none (e.g. a pty of size 0).
            let arrangement = match t.width() {
                Some(w) if w >= 40 => ContentArrangement::Dynamic,
                _ => ContentArrangement::Disabled,
            };
            t.set_content_arrangement(arrangement);
        }
        Style::Plain => {
            t.load_style(presets::NOTHING)
                .set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t
}

fn finish(mut t: Table, style: Style) -> String {
    if style == Style::Plain {
        for col in t.column_iter_mut() {
            col.set_padding((0, 3));
        }
    }
    let s = t.to_string();
    if style == Style::Plain {
        s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    } else {
        s
    }
}

/// A table with a header row.
pub fn table(style: Style, headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = new_table(style);
    t.set_header(headers.iter().map(|h| Cell::new(h.to_uppercase())));
    for r in rows {
        t.add_row(r);
    }
    finish(t, style)
}

/// A two-column field/value table.
pub fn fields(style: Style, rows: Vec<(String, String)>) -> String {
    let mut t = new_table(style);
    for (k, v) in rows {
        t.add_row(vec![k, v]);
    }
    finish(t, style)
}

/// A JSON value as a table cell: strings bare, `""`/null as `-`, lists comma-separated,
/// objects as compact JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::Object(o)) if o.is_empty() => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// KiB as a human size (`7.6 GiB`).
pub fn kib(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        None | Some(0) => "-".into(),
        Some(k) => human_bytes(k.saturating_mul(1024)),
    }
}

/// Bytes as a human size.
pub fn bytes(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        None | Some(0) => "-".into(),
        Some(b) => human_bytes(b),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// CPUs, `-` when unknown (0).
fn count(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        None | Some(0) => "-".into(),
        Some(n) => n.to_string(),
    }
}

/// `GET /hosts`: one row per host.
pub fn host_list(style: Style, hosts: &[Value]) -> String {
    let rows = hosts
        .iter()
        .map(|h| {
            vec![
                cell(h.get("address")),
                cell(h.get("status")),
                cell(h.get("os")),
                count(h.get("cpus")),
                kib(h.get("memory")),
                cell(h.get("last_check")),
            ]
        })
        .collect();
    table(
        style,
        &["address", "status", "os", "cpus", "memory", "last check"],
        rows,
    )
}

/// One host.
pub fn host(style: Style, h: &Value) -> String {
    let mut rows = vec![
        ("address".to_string(), cell(h.get("address"))),
        ("status".to_string(), cell(h.get("status"))),
    ];
    if let Some(r) = h.get("status_reason").filter(|r| !cell(Some(r)).eq("-")) {
        rows.push(("status reason".into(), cell(Some(r))));
    }
    rows.extend([
        ("os".to_string(), cell(h.get("os"))),
        ("cpus".to_string(), count(h.get("cpus"))),
        ("memory".to_string(), kib(h.get("memory"))),
        ("space".to_string(), bytes(h.get("space"))),
        ("last check".to_string(), cell(h.get("last_check"))),
        ("source".to_string(), cell(h.get("source"))),
    ]);
    fields(style, rows)
}

/// `GET /host/{a}/status`.
pub fn host_status(style: Style, s: &Value) -> String {
    let host = s.get("host");
    let mut rows = vec![
        ("type".to_string(), cell(s.get("type"))),
        (
            "status".to_string(),
            cell(host.and_then(|h| h.get("status"))),
        ),
    ];
    if let Some(r) = host.and_then(|h| h.get("status_reason"))
        && cell(Some(r)) != "-"
    {
        rows.push(("status reason".into(), cell(Some(r))));
    }
    rows.push((
        "last check".to_string(),
        cell(host.and_then(|h| h.get("last_check"))),
    ));
    rows.push((
        "container manager".to_string(),
        cell(s.get("container_manager")),
    ));
    fields(style, rows)
}

/// One cluster (`GET /cluster/{name}`): its fields and member counts.
pub fn cluster(style: Style, c: &Value) -> String {
    let hosts = c.get("hosts");
    let n = |k: &str| {
        hosts
            .and_then(|h| h.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .to_string()
    };
    fields(
        style,
        vec![
            ("name".into(), cell(c.get("name"))),
            ("status".into(), cell(c.get("status"))),
            ("network".into(), cell(c.get("network"))),
            ("container manager".into(), cell(c.get("container_manager"))),
            ("hosts total".into(), n("total")),
            ("hosts available".into(), n("available")),
            ("hosts unavailable".into(), n("unavailable")),
            ("members".into(), cell(c.get("hostset"))),
        ],
    )
}

/// Clusters with their status and counts.
pub fn cluster_list(style: Style, clusters: &[Value]) -> String {
    let rows = clusters
        .iter()
        .map(|c| {
            let hosts = c.get("hosts");
            let n = |k: &str| {
                hosts
                    .and_then(|h| h.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            vec![
                cell(c.get("name")),
                cell(c.get("status")),
                cell(c.get("network")),
                cell(c.get("container_manager")),
                format!("{}/{}", n("available"), n("total")),
            ]
        })
        .collect();
    table(
        style,
        &["name", "status", "network", "container manager", "hosts up"],
        rows,
    )
}

/// A network or a container manager: name, type and options.
pub fn typed(style: Style, v: &Value) -> String {
    let mut rows = vec![
        ("name".to_string(), cell(v.get("name"))),
        ("type".to_string(), cell(v.get("type"))),
    ];
    match v.get("options") {
        Some(Value::Object(o)) if !o.is_empty() => {
            for (k, val) in o {
                rows.push((format!("options.{k}"), cell(Some(val))));
            }
        }
        _ => rows.push(("options".into(), "-".into())),
    }
    fields(style, rows)
}

/// Networks or container managers: name, type, options.
pub fn typed_list(style: Style, items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|v| {
            vec![
                cell(v.get("name")),
                cell(v.get("type")),
                cell(v.get("options")),
            ]
        })
        .collect();
    table(style, &["name", "type", "options"], rows)
}

/// Names from a list answer, one per row.
pub fn names(style: Style, header: &str, items: &[Value]) -> String {
    table(
        style,
        &[header],
        items.iter().map(|v| vec![cell(Some(v))]).collect(),
    )
}

/// Progress numbers of an operation record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Hosts the run covers.
    pub total: usize,
    /// Hosts done.
    pub done: usize,
    /// Hosts failed.
    pub failed: usize,
    /// Hosts being worked on.
    pub in_process: Vec<String>,
    /// `in_process`, `paused`, `finished`, `failed`, `cancelled`.
    pub status: String,
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The done list of an operation kind (`restarted`, `upgraded`, `deployed`).
pub fn done_field(kind: &str) -> &'static str {
    match kind {
        "upgrade" => "upgraded",
        "deploy" => "deployed",
        _ => "restarted",
    }
}

/// Reads the progress of an operation record.
pub fn progress(kind: &str, op: &Value) -> Progress {
    let done = str_list(op.get(done_field(kind)));
    let failed = str_list(op.get("failed"));
    let in_process = str_list(op.get("in_process"));
    let order = str_list(op.get("order"));
    let hosts_len = op
        .get("hosts")
        .and_then(Value::as_object)
        .map(|m| m.len())
        .unwrap_or(0);
    let total = order
        .len()
        .max(hosts_len)
        .max(done.len() + failed.len() + in_process.len());
    Progress {
        total,
        done: done.len(),
        failed: failed.len(),
        in_process,
        status: op
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }
}

/// Whether an operation status means the run is still going.
pub fn is_active(status: &str) -> bool {
    matches!(status, "in_process" | "paused")
}

/// One line about an operation's progress.
pub fn progress_line(kind: &str, cluster: &str, p: &Progress) -> String {
    let mut s = format!(
        "{kind} of cluster {cluster}: {}, {}/{} hosts done, {} failed",
        p.status, p.done, p.total, p.failed
    );
    if !p.in_process.is_empty() {
        s.push_str(&format!(" (in process: {})", p.in_process.join(", ")));
    }
    s
}

/// An operation record: summary, then one row per host.
pub fn operation(style: Style, kind: &str, op: &Value) -> String {
    let p = progress(kind, op);
    let mut rows = vec![
        ("cluster".to_string(), cell(op.get("name"))),
        ("operation".to_string(), kind.to_string()),
        ("status".to_string(), cell(op.get("status"))),
    ];
    if let Some(v) = op.get("version") {
        rows.push(("version".into(), cell(Some(v))));
    }
    rows.extend([
        (
            "progress".to_string(),
            format!("{}/{} hosts done", p.done, p.total),
        ),
        ("in process".to_string(), cell(op.get("in_process"))),
        ("failed".to_string(), cell(op.get("failed"))),
        ("started at".to_string(), cell(op.get("started_at"))),
        ("finished at".to_string(), cell(op.get("finished_at"))),
    ]);
    if op.get("cancel_requested").and_then(Value::as_bool) == Some(true) && is_active(&p.status) {
        rows.push(("cancel requested".into(), "yes".into()));
    }
    if let Some(Value::Object(o)) = op.get("options") {
        let opts: Vec<String> = o
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(Some(v))))
            .collect();
        rows.push(("options".into(), opts.join(" ")));
    }
    let mut out = fields(style, rows);
    if let Some(Value::Object(hosts)) = op.get("hosts")
        && !hosts.is_empty()
    {
        // Keep the run's order when the record gives it.
        let mut order = str_list(op.get("order"));
        for k in hosts.keys() {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        let rows = order
            .iter()
            .filter_map(|a| hosts.get(a).map(|h| (a, h)))
            .map(|(a, h)| {
                vec![
                    a.clone(),
                    cell(h.get("state")),
                    cell(h.get("started_at")),
                    cell(h.get("finished_at")),
                    cell(h.get("error")),
                ]
            })
            .collect();
        out.push_str("\n\n");
        out.push_str(&table(
            style,
            &["host", "state", "started at", "finished at", "error"],
            rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_human() {
        assert_eq!(kib(Some(&json!(8_000_000))), "7.6 GiB");
        assert_eq!(kib(Some(&json!(0))), "-");
        assert_eq!(bytes(Some(&json!(512))), "512 B");
        assert_eq!(bytes(Some(&json!(10_737_418_240u64))), "10.0 GiB");
        assert_eq!(kib(None), "-");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(Some(&json!(""))), "-");
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a, b");
        assert_eq!(cell(Some(&json!([]))), "-");
        assert_eq!(cell(Some(&json!({"a": 1}))), r#"{"a":1}"#);
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(cell(Some(&json!(true))), "true");
    }

    #[test]
    fn plain_tables_align_without_borders() {
        let t = table(
            Style::Plain,
            &["address", "status"],
            vec![
                vec!["10.0.0.1".into(), "active".into()],
                vec!["192.168.100.200".into(), "failed".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ADDRESS"), "{t}");
        // Columns line up.
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(lines[1].find("active"), Some(col), "{t}");
        assert_eq!(lines[2].find("failed"), Some(col), "{t}");
        assert!(!t.contains('│') && !t.contains('|'), "{t}");
        assert!(lines.iter().all(|l| l.trim_end() == *l));
    }

    #[test]
    fn boxed_tables_have_borders() {
        let t = table(Style::Boxed, &["a"], vec![vec!["x".into()]]);
        assert!(t.contains('│'), "{t}");
    }

    #[test]
    fn host_list_shows_the_columns() {
        let hosts = vec![json!({
            "address": "10.0.0.1", "status": "active", "os": "fedora", "cpus": 4,
            "memory": 8_000_000, "space": 0, "last_check": "2024-01-01T00:00:00.000000",
            "source": ""
        })];
        let t = host_list(Style::Plain, &hosts);
        for want in [
            "ADDRESS",
            "STATUS",
            "OS",
            "CPUS",
            "MEMORY",
            "LAST CHECK",
            "10.0.0.1",
            "active",
            "fedora",
            "4",
            "7.6 GiB",
            "2024-01-01T00:00:00.000000",
        ] {
            assert!(t.contains(want), "{want} missing in\n{t}");
        }
    }

    #[test]
    fn cluster_shows_counts() {
        let c = json!({"name": "prod", "status": "degraded", "network": "default",
            "container_manager": "", "hostset": ["10.0.0.1", "10.0.0.2"],
            "hosts": {"total": 2, "available": 1, "unavailable": 1}});
        let t = cluster(Style::Plain, &c);
        let row = |k: &str| {
            t.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l[k.len()..].trim().to_string())
        };
        assert_eq!(row("hosts total").as_deref(), Some("2"), "{t}");
        assert_eq!(row("hosts available").as_deref(), Some("1"), "{t}");
        assert_eq!(row("status").as_deref(), Some("degraded"), "{t}");
        assert!(
            t.contains("members") && t.contains("10.0.0.1, 10.0.0.2"),
            "{t}"
        );
        let l = cluster_list(Style::Plain, &[c]);
        assert!(l.contains("1/2"), "{l}");
    }

    #[test]
    fn yaml_and_json_round_trip() {
        let v = json!({"name": "n", "type": "flannel_server", "options": {"address": "10.0.0.1:8080"},
            "list": [1, "two", null, true], "empty": "", "yes": "yes", "num": "123"});
        let y = to_yaml(&v);
        let back: Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(back, v, "{y}");
        let j = to_json(&v);
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), v);
        assert_eq!(machine(Format::Table, &v), None);
    }

    fn op() -> Value {
        json!({
            "name": "prod", "kind": "restart", "status": "in_process",
            "restarted": ["10.0.0.1"], "in_process": ["10.0.0.2"], "failed": [],
            "started_at": "2024-01-01T00:00:00.000000", "finished_at": "",
            "order": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            "options": {"batch_size": 1, "max_failures": "10%", "pause_seconds": 0.0,
                        "drain": false, "reboot": false, "timeout_seconds": 600},
            "hosts": {
                "10.0.0.1": {"state": "done", "started_at": "a", "finished_at": "b", "error": ""},
                "10.0.0.2": {"state": "rebooting", "started_at": "c", "finished_at": "", "error": ""},
                "10.0.0.3": {"state": "pending", "started_at": "", "finished_at": "", "error": ""}
            }
        })
    }

    #[test]
    fn operation_progress_and_table() {
        let p = progress("restart", &op());
        assert_eq!(
            p,
            Progress {
                total: 3,
                done: 1,
                failed: 0,
                in_process: vec!["10.0.0.2".into()],
                status: "in_process".into()
            }
        );
        assert_eq!(
            progress_line("restart", "prod", &p),
            "restart of cluster prod: in_process, 1/3 hosts done, 0 failed (in process: 10.0.0.2)"
        );
        let t = operation(Style::Plain, "restart", &op());
        assert!(t.contains("1/3 hosts done"), "{t}");
        assert!(t.contains("max_failures=10%"), "{t}");
        let host_rows: Vec<&str> = t.lines().filter(|l| l.starts_with("10.0.0.")).collect();
        assert_eq!(host_rows.len(), 3, "{t}");
        assert!(host_rows[1].contains("rebooting"), "{t}");
        assert!(is_active("paused") && !is_active("cancelled"));
    }

    #[test]
    fn original_shape_without_our_fields() {
        // The original's record: no order, no hosts, no failed.
        let v = json!({"name": "c", "status": "finished", "upgraded": ["a", "b"],
            "in_process": [], "started_at": "s", "finished_at": "f"});
        let p = progress("upgrade", &v);
        assert_eq!((p.total, p.done, p.failed), (2, 2, 0));
        let t = operation(Style::Plain, "upgrade", &v);
        assert!(t.contains("2/2 hosts done"), "{t}");
    }
}
