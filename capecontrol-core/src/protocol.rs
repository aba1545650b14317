//! The container protocol: how a container executor and an agent running in a container talk,
//! as JSON lines over the container's stdin and stdout (`docs/container-protocol.md`).
//!
//! Both sides use the message types of this module. The agent side is [`serve_stdio`] (or
//! [`serve_stdio_async`], or [`serve`] over any reader and writer): it turns any
//! [`AgentBase`] into a container binary with one call, so the same agent code runs in-process
//! or isolated:
//!
//! ```no_run
//! # use capecontrol_core::AgentBase;
//! // In the agent binary's `main`:
//! fn serve_my_agent(agent: impl AgentBase) -> std::process::ExitCode {
//!     capecontrol_core::protocol::serve_stdio(agent)
//! }
//! ```
//!
//! In (stdin, executor → agent): one [`Inbound::Start`], then an [`Inbound::Ack`] for every
//! journaled message the agent sends ([`Outbound::StepCompleted`], [`Outbound::StepFailed`],
//! [`Outbound::ToolCall`]), and possibly [`Inbound::Cancel`].
//! Out (stdout, agent → executor): step and tool-call reports, [`Outbound::Log`] lines, and
//! finally exactly one [`Outbound::Output`] or [`Outbound::Error`]. Anything the agent writes
//! to stderr is not part of the protocol.

use std::io::{BufRead, Write};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::{AgentBase, StepRecord, TaskContext, TaskHost, ToolCall};
use crate::error::{Error, ErrorCategory, Result};
use crate::policy::{Principal, Scope};

/// The protocol's version, sent in [`StartMessage::protocol`].
pub const PROTOCOL_VERSION: u32 = 1;

/// What the executor sends the agent to start a task attempt: everything the task needs,
/// secrets included (stdin is the only way secrets reach a container: never the environment).
/// Its `Debug` output leaves the settings out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StartMessage {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// The task's id.
    pub task_id: Uuid,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The agent's id.
    #[serde(default)]
    pub agent_id: String,
    /// The task's name.
    pub task: String,
    /// The task's JSON input.
    pub input: Value,
    /// The installation's settings, secrets included.
    #[serde(default)]
    pub settings: Value,
    /// The scopes the installation grants the agent.
    #[serde(default)]
    pub granted_scopes: Vec<String>,
    /// The submitting principal's user id.
    #[serde(default)]
    pub user_id: String,
    /// The submitting principal's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Steps journaled by earlier attempts: the agent replays them instead of running them.
    #[serde(default)]
    pub completed_steps: Vec<StepRecord>,
    /// The agent version.
    #[serde(default)]
    pub version: String,
    /// The W3C `traceparent` the task was submitted under: the agent's spans join that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl std::fmt::Debug for StartMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartMessage")
            .field("protocol", &self.protocol)
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("agent_id", &self.agent_id)
            .field("task", &self.task)
            .field("settings", &"<redacted>")
            .field("granted_scopes", &self.granted_scopes)
            .field("completed_steps", &self.completed_steps.len())
            .finish_non_exhaustive()
    }
}

/// A line from the executor to the agent (stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    /// Start the task (the first line, exactly once).
    Start(Box<StartMessage>),
    /// The platform journaled the last step or tool-call message (or failed to, with `error`:
    /// the agent must then stop, as an in-process task would on a failed journal write).
    Ack {
        /// Why the journal write failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Error>,
    },
    /// The task is cancelled: stop promptly (the container is killed after a grace period).
    Cancel,
}

/// A line from the agent to the executor (stdout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound {
    /// A durable step starts.
    StepStarted {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
    },
    /// A durable step completed; answered by an [`Inbound::Ack`] once journaled.
    StepCompleted {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
        /// The step's JSON result.
        output: Value,
    },
    /// A durable step failed; answered by an [`Inbound::Ack`].
    StepFailed {
        /// The step's position, from 1.
        step: u32,
        /// The step's name.
        name: String,
        /// Why (an error as the taxonomy serializes it: `{"category": …, "message": …}`).
        error: Value,
    },
    /// The agent called one of its tools (allowed or denied); answered by an [`Inbound::Ack`].
    ToolCall {
        /// The tool's name.
        tool: String,
        /// The scope the tool needs, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Whether the grants allowed the call.
        allowed: bool,
    },
    /// A log line.
    Log {
        /// The message.
        message: String,
    },
    /// The task's output (the last line).
    Output {
        /// The output value.
        value: Value,
    },
    /// The task failed (the last line). The error is flattened into the line:
    /// `{"type": "error", "category": "agent", "message": "…"}`.
    Error(Value),
}

impl Outbound {
    /// The error of an [`Outbound::Error`] line: the typed error when the line carries one in
    /// full, else one built from its `category` and `message` (an unknown category is an agent
    /// error).
    pub fn decode_error(value: &Value) -> Error {
        let mut fields = value.clone();
        if let Some(map) = fields.as_object_mut() {
            map.remove("type");
        }
        if let Ok(error) = serde_json::from_value::<Error>(fields) {
            return error;
        }
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the agent reported an error without a message")
            .to_owned();
        let category = value
            .get("category")
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<ErrorCategory>().ok());
        match category {
            Some(ErrorCategory::Validation) => Error::validation(message, Vec::new()),
            Some(ErrorCategory::Permission) => Error::forbidden(message),
            Some(ErrorCategory::NotFound) => Error::not_found("resource", message),
            Some(ErrorCategory::Conflict) => Error::conflict(message),
            Some(ErrorCategory::Resource) => Error::resource(message),
            Some(ErrorCategory::RateLimit) => {
                Error::rate_limit(message, std::time::Duration::from_secs(1))
            }
            _ => Error::agent(message),
        }
    }

    /// The line for a task's final error.
    pub fn from_error(error: &Error) -> Self {
        Self::Error(error_value(error))
    }
}

fn error_value(error: &Error) -> Value {
    serde_json::to_value(error).unwrap_or_else(
        |_| serde_json::json!({"category": error.category().as_str(), "message": error.to_string()}),
    )
}

/// Serves one task of `agent` over stdin/stdout and returns the process's exit code: builds
/// a single-threaded runtime, so call it from a plain `fn main` (inside a runtime, use
/// [`serve_stdio_async`]).
///
/// The exit code is 0 when the task's result (output or error) was written, 1 when the
/// protocol failed (no start message, a broken pipe).
pub fn serve_stdio<A: AgentBase>(agent: A) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "capecontrol: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_stdio_async(Arc::new(agent))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "capecontrol: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// [`serve_stdio`] inside a running tokio runtime.
pub async fn serve_stdio_async(agent: Arc<dyn AgentBase>) -> Result<()> {
    serve(
        agent,
        std::io::BufReader::new(std::io::stdin()),
        std::io::stdout(),
    )
    .await
}

/// Serves one task of `agent`, reading [`Inbound`] lines from `reader` (on a thread of its
/// own, as std I/O blocks) and writing [`Outbound`] lines to `writer`.
pub async fn serve<R, W>(agent: Arc<dyn AgentBase>, reader: R, writer: W) -> Result<()>
where
    R: BufRead + Send + 'static,
    W: Write + Send + 'static,
{
    let (start_tx, mut start_rx) = mpsc::channel::<StartMessage>(1);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Option<Error>>();
    let cancel = CancellationToken::new();
    let reader_cancel = cancel.clone();
    std::thread::spawn(move || read_inbound(reader, start_tx, ack_tx, &reader_cancel));

    let out = Arc::new(std::sync::Mutex::new(writer));
    let Some(start) = start_rx.recv().await else {
        return Err(Error::agent(
            "container protocol: stdin closed before the start message",
        ));
    };
    if start.protocol > PROTOCOL_VERSION {
        let error = Error::agent(format!(
            "container protocol: version {} is newer than this agent's {PROTOCOL_VERSION}",
            start.protocol
        ));
        write_line(&out, &Outbound::from_error(&error))?;
        return Ok(());
    }
    let StartMessage {
        task_id,
        attempt,
        agent_id,
        task,
        input,
        settings,
        granted_scopes,
        user_id,
        roles,
        completed_steps,
        version,
        traceparent,
        ..
    } = start;
    // The agent side of the task's trace: steps and tool calls are children of this span,
    // which carries the trace id the platform's attempt span carries.
    let span = tracing::info_span!(
        "agent_task",
        task_id = %task_id,
        agent = %agent_id,
        version = %version,
        attempt,
        trace_id = tracing::field::Empty,
        traceparent = tracing::field::Empty,
    );
    let traceparent = traceparent.filter(|t| {
        let Ok(parsed) = crate::trace::Traceparent::parse(t) else {
            return false;
        };
        span.record("trace_id", parsed.trace_id());
        span.record("traceparent", parsed.as_str());
        true
    });
    let granted: Vec<Scope> = granted_scopes
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let host = Arc::new(ProtocolHost {
        out: Arc::clone(&out),
        acks: Mutex::new(ack_rx),
    });
    let cx = TaskContext::builder(task_id)
        .attempt(attempt)
        .agent_id(agent_id)
        .version(version)
        .traceparent(traceparent)
        .principal(Principal::new(user_id).with_roles(roles))
        .granted(granted)
        .settings(settings)
        .completed_steps(completed_steps)
        .cancellation(cancel)
        .build(host);
    let run = tracing::Instrument::instrument(agent.run_task(&task, input, &cx), span);
    let last = match run.await {
        Ok(value) => Outbound::Output { value },
        Err(error) => Outbound::from_error(&error),
    };
    write_line(&out, &last)
}

fn read_inbound<R: BufRead>(
    reader: R,
    start: mpsc::Sender<StartMessage>,
    acks: mpsc::UnboundedSender<Option<Error>>,
    cancel: &CancellationToken,
) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Inbound>(&line) {
            Ok(Inbound::Start(msg)) => {
                let _ = start.try_send(*msg);
            }
            Ok(Inbound::Ack { error }) => {
                let _ = acks.send(error);
            }
            Ok(Inbound::Cancel) => cancel.cancel(),
            Err(_) => {}
        }
    }
    // Stdin closed: the executor is gone, so nothing can be journaled any more.
    drop(start);
    drop(acks);
}

fn write_line<W: Write>(out: &std::sync::Mutex<W>, msg: &Outbound) -> Result<()> {
    let mut line = serde_json::to_vec(msg)
        .map_err(|e| Error::agent(format!("container protocol: cannot encode a line: {e}")))?;
    line.push(b'\n');
    let mut w = out
        .lock()
        .map_err(|_| Error::agent("container protocol: stdout lock poisoned"))?;
    w.write_all(&line)
        .and_then(|()| w.flush())
        .map_err(|e| Error::agent(format!("container protocol: cannot write stdout: {e}")))
}

/// The agent side's [`TaskHost`]: reports as protocol lines and waits for the executor's
/// acknowledgement of every journal write.
struct ProtocolHost<W> {
    out: Arc<std::sync::Mutex<W>>,
    acks: Mutex<mpsc::UnboundedReceiver<Option<Error>>>,
}

impl<W: Write + Send> ProtocolHost<W> {
    async fn journaled(&self, msg: &Outbound) -> Result<()> {
        // One journal write in flight at a time, so acks pair with their messages in order.
        let mut acks = self.acks.lock().await;
        write_line(&self.out, msg)?;
        match acks.recv().await {
            Some(None) => Ok(()),
            Some(Some(error)) => Err(error),
            None => Err(Error::agent(
                "container protocol: stdin closed before the journal write was acknowledged",
            )),
        }
    }
}

#[async_trait]
impl<W: Write + Send> TaskHost for ProtocolHost<W> {
    async fn step_started(&self, step: u32, name: &str) -> Result<()> {
        write_line(
            &self.out,
            &Outbound::StepStarted {
                step,
                name: name.to_owned(),
            },
        )
    }

    async fn step_completed(&self, step: u32, name: &str, output: &Value) -> Result<()> {
        self.journaled(&Outbound::StepCompleted {
            step,
            name: name.to_owned(),
            output: output.clone(),
        })
        .await
    }

    async fn step_failed(&self, step: u32, name: &str, error: &Error) -> Result<()> {
        self.journaled(&Outbound::StepFailed {
            step,
            name: name.to_owned(),
            error: error_value(error),
        })
        .await
    }

    async fn tool_called(&self, call: &ToolCall) -> Result<()> {
        self.journaled(&Outbound::ToolCall {
            tool: call.tool.clone(),
            scope: call.scope.clone(),
            allowed: call.allowed,
        })
        .await
    }

    fn log(&self, message: &str) {
        let _ = write_line(
            &self.out,
            &Outbound::Log {
                message: message.to_owned(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ToolContext;
    use crate::manifest::Manifest;
    use serde_json::json;

    struct Twice;

    #[async_trait]
    impl AgentBase for Twice {
        fn manifest(&self) -> Manifest {
            serde_json::from_value(json!({"name": "twice", "version": "1.0.0", "description": "x"}))
                .unwrap()
        }
        async fn run_task(&self, name: &str, input: Value, cx: &TaskContext) -> Result<Value> {
            match name {
                "trace" => Ok(json!({"traceparent": cx.traceparent(), "version": cx.version()})),
                "double" => {
                    let n = input.as_i64().unwrap_or(0);
                    let a: i64 = cx.step("a", async move { Ok::<_, Error>(n * 2) }).await?;
                    cx.log("between");
                    let b: i64 = cx.step("b", async move { Ok::<_, Error>(a + 1) }).await?;
                    Ok(json!(b))
                }
                _ => Err(Error::not_found("task", name)),
            }
        }
        async fn call_tool(&self, name: &str, _: Value, _: &ToolContext) -> Result<Value> {
            Err(Error::not_found("tool", name))
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn start(task: &str, input: Value, completed: Vec<StepRecord>) -> String {
        let msg = Inbound::Start(Box::new(StartMessage {
            protocol: PROTOCOL_VERSION,
            task_id: Uuid::new_v4(),
            attempt: 1,
            agent_id: "twice".into(),
            task: task.into(),
            input,
            settings: json!({"api_key": "secret"}),
            granted_scopes: vec![],
            user_id: "u".into(),
            roles: vec![],
            completed_steps: completed,
            version: "1.0.0".into(),
            traceparent: Some(TRACEPARENT.into()),
        }));
        serde_json::to_string(&msg).unwrap()
    }

    fn lines(sink: &Sink) -> Vec<Outbound> {
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn the_agent_receives_the_trace_context_and_version() {
        let input = format!("{}\n", start("trace", json!(null), vec![]));
        let sink = Sink::default();
        serve(Arc::new(Twice), std::io::Cursor::new(input), sink.clone())
            .await
            .unwrap();
        assert_eq!(
            lines(&sink).last(),
            Some(&Outbound::Output {
                value: json!({"traceparent": TRACEPARENT, "version": "1.0.0"})
            })
        );
    }

    #[tokio::test]
    async fn serves_a_task_with_steps_and_acks() {
        let ack = serde_json::to_string(&Inbound::Ack { error: None }).unwrap();
        let input = format!("{}\n{ack}\n{ack}\n", start("double", json!(20), vec![]));
        let sink = Sink::default();
        serve(Arc::new(Twice), std::io::Cursor::new(input), sink.clone())
            .await
            .unwrap();
        let out = lines(&sink);
        assert_eq!(out.len(), 6, "{out:?}");
        assert!(
            matches!(&out[1], Outbound::StepCompleted { step: 1, output, .. } if *output == json!(40))
        );
        assert!(matches!(&out[2], Outbound::Log { .. }));
        assert_eq!(out[5], Outbound::Output { value: json!(41) });
    }

    #[tokio::test]
    async fn replays_completed_steps_and_reports_typed_errors() {
        let done = StepRecord {
            step: 1,
            name: "a".into(),
            status: crate::RunStatus::Completed,
            output: Some(json!(100)),
            error: None,
            started_at: None,
            finished_at: None,
        };
        let ack = serde_json::to_string(&Inbound::Ack { error: None }).unwrap();
        let input = format!("{}\n{ack}\n", start("double", json!(1), vec![done]));
        let sink = Sink::default();
        serve(Arc::new(Twice), std::io::Cursor::new(input), sink.clone())
            .await
            .unwrap();
        let out = lines(&sink);
        assert_eq!(out.last(), Some(&Outbound::Output { value: json!(101) }));

        let sink = Sink::default();
        let input = format!("{}\n", start("nope", json!(1), vec![]));
        serve(Arc::new(Twice), std::io::Cursor::new(input), sink.clone())
            .await
            .unwrap();
        let out = lines(&sink);
        let Outbound::Error(v) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(Outbound::decode_error(v), Error::not_found("task", "nope"));
    }

    #[test]
    fn start_messages_do_not_print_their_settings() {
        let line = start("x", json!(1), vec![]);
        let Inbound::Start(msg) = serde_json::from_str(&line).unwrap() else {
            panic!()
        };
        let shown = format!("{msg:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn error_lines_decode_leniently() {
        let e = Outbound::decode_error(
            &json!({"type": "error", "category": "resource", "message": "oom"}),
        );
        assert_eq!(e, Error::resource("oom"));
        let e =
            Outbound::decode_error(&json!({"type": "error", "category": "bogus", "message": "x"}));
        assert_eq!(e.category(), ErrorCategory::Agent);
        let line = serde_json::to_value(Outbound::from_error(&Error::agent("boom"))).unwrap();
        assert_eq!(
            line,
            json!({"type": "error", "category": "agent", "message": "boom"})
        );
    }
}
