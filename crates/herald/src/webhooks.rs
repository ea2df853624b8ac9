//! `herald webhooks ...`: the outbound webhook API (SPEC 7.1, `/api/v1/webhooks`) from the
//! command line. Each command is one request; the answer is printed either as the server sent
//! it (`--json`) or in a short human form (tables for `list` and `deliveries`).
//!
//! HTTP errors become one-line errors carrying the problem+json `detail`, as for `publish`.

use std::{collections::BTreeMap, fmt::Write as _, io::Write as _, time::Duration};

use anyhow::Context as _;
use reqwest::RequestBuilder;
use serde_json::{Value, json};

use crate::{
    cli::{
        WebhookAddArgs, WebhookCommon, WebhookDeliveriesArgs, WebhookIdArgs, WebhookRecoverArgs,
        WebhookRetryArgs, WebhooksArgs, WebhooksCommand,
    },
    client::{self, Client, encode_segment},
};

/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries per page when `--limit` is not given (the server's default).
const SERVER_DEFAULT_PAGE: usize = 50;

/// Runs one `herald webhooks` command.
///
/// # Errors
/// When the server cannot be reached, answers with an error (its problem+json `detail` is the
/// message) or with something that is not the expected JSON, or stdout cannot be written.
pub(crate) async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    match args.command {
        WebhooksCommand::Add(a) => add(a).await,
        WebhooksCommand::List(c) => list(&c).await,
        WebhooksCommand::Show(a) => show(&a).await,
        WebhooksCommand::Rm(a) => remove(&a).await,
        WebhooksCommand::Enable(a) => set_enabled(&a, true).await,
        WebhooksCommand::Disable(a) => set_enabled(&a, false).await,
        WebhooksCommand::Deliveries(a) => deliveries(&a).await,
        WebhooksCommand::Retry(a) => retry(&a).await,
        WebhooksCommand::Recover(a) => recover(&a).await,
        WebhooksCommand::Test(a) => test(&a).await,
        WebhooksCommand::RotateSecret(a) => rotate(&a).await,
        WebhooksCommand::Bench(a) => crate::webhook_bench::run(a).await,
    }
}

/// The server and how to print its answers.
struct Api {
    client: Client,
    json: bool,
}

impl Api {
    fn new(common: &WebhookCommon) -> anyhow::Result<Self> {
        Ok(Self {
            client: Client::new(&common.server)?,
            json: common.json,
        })
    }

    /// `/api/v1/webhooks` + `rest` (which starts with `/` or is empty).
    fn url(&self, rest: &str) -> String {
        self.client.url(&format!("/api/v1/webhooks{rest}"))
    }

    /// `/api/v1/webhooks/{id}` + `rest`.
    fn endpoint_url(&self, id: &str, rest: &str) -> String {
        self.url(&format!("/{}{rest}", encode_segment(id)))
    }

    /// Sends the request; returns the body of a successful answer.
    async fn send(&self, req: RequestBuilder, what: &str) -> anyhow::Result<String> {
        let resp = req
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("{what} at {}", self.client.base))?;
        let resp = client::check(resp).await?;
        resp.text()
            .await
            .with_context(|| format!("reading the server's answer ({what})"))
    }

    /// Sends a request with a JSON body.
    async fn send_json(
        &self,
        req: RequestBuilder,
        body: &Value,
        what: &str,
    ) -> anyhow::Result<String> {
        let req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(req, what).await
    }
}

/// The answer as JSON.
fn parse(body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).with_context(|| {
        format!(
            "the server's answer is not JSON: {}",
            client::problem_detail(body)
        )
    })
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    out.flush()?;
    Ok(())
}

/// A string field, or `""`.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A list of strings, comma-separated.
fn joined(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What a receiver verifies with, for the human form of `add` and `rotate-secret`.
fn key_lines(view: &Value) -> String {
    if let Some(pk) = view.get("public_key").and_then(Value::as_str) {
        format!(
            "  public key:  {pk}\n\
             Receivers verify the `v1a` webhook-signature (ed25519) with this public key; the \
             private key never leaves the server."
        )
    } else {
        format!(
            "  secret:      {}\n\
             Receivers verify webhook-signature (Standard Webhooks) with this secret, and \
             x-hub-signature-256 (GitHub style) with the whole string; keep it private. \
             `herald webhooks show {}` prints it again.",
            text(view, "secret"),
            text(view, "id")
        )
    }
}

async fn add(args: WebhookAddArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let mut body = json!({
        "url": args.url,
        "topics": args.topics,
    });
    if !args.events.is_empty() {
        body["events"] = json!(args.events);
    }
    if let Some(s) = &args.secret {
        body["secret"] = json!(s);
    }
    if let Some(d) = &args.description {
        body["description"] = json!(d);
    }
    if !args.headers.is_empty() {
        // A later --header with the same name wins.
        let headers: BTreeMap<&str, &str> = args
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        body["headers"] = json!(headers);
    }
    if let Some(n) = args.rate_limit {
        body["rate_limit"] = json!(n);
    }
    if args.ed25519 {
        body["signing"] = json!("ed25519");
    }
    if args.disabled {
        body["enabled"] = json!(false);
    }
    let answer = api
        .send_json(
            api.client.post(&api.url("")),
            &body,
            "creating the webhook endpoint",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let view = parse(&answer)?;
    let id = text(&view, "id");
    let mut out = format!(
        "created webhook endpoint {id}\n  url:         {}\n  topics:      {}\n",
        text(&view, "url"),
        joined(&view, "topics")
    );
    if view["enabled"] == json!(false) {
        let _ = writeln!(
            out,
            "  enabled:     no (start it with `herald webhooks enable {id}`)"
        );
    }
    out.push_str(&key_lines(&view));
    print(&out)
}

async fn list(common: &WebhookCommon) -> anyhow::Result<()> {
    let api = Api::new(common)?;
    let answer = api
        .send(
            api.client.get(&api.url("")),
            "listing the webhook endpoints",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let v = parse(&answer)?;
    let endpoints = v
        .get("webhooks")
        .and_then(Value::as_array)
        .context("the server's answer has no `webhooks` list")?;
    if endpoints.is_empty() {
        return print("no webhook endpoints");
    }
    let rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            let enabled = e.get("enabled").and_then(Value::as_bool).unwrap_or(false);
            let reason = if enabled {
                String::new()
            } else {
                e.get("disabled_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned()
            };
            vec![
                text(e, "id").to_owned(),
                if enabled { "yes" } else { "no" }.to_owned(),
                text(e, "url").to_owned(),
                joined(e, "topics"),
                reason,
            ]
        })
        .collect();
    print(&table(
        &["ID", "ENABLED", "URL", "TOPICS", "DISABLED BECAUSE"],
        &rows,
    ))
}

async fn show(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let answer = api
        .send(
            api.client.get(&api.endpoint_url(&args.id, "")),
            "reading the webhook endpoint",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    print(&serde_json::to_string_pretty(&parse(&answer)?)?)
}

async fn remove(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    api.send(
        api.client.delete(&api.endpoint_url(&args.id, "")),
        "deleting the webhook endpoint",
    )
    .await?;
    if api.json {
        // The server answers 204 without a body.
        return print(&json!({ "id": args.id, "deleted": true }).to_string());
    }
    print(&format!(
        "deleted webhook endpoint {} and its deliveries",
        args.id
    ))
}

async fn set_enabled(args: &WebhookIdArgs, on: bool) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let what = if on {
        "enabling the webhook endpoint"
    } else {
        "disabling the webhook endpoint"
    };
    let answer = api
        .send_json(
            api.client.patch(&api.endpoint_url(&args.id, "")),
            &json!({ "enabled": on }),
            what,
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let view = parse(&answer)?;
    let id = text(&view, "id");
    if on {
        print(&format!(
            "enabled webhook endpoint {id}; its pending deliveries resume"
        ))
    } else {
        print(&format!(
            "disabled webhook endpoint {id}; matching events wait as pending deliveries until \
             `herald webhooks enable {id}`"
        ))
    }
}

/// The LAST RESULT cell: the last attempt's status code, or its error.
fn last_result(d: &Value) -> String {
    let Some(last) = d
        .get("attempts")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
    else {
        return "-".into();
    };
    match (
        last.get("status_code").and_then(Value::as_u64),
        last.get("error").and_then(Value::as_str),
    ) {
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some(e)) => e.replace(['\n', '\r'], " "),
        (None, None) => "-".into(),
    }
}

async fn deliveries(args: &WebhookDeliveriesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let mut query = Vec::new();
    if let Some(s) = args.status {
        query.push(format!("status={}", s.name()));
    }
    if let Some(a) = &args.after {
        query.push(format!("after={}", encode_segment(a)));
    }
    if let Some(l) = args.limit {
        query.push(format!("limit={l}"));
    }
    let mut url = api.endpoint_url(&args.id, "/deliveries");
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let answer = api
        .send(api.client.get(&url), "listing the deliveries")
        .await?;
    if api.json {
        return print(&answer);
    }
    let v = parse(&answer)?;
    let list = v
        .get("deliveries")
        .and_then(Value::as_array)
        .context("the server's answer has no `deliveries` list")?;
    if list.is_empty() {
        return print(&format!("no deliveries for {}", args.id));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let event = match text(d, "event_id") {
                // `herald webhooks test` deliveries belong to no event.
                "0" => "(test)".to_owned(),
                e => e.to_owned(),
            };
            let attempts = d
                .get("attempts")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                text(d, "id").to_owned(),
                event,
                text(d, "status").to_owned(),
                attempts.to_string(),
                last_result(d),
            ]
        })
        .collect();
    print(&table(
        &["ID", "EVENT ID", "STATUS", "ATTEMPTS", "LAST RESULT"],
        &rows,
    ))?;
    // A full page: say how to get the next one (on stderr, so the table stays a table).
    let page = args.limit.map_or(SERVER_DEFAULT_PAGE, |l| {
        usize::try_from(l).unwrap_or(usize::MAX)
    });
    if list.len() >= page
        && let Some(last) = list.last().map(|d| text(d, "id"))
    {
        let _ = writeln!(
            std::io::stderr(),
            "more may follow: herald webhooks deliveries {} --after {last}",
            args.id
        );
    }
    Ok(())
}

async fn retry(args: &WebhookRetryArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let url = api.endpoint_url(
        &args.id,
        &format!("/deliveries/{}/retry", encode_segment(&args.delivery)),
    );
    let answer = api
        .send(api.client.post(&url), "retrying the delivery")
        .await?;
    if api.json {
        return print(&answer);
    }
    print(&format!(
        "delivery {} of {} is sent again now; see `herald webhooks deliveries {}`",
        args.delivery, args.id, args.id
    ))
}

async fn recover(args: &WebhookRecoverArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let answer = api
        .send_json(
            api.client.post(&api.endpoint_url(&args.id, "/recover")),
            &json!({ "since": args.since }),
            "recovering failed deliveries",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let v = parse(&answer)?;
    let n = v.get("recovered").and_then(Value::as_u64).unwrap_or(0);
    print(&format!(
        "{n} failed deliver{} of {} since {} will be sent again",
        if n == 1 { "y" } else { "ies" },
        args.id,
        args.since
    ))
}

async fn test(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let answer = api
        .send(
            api.client.post(&api.endpoint_url(&args.id, "/test")),
            "sending a test delivery",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let v = parse(&answer)?;
    print(&format!(
        "test delivery {} (webhook-id {}) queued for {}; see `herald webhooks deliveries {}`",
        text(&v, "delivery"),
        text(&v, "msg_id"),
        args.id,
        args.id
    ))
}

async fn rotate(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.common)?;
    let answer = api
        .send(
            api.client
                .post(&api.endpoint_url(&args.id, "/secret/rotate")),
            "rotating the secret",
        )
        .await?;
    if api.json {
        return print(&answer);
    }
    let view = parse(&answer)?;
    let mut out = format!("new signing key for {}\n", text(&view, "id"));
    out.push_str(&key_lines(&view));
    if let Some(until) = view.get("previous_secret_expires").and_then(Value::as_str) {
        let _ = write!(
            out,
            "\nUntil {until} the previous key signs too (both signatures are sent), so \
             receivers can switch over."
        );
    }
    print(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "STATUS", "LAST"],
            &[
                vec!["1".into(), "succeeded".into(), "HTTP 200".into()],
                vec!["12".into(), "failed".into(), String::new()],
            ],
        );
        assert_eq!(
            t,
            "ID  STATUS     LAST\n1   succeeded  HTTP 200\n12  failed\n"
        );
    }

    #[test]
    fn last_results() {
        assert_eq!(last_result(&json!({"attempts": []})), "-");
        assert_eq!(last_result(&json!({})), "-");
        assert_eq!(
            last_result(&json!({"attempts": [
                {"status_code": null, "error": "connection failed"},
                {"status_code": 503, "error": null},
            ]})),
            "HTTP 503"
        );
        assert_eq!(
            last_result(&json!({"attempts": [{"status_code": null, "error": "timed\nout"}]})),
            "timed out"
        );
    }

    #[test]
    fn key_lines_name_what_receivers_verify_with() {
        let hmac = key_lines(&json!({"secret": "whsec_abc"}));
        assert!(
            hmac.contains("whsec_abc") && hmac.contains("verify"),
            "{hmac}"
        );
        let ed = key_lines(&json!({"public_key": "whpk_abc"}));
        assert!(ed.contains("whpk_abc") && ed.contains("public key"), "{ed}");
    }
}
