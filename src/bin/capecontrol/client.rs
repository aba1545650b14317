//! The CLI's HTTP client: one `reqwest` client, the server's base URL and the bearer key; an
//! error response (RFC 9457 `application/problem+json`) becomes a [`CliError::Api`].

use std::fmt;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Why a command failed, and so its exit status.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The server refused the request: exit status 1.
    Api(Problem),
    /// Bad arguments, an unreadable file, an unreachable server: exit status 2.
    Usage(String),
}

impl CliError {
    /// The process exit status of this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Api(_) => 1,
            CliError::Usage(_) => 2,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api(p) => p.fmt(f),
            CliError::Usage(m) => f.write_str(m),
        }
    }
}

/// An error response: its status and body (a problem document, or whatever the server sent).
#[derive(Debug)]
pub(crate) struct Problem {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The body as JSON (`{"detail": text}` when the body was not JSON).
    pub(crate) body: Value,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = self
            .body
            .get("title")
            .and_then(Value::as_str)
            .or(self.status.canonical_reason())
            .unwrap_or("error");
        write!(f, "{} {title}", self.status.as_u16())?;
        if let Some(detail) = self.body.get("detail").and_then(Value::as_str)
            && !detail.is_empty()
            && detail != title
        {
            write!(f, ": {detail}")?;
        }
        if let Some(errors) = self.body.get("errors").and_then(Value::as_array) {
            for e in errors {
                let pointer = e.get("pointer").and_then(Value::as_str).unwrap_or("");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                write!(f, "\n  {pointer}: {message}")?;
            }
        }
        if let Some(scopes) = self.body.get("missing_scopes").and_then(Value::as_array)
            && !scopes.is_empty()
        {
            let scopes: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
            write!(f, "\n  missing scopes: {}", scopes.join(", "))?;
        }
        if let Some(after) = self.body.get("retry_after").and_then(Value::as_u64) {
            write!(f, "\n  retry after {after} s")?;
        }
        Ok(())
    }
}

/// A client of one CapeControl server.
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

/// One request: method, path segments under the base URL, query, body, extra headers.
pub(crate) struct Request<'a> {
    method: Method,
    path: Vec<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl<'a> Request<'a> {
    /// A request of `method` to the path made of `path`'s segments (each percent-encoded).
    pub(crate) fn new(method: Method, path: &[&'a str]) -> Self {
        Request {
            method,
            path: path.to_vec(),
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
        }
    }

    /// `GET path`.
    pub(crate) fn get(path: &[&'a str]) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post(path: &[&'a str], body: Value) -> Self {
        Self::new(Method::POST, path).body(body)
    }

    /// Adds a query parameter when `value` is set.
    pub(crate) fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.query.push((name, v.to_string()));
        }
        self
    }

    /// Sets the JSON body.
    pub(crate) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Adds a header when `value` is set.
    pub(crate) fn header(mut self, name: &'static str, value: Option<String>) -> Self {
        if let Some(v) = value {
            self.headers.push((name, v));
        }
        self
    }
}

/// The terminal event kinds: the stream ends after one of them.
const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

impl Client {
    /// A client of the server at `server` (e.g. `http://127.0.0.1:8080`, or with a prefix the
    /// host mounted the router under), authenticating with `key` when given.
    pub(crate) fn new(server: &str, key: Option<String>) -> Result<Self, CliError> {
        let base = Url::parse(server)
            .map_err(|e| CliError::Usage(format!("--server {server:?} is not a URL: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(CliError::Usage(format!(
                "--server {server:?} is not an http:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("capecontrol-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { http, base, key })
    }

    fn url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        url
    }

    fn headers(&self, extra: &[(&'static str, String)]) -> Result<HeaderMap, CliError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| CliError::Usage("the API key holds invalid characters".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in extra {
            let value = HeaderValue::from_str(value)
                .map_err(|_| CliError::Usage(format!("invalid {name} header value")))?;
            headers.insert(*name, value);
        }
        Ok(headers)
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        CliError::Usage(format!("cannot reach {}: {e}", self.base))
    }

    /// Sends `request`; returns the JSON body of a success (`null` when empty) or the problem.
    pub(crate) async fn send(&self, request: Request<'_>) -> Result<Value, CliError> {
        let mut builder = self
            .http
            .request(request.method, self.url(&request.path))
            .headers(self.headers(&request.headers)?)
            .header(ACCEPT, "application/json");
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(
                |_| serde_json::json!({"detail": String::from_utf8_lossy(&bytes).trim()}),
            )
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError::Api(Problem { status, body }))
        }
    }

    /// Follows a task's event stream (Server-Sent Events) from after `after`, calling `on_event`
    /// with each event's JSON as it arrives, until the terminal event. A stream cut before it is
    /// resumed with `Last-Event-ID` (the last sequence number seen), so no event is missed or
    /// repeated. Returns the terminal event's kind.
    pub(crate) async fn watch(
        &self,
        task_id: &str,
        mut after: u64,
        mut on_event: impl FnMut(&Value),
    ) -> Result<String, CliError> {
        const MAX_RETRIES: u32 = 5;
        let path = ["api", "agents", "tasks", task_id, "events"];
        let mut retries = 0;
        loop {
            let mut extra = vec![("accept", "text/event-stream".to_string())];
            if after > 0 {
                extra.push(("last-event-id", after.to_string()));
            }
            let response = match self
                .http
                .get(self.url(&path))
                .headers(self.headers(&extra)?)
                .send()
                .await
            {
                Ok(r) => r,
                Err(_) if retries < MAX_RETRIES && after > 0 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100 << retries)).await;
                    continue;
                }
                Err(e) => return Err(self.unreachable(&e)),
            };
            let status = response.status();
            if !status.is_success() {
                let bytes = response.bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or_else(
                    |_| serde_json::json!({"detail": String::from_utf8_lossy(&bytes).trim()}),
                );
                return Err(CliError::Api(Problem { status, body }));
            }
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let Ok(event) = event else {
                    break; // cut mid-stream: resume below
                };
                if event.data.is_empty() {
                    continue;
                }
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                let seq = value
                    .get("seq")
                    .and_then(Value::as_u64)
                    .or_else(|| event.id.parse().ok());
                if let Some(seq) = seq {
                    if seq <= after {
                        continue; // already shown
                    }
                    after = seq;
                }
                retries = 0;
                on_event(&value);
                let kind = value
                    .pointer("/kind/type")
                    .and_then(Value::as_str)
                    .unwrap_or(event.event.as_str());
                if TERMINAL.contains(&kind) {
                    return Ok(kind.to_string());
                }
            }
            if retries >= MAX_RETRIES {
                return Err(CliError::Usage(format!(
                    "the event stream of task {task_id} ended before its terminal event"
                )));
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(100 << retries)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::HeaderMap as AxumHeaders;
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    fn event(seq: u64, kind: &str) -> String {
        let data = json!({"task_id": "t", "seq": seq, "kind": {"type": kind}});
        format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n")
    }

    /// A server whose first stream is cut after event 3 (no terminal event); the second
    /// connection must carry `Last-Event-ID: 3` and gets event 3 again, then 4 and 5.
    async fn flaky_server(seen: Arc<Mutex<Vec<Option<String>>>>) -> String {
        let app = Router::new().route(
            "/api/agents/tasks/{id}/events",
            get(move |headers: AxumHeaders| {
                let seen = seen.clone();
                async move {
                    let last = headers
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = match last.as_deref() {
                        None => [
                            event(1, "queued"),
                            event(2, "started"),
                            event(3, "step_started"),
                        ]
                        .concat(),
                        Some(_) => [
                            ": keep-alive\n\n".to_string(),
                            event(3, "step_started"),
                            event(4, "step_completed"),
                            event(5, "completed"),
                        ]
                        .concat(),
                    };
                    seen.lock().unwrap().push(last);
                    ([("content-type", "text/event-stream")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn watch_resumes_a_cut_stream_with_last_event_id_without_gap_or_duplicate() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = flaky_server(seen.clone()).await;
        let client = Client::new(&url, Some("k".into())).unwrap();
        let mut seqs = Vec::new();
        let terminal = client
            .watch("t", 0, |e| seqs.push(e["seq"].as_u64().unwrap()))
            .await
            .unwrap();
        assert_eq!(terminal, "completed");
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(*seen.lock().unwrap(), [None, Some("3".to_string())]);
    }

    #[tokio::test]
    async fn watch_from_a_sequence_number_sends_it_as_last_event_id() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = flaky_server(seen.clone()).await;
        let client = Client::new(&url, None).unwrap();
        let mut seqs = Vec::new();
        client
            .watch("t", 3, |e| seqs.push(e["seq"].as_u64().unwrap()))
            .await
            .unwrap();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(*seen.lock().unwrap(), [Some("3".to_string())]);
    }

    #[tokio::test]
    async fn an_error_response_is_a_problem_with_exit_status_1() {
        let app = Router::new().route(
            "/api/agents",
            get(|| async {
                (
                    StatusCode::FORBIDDEN,
                    [("content-type", "application/problem+json")],
                    json!({"title": "Forbidden", "status": 403, "detail": "missing scopes",
                           "errors": [{"pointer": "/grant", "message": "is missing x:y"}],
                           "missing_scopes": ["x:y"]})
                    .to_string(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&format!("http://{addr}"), None).unwrap();
        let err = client
            .send(Request::get(&["api", "agents"]))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "403 Forbidden: missing scopes\n  /grant: is missing x:y\n  missing scopes: x:y"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded_under_the_base_path() {
        let client = Client::new("http://h:1/prefix/", None).unwrap();
        assert_eq!(
            client.url(&["api", "agents", "a b/c"]).as_str(),
            "http://h:1/prefix/api/agents/a%20b%2Fc"
        );
        assert!(matches!(
            Client::new("ftp://h", None),
            Err(CliError::Usage(_))
        ));
    }
}
