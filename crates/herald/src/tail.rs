//! `herald tail PATTERN`: print events as JSON lines over SSE, WebSocket or long polling,
//! reconnecting after a dropped connection and resuming after the last printed event.
//!
//! A failure before the first successful connection (or any 4xx answer) ends the command;
//! later network failures are reported on stderr and retried.

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::{
    cli::{TailArgs, Via},
    client::{self, Client},
};

/// Long-poll wait per request, in seconds.
const POLL_WAIT_SECS: u64 = 30;
/// Events per long-poll page.
const POLL_LIMIT: u32 = 1000;
/// Pause before reconnecting when the server has not said otherwise.
const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// One printed event: `{"id","topic","event","data","time"}`; fields the transport does not
/// carry (SSE has no topic or time, notices have no id) are left out.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    event: String,
    data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<String>,
}

/// Prints events until interrupted.
///
/// # Errors
/// When the first connection fails, the server answers with an HTTP error, or stdout closes.
pub(crate) async fn run(args: TailArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    match args.via {
        Via::Sse => sse(&client, &args.pattern, args.after).await,
        Via::Ws => ws(&client, &args.pattern, args.after).await,
        Via::Poll => poll(&client, &args.pattern, args.after).await,
    }
}

fn print(line: &Line) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line).map_err(|e| OutputError(e.into()))?;
    out.write_all(b"\n").map_err(OutputError)?;
    out.flush().map_err(OutputError)
}

/// Writing to stdout failed (often: the reader of a pipe went away); never retried.
#[derive(Debug)]
struct OutputError(std::io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl std::error::Error for OutputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether retrying cannot help: our own output failed, or the server refused the request.
fn is_fatal(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.is::<OutputError>() || e.is::<FatalError>())
}

/// Decides what to do after a failure: give up (first connection, or an HTTP 4xx), or say so
/// and retry.
fn after_failure(err: anyhow::Error, ever_connected: bool) -> anyhow::Result<()> {
    if !ever_connected || !client::is_retryable(&err) {
        return Err(err);
    }
    eprintln!("herald: {err:#}; reconnecting");
    Ok(())
}

/// SSE data as printed: the JSON it holds, or the text as a JSON string.
fn sse_data(text: &str) -> anyhow::Result<Box<RawValue>> {
    let trimmed = text.trim();
    if !trimmed.is_empty()
        && let Ok(v) = serde_json::from_str::<Box<RawValue>>(trimmed)
    {
        return Ok(v);
    }
    Ok(serde_json::value::to_raw_value(text)?)
}

async fn sse(client: &Client, pattern: &str, after: Option<String>) -> anyhow::Result<()> {
    let mut url = client.events_url(pattern);
    if let Some(a) = &after {
        url.push_str(&format!("?after={}", client::encode_segment(a)));
    }
    let mut last_id: Option<String> = None;
    let mut retry = DEFAULT_RETRY;
    let mut ever_connected = false;
    loop {
        let mut req = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id.as_str());
        }
        let outcome: anyhow::Result<()> = async {
            let resp = req
                .send()
                .await
                .with_context(|| format!("connecting to {}", client.base))?;
            let resp = client::check(resp).await?;
            ever_connected = true;
            let mut body = resp.bytes_stream();
            let mut decoder = herald_protocol::sse::SseDecoder::new();
            let mut events = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("reading the event stream")?;
                decoder.feed(&chunk, &mut events);
                for ev in events.drain(..) {
                    if let Some(ms) = ev.retry {
                        retry = Duration::from_millis(ms);
                    }
                    if ev.data.is_empty() && ev.id.is_none() {
                        continue; // a bare `retry:`
                    }
                    if ev.id.is_some() {
                        last_id.clone_from(&ev.id);
                    }
                    print(&Line {
                        data: sse_data(&ev.data)?,
                        id: ev.id,
                        topic: None,
                        event: ev.event,
                        time: None,
                    })?;
                }
            }
            anyhow::bail!("the server closed the event stream")
        }
        .await;
        if let Err(e) = outcome {
            if is_fatal(&e) {
                return Err(e);
            }
            after_failure(e, ever_connected)?;
        }
        tokio::time::sleep(retry).await;
    }
}

/// A message from the JSON WebSocket protocol, as far as tail reads it.
#[derive(Deserialize)]
struct WsMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

async fn ws(client: &Client, pattern: &str, after: Option<String>) -> anyhow::Result<()> {
    let url = client.ws_url("/api/v1/ws");
    let mut cursor = after;
    let mut ever_connected = false;
    loop {
        let outcome: anyhow::Result<()> = async {
            let mut req = url
                .as_str()
                .into_client_request()
                .with_context(|| format!("bad WebSocket URL {url}"))?;
            if let Some(t) = &client.token {
                req.headers_mut().insert(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {t}")
                        .parse()
                        .context("the token is not a valid header value")?,
                );
            }
            let (mut socket, _) = tokio::time::timeout(
                client::CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async(req),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connecting to {url}"))?;
            let mut subscribe = serde_json::json!({"type": "subscribe", "topic": pattern});
            if let Some(c) = &cursor {
                subscribe["after"] = serde_json::Value::String(c.clone());
            }
            socket
                .send(Message::text(subscribe.to_string()))
                .await
                .context("sending the subscription")?;
            while let Some(msg) = socket.next().await {
                let text = match msg.context("reading from the WebSocket")? {
                    Message::Text(t) => t,
                    Message::Close(frame) => {
                        let why = frame.map(|f| format!(" ({} {})", f.code, f.reason));
                        anyhow::bail!("the server closed the WebSocket{}", why.unwrap_or_default())
                    }
                    _ => continue,
                };
                let m: WsMessage = serde_json::from_str(text.as_str())
                    .with_context(|| format!("unexpected message from the server: {text}"))?;
                match m.kind.as_str() {
                    "subscribed" => ever_connected = true,
                    "event" => {
                        if m.id.is_some() {
                            cursor.clone_from(&m.id);
                        }
                        let null = || RawValue::from_string("null".into());
                        print(&Line {
                            id: m.id,
                            topic: m.topic,
                            event: m.event.unwrap_or_else(|| "message".into()),
                            data: match m.data {
                                Some(d) => d,
                                None => null()?,
                            },
                            time: m.time,
                        })?;
                    }
                    "error" => {
                        let msg = format!(
                            "server error {}: {}",
                            m.code.as_deref().unwrap_or("?"),
                            m.message.as_deref().unwrap_or("(no message)")
                        );
                        if !ever_connected {
                            // The subscription itself was refused: retrying cannot help.
                            return Err(anyhow::Error::new(FatalError(msg)));
                        }
                        eprintln!("herald: {msg}");
                    }
                    _ => {}
                }
            }
            anyhow::bail!("the server closed the WebSocket")
        }
        .await;
        if let Err(e) = outcome {
            if is_fatal(&e) {
                return Err(e);
            }
            after_failure(e, ever_connected)?;
        }
        tokio::time::sleep(DEFAULT_RETRY).await;
    }
}

/// An error answer that retrying cannot fix.
#[derive(Debug)]
struct FatalError(String);

impl std::fmt::Display for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FatalError {}

/// A long-poll answer.
#[derive(Deserialize)]
struct Page {
    events: Vec<Line>,
    next: String,
}

async fn poll(client: &Client, pattern: &str, after: Option<String>) -> anyhow::Result<()> {
    let base = client.events_url(pattern);
    let mut cursor = after;
    let mut ever_connected = false;
    loop {
        let mut url = format!("{base}?wait={POLL_WAIT_SECS}&limit={POLL_LIMIT}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&after={}", client::encode_segment(c)));
        }
        let outcome: anyhow::Result<()> = async {
            let resp = client
                .get(&url)
                .timeout(Duration::from_secs(POLL_WAIT_SECS + 30))
                .send()
                .await
                .with_context(|| format!("polling {}", client.base))?;
            let resp = client::check(resp).await?;
            ever_connected = true;
            let page: Page = resp.json().await.context("reading the poll answer")?;
            for line in &page.events {
                print(line)?;
            }
            cursor = Some(page.next);
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            if is_fatal(&e) {
                return Err(e);
            }
            after_failure(e, ever_connected)?;
            tokio::time::sleep(DEFAULT_RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_data_is_json_or_text() {
        assert_eq!(sse_data(r#"{"a":1}"#).unwrap().get(), r#"{"a":1}"#);
        assert_eq!(sse_data("7").unwrap().get(), "7");
        assert_eq!(sse_data("hello").unwrap().get(), r#""hello""#);
        assert_eq!(sse_data("two\nlines").unwrap().get(), r#""two\nlines""#);
    }

    #[test]
    fn lines_leave_out_missing_fields() {
        let line = Line {
            id: Some("5".into()),
            topic: None,
            event: "message".into(),
            data: sse_data("hi").unwrap(),
            time: None,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"id":"5","event":"message","data":"hi"}"#
        );
        let page: Page = serde_json::from_str(
            r#"{"events":[{"id":"1","topic":"a.b","event":"message","data":{"x":1},"time":"2024-01-01T00:00:00Z"}],"next":"1"}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&page.events[0]).unwrap(),
            r#"{"id":"1","topic":"a.b","event":"message","data":{"x":1},"time":"2024-01-01T00:00:00Z"}"#
        );
    }
}
