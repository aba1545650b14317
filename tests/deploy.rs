//! The dashboard and alert rules under `deploy/` query only metrics the platform exports, and the
//! dashboard shows all of them (`promtool` checks and unit-tests the rules themselves in
//! `scripts/test.sh`).

use std::collections::BTreeSet;

use capecontrol::observability::METRIC_NAMES;
use serde_json::Value;

/// The metric names an expression or rule file mentions: identifiers of the platform's metric
/// families (a histogram's `_bucket`, `_sum` and `_count` series count as the histogram).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| {
            ["agent_", "task_", "tasks_", "user_", "marketplace_"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s))
                .filter(|base| METRIC_NAMES.contains(base))
                .unwrap_or(t)
                .to_owned()
        })
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn dashboard_is_valid_and_queries_every_exported_metric_and_only_those() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/capecontrol.json"))
        .expect("deploy/grafana/capecontrol.json is JSON");
    assert_eq!(dashboard["uid"], "capecontrol");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "ids are unique"
        );
        for key in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{} gridPos.{key}",
                panel["title"]
            );
        }
        titles.push(panel["title"].as_str().expect("a title").to_lowercase());
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} queries something", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{expr}"
            );
            assert_eq!(
                expr.matches('{').count(),
                expr.matches('}').count(),
                "{expr}"
            );
            queried.extend(metric_names(expr));
        }
    }
    let exported: BTreeSet<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unknown metrics {unknown:?}"
    );
    let unshown: Vec<_> = exported.difference(&queried).collect();
    assert!(
        unshown.is_empty(),
        "the dashboard does not show {unshown:?}"
    );
    for topic in [
        "throughput",
        "success rate",
        "latency",
        "queue depth",
        "concurrent",
        "memory",
        "cpu",
        "circuit breaker",
        "discovery",
        "satisfaction",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic} in {titles:?}"
        );
    }
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let rules = read("deploy/prometheus/alerts.yml");
    let used = metric_names(&rules);
    assert!(used.len() >= 6, "{used:?}");
    for name in &used {
        assert!(
            METRIC_NAMES.contains(&name.as_str()),
            "alerts.yml uses unknown metric {name}"
        );
    }
    for alert in [
        "AgentFailureRateHigh",
        "AgentLatencyP95High",
        "TaskQueueDepthHigh",
        "AgentMemoryHigh",
        "UserSatisfactionLow",
        "DiscoveryRateDecline",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
