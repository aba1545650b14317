//! The [`ContainerExecutor`]: one container per task attempt, speaking the container protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::ListContainersOptions;
use capecontrol_core::manifest::{Manifest, Runtime};
use capecontrol_core::protocol::{Inbound, Outbound, PROTOCOL_VERSION, StartMessage};
use capecontrol_core::runtime::{Executor, Invocation};
use capecontrol_core::{Error, Result, TaskContext};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::container::{InputSink, LABEL_MANAGED, LABEL_NODE, Launcher, Prepared, Spec, remove};
use crate::limits::{Hardening, covers_network, manifest_wants_network};
use crate::pool::WarmPool;
use crate::stats;

/// Builds a [`ContainerExecutor`].
#[derive(Debug, Clone)]
pub struct ContainerExecutorBuilder {
    docker_url: Option<String>,
    node_id: String,
    pids_limit: i64,
    user: String,
    tmpfs_size: String,
    default_memory: u64,
    default_cpus: f64,
    max_output_bytes: usize,
    max_line_bytes: usize,
    cancel_grace: Duration,
    stats_interval: Duration,
    cleanup_orphans: bool,
    warm: HashMap<String, usize>,
}

impl Default for ContainerExecutorBuilder {
    fn default() -> Self {
        Self {
            docker_url: None,
            node_id: "local".to_owned(),
            pids_limit: 64,
            user: "65534:65534".to_owned(),
            tmpfs_size: "16m".to_owned(),
            default_memory: 512 * 1024 * 1024,
            default_cpus: 1.0,
            max_output_bytes: 1024 * 1024,
            max_line_bytes: 256 * 1024,
            cancel_grace: Duration::from_secs(1),
            stats_interval: Duration::from_millis(500),
            cleanup_orphans: true,
            warm: HashMap::new(),
        }
    }
}

impl ContainerExecutorBuilder {
    /// The engine to use: `unix:///var/run/docker.sock`, a socket path, or
    /// `tcp://host:port` / `http://host:port` (plain HTTP). Default: `DOCKER_HOST`, else the
    /// local socket.
    pub fn docker_url(mut self, url: impl Into<String>) -> Self {
        self.docker_url = Some(url.into());
        self
    }

    /// This node's id, put on every container's `capecontrol.node` label; orphan clean-up
    /// only removes containers of this node, so several nodes can share an engine.
    /// Default `local`.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
    }

    /// The process limit of a container (default 64).
    pub fn pids_limit(mut self, limit: i64) -> Self {
        self.pids_limit = limit;
        self
    }

    /// The user a container runs as (default `65534:65534`, nobody).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The size of the `/tmp` tmpfs (default `16m`).
    pub fn tmpfs_size(mut self, size: impl Into<String>) -> Self {
        self.tmpfs_size = size.into();
        self
    }

    /// The memory limit of agents whose manifest sets none, in bytes (default 512 MiB).
    pub fn default_memory_limit(mut self, bytes: u64) -> Self {
        self.default_memory = bytes;
        self
    }

    /// The CPU limit of agents whose manifest sets none, in cores (default 1).
    pub fn default_cpu_limit(mut self, cores: f64) -> Self {
        self.default_cpus = cores;
        self
    }

    /// The most bytes an attempt may write to stdout and stderr together (default 1 MiB).
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// The longest protocol line (default 256 KiB).
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// How long a cancelled attempt may take to stop before its container is killed
    /// (default 1 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// How often a running container's memory and CPU are sampled (default 500 ms).
    pub fn stats_interval(mut self, every: Duration) -> Self {
        self.stats_interval = every;
        self
    }

    /// Whether [`build`](Self::build) removes this node's leftover containers (default yes).
    pub fn cleanup_orphans(mut self, yes: bool) -> Self {
        self.cleanup_orphans = yes;
        self
    }

    /// Keeps `size` started containers ready for agent version `key` (`agent@1.0.0`), so a
    /// dispatch skips create and start. Each warm container serves exactly one task and is
    /// then removed and replaced in the background. The pool fills after the version's first
    /// dispatch, or at once with [`ContainerExecutor::prewarm`].
    pub fn warm_pool(mut self, key: impl Into<String>, size: usize) -> Self {
        self.warm.insert(key.into(), size);
        self
    }

    /// Connects to the engine (negotiating the API version), removes this node's orphans and
    /// returns the executor.
    pub async fn build(self) -> Result<ContainerExecutor> {
        let docker = connect(self.docker_url.as_deref())?
            .negotiate_version()
            .await
            .map_err(|e| Error::resource(format!("docker engine unreachable: {e}")))?;
        let max_cpus = docker
            .info()
            .await
            .ok()
            .and_then(|i| i.ncpu)
            .map(|n| n as f64)
            .unwrap_or(1.0);
        let hardening = Hardening {
            pids_limit: self.pids_limit,
            user: self.user,
            tmpfs_size: self.tmpfs_size,
            default_memory: self.default_memory,
            default_cpus: self.default_cpus,
            max_cpus,
        };
        let pools = self
            .warm
            .into_iter()
            .filter(|(_, size)| *size > 0)
            .map(|(key, size)| (key.clone(), Arc::new(WarmPool::new(key, size))))
            .collect();
        let executor = ContainerExecutor {
            inner: Arc::new(Inner {
                launcher: Arc::new(Launcher {
                    docker,
                    node_id: self.node_id,
                    hardening,
                    tracker: TaskTracker::new(),
                }),
                max_output_bytes: self.max_output_bytes,
                max_line_bytes: self.max_line_bytes,
                cancel_grace: self.cancel_grace,
                stats_interval: self.stats_interval,
                pools,
            }),
        };
        if self.cleanup_orphans {
            let removed = executor.cleanup_orphans().await?;
            if removed > 0 {
                tracing::info!(removed, "removed orphaned agent containers");
            }
        }
        Ok(executor)
    }
}

fn connect(url: Option<&str>) -> Result<Docker> {
    const TIMEOUT_SECS: u64 = 120;
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match url {
        None => Docker::connect_with_defaults(),
        Some(u) if u.starts_with("tcp://") || u.starts_with("http://") => {
            Docker::connect_with_http(u, TIMEOUT_SECS, version)
        }
        Some(u) => Docker::connect_with_unix(u, TIMEOUT_SECS, version),
    };
    docker.map_err(|e| Error::resource(format!("cannot connect to the docker engine: {e}")))
}

/// Runs agents whose manifest has `runtime.kind = "container"` in hardened, limited Docker
/// containers, one per attempt, over the container protocol (`docs/container-protocol.md`).
///
/// Clone it freely: clones share the engine connection, the warm pools and the clean-up
/// tracker.
#[derive(Clone)]
pub struct ContainerExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContainerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerExecutor")
            .field("node_id", &self.inner.launcher.node_id)
            .field("warm_pools", &self.inner.pools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) launcher: Arc<Launcher>,
    max_output_bytes: usize,
    max_line_bytes: usize,
    cancel_grace: Duration,
    stats_interval: Duration,
    pools: HashMap<String, Arc<WarmPool>>,
}

enum Ending {
    Output(Value),
    Failed(Error),
}

impl ContainerExecutor {
    /// A builder with the defaults (local engine, node `local`, hardening on).
    pub fn builder() -> ContainerExecutorBuilder {
        ContainerExecutorBuilder::default()
    }

    /// The engine connection.
    pub fn docker(&self) -> &Docker {
        &self.inner.launcher.docker
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.launcher.node_id
    }

    /// Removes every container of this node (label `capecontrol.node`) that exists now: the
    /// leftovers of a crashed node. Call it at start-up ([`ContainerExecutorBuilder::build`]
    /// does), never while this node runs tasks. Returns how many were removed.
    pub async fn cleanup_orphans(&self) -> Result<usize> {
        let ids = self.containers().await?;
        for id in &ids {
            remove(&self.inner.launcher.docker, id).await;
        }
        Ok(ids.len())
    }

    /// The ids of this node's containers (any state).
    pub async fn containers(&self) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_NODE}={}", self.inner.launcher.node_id),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .inner
            .launcher
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::resource(format!("docker could not list containers: {e}")))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Fills the warm pool of `agent_id@version` now (when one is configured), waiting until
    /// it holds its size or a container fails to start. Returns how many are ready.
    pub async fn prewarm(
        &self,
        agent_id: &str,
        version: &str,
        manifest: &Manifest,
    ) -> Result<usize> {
        let key = format!("{agent_id}@{version}");
        let Some(pool) = self.inner.pools.get(&key) else {
            return Ok(0);
        };
        pool.fill_now(&self.inner.launcher, manifest).await
    }

    /// How many warm containers of `agent_id@version` are ready.
    pub fn warm_ready(&self, agent_id: &str, version: &str) -> usize {
        self.inner
            .pools
            .get(&format!("{agent_id}@{version}"))
            .map_or(0, |p| p.ready())
    }

    /// Waits until every container this executor removed in the background is gone.
    pub async fn settle(&self) {
        self.inner.launcher.tracker.close();
        self.inner.launcher.tracker.wait().await;
        self.inner.launcher.tracker.reopen();
    }

    /// Stops the warm pools, removes their containers and waits for every removal.
    pub async fn shutdown(&self) {
        for pool in self.inner.pools.values() {
            pool.close();
        }
        self.settle().await;
    }

    async fn dispatch(&self, invocation: &Invocation, cx: &TaskContext) -> Result<Value> {
        let inner = &self.inner;
        let manifest = invocation.manifest.as_ref();
        let key = format!("{}@{}", invocation.agent_id, invocation.version);
        let network = manifest_wants_network(manifest) && covers_network(cx.granted());
        let pool = inner.pools.get(&key);
        let warm = pool.and_then(|p| p.take(network));
        let started = Instant::now();
        let prepared = match warm {
            Some(p) => p,
            None => {
                self.prepare_detached(
                    key.clone(),
                    Arc::clone(&invocation.manifest),
                    cx.task_id().to_string(),
                    cx.attempt(),
                    network,
                )
                .await?
            }
        };
        tracing::debug!(
            task_id = %cx.task_id(),
            container = %prepared.guard.id,
            prepare_ms = started.elapsed().as_millis() as u64,
            "agent container ready"
        );
        let config = manifest.config();
        let secs = manifest
            .task(&invocation.task)
            .and_then(|t| t.timeout)
            .map_or(config.timeout, |t| t.min(config.timeout))
            .max(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(secs));
        let stop_stats = CancellationToken::new();
        // Stops the sampler however the attempt ends, a dropped future included.
        let _stop_stats = stop_stats.clone().drop_guard();
        tokio::spawn(stats::sample(
            inner.launcher.docker.clone(),
            prepared.guard.id.clone(),
            invocation.agent_id.clone(),
            invocation.version.clone(),
            inner.stats_interval,
            stop_stats.clone(),
        ));
        let result = self
            .converse(prepared, invocation, cx, deadline, secs)
            .await;
        // Refill after the task, so starting a replacement does not compete with it.
        if let Some(pool) = pool {
            pool.refill(&inner.launcher, &invocation.manifest);
        }
        result
    }

    /// Creates, attaches to and starts a container on a (tracked) task of its own, so that an
    /// attempt dropped while the engine is still creating its container — a platform timeout or
    /// a cancellation past its grace period drops the executor's future — cannot leave that
    /// container behind: the task runs to the end, finds nobody waiting and drops the
    /// container's guard, which removes it.
    async fn prepare_detached(
        &self,
        key: String,
        manifest: Arc<Manifest>,
        task_id: String,
        attempt: u32,
        network: bool,
    ) -> Result<Prepared> {
        let launcher = Arc::clone(&self.inner.launcher);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.launcher.tracker.spawn(async move {
            let prepared = launcher
                .prepare(Spec {
                    key,
                    manifest: &manifest,
                    task_id,
                    attempt,
                    network,
                })
                .await;
            // Nobody waits any more: the guard (dropped here, while this task is still
            // tracked) removes the container.
            drop(tx.send(prepared));
        });
        rx.await
            .map_err(|_| Error::resource("the container start-up task ended without a result"))?
    }

    /// Sends the start message, then forwards the agent's lines until its output, an error,
    /// the deadline or a cancellation. The container is removed when this returns.
    async fn converse(
        &self,
        prepared: Prepared,
        invocation: &Invocation,
        cx: &TaskContext,
        deadline: tokio::time::Instant,
        timeout_secs: u32,
    ) -> Result<Value> {
        let inner = &self.inner;
        let Prepared {
            guard,
            mut output,
            mut input,
            ..
        } = prepared;
        let start = Inbound::Start(Box::new(StartMessage {
            protocol: PROTOCOL_VERSION,
            task_id: cx.task_id(),
            attempt: cx.attempt(),
            agent_id: invocation.agent_id.clone(),
            task: invocation.task.clone(),
            input: invocation.input.clone(),
            settings: cx.settings().clone(),
            granted_scopes: cx.granted().iter().map(ToString::to_string).collect(),
            user_id: cx.principal().user_id.clone(),
            roles: cx.principal().roles.clone(),
            completed_steps: cx.journaled_steps().cloned().collect(),
            version: invocation.version.clone(),
            traceparent: cx.traceparent().map(str::to_owned),
        }));
        send(&mut input, &start).await?;

        let mut deadline = deadline;
        let mut cancelled = false;
        let mut total = 0usize;
        let mut stdout: Vec<u8> = Vec::new();
        let mut stderr_tail: Vec<u8> = Vec::new();
        let secrets = Secrets::of(invocation.manifest.as_ref(), cx.settings());
        let mut tool_calls = 0usize;
        let ending = 'conversation: loop {
            let chunk = tokio::select! {
                chunk = output.next() => chunk,
                () = tokio::time::sleep_until(deadline) => {
                    break if cancelled {
                        Ending::Failed(Error::conflict("task cancelled"))
                    } else {
                        Ending::Failed(Error::resource(format!(
                            "agent container timed out after {timeout_secs} s and was killed"
                        )))
                    };
                }
                () = cx.cancellation().cancelled(), if !cancelled => {
                    cancelled = true;
                    let _ = send(&mut input, &Inbound::Cancel).await;
                    deadline = deadline.min(tokio::time::Instant::now() + inner.cancel_grace);
                    continue;
                }
            };
            let (bytes, is_stdout) = match chunk {
                Some(Ok(LogOutput::StdOut { message })) => (message, true),
                Some(Ok(LogOutput::StdErr { message })) => (message, false),
                Some(Ok(_)) => continue,
                // The attach (the engine connection) broke: not the agent's fault.
                Some(Err(e)) => {
                    break Ending::Failed(Error::resource(format!(
                        "lost the docker attach to the agent container: {e}"
                    )));
                }
                None => {
                    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                    break Ending::Failed(
                        self.exited_without_output(&guard.id, &stderr_tail, &secrets, wait)
                            .await,
                    );
                }
            };
            total += bytes.len();
            if total > inner.max_output_bytes {
                break Ending::Failed(Error::agent(format!(
                    "agent container wrote more than {} bytes of output; killed",
                    inner.max_output_bytes
                )));
            }
            if !is_stdout {
                // A tail of 1 KiB, plus the longest secret so that a secret cut at its front
                // is still recognised (and scrubbed) when the tail is shown.
                stderr_tail.extend_from_slice(&bytes);
                let excess = stderr_tail
                    .len()
                    .saturating_sub(STDERR_TAIL + secrets.longest());
                stderr_tail.drain(..excess);
                continue;
            }
            stdout.extend_from_slice(&bytes);
            while let Some(pos) = stdout.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = stdout.drain(..=pos).collect();
                if line.len() > inner.max_line_bytes {
                    break 'conversation Ending::Failed(line_too_long(inner.max_line_bytes));
                }
                match self
                    .handle_line(&line, cx, &mut input, &secrets, &mut tool_calls)
                    .await
                {
                    Ok(None) => {}
                    Ok(Some(ending)) => break 'conversation ending,
                    Err(e) => break 'conversation Ending::Failed(e),
                }
            }
            if stdout.len() > inner.max_line_bytes {
                break Ending::Failed(line_too_long(inner.max_line_bytes));
            }
        };
        drop(input);
        drop(output);
        drop(guard);
        match ending {
            Ending::Output(value) => Ok(value),
            Ending::Failed(error) => Err(error),
        }
    }

    /// Handles one protocol line; `Some` ends the conversation.
    async fn handle_line(
        &self,
        line: &[u8],
        cx: &TaskContext,
        input: &mut InputSink,
        secrets: &Secrets,
        tool_calls: &mut usize,
    ) -> Result<Option<Ending>> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let message: Outbound = serde_json::from_str(text).map_err(|e| {
            let shown: String = secrets.scrub(text).chars().take(120).collect();
            Error::agent(format!(
                "agent container broke the protocol ({e}) with the line `{shown}`"
            ))
        })?;
        let host = cx.host();
        let ack = match message {
            Outbound::StepStarted { step, name } => {
                host.step_started(step, &name).await?;
                return Ok(None);
            }
            Outbound::Log { message } => {
                let message: String = secrets.scrub(&message).chars().take(4096).collect();
                host.log(&message);
                return Ok(None);
            }
            Outbound::Output { value } => return Ok(Some(Ending::Output(value))),
            Outbound::Error(value) => {
                return Ok(Some(Ending::Failed(Outbound::decode_error(&value))));
            }
            Outbound::StepCompleted { step, name, output } => {
                host.step_completed(step, &name, &output).await
            }
            Outbound::StepFailed { step, name, error } => {
                host.step_failed(step, &name, &Outbound::decode_error(&error))
                    .await
            }
            Outbound::ToolCall {
                tool,
                scope,
                allowed,
            } => {
                *tool_calls += 1;
                if *tool_calls > MAX_TOOL_CALLS_PER_ATTEMPT {
                    return Err(Error::agent(format!(
                        "agent container reported more than {MAX_TOOL_CALLS_PER_ATTEMPT} tool \
                         calls in one attempt; killed"
                    )));
                }
                host.tool_called(&capecontrol_core::ToolCall {
                    tool,
                    scope,
                    allowed,
                    reported: true,
                })
                .await
            }
        };
        let failed = ack.as_ref().err().cloned();
        send(input, &Inbound::Ack { error: failed }).await?;
        // A failed journal write ends the attempt, as it would in-process.
        ack.map(|()| None)
    }

    async fn exited_without_output(
        &self,
        id: &str,
        stderr_tail: &[u8],
        secrets: &Secrets,
        wait: Duration,
    ) -> Error {
        let (code, oom, running) = match self.inner.launcher.exit_state(id, wait).await {
            Ok(state) => state,
            // The engine cannot say how the container ended: not the agent's fault.
            Err(e) => {
                return Error::resource(format!(
                    "the agent container's output ended and docker cannot be asked why: {e}"
                ));
            }
        };
        if oom {
            return Error::resource("agent container ran out of memory (OOM-killed)");
        }
        if running {
            // Its output ended but it did not exit: the engine connection (the attach) was
            // lost, which is not the agent's fault. The guard removes the container.
            return Error::resource(
                "lost the docker attach to the agent container: its output ended while it still runs",
            );
        }
        let tail = secrets.scrub(&String::from_utf8_lossy(stderr_tail));
        let start = tail.len().saturating_sub(STDERR_TAIL);
        let start = (start..=tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        let tail = tail[start..].trim();
        let code = code.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        if tail.is_empty() {
            Error::agent(format!(
                "agent container exited with code {code} before writing its output"
            ))
        } else {
            Error::agent(format!(
                "agent container exited with code {code} before writing its output; stderr: {tail}"
            ))
        }
    }
}

fn line_too_long(max: usize) -> Error {
    Error::agent(format!(
        "agent container wrote a line longer than {max} bytes; killed"
    ))
}

async fn send(input: &mut InputSink, message: &Inbound) -> Result<()> {
    let mut line = serde_json::to_vec(message)
        .map_err(|e| Error::agent(format!("cannot encode a protocol line: {e}")))?;
    line.push(b'\n');
    input
        .write_all(&line)
        .await
        .and(input.flush().await)
        .map_err(|e| {
            Error::resource(format!(
                "cannot write to the agent container's stdin (the docker attach): {e}"
            ))
        })
}

/// The most tool calls a container may report in one attempt: each is a journal write and an
/// audit row, so an agent cannot flood the audit trail.
pub const MAX_TOOL_CALLS_PER_ATTEMPT: usize = 1024;

/// The stderr bytes an error shows at most.
const STDERR_TAIL: usize = 1024;

/// What the scrubbed text shows instead of a secret.
pub const SCRUBBED: &str = "[REDACTED]";

/// The secret setting values of an installation (`"secret": true` in the manifest's settings
/// schema), to scrub from whatever the container writes before it reaches errors, events, logs
/// or audit rows.
#[derive(Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets among `settings` by `manifest`'s settings schema; string values only, and
    /// only those of at least 4 bytes (shorter ones would scrub ordinary text).
    pub fn of(manifest: &Manifest, settings: &Value) -> Self {
        let Some(schema) = manifest
            .ui
            .as_ref()
            .and_then(|u| u.settings_schema.as_ref())
        else {
            return Self::default();
        };
        let (_, pointers) =
            capecontrol_core::validate::redact_settings_listing_secrets(schema, settings);
        let mut values: Vec<String> = pointers
            .iter()
            .filter_map(|p| settings.pointer(p))
            .filter_map(Value::as_str)
            .filter(|v| v.len() >= 4)
            .map(str::to_owned)
            .collect();
        // Longest first, so that a secret containing another is scrubbed whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self(values)
    }

    /// `text` with every secret replaced by [`SCRUBBED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), SCRUBBED);
            }
        }
        out
    }

    /// The longest secret's length in bytes.
    pub fn longest(&self) -> usize {
        self.0.first().map_or(0, String::len)
    }
}

#[async_trait]
impl Executor for ContainerExecutor {
    fn name(&self) -> &str {
        "container"
    }

    fn supports(&self, _agent_id: &str, manifest: &Manifest) -> bool {
        matches!(manifest.runtime(), Runtime::Container { .. })
    }

    async fn run(&self, invocation: Invocation, cx: TaskContext) -> Result<Value> {
        self.dispatch(&invocation, &cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "name": "a", "version": "1.0.0", "description": "d",
            "ui": { "settings_schema": { "type": "object", "properties": {
                "api_key": { "type": "string", "secret": true },
                "short": { "type": "string", "secret": true },
                "region": { "type": "string" }
            } } }
        }))
        .unwrap()
    }

    #[test]
    fn secrets_are_the_secret_settings_and_are_scrubbed() {
        let settings = serde_json::json!({
            "api_key": "sk-live-123456", "short": "ab", "region": "eu-west-1"
        });
        let secrets = Secrets::of(&manifest(), &settings);
        assert_eq!(secrets.longest(), "sk-live-123456".len());
        assert_eq!(
            secrets.scrub("key sk-live-123456 in eu-west-1 ab"),
            "key [REDACTED] in eu-west-1 ab",
            "only secrets of 4 bytes or more are scrubbed"
        );
        let none = Secrets::of(&manifest(), &serde_json::json!({}));
        assert_eq!(none.scrub("sk-live-123456"), "sk-live-123456");
    }
}
