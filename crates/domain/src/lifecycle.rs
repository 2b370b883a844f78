//! The host lifecycle as a pure state machine: every change of a host's `status` goes through
//! [`apply`], whoever causes it (the investigator, the watcher, the node worker, the
//! membership routes). No I/O here; the callers read the host, apply an [`Event`] and write the
//! result in one compare-and-swap transaction.
//!
//! ```text
//! investigating ──facts──▶ bootstrapping ──bootstrap done──▶ disassociated (no manager)
//!                                       │                 └▶ active (trivial manager)
//!                                       └─(manager with nodes) node Ready ─▶ active
//! any step ──failure(kind)──▶ failed
//! failed(unreachable) ──reachable──▶ settled state (or investigating if never bootstrapped)
//! failed(node) ──node Ready──▶ active;  active ──node not Ready──▶ disassociated
//! active|disassociated ──join──▶ disassociated | active | bootstrapping (by the cluster's manager)
//! ──leave──▶ disassociated;  failed ──re-trust host key──▶ investigating
//! ```

use model::{FailureKind, Host, HostState};

/// A cluster's container manager, as far as its hosts' states are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagerKind {
    /// No container manager: bootstrapped members are `disassociated`.
    None,
    /// The trivial manager: bootstrapped members are `active` at once.
    Trivial,
    /// Kubernetes/OpenShift: members are `active` once their node is Ready.
    Nodes,
}

/// What the watcher learnt about a host's node at a successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeObservation {
    /// The host's cluster has no container manager (or the host is in no cluster).
    NoManager,
    /// The host's cluster uses the trivial manager.
    Trivial,
    /// The manager has nodes but could not be asked this time.
    Unknown,
    /// The node is registered and Ready.
    Ready,
    /// The node is missing or not Ready, and why.
    NotReady(String),
}

/// Facts gathered from a host in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// OS id (`fedora`, `debian`, ...).
    pub os: String,
    /// OS version.
    pub os_version: String,
    /// Whether the host boots from OSTree.
    pub ostree: bool,
    /// CPUs.
    pub cpus: i64,
    /// Memory in KiB.
    pub memory: i64,
    /// Root filesystem size in bytes.
    pub space: i64,
    /// Current boot id.
    pub boot_id: String,
}

/// Something that happened to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The investigator connected and gathered facts; bootstrap comes next.
    FactsGathered(HostFacts),
    /// Bootstrap completed on the host; the state it settles in depends on the cluster's
    /// manager (with nodes it stays `bootstrapping` until [`Event::NodeReady`]).
    BootstrapDone(ManagerKind),
    /// The host's node became Ready after joining its manager.
    NodeReady,
    /// The host's node did not become Ready after bootstrap.
    NodeJoinFailed(String),
    /// A step of investigation or bootstrap failed.
    Failed(FailureKind, String),
    /// The watcher reached the host; what it saw of the node decides between `active` and
    /// `disassociated`.
    Reachable {
        /// Boot id read at the check.
        boot_id: String,
        /// The node, as the watcher saw it.
        node: NodeObservation,
    },
    /// The watcher could not reach or use the host.
    CheckFailed(FailureKind, String),
    /// The host joins a cluster with this kind of manager.
    Join(ManagerKind),
    /// The host leaves its cluster.
    Leave,
    /// An operator re-trusted the host's SSH host key.
    HostKeyRetrusted,
}

/// The result of applying an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The host after the event (equal to the input when nothing changes).
    pub host: Host,
    /// The investigator must (re)run for this host.
    pub investigate: bool,
}

/// Why an event was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only `active` or `disassociated` hosts may join a cluster.
    #[error("host {address} is {status}; only active or disassociated hosts may join a cluster")]
    NotReadyToJoin {
        /// The host.
        address: String,
        /// Its state.
        status: HostState,
    },
}

fn settle(host: &mut Host, state: HostState) {
    host.status = state;
    host.failure = None;
    host.status_reason.clear();
}

fn fail(host: &mut Host, kind: FailureKind, reason: &str) {
    host.status = HostState::Failed;
    host.failure = Some(kind);
    host.status_reason = reason.to_string();
}

/// Where a bootstrapped host rests given what is known of its node.
fn resting_state(node: &NodeObservation) -> HostState {
    match node {
        NodeObservation::Ready | NodeObservation::Trivial => HostState::Active,
        NodeObservation::NoManager | NodeObservation::Unknown | NodeObservation::NotReady(_) => {
            HostState::Disassociated
        }
    }
}

/// Applies `event` to `host` at time `now` (API timestamp format).
pub fn apply(host: &Host, event: &Event, now: &str) -> Result<Outcome, Refusal> {
    use HostState::*;
    let mut h = host.clone();
    let mut investigate = false;
    match event {
        Event::FactsGathered(f) => {
            if matches!(h.status, Investigating | Bootstrapping) {
                h.os = model::os_name(&f.os, f.ostree);
                h.distribution = f.os.clone();
                h.os_version = f.os_version.clone();
                h.ostree = f.ostree;
                h.cpus = f.cpus;
                h.memory = f.memory;
                h.space = f.space;
                h.boot_id = f.boot_id.clone();
                h.last_check = now.to_string();
                settle(&mut h, Bootstrapping);
            }
        }
        Event::BootstrapDone(kind) => {
            if h.status == Bootstrapping {
                h.bootstrapped = true;
                h.last_check = now.to_string();
                match kind {
                    ManagerKind::None => settle(&mut h, Disassociated),
                    ManagerKind::Trivial => settle(&mut h, Active),
                    ManagerKind::Nodes => {}
                }
            }
        }
        Event::NodeReady => {
            if h.status == Bootstrapping && h.bootstrapped {
                h.last_check = now.to_string();
                settle(&mut h, Active);
            }
        }
        Event::NodeJoinFailed(reason) => {
            if h.status == Bootstrapping {
                h.bootstrapped = true;
                fail(&mut h, FailureKind::Node, reason);
            }
        }
        Event::Failed(kind, reason) => {
            if matches!(h.status, Investigating | Bootstrapping) {
                fail(&mut h, *kind, reason);
            }
        }
        Event::Reachable { boot_id, node } => {
            if matches!(h.status, Active | Disassociated | Failed) {
                h.last_check = now.to_string();
                h.boot_id = boot_id.clone();
                match (h.status, h.failure) {
                    (Failed, Some(FailureKind::Unreachable)) => {
                        if h.bootstrapped {
                            settle(&mut h, resting_state(node));
                        } else {
                            // Never finished bootstrap: hand it back to the investigator.
                            settle(&mut h, Investigating);
                            investigate = true;
                        }
                    }
                    (Failed, Some(FailureKind::Node)) if *node == NodeObservation::Ready => {
                        settle(&mut h, Active);
                    }
                    (Active | Disassociated, _) if h.bootstrapped => match node {
                        NodeObservation::Ready | NodeObservation::Trivial => settle(&mut h, Active),
                        NodeObservation::NotReady(why) => {
                            h.status = Disassociated;
                            h.status_reason = format!("node not Ready: {why}");
                        }
                        NodeObservation::NoManager => settle(&mut h, Disassociated),
                        NodeObservation::Unknown => {}
                    },
                    _ => {}
                }
            }
        }
        Event::CheckFailed(kind, reason) => {
            if matches!(h.status, Active | Disassociated | Failed) {
                fail(&mut h, *kind, reason);
            }
        }
        Event::Join(kind) => {
            if !h.status.can_join_cluster() {
                return Err(Refusal::NotReadyToJoin {
                    address: h.address.clone(),
                    status: h.status,
                });
            }
            match kind {
                ManagerKind::None => settle(&mut h, Disassociated),
                ManagerKind::Trivial => settle(&mut h, Active),
                ManagerKind::Nodes => {
                    // Its kubelet must be configured for this cluster: bootstrapped again
                    // with the cluster's plan, `active` once its node is Ready.
                    settle(&mut h, Bootstrapping);
                    investigate = true;
                }
            }
        }
        Event::Leave => match h.status {
            Active | Disassociated => settle(&mut h, Disassociated),
            // A re-bootstrap for the cluster it leaves has nothing left to do.
            Bootstrapping if h.bootstrapped => settle(&mut h, Disassociated),
            _ => {}
        },
        Event::HostKeyRetrusted => {
            if h.status == Failed {
                settle(&mut h, Investigating);
                investigate = true;
            }
        }
    }
    Ok(Outcome {
        host: h,
        investigate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::*;

    const NOW: &str = "2026-01-01T00:00:00.000000";

    fn host(status: HostState, bootstrapped: bool) -> Host {
        let mut h = Host::new("10.0.0.1".into());
        h.status = status;
        h.bootstrapped = bootstrapped;
        h
    }

    fn failed(kind: FailureKind, bootstrapped: bool) -> Host {
        let mut h = host(Failed, bootstrapped);
        h.failure = Some(kind);
        h.status_reason = "why".into();
        h
    }

    fn go(h: &Host, e: Event) -> Outcome {
        apply(h, &e, NOW).unwrap()
    }

    #[test]
    fn investigation_path_by_manager_kind() {
        let facts = HostFacts {
            os: "fedora".into(),
            cpus: 2,
            boot_id: "b1".into(),
            ..Default::default()
        };
        let b = go(&host(Investigating, false), Event::FactsGathered(facts)).host;
        assert_eq!(
            (b.status, b.os.as_str(), b.cpus),
            (Bootstrapping, "fedora", 2)
        );
        assert_eq!(b.last_check, NOW);
        assert_eq!(b.distribution, "fedora");
        // An OSTree host reads `atomic`, the seeds' enum; its distribution stays available.
        let atomic = HostFacts {
            os: "rhel".into(),
            ostree: true,
            ..Default::default()
        };
        let h = go(&host(Investigating, false), Event::FactsGathered(atomic)).host;
        assert_eq!(
            (h.os.as_str(), h.distribution.as_str(), h.ostree),
            ("atomic", "rhel", true)
        );
        assert_eq!(h.distribution_id(), "rhel");

        let d = go(&b, Event::BootstrapDone(ManagerKind::None)).host;
        assert_eq!((d.status, d.bootstrapped), (Disassociated, true));
        let a = go(&b, Event::BootstrapDone(ManagerKind::Trivial)).host;
        assert_eq!(a.status, Active);
        let waiting = go(&b, Event::BootstrapDone(ManagerKind::Nodes)).host;
        assert_eq!(
            (waiting.status, waiting.bootstrapped),
            (Bootstrapping, true)
        );
        assert_eq!(go(&waiting, Event::NodeReady).host.status, Active);
        let nf = go(&waiting, Event::NodeJoinFailed("not Ready in 300 s".into())).host;
        assert_eq!((nf.status, nf.failure), (Failed, Some(FailureKind::Node)));
        assert_eq!(nf.status_reason, "not Ready in 300 s");
    }

    #[test]
    fn facts_and_bootstrap_ignore_hosts_that_moved_on() {
        for s in [Active, Disassociated, Failed] {
            let h = host(s, true);
            assert_eq!(go(&h, Event::FactsGathered(HostFacts::default())).host, h);
            assert_eq!(go(&h, Event::BootstrapDone(ManagerKind::None)).host, h);
            assert_eq!(go(&h, Event::NodeReady).host, h);
            assert_eq!(
                go(&h, Event::Failed(FailureKind::Bootstrap, "x".into())).host,
                h
            );
        }
        // NodeReady only completes a bootstrap that finished.
        let h = host(Bootstrapping, false);
        assert_eq!(go(&h, Event::NodeReady).host, h);
    }

    #[test]
    fn every_failure_kind_is_recorded_as_given() {
        for kind in [
            FailureKind::Unreachable,
            FailureKind::HostKeyChanged,
            FailureKind::Credentials,
            FailureKind::Facts,
            FailureKind::Bootstrap,
            FailureKind::Configuration,
            FailureKind::Node,
        ] {
            let f = go(&host(Bootstrapping, false), Event::Failed(kind, "r".into())).host;
            assert_eq!((f.status, f.failure), (Failed, Some(kind)));
            let c = go(&host(Active, true), Event::CheckFailed(kind, "r".into())).host;
            assert_eq!((c.status, c.failure), (Failed, Some(kind)));
        }
    }

    #[test]
    fn watcher_recovers_unreachable_hosts() {
        let up = |node| Event::Reachable {
            boot_id: "b2".into(),
            node,
        };
        let h = failed(FailureKind::Unreachable, true);
        let r = go(&h, up(NodeObservation::NoManager));
        assert_eq!(
            (r.host.status, r.host.failure, r.investigate),
            (Disassociated, None, false)
        );
        assert!(r.host.status_reason.is_empty());
        assert_eq!(r.host.boot_id, "b2");
        assert_eq!(go(&h, up(NodeObservation::Trivial)).host.status, Active);
        assert_eq!(go(&h, up(NodeObservation::Ready)).host.status, Active);
        assert_eq!(
            go(&h, up(NodeObservation::Unknown)).host.status,
            Disassociated
        );
        // Never bootstrapped: back to the investigator.
        let r = go(
            &failed(FailureKind::Unreachable, false),
            up(NodeObservation::NoManager),
        );
        assert_eq!((r.host.status, r.investigate), (Investigating, true));
    }

    #[test]
    fn failure_kinds_that_used_to_collide_recover_differently() {
        // A configuration failure (e.g. "container manager X of cluster Y does not exist")
        // is not a node failure: a Ready node does not revive it, nor does reaching the host.
        let up = Event::Reachable {
            boot_id: "b".into(),
            node: NodeObservation::Ready,
        };
        let cfg = failed(FailureKind::Configuration, true);
        let r = go(&cfg, up.clone()).host;
        assert_eq!(
            (r.status, r.failure),
            (Failed, Some(FailureKind::Configuration))
        );
        assert_eq!(r.last_check, NOW);
        let node = go(&failed(FailureKind::Node, true), up.clone()).host;
        assert_eq!((node.status, node.failure), (Active, None));
        // A changed host key never recovers by itself.
        let hk = go(&failed(FailureKind::HostKeyChanged, true), up).host;
        assert_eq!(hk.status, Failed);
        // A node failure is not revived by a not-Ready node.
        let nr = go(
            &failed(FailureKind::Node, true),
            Event::Reachable {
                boot_id: "b".into(),
                node: NodeObservation::NotReady("kubelet stopped".into()),
            },
        )
        .host;
        assert_eq!(nr.failure, Some(FailureKind::Node));
    }

    #[test]
    fn watcher_keeps_state_in_step_with_the_node_and_manager() {
        let seen = |node| Event::Reachable {
            boot_id: "b".into(),
            node,
        };
        let a = host(Active, true);
        let d = go(
            &a,
            seen(NodeObservation::NotReady("KubeletNotReady".into())),
        )
        .host;
        assert_eq!(d.status, Disassociated);
        assert_eq!(d.status_reason, "node not Ready: KubeletNotReady");
        assert_eq!(go(&d, seen(NodeObservation::Ready)).host.status, Active);
        assert_eq!(go(&d, seen(NodeObservation::Trivial)).host.status, Active);
        assert_eq!(
            go(&a, seen(NodeObservation::NoManager)).host.status,
            Disassociated
        );
        // An unknown node changes nothing but the check time.
        let u = go(&a, seen(NodeObservation::Unknown)).host;
        assert_eq!((u.status, u.last_check.as_str()), (Active, NOW));
        // Hosts in flight are not the watcher's business.
        for s in [Investigating, Bootstrapping] {
            let h = host(s, false);
            assert_eq!(go(&h, seen(NodeObservation::Ready)).host, h);
            assert_eq!(
                go(&h, Event::CheckFailed(FailureKind::Unreachable, "x".into())).host,
                h
            );
        }
    }

    #[test]
    fn join_rewrites_the_host_by_the_clusters_manager() {
        for s in [Active, Disassociated] {
            let h = host(s, true);
            let n = go(&h, Event::Join(ManagerKind::None));
            assert_eq!((n.host.status, n.investigate), (Disassociated, false));
            let t = go(&h, Event::Join(ManagerKind::Trivial));
            assert_eq!((t.host.status, t.investigate), (Active, false));
            let k = go(&h, Event::Join(ManagerKind::Nodes));
            assert_eq!((k.host.status, k.investigate), (Bootstrapping, true));
        }
        for s in [Investigating, Bootstrapping, Failed] {
            let e = apply(&host(s, false), &Event::Join(ManagerKind::None), NOW).unwrap_err();
            assert!(
                e.to_string().contains("only active or disassociated"),
                "{e}"
            );
        }
    }

    #[test]
    fn leave_makes_settled_hosts_disassociated() {
        for s in [Active, Disassociated] {
            assert_eq!(go(&host(s, true), Event::Leave).host.status, Disassociated);
        }
        assert_eq!(
            go(&host(Bootstrapping, true), Event::Leave).host.status,
            Disassociated
        );
        // A first investigation carries on (without the cluster), a failure stays.
        for h in [
            host(Investigating, false),
            host(Bootstrapping, false),
            failed(FailureKind::Bootstrap, true),
        ] {
            assert_eq!(go(&h, Event::Leave).host, h);
        }
    }

    #[test]
    fn retrusting_a_key_reinvestigates_failed_hosts_only() {
        let r = go(
            &failed(FailureKind::HostKeyChanged, true),
            Event::HostKeyRetrusted,
        );
        assert_eq!(
            (r.host.status, r.host.failure, r.investigate),
            (Investigating, None, true)
        );
        let a = host(Active, true);
        let r = go(&a, Event::HostKeyRetrusted);
        assert_eq!((r.host, r.investigate), (a, false));
    }
}
