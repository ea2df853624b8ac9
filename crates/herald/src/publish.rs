//! `herald publish TOPIC [DATA|-]`: one `POST /api/v1/topics/{topic}/events`, receipt printed.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    cli::PublishArgs,
    client::{self, Client},
};

/// Time allowed for the whole publish request.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

/// Publishes the event and prints the server's JSON receipt.
///
/// # Errors
/// When stdin cannot be read, the server cannot be reached, or it answers with an error
/// (the problem+json `detail` is the message).
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let text = match args.data.as_deref() {
        None => None,
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the event data from stdin")?;
            Some(s)
        }
        Some(s) => Some(s.to_owned()),
    };
    let data = data_value(text.as_deref())?;
    let body = serde_json::to_vec(&Body {
        event: args.event.as_deref(),
        data: &data,
        key: args.key.as_deref(),
    })?;
    let url = client.events_url(&args.topic);
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(PUBLISH_TIMEOUT)
        .body(body)
        .send()
        .await
        .with_context(|| format!("publishing to {}", client.base))?;
    let resp = client::check(resp).await?;
    let reply = resp.text().await.context("reading the server's reply")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", reply.trim_end())?;
    out.flush()?;
    Ok(())
}

/// The event's data: `text` as JSON if it parses as JSON, else as a JSON string (with one
/// trailing newline removed, as `echo` adds one); `null` without data.
fn data_value(text: Option<&str>) -> anyhow::Result<Box<RawValue>> {
    let Some(text) = text else {
        return Ok(RawValue::from_string("null".into())?);
    };
    let trimmed = text.trim();
    if !trimmed.is_empty()
        && let Ok(v) = serde_json::from_str::<Box<RawValue>>(trimmed)
    {
        return Ok(v);
    }
    let s = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(text);
    Ok(serde_json::value::to_raw_value(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_when_it_parses() {
        let d = |s: Option<&str>| data_value(s).unwrap().get().to_owned();
        assert_eq!(d(Some(r#"{"a": 1}"#)), r#"{"a": 1}"#);
        assert_eq!(d(Some("42\n")), "42");
        assert_eq!(d(Some("true")), "true");
        assert_eq!(d(Some("hello world\n")), r#""hello world""#);
        assert_eq!(d(Some("{broken")), r#""{broken""#);
        assert_eq!(d(Some("")), r#""""#);
        assert_eq!(d(None), "null");
    }
}
