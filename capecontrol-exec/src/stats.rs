//! Health metrics of running containers (the metrics table of `docs/contracts.md`): `agent_memory_usage_bytes` and
//! `agent_cpu_usage_percent`, sampled with one-shot stats while a task runs, and
//! `agent_memory_limit_bytes` (the container's limit, for a "memory above 80 % of the limit"
//! alert); all labelled `agent` and `version`.

use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Samples container `id` every `every` until `stop` fires or the container is gone.
pub(crate) async fn sample(
    docker: Docker,
    id: String,
    agent: String,
    version: String,
    every: Duration,
    stop: CancellationToken,
) {
    let mut previous: Option<(u64, u64)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let next = tokio::select! {
            () = stop.cancelled() => return,
            s = async { docker.stats(&id, Some(options)).next().await } => s,
        };
        let Some(Ok(stats)) = next else { return };
        let labels = [("agent", agent.clone()), ("version", version.clone())];
        if let Some(bytes) = memory_bytes(&stats) {
            metrics::gauge!("agent_memory_usage_bytes", &labels).set(bytes as f64);
        }
        if let Some(limit) = stats.memory_stats.as_ref().and_then(|m| m.limit) {
            metrics::gauge!("agent_memory_limit_bytes", &labels).set(limit as f64);
        }
        if let Some(now) = cpu_counters(&stats) {
            if let Some(before) = previous
                && let Some(percent) = cpu_percent(before, now, online_cpus(&stats))
            {
                metrics::gauge!("agent_cpu_usage_percent", &labels).set(percent);
            }
            previous = Some(now);
        }
    }
}

/// Memory in use, less the page cache (cgroup v1 `cache`, v2 `inactive_file`).
pub(crate) fn memory_bytes(stats: &ContainerStatsResponse) -> Option<u64> {
    let memory = stats.memory_stats.as_ref()?;
    let usage = memory.usage?;
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("cache")).copied())
        .unwrap_or(0);
    Some(usage.saturating_sub(cache))
}

/// (container CPU time, system CPU time), in nanoseconds.
fn cpu_counters(stats: &ContainerStatsResponse) -> Option<(u64, u64)> {
    let cpu = stats.cpu_stats.as_ref()?;
    Some((cpu.cpu_usage.as_ref()?.total_usage?, cpu.system_cpu_usage?))
}

fn online_cpus(stats: &ContainerStatsResponse) -> u32 {
    stats
        .cpu_stats
        .as_ref()
        .and_then(|c| c.online_cpus)
        .unwrap_or(1)
        .max(1)
}

/// CPU use between two samples, in percent of one core (100 = one core busy).
pub(crate) fn cpu_percent(before: (u64, u64), now: (u64, u64), cpus: u32) -> Option<f64> {
    let container = now.0.checked_sub(before.0)? as f64;
    let system = now.1.checked_sub(before.1)? as f64;
    (system > 0.0).then(|| container / system * f64::from(cpus) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_of_one_core() {
        // Two cores: the system clock advances 2 s per second; the container used 0.5 s.
        let p = cpu_percent((0, 0), (500_000_000, 2_000_000_000), 2).unwrap();
        assert!((p - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent((10, 10), (5, 20), 1), None);
    }
}
