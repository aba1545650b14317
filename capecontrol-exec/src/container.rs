//! One agent container's life: created with the hardening and labels, attached, started
//! (a [`Prepared`] container waiting for its start message), inspected when it exits and
//! removed when its [`ContainerGuard`] drops. Used by the executor and by the warm pools; it
//! depends on neither.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptions, InspectContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use capecontrol_core::manifest::{Manifest, Runtime};
use capecontrol_core::{Error, Result};
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio_util::task::TaskTracker;

use crate::limits::Hardening;

/// Label on every container this crate creates.
pub const LABEL_MANAGED: &str = "capecontrol.managed";
/// Label naming the node (executor) that created the container.
pub const LABEL_NODE: &str = "capecontrol.node";
/// Label naming the task the container runs (`warm` while a warm container waits).
pub const LABEL_TASK: &str = "capecontrol.task";
/// Label naming the attempt the container runs (`0` while a warm container waits).
pub const LABEL_ATTEMPT: &str = "capecontrol.attempt";
/// Label naming the agent version (`agent@1.0.0`).
pub const LABEL_AGENT: &str = "capecontrol.agent";

pub(crate) type OutputStream =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, DockerError>> + Send>>;
pub(crate) type InputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// The engine connection and what every container of this node is created with.
pub(crate) struct Launcher {
    pub(crate) docker: Docker,
    pub(crate) node_id: String,
    pub(crate) hardening: Hardening,
    /// Tracks background work (removals, warm starts) so that shutdown can wait for it.
    pub(crate) tracker: TaskTracker,
}

/// A created, attached and started container waiting for its start message.
pub(crate) struct Prepared {
    pub(crate) guard: ContainerGuard,
    pub(crate) output: OutputStream,
    pub(crate) input: InputSink,
    pub(crate) network: bool,
}

/// Removes its container (force: killing it if it runs) when dropped, in the background.
pub(crate) struct ContainerGuard {
    pub(crate) id: String,
    docker: Docker,
    tracker: TaskTracker,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(container = %id, "no runtime to remove the container; the next orphan clean-up will");
            return;
        };
        handle.spawn(self.tracker.track_future(async move {
            remove(&docker, &id).await;
        }));
    }
}

pub(crate) async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "could not remove an agent container")
        }
    }
}

/// Which agent version a container is for.
pub(crate) struct Spec<'a> {
    pub(crate) key: String,
    pub(crate) manifest: &'a Manifest,
    pub(crate) task_id: String,
    pub(crate) attempt: u32,
    pub(crate) network: bool,
}

impl Launcher {
    /// Creates, attaches to and starts a container for `spec`.
    pub(crate) async fn prepare(&self, spec: Spec<'_>) -> Result<Prepared> {
        let Runtime::Container {
            image,
            command,
            env,
        } = spec.manifest.runtime()
        else {
            return Err(Error::agent("not a container agent"));
        };
        let host_config = self.hardening.host_config(spec.manifest, spec.network)?;
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_NODE.to_owned(), self.node_id.clone()),
            (LABEL_TASK.to_owned(), spec.task_id),
            (LABEL_ATTEMPT.to_owned(), spec.attempt.to_string()),
            (LABEL_AGENT.to_owned(), spec.key),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: (!command.is_empty()).then_some(command),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: Some(self.hardening.user.clone()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(!spec.network),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None, body)
            .await
            .map_err(|e| match e {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::not_found("image", image.clone()),
                other => Error::resource(format!("docker could not create a container: {other}")),
            })?;
        let guard = ContainerGuard {
            id: created.id,
            docker: self.docker.clone(),
            tracker: self.tracker.clone(),
        };
        let attach = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            logs: false,
            detach_keys: None,
        };
        let attached = self
            .docker
            .attach_container(&guard.id, Some(attach))
            .await
            .map_err(|e| Error::resource(format!("docker could not attach: {e}")))?;
        self.docker
            .start_container(&guard.id, None)
            .await
            .map_err(|e| Error::resource(format!("docker could not start the container: {e}")))?;
        Ok(Prepared {
            guard,
            output: attached.output,
            input: attached.input,
            network: spec.network,
        })
    }

    /// Inspects an exited (or exiting) container: its exit code, whether it was OOM-killed,
    /// and whether it still runs (its output ended without it exiting: the attach was lost).
    pub(crate) async fn exit_state(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<(Option<i64>, bool, bool)> {
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        let mut waiting = self.docker.wait_container(id, Some(options));
        // Stdout closed: the container is exiting. Wait for it, within the attempt's time
        // (at least a second, so an OOM kill shows in the state; at most five).
        let wait = wait.clamp(Duration::from_secs(1), Duration::from_secs(5));
        let _ = tokio::time::timeout(wait, waiting.next()).await;
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok((
                    state.exit_code,
                    state.oom_killed.unwrap_or(false),
                    state.running.unwrap_or(false),
                ))
            }
            Err(e) => Err(Error::resource(format!(
                "docker could not inspect the container: {e}"
            ))),
        }
    }
}
