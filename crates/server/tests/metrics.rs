//! `/metrics` while a fleet changes: the fleet gauges (hosts, clusters, operations), the
//! worker histograms (investigations, bootstraps, SSH, watcher rounds), store latency and
//! change-feed subscribers move with what happens, and every family has `# HELP` and `# TYPE`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testsupport::testbed::{Testbed, TestbedOptions};

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn take(server: &Server) -> Scrape {
        // Open route: read without credentials, as Prometheus does.
        let r = server
            .send(
                server
                    .client()
                    .get(format!("{}/metrics", server.base))
                    .timeout(REQUEST_TIMEOUT),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.content_type().starts_with("text/plain"), "{r:?}");
        Scrape(r.text)
    }

    /// The value of the sample `name` whose labels include every `labels` pair.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (n, rest) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if n != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
                if all { value.parse().ok() } else { None }
            })
    }

    /// The sum of every sample of `name` (over all label sets).
    fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let n = series.split('{').next()?;
                (n == name).then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    fn has_family(&self, name: &str) -> bool {
        self.0.lines().any(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' ', '_'])
                && !l.starts_with('#')
        })
    }
}

async fn wait_metric(
    server: &Server,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = Scrape::take(server).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics did not show {what} within {timeout:?}:\n{}\n{}",
            s.0,
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_metrics_move_with_the_fleet() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 2,
        flavours: vec!["fedora".into(), "debian".into()],
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let mut opts = env.options("data");
    opts.extra_args = vec!["--watcher-interval".into(), "2".into()];
    let server = Server::start(opts).await;

    let empty = Scrape::take(&server).await;
    assert_eq!(
        empty.value("commissaire_hosts", &[("status", "active")]),
        Some(0.0)
    );
    assert_eq!(
        empty.value("commissaire_clusters", &[("status", "ok")]),
        Some(0.0)
    );
    let store_calls = empty.value(
        "commissaire_store_request_duration_seconds_count",
        &[("op", "list")],
    );
    assert!(
        store_calls.is_some_and(|n| n > 0.0),
        "store latency recorded: {store_calls:?}"
    );

    flannel_server_network(&server, &tb).await;
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    for a in tb.addresses() {
        let r = server
            .put(
                &format!("/host/{a}"),
                json!({"ssh_priv_key": tb.client_key_base64(), "cluster": "c"}),
            )
            .await;
        expect_status(&r, 201);
    }
    let settled = wait_metric(
        &server,
        "2 disassociated hosts",
        Duration::from_secs(240),
        |s| s.value("commissaire_hosts", &[("status", "disassociated")]) == Some(2.0),
    )
    .await;
    assert_eq!(
        settled.value("commissaire_clusters", &[("status", "ok")]),
        Some(1.0)
    );
    assert!(settled.value("commissaire_investigation_duration_seconds_count", &[]) >= Some(2.0));
    assert!(
        settled.value(
            "commissaire_bootstrap_duration_seconds_count",
            &[("outcome", "ok")]
        ) >= Some(2.0)
    );
    assert!(
        settled.value(
            "commissaire_ssh_connect_duration_seconds_count",
            &[("outcome", "ok")]
        ) >= Some(2.0)
    );
    assert!(settled.sum("commissaire_ssh_exec_duration_seconds_count") >= 4.0);
    let rounds = settled
        .value("commissaire_watcher_rounds_total", &[])
        .unwrap_or(0.0);
    // The watcher keeps going: rounds and checks grow, and its round time is recorded.
    let watched = wait_metric(
        &server,
        "two more watcher rounds",
        Duration::from_secs(60),
        |s| {
            s.value("commissaire_watcher_rounds_total", &[]) >= Some(rounds + 2.0)
                && s.value("commissaire_watcher_hosts_checked", &[]) == Some(2.0)
        },
    )
    .await;
    assert!(watched.value("commissaire_watcher_round_duration_seconds_count", &[]) >= Some(2.0));
    assert!(watched.value("commissaire_watcher_hosts_checked_total", &[]) >= Some(2.0));

    // Change-feed subscribers: one more while a client reads the feed.
    let before = watched
        .value("commissaire_change_feed_subscribers", &[])
        .unwrap_or(0.0);
    let feed = EventReader::open(&server, None).await;
    wait_metric(&server, "a feed subscriber", Duration::from_secs(30), |s| {
        s.value("commissaire_change_feed_subscribers", &[]) == Some(before + 1.0)
    })
    .await;
    drop(feed);
    wait_metric(
        &server,
        "the subscriber gone",
        Duration::from_secs(30),
        |s| s.value("commissaire_change_feed_subscribers", &[]) == Some(before),
    )
    .await;

    // A rolling restart: the operation and its hosts are counted by status and step.
    expect_status(
        &server
            .put("/cluster/c/restart", json!({"batch_size": 2}))
            .await,
        201,
    );
    let ran = wait_metric(
        &server,
        "the restart finished",
        Duration::from_secs(240),
        |s| {
            s.value(
                "commissaire_operations",
                &[("kind", "restart"), ("status", "finished")],
            ) == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        ran.value(
            "commissaire_operation_hosts",
            &[("kind", "restart"), ("step", "done")]
        ),
        Some(2.0)
    );
    assert_eq!(
        ran.value(
            "commissaire_operations",
            &[("kind", "restart"), ("status", "in_process")]
        ),
        Some(0.0)
    );

    // A host goes down: hosts by status and the cluster's status follow.
    let down = &tb.addresses()[0];
    tb.stop(down);
    let failed = wait_metric(&server, "a failed host", Duration::from_secs(90), |s| {
        s.value("commissaire_hosts", &[("status", "failed")]) == Some(1.0)
    })
    .await;
    assert_eq!(
        failed.value("commissaire_hosts", &[("status", "disassociated")]),
        Some(1.0)
    );
    wait_metric(
        &server,
        "a degraded cluster",
        Duration::from_secs(30),
        |s| {
            s.value("commissaire_clusters", &[("status", "degraded")]) == Some(1.0)
                && s.value("commissaire_clusters", &[("status", "ok")]) == Some(0.0)
        },
    )
    .await;
    let last = Scrape::take(&server).await;
    assert!(
        last.value(
            "commissaire_ssh_connect_duration_seconds_count",
            &[("outcome", "error")]
        ) >= Some(1.0),
        "failed SSH connections are measured"
    );

    // Every family present has # HELP and # TYPE.
    let mut present = 0;
    for (name, _) in commissaire_server::fleet_metrics::FAMILIES {
        if !last.has_family(name) {
            // Only counted on trouble (the store not answering a scrape).
            assert_eq!(
                *name, "commissaire_fleet_metrics_errors_total",
                "{name} missing:\n{}",
                last.0
            );
            continue;
        }
        present += 1;
        assert!(
            last.0.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            last.0.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    assert!(present >= 16, "{present}");
    for line in last.0.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            last.0.contains(&format!("# HELP {name} ")),
            "family {name} has no HELP"
        );
    }
}
