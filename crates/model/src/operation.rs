//! Rolling operations (restart, upgrade, deploy) as stored records.
//!
//! A record keeps the original's fields (`restarted`/`upgraded`/`deployed`, `in_process`,
//! `started_at`, `finished_at`) and adds what makes the run durable and observable: the options,
//! the `failed` list, the host order, and per-host progress through the step machine
//! (`pending → draining → running → rebooting → verifying → uncordoning → done | failed`).
//! [`decide`] and [`HostProgress::next_action`] are pure: given a record they say what happens
//! next, so the engine's choices are unit-tested without SSH.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use crate::ValidationError;
use crate::request::{Fields, describe};

/// The three kinds of rolling operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// Reboot every host.
    Restart,
    /// Upgrade every host's packages (or OSTree deployment).
    Upgrade,
    /// Deploy one OSTree version on every host.
    Deploy,
}

impl OperationKind {
    /// Every kind, in URL spelling order.
    pub const ALL: [OperationKind; 3] = [
        OperationKind::Restart,
        OperationKind::Upgrade,
        OperationKind::Deploy,
    ];

    /// The URL and key spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Restart => "restart",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Deploy => "deploy",
        }
    }

    /// Name of the list of finished hosts in the record (`restarted`, ...).
    pub fn done_field(self) -> &'static str {
        match self {
            OperationKind::Restart => "restarted",
            OperationKind::Upgrade => "upgraded",
            OperationKind::Deploy => "deployed",
        }
    }

    /// Parses the URL spelling.
    pub fn parse(s: &str) -> Option<OperationKind> {
        OperationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a whole operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Running.
    InProcess,
    /// Every host was handled (failures, if any, stayed within `max_failures`).
    Finished,
    /// Stopped because more hosts failed than `max_failures` allows.
    Failed,
    /// No new hosts start until resumed; hosts in flight finish their step.
    Paused,
    /// Stopped on request; hosts in flight finished their step, the rest were not touched.
    Cancelled,
}

impl OperationStatus {
    /// Whether the operation still runs (or may run again after a resume).
    pub fn is_active(self) -> bool {
        matches!(self, OperationStatus::InProcess | OperationStatus::Paused)
    }
}

/// A count of hosts, or a percentage of the cluster (`"25%"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// An absolute number of hosts.
    Count(u64),
    /// A percentage (0-100) of the hosts in the operation.
    Percent(u8),
}

impl Amount {
    /// Hosts allowed in a batch of an operation over `total` hosts: percentages round up and
    /// every batch holds at least one host.
    pub fn batch(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => (n as usize).max(1),
            Amount::Percent(p) => (total * p as usize).div_ceil(100).max(1),
        }
    }

    /// Failures tolerated in an operation over `total` hosts: percentages round down.
    pub fn budget(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => total * p as usize / 100,
        }
    }

    fn parse(field: &str, v: &Value, min: u64) -> Result<Amount, ValidationError> {
        let bad = || {
            ValidationError::new(
                field,
                format!(
                    "must be a whole number (at least {min}) or a percentage like \"25%\", got {v}"
                ),
            )
        };
        match v {
            Value::Number(n) => n
                .as_u64()
                .filter(|n| *n >= min)
                .map(Amount::Count)
                .ok_or_else(bad),
            Value::String(s) => {
                let p = s.strip_suffix('%').ok_or_else(bad)?;
                let p: u8 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 || (min > 0 && p == 0) {
                    return Err(bad());
                }
                Ok(Amount::Percent(p))
            }
            _ => Err(bad()),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => s.serialize_u64(*n),
            Amount::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Amount::parse("amount", &v, 0).map_err(serde::de::Error::custom)
    }
}

/// How an operation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationOptions {
    /// Hosts in flight at once: a count or `"25%"`.
    #[schema(value_type = Object)]
    pub batch_size: Amount,
    /// Failed hosts tolerated over the whole run before it stops: a count or `"10%"`.
    #[schema(value_type = Object)]
    pub max_failures: Amount,
    /// Wait between batches, in seconds.
    pub pause_seconds: f64,
    /// Cordon and drain through the container manager before, uncordon after.
    pub drain: bool,
    /// Upgrade: reboot after the package transaction (OSTree hosts always reboot).
    pub reboot: bool,
    /// Limit for one host's whole step, reboot included.
    pub timeout_seconds: u64,
}

impl OperationOptions {
    /// Defaults: one host at a time, no failure tolerated, no pause, 600 s per host; `drain`
    /// when the cluster has a container manager.
    pub fn defaults(cluster_has_manager: bool) -> Self {
        OperationOptions {
            batch_size: Amount::Count(1),
            max_failures: Amount::Count(0),
            pause_seconds: 0.0,
            drain: cluster_has_manager,
            reboot: false,
            timeout_seconds: 600,
        }
    }

    /// Validates a `PUT /cluster/{name}/restart|upgrade|deploy` body; returns the options and,
    /// for deploy, the version.
    pub fn from_json(
        kind: OperationKind,
        f: &Fields,
        cluster_has_manager: bool,
    ) -> Result<(OperationOptions, Option<String>), ValidationError> {
        let mut o = OperationOptions::defaults(cluster_has_manager);
        if let Some(v) = f.get("batch_size") {
            o.batch_size = Amount::parse("batch_size", v, 1)?;
        }
        if let Some(v) = f.get("max_failures") {
            o.max_failures = Amount::parse("max_failures", v, 0)?;
        }
        if let Some(v) = f.get("pause_seconds") {
            o.pause_seconds = v
                .as_f64()
                .filter(|s| (0.0..=86_400.0).contains(s))
                .ok_or_else(|| {
                    ValidationError::new(
                        "pause_seconds",
                        format!("must be a number of seconds from 0 to 86400, got {v}"),
                    )
                })?;
        }
        if let Some(v) = f.get("drain") {
            o.drain = v.as_bool().ok_or_else(|| {
                ValidationError::new(
                    "drain",
                    format!("must be true or false, got {}", describe(v)),
                )
            })?;
        }
        if let Some(v) = f.get("reboot") {
            if kind != OperationKind::Upgrade {
                return Err(ValidationError::new(
                    "reboot",
                    format!("only applies to upgrade (a {kind} always reboots)"),
                ));
            }
            o.reboot = v.as_bool().ok_or_else(|| {
                ValidationError::new(
                    "reboot",
                    format!("must be true or false, got {}", describe(v)),
                )
            })?;
        }
        if let Some(v) = f.get("timeout_seconds") {
            o.timeout_seconds =
                v.as_u64()
                    .filter(|s| (1..=86_400).contains(s))
                    .ok_or_else(|| {
                        ValidationError::new(
                            "timeout_seconds",
                            format!("must be a whole number of seconds from 1 to 86400, got {v}"),
                        )
                    })?;
        }
        let version = match (kind, f.get("version")) {
            (OperationKind::Deploy, Some(Value::String(s))) if !s.trim().is_empty() => {
                let s = s.trim();
                // The same rule the worker applies before building the command.
                crate::validate::validate_ostree_version("version", s)?;
                Some(s.to_string())
            }
            (OperationKind::Deploy, Some(Value::String(_)) | None) => {
                return Err(ValidationError::new(
                    "version",
                    "is required for deploy (the OSTree version to deploy, e.g. \"7.2.1\")",
                ));
            }
            (OperationKind::Deploy, Some(other)) => {
                return Err(ValidationError::new(
                    "version",
                    format!("must be a string, got {}", describe(other)),
                ));
            }
            (_, Some(_)) => {
                return Err(ValidationError::new(
                    "version",
                    format!("only deploy takes a version, not {kind}"),
                ));
            }
            (_, None) => None,
        };
        Ok((o, version))
    }
}

/// Where one host is in its step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostStep {
    /// Not started.
    #[default]
    Pending,
    /// Being cordoned and drained.
    Draining,
    /// Running the package or deploy command.
    Running,
    /// Reboot requested (or about to be); waiting for the new boot id.
    Rebooting,
    /// Checking the result (booted OSTree version).
    Verifying,
    /// Being made schedulable again.
    Uncordoning,
    /// Finished.
    Done,
    /// Failed; see `error`.
    Failed,
}

impl HostStep {
    /// Whether the host's part is over.
    pub fn is_final(self) -> bool {
        matches!(self, HostStep::Done | HostStep::Failed)
    }
}

/// What the engine does next for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// Cordon and drain its node.
    Drain,
    /// Run the operation's command (after which the engine reads the boot id).
    RunCommand,
    /// Make sure the reboot was issued once, then wait for a new boot id.
    AwaitReboot,
    /// Check the outcome.
    Verify,
    /// Uncordon its node.
    Uncordon,
    /// Nothing: the host is done or failed.
    Nothing,
}

/// Progress of one host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostProgress {
    /// Current step.
    pub state: HostStep,
    /// When the host's step began (`""` while pending).
    #[serde(default)]
    pub started_at: String,
    /// When it ended.
    #[serde(default)]
    pub finished_at: String,
    /// Why it failed.
    #[serde(default)]
    pub error: String,
    /// Boot id read just before the reboot was issued: the reboot is over when it differs.
    #[serde(default)]
    pub boot_id_before: String,
    /// OSTree version the host must boot (deploy: the requested one; upgrade: the staged one).
    #[serde(default)]
    pub target_version: String,
    /// Whether the node was cordoned (so it must be uncordoned, even after a failure).
    #[serde(default)]
    pub drained: bool,
}

impl HostProgress {
    /// The next action for this host.
    pub fn next_action(&self, drain: bool) -> HostAction {
        match self.state {
            HostStep::Pending if drain => HostAction::Drain,
            HostStep::Pending => HostAction::RunCommand,
            HostStep::Draining => HostAction::Drain,
            HostStep::Running => HostAction::RunCommand,
            HostStep::Rebooting => HostAction::AwaitReboot,
            HostStep::Verifying => HostAction::Verify,
            HostStep::Uncordoning => HostAction::Uncordon,
            HostStep::Done | HostStep::Failed => HostAction::Nothing,
        }
    }

    /// The step after the command ran: a reboot when the operation needs one.
    pub fn after_command(kind: OperationKind, ostree: bool, reboot: bool) -> HostStep {
        match kind {
            OperationKind::Restart | OperationKind::Deploy => HostStep::Rebooting,
            OperationKind::Upgrade if ostree || reboot => HostStep::Rebooting,
            OperationKind::Upgrade => HostStep::Verifying,
        }
    }

    /// The step after verification.
    pub fn after_verify(&self) -> HostStep {
        if self.drained {
            HostStep::Uncordoning
        } else {
            HostStep::Done
        }
    }
}

/// A rolling operation's record, as stored and as returned by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// The cluster's name.
    pub name: String,
    /// Restart, upgrade or deploy.
    pub kind: OperationKind,
    /// Where the run is.
    pub status: OperationStatus,
    /// Deploy: the OSTree version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Restart: hosts done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<Vec<String>>,
    /// Upgrade: hosts done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgraded: Option<Vec<String>>,
    /// Deploy: hosts done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Vec<String>>,
    /// Hosts of the current batch not yet done or failed.
    pub in_process: Vec<String>,
    /// Hosts that failed.
    #[serde(default)]
    pub failed: Vec<String>,
    /// When the operation started.
    pub started_at: String,
    /// When it ended (`""` until then).
    pub finished_at: String,
    /// How it runs.
    pub options: OperationOptions,
    /// Hosts in the order they are handled (the cluster's members when it started).
    #[serde(default)]
    pub order: Vec<String>,
    /// Per-host progress.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostProgress>,
    /// Set by a cancel request; the run stops once the hosts in flight are done.
    #[serde(default)]
    pub cancel_requested: bool,
    /// When the last batch ended (for `pause_seconds`).
    #[serde(default)]
    pub batch_finished_at: String,
    /// Why the operation failed or was cancelled.
    #[serde(default)]
    pub reason: String,
    /// Id of the server process running it.
    #[serde(default)]
    pub owner: String,
    /// When that server last confirmed it still runs it.
    #[serde(default)]
    pub heartbeat: String,
}

impl Operation {
    /// A new operation over `hosts`, all pending.
    pub fn new(
        name: &str,
        kind: OperationKind,
        version: Option<String>,
        options: OperationOptions,
        hosts: Vec<String>,
        now: String,
    ) -> Self {
        let mut op = Operation {
            name: name.to_string(),
            kind,
            status: OperationStatus::InProcess,
            version,
            restarted: None,
            upgraded: None,
            deployed: None,
            in_process: vec![],
            failed: vec![],
            started_at: now,
            finished_at: String::new(),
            options,
            hosts: hosts
                .iter()
                .map(|h| (h.clone(), HostProgress::default()))
                .collect(),
            order: hosts,
            cancel_requested: false,
            batch_finished_at: String::new(),
            reason: String::new(),
            owner: String::new(),
            heartbeat: String::new(),
        };
        *op.done_mut() = vec![];
        op
    }

    /// The list of finished hosts (`restarted`, `upgraded` or `deployed`).
    pub fn done(&self) -> &[String] {
        let list = match self.kind {
            OperationKind::Restart => &self.restarted,
            OperationKind::Upgrade => &self.upgraded,
            OperationKind::Deploy => &self.deployed,
        };
        list.as_deref().unwrap_or(&[])
    }

    /// The list of finished hosts, for updating.
    pub fn done_mut(&mut self) -> &mut Vec<String> {
        let list = match self.kind {
            OperationKind::Restart => &mut self.restarted,
            OperationKind::Upgrade => &mut self.upgraded,
            OperationKind::Deploy => &mut self.deployed,
        };
        list.get_or_insert_with(Vec::new)
    }

    /// Records a host's new progress, keeping the lists consistent: a host that reaches `done`
    /// or `failed` leaves `in_process` and joins the matching list.
    pub fn set_host(&mut self, address: &str, progress: HostProgress) {
        let state = progress.state;
        self.hosts.insert(address.to_string(), progress);
        if state.is_final() {
            self.in_process.retain(|a| a != address);
            let list = if state == HostStep::Done {
                self.done_mut()
            } else {
                &mut self.failed
            };
            if !list.iter().any(|a| a == address) {
                list.push(address.to_string());
            }
        }
    }

    /// Failures tolerated in this run.
    pub fn failure_budget(&self) -> usize {
        self.options.max_failures.budget(self.order.len())
    }
}

/// What the engine does next with an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing until a host in flight finishes (or the pause is lifted).
    Wait,
    /// Start these hosts as the next batch.
    StartBatch(Vec<String>),
    /// Wait this many more seconds between batches.
    PauseBetweenBatches(f64),
    /// End the operation.
    Finish(OperationStatus, String),
    /// Already over.
    Over,
}

/// Decides the next move from the record alone. `seconds_since_batch` is the time since the
/// last batch ended (`None` if none has).
pub fn decide(op: &Operation, seconds_since_batch: Option<f64>) -> Decision {
    if !op.status.is_active() {
        return Decision::Over;
    }
    if !op.in_process.is_empty() {
        return Decision::Wait;
    }
    let budget = op.failure_budget();
    if op.failed.len() > budget {
        return Decision::Finish(
            OperationStatus::Failed,
            format!(
                "{} host(s) failed ({}); max_failures allows {budget}",
                op.failed.len(),
                op.failed.join(", ")
            ),
        );
    }
    if op.cancel_requested {
        return Decision::Finish(OperationStatus::Cancelled, "cancelled on request".into());
    }
    if op.status == OperationStatus::Paused {
        return Decision::Wait;
    }
    let pending: Vec<&String> = op
        .order
        .iter()
        .filter(|a| {
            op.hosts
                .get(*a)
                .is_none_or(|p| p.state == HostStep::Pending)
        })
        .collect();
    if pending.is_empty() {
        return Decision::Finish(OperationStatus::Finished, String::new());
    }
    if let Some(since) = seconds_since_batch
        && since < op.options.pause_seconds
    {
        return Decision::PauseBetweenBatches(op.options.pause_seconds - since);
    }
    let n = op.options.batch_size.batch(op.order.len());
    Decision::StartBatch(pending.into_iter().take(n).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(n: usize, batch: Amount, max_failures: Amount) -> Operation {
        let mut o = OperationOptions::defaults(false);
        o.batch_size = batch;
        o.max_failures = max_failures;
        Operation::new(
            "c",
            OperationKind::Restart,
            None,
            o,
            (1..=n).map(|i| format!("10.0.0.{i}")).collect(),
            "t".into(),
        )
    }

    fn finish(op: &mut Operation, a: &str, state: HostStep) {
        op.set_host(
            a,
            HostProgress {
                state,
                ..Default::default()
            },
        );
    }

    #[test]
    fn batches_in_order_and_never_overlap() {
        let mut o = op(5, Amount::Count(2), Amount::Count(0));
        let Decision::StartBatch(b) = decide(&o, None) else {
            panic!()
        };
        assert_eq!(b, vec!["10.0.0.1", "10.0.0.2"]);
        o.in_process = b.clone();
        assert_eq!(decide(&o, None), Decision::Wait);
        finish(&mut o, "10.0.0.1", HostStep::Done);
        assert_eq!(
            decide(&o, None),
            Decision::Wait,
            "a batch finishes as a whole"
        );
        finish(&mut o, "10.0.0.2", HostStep::Done);
        let Decision::StartBatch(b) = decide(&o, Some(0.0)) else {
            panic!()
        };
        assert_eq!(b, vec!["10.0.0.3", "10.0.0.4"]);
        assert_eq!(o.restarted.as_deref().unwrap(), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn failure_budget_and_cancel_and_pause() {
        let mut o = op(4, Amount::Count(1), Amount::Count(0));
        o.in_process = vec!["10.0.0.1".into()];
        finish(&mut o, "10.0.0.1", HostStep::Failed);
        assert!(
            matches!(decide(&o, None), Decision::Finish(OperationStatus::Failed, r) if r.contains("10.0.0.1"))
        );

        let mut o = op(4, Amount::Count(1), Amount::Count(1));
        o.in_process = vec!["10.0.0.1".into()];
        finish(&mut o, "10.0.0.1", HostStep::Failed);
        assert!(matches!(decide(&o, None), Decision::StartBatch(b) if b == ["10.0.0.2"]));

        o.status = OperationStatus::Paused;
        assert_eq!(decide(&o, None), Decision::Wait);
        o.cancel_requested = true;
        assert!(matches!(
            decide(&o, None),
            Decision::Finish(OperationStatus::Cancelled, _)
        ));
    }

    #[test]
    fn finishes_and_pauses_between_batches() {
        let mut o = op(1, Amount::Count(1), Amount::Count(0));
        o.options.pause_seconds = 5.0;
        assert!(
            matches!(decide(&o, Some(1.0)), Decision::PauseBetweenBatches(s) if (s - 4.0).abs() < 1e-9)
        );
        finish(&mut o, "10.0.0.1", HostStep::Done);
        assert_eq!(
            decide(&o, None),
            Decision::Finish(OperationStatus::Finished, String::new())
        );
        let empty = op(0, Amount::Count(1), Amount::Count(0));
        assert!(matches!(
            decide(&empty, None),
            Decision::Finish(OperationStatus::Finished, _)
        ));
    }

    #[test]
    fn amounts() {
        assert_eq!(Amount::Percent(25).batch(10), 3);
        assert_eq!(Amount::Percent(1).batch(10), 1);
        assert_eq!(Amount::Percent(10).budget(12), 1);
        assert_eq!(
            serde_json::to_value(Amount::Percent(25)).unwrap(),
            json!("25%")
        );
        assert_eq!(
            serde_json::from_value::<Amount>(json!(3)).unwrap(),
            Amount::Count(3)
        );
    }

    #[test]
    fn host_steps() {
        let p = HostProgress::default();
        assert_eq!(p.next_action(true), HostAction::Drain);
        assert_eq!(p.next_action(false), HostAction::RunCommand);
        assert_eq!(
            HostProgress::after_command(OperationKind::Upgrade, false, false),
            HostStep::Verifying
        );
        assert_eq!(
            HostProgress::after_command(OperationKind::Upgrade, true, false),
            HostStep::Rebooting
        );
        let drained = HostProgress {
            drained: true,
            ..Default::default()
        };
        assert_eq!(drained.after_verify(), HostStep::Uncordoning);
    }

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn options_validation() {
        let (o, v) = OperationOptions::from_json(
            OperationKind::Upgrade,
            &fields(json!({"batch_size": "25%", "max_failures": 2, "reboot": true, "timeout_seconds": 30})),
            false,
        )
        .unwrap();
        assert_eq!(o.batch_size, Amount::Percent(25));
        assert!(o.reboot && v.is_none());
        for (kind, body, field) in [
            (
                OperationKind::Restart,
                json!({"batch_size": 0}),
                "batch_size",
            ),
            (
                OperationKind::Restart,
                json!({"batch_size": "150%"}),
                "batch_size",
            ),
            (
                OperationKind::Restart,
                json!({"max_failures": -1}),
                "max_failures",
            ),
            (
                OperationKind::Restart,
                json!({"pause_seconds": "x"}),
                "pause_seconds",
            ),
            (OperationKind::Restart, json!({"drain": "yes"}), "drain"),
            (OperationKind::Restart, json!({"reboot": true}), "reboot"),
            (
                OperationKind::Restart,
                json!({"timeout_seconds": 0}),
                "timeout_seconds",
            ),
            (OperationKind::Restart, json!({"version": "1"}), "version"),
            (OperationKind::Deploy, json!({}), "version"),
            (OperationKind::Deploy, json!({"version": ""}), "version"),
            (
                OperationKind::Deploy,
                json!({"version": "1; reboot"}),
                "version",
            ),
            (
                OperationKind::Deploy,
                json!({"version": "7.2+1"}),
                "version",
            ),
            (OperationKind::Deploy, json!({"version": "-x"}), "version"),
        ] {
            let e = OperationOptions::from_json(kind, &fields(body.clone()), false).unwrap_err();
            assert_eq!(e.field, field, "{body}");
        }
        let (_, v) = OperationOptions::from_json(
            OperationKind::Deploy,
            &fields(json!({"version": "7.2.1"})),
            true,
        )
        .unwrap();
        assert_eq!(v.as_deref(), Some("7.2.1"));
    }

    #[test]
    fn wire_shape_keeps_original_fields() {
        let o = op(2, Amount::Count(1), Amount::Count(0));
        let v = serde_json::to_value(&o).unwrap();
        for key in [
            "name",
            "status",
            "restarted",
            "in_process",
            "started_at",
            "finished_at",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v.get("upgraded").is_none());
        assert_eq!(v["status"], "in_process");
        let back: Operation = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
    }
}
