//! Configuration: the embedded `config.default.toml`, then a TOML file, then `HERALD_*`
//! environment variables, then flags (figment). Parsed into [`RawConfig`] (unknown keys are
//! errors), then validated once into the immutable [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use herald_core::{Pattern, Retention, RetentionRule};
use herald_store::Durability;
use serde::{Deserialize, Serialize};

/// The configuration reference, embedded: every key with its default and a comment.
pub const DEFAULT_TOML: &str = include_str!("../../../config.default.toml");

/// A configuration problem: names the key and what is wrong. The binary exits 2 with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid configuration key `{key}`: {msg}"))
}

/// Everything as read, before validation. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawConfig {
    pub server: ServerSection,
    pub limits: LimitsSection,
    #[serde(default)]
    pub retention: Vec<RetentionSection>,
    pub sse: SseSection,
    pub ws: WsSection,
    pub stomp: StompSection,
    pub sockjs: SockjsSection,
    pub webhooks: WebhooksSection,
    #[serde(default)]
    pub inbound: Vec<InboundSection>,
    pub auth: AuthSection,
    pub rate_limits: RateLimitsSection,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    pub cors: CorsSection,
    pub log: LogSection,
    pub demo: DemoSection,
    pub cluster: ClusterSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ServerSection {
    pub listen: String,
    pub data_dir: PathBuf,
    pub memory: bool,
    pub durability: String,
    pub shutdown_grace: String,
    pub dedupe_window: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LimitsSection {
    pub max_event_bytes: u64,
    pub max_body_bytes: u64,
    pub max_batch: u64,
    pub max_inbound_body: u64,
    pub max_connections: u64,
    pub max_subscriptions_per_connection: u64,
    pub max_wait: String,
    pub subscriber_queue: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RetentionSection {
    pub pattern: String,
    #[serde(default = "default_max_events")]
    pub max_events: u64,
    #[serde(default = "default_max_age")]
    pub max_age: String,
}

fn default_max_events() -> u64 {
    10_000
}
fn default_max_age() -> String {
    "24h".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SseSection {
    pub heartbeat: String,
    pub retry: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WsSection {
    pub ping_interval: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct StompSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<String>,
    pub heartbeat: String,
    #[serde(default)]
    pub app: Vec<StompAppSection>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct StompAppSection {
    pub destination: String,
    pub send_to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SockjsSection {
    pub test_endpoints: bool,
    pub heartbeat: String,
    pub response_limit: u64,
    #[serde(default = "default_disconnect_delay")]
    pub disconnect_delay: String,
}

fn default_disconnect_delay() -> String {
    "5s".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct WebhooksSection {
    pub timeout: String,
    pub retry_schedule: Vec<String>,
    pub allow_private_targets: bool,
    pub disable_after: String,
    pub concurrency_per_endpoint: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct InboundSection {
    pub name: String,
    pub kind: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuthSection {
    pub allow_anonymous: bool,
    #[serde(default)]
    pub keys: Vec<AuthKeySection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSection>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuthKeySection {
    pub key: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct JwtSection {
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RateLimitsSection {
    pub publish_per_second: u64,
    pub requests_per_second: u64,
    pub connections_per_second: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RouteSection {
    pub prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default = "default_route_auth")]
    pub auth: String,
    #[serde(default)]
    pub rate_limit: u64,
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<String>,
}

fn default_route_auth() -> String {
    "required".into()
}
fn default_route_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CorsSection {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LogSection {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DemoSection {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClusterSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    pub stream: String,
    pub replicas: u64,
    pub lease: String,
}

/// Values given on the command line; they override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--memory`.
    pub memory: bool,
    /// `--nats`.
    pub nats: Option<String>,
}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `-c FILE`.
    pub file: Option<PathBuf>,
    /// Read `HERALD_<SECTION>__<KEY>` variables (off in tests).
    pub env: bool,
    /// Flags.
    pub overrides: Overrides,
}

/// Validated limits.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_inbound_body: usize,
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_wait: Duration,
    pub subscriber_queue: usize,
}

/// The validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// As read (for `herald config print`).
    pub raw: RawConfig,
    /// Listener address.
    pub listen: SocketAddr,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Keep everything in memory.
    pub memory: bool,
    /// When publishes are acknowledged.
    pub durability: Durability,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Idempotency-key window.
    pub dedupe_window: Duration,
    /// Limits.
    pub limits: Limits,
    /// Retention rules.
    pub retention: Retention,
    /// SSE heartbeat interval.
    pub sse_heartbeat: Duration,
    /// SSE `retry:` in ms.
    pub sse_retry_ms: u64,
    /// WebSocket ping interval.
    pub ws_ping_interval: Duration,
    /// API keys (empty: no key auth).
    pub auth_keys: Vec<crate::gateway::ApiKey>,
    /// STOMP heart-beats offered: (send, receive) ms.
    pub stomp_heartbeat: (u64, u64),
    /// Raw TCP STOMP listener.
    pub stomp_tcp_listen: Option<SocketAddr>,
    /// `[[stomp.app]]` destinations.
    pub stomp_apps: Vec<StompApp>,
    /// `[[inbound]]` webhook receivers, ready to verify (no parsing per request).
    pub inbound: Vec<InboundReceiver>,
    /// `[webhooks]`: outbound delivery settings.
    pub webhooks: WebhookConfig,
    /// `[cluster]` with a `nats_url` (or `--nats`): the log is NATS JetStream.
    pub cluster: Option<ClusterConfig>,
}

/// Validated `[cluster]`.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct ClusterConfig {
    pub nats_url: String,
    pub credentials: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub stream: String,
    pub replicas: usize,
    pub lease: Duration,
}

/// Validated `[webhooks]`.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct WebhookConfig {
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub allow_private_targets: bool,
    pub disable_after: Duration,
    pub concurrency_per_endpoint: usize,
}

/// Default topic template of an inbound receiver.
pub const DEFAULT_INBOUND_TOPIC: &str = "webhooks.{name}.{event}";

/// One validated `[[inbound]]` receiver: `POST /api/v1/webhooks/{name}`.
#[derive(Debug, Clone)]
pub struct InboundReceiver {
    /// The path segment; a valid topic segment of at most 64 bytes.
    pub name: String,
    /// How requests are authenticated.
    pub verifier: InboundVerifier,
    /// The topic template with `{name}` filled in; `{event}` is filled per request.
    pub topic: String,
}

/// How an inbound receiver checks signatures (SPEC 7.2).
#[derive(Debug, Clone)]
pub enum InboundVerifier {
    /// `x-hub-signature-256`, keyed with the whole secret string.
    Github(herald_protocol::webhook::Secret),
    /// Standard Webhooks headers; `secret` may list several keys separated by spaces (a
    /// rotation), `whsec_` secrets and `whpk_` public keys.
    Standard(Vec<herald_protocol::webhook::VerifyKey>),
    /// HMAC-SHA256 of the body in a configured header.
    Hmac {
        /// Keyed with the whole secret string.
        secret: herald_protocol::webhook::Secret,
        /// Lowercase header name.
        header: axum::http::HeaderName,
        /// Hex or base64.
        encoding: herald_protocol::webhook::Encoding,
        /// Text before the signature (`sha256=`), possibly empty.
        prefix: String,
    },
}

/// One configured `/app/...` destination.
#[derive(Debug, Clone)]
pub struct StompApp {
    /// `/app/...` as clients send it.
    pub destination: String,
    /// The topic the (possibly forwarded) body is published to.
    pub send_to: herald_core::Topic,
    /// Upstream URL the body is POSTed to first; its response is what gets published.
    pub forward: Option<String>,
}

/// Parses `"100ms"`, `"30s"`, `"5m"`, `"24h"`, `"5d"` (also `"1.5s"` and a bare number of
/// seconds).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration (use e.g. \"100ms\", \"30s\", \"5m\", \"24h\", \"5d\")")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| bad(key, e))
}

fn positive(key: &str, v: u64) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(bad(key, "must be greater than 0"));
    }
    usize::try_from(v).map_err(|_| bad(key, "too large"))
}

impl Config {
    /// Reads and validates configuration from `sources`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad or unknown key.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = &sources.file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist",
                    file.display()
                )));
            }
            fig = fig.merge(Toml::file(file));
        }
        if sources.env {
            // Only `HERALD_<SECTION>__<KEY>`: `HERALD_SERVER` and `HERALD_TOKEN` belong to
            // the client commands.
            fig = fig.merge(
                Env::prefixed("HERALD_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            );
        }
        let o = &sources.overrides;
        if let Some(listen) = &o.listen {
            fig = fig.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &o.data_dir {
            fig = fig.merge(Serialized::default("server.data_dir", dir));
        }
        if o.memory {
            fig = fig.merge(Serialized::default("server.memory", true));
        }
        if let Some(nats) = &o.nats {
            fig = fig.merge(Serialized::default("cluster.nats_url", nats));
        }
        let raw: RawConfig = fig.extract().map_err(|e| {
            let first = e
                .into_iter()
                .next()
                .map(|e| e.to_string())
                .unwrap_or_default();
            ConfigError(format!("invalid configuration: {first}"))
        })?;
        Self::validate(raw)
    }

    /// Defaults only (no file, no environment).
    ///
    /// # Errors
    /// Never for the shipped defaults.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load(&Sources::default())
    }

    /// Validates a raw configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let s = &raw.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            bad(
                "server.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", s.listen),
            )
        })?;
        let durability = match s.durability.as_str() {
            "fsync" => Durability::Fsync,
            "batch" => Durability::Batch,
            "memory" => Durability::Memory,
            other => {
                return Err(bad(
                    "server.durability",
                    format!("{other:?} (use fsync, batch or memory)"),
                ));
            }
        };
        let l = &raw.limits;
        let limits = Limits {
            max_event_bytes: positive("limits.max_event_bytes", l.max_event_bytes)?,
            max_body_bytes: positive("limits.max_body_bytes", l.max_body_bytes)?,
            max_batch: positive("limits.max_batch", l.max_batch)?,
            max_inbound_body: positive("limits.max_inbound_body", l.max_inbound_body)?,
            max_connections: positive("limits.max_connections", l.max_connections)?,
            max_subscriptions_per_connection: positive(
                "limits.max_subscriptions_per_connection",
                l.max_subscriptions_per_connection,
            )?,
            max_wait: duration("limits.max_wait", &l.max_wait)?,
            subscriber_queue: positive("limits.subscriber_queue", l.subscriber_queue)?,
        };
        let mut retention = Retention::default();
        for (i, r) in raw.retention.iter().enumerate() {
            let key = |k: &str| format!("retention[{i}].{k}");
            retention.rules.push(RetentionRule {
                pattern: Pattern::new(&r.pattern).map_err(|e| bad(&key("pattern"), e))?,
                max_events: positive(&key("max_events"), r.max_events)? as u64,
                max_age: duration(&key("max_age"), &r.max_age)?,
            });
        }
        let mut auth_keys = Vec::new();
        for (i, k) in raw.auth.keys.iter().enumerate() {
            auth_keys.push(
                crate::gateway::ApiKey::from_config(k)
                    .map_err(|e| bad(&format!("auth.keys[{i}]"), e))?,
            );
        }
        // Check the keys of sections whose features arrive later, so a bad value is reported
        // now rather than silently ignored.
        let stomp_heartbeat =
            parse_heartbeat(&raw.stomp.heartbeat).map_err(|e| bad("stomp.heartbeat", e))?;
        let stomp_tcp_listen = raw
            .stomp
            .tcp_listen
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    bad(
                        "stomp.tcp_listen",
                        format!("{a:?} is not an address like 127.0.0.1:61613"),
                    )
                })
            })
            .transpose()?;
        let mut stomp_apps = Vec::new();
        for (i, app) in raw.stomp.app.iter().enumerate() {
            let key = |k: &str| format!("stomp.app[{i}].{k}");
            if !app.destination.starts_with("/app/") || app.destination.len() <= 5 {
                return Err(bad(
                    &key("destination"),
                    format!("{:?} must start with /app/", app.destination),
                ));
            }
            let topic = app.send_to.strip_prefix("/topic/").ok_or_else(|| {
                bad(
                    &key("send_to"),
                    format!("{:?} must start with /topic/", app.send_to),
                )
            })?;
            let send_to = herald_core::Topic::new(topic).map_err(|e| bad(&key("send_to"), e))?;
            if let Some(f) = &app.forward
                && !(f.starts_with("http://") || f.starts_with("https://"))
            {
                return Err(bad(&key("forward"), format!("{f:?} is not an http(s) URL")));
            }
            stomp_apps.push(StompApp {
                destination: app.destination.clone(),
                send_to,
                forward: app.forward.clone(),
            });
        }
        let mut inbound: Vec<InboundReceiver> = Vec::new();
        for (i, section) in raw.inbound.iter().enumerate() {
            let r = inbound_receiver(i, section)?;
            if inbound.iter().any(|o| o.name == r.name) {
                return Err(bad(
                    &format!("inbound[{i}].name"),
                    format!("{:?} is used by another receiver", r.name),
                ));
            }
            inbound.push(r);
        }
        nonzero("sockjs.heartbeat", &raw.sockjs.heartbeat)?;
        duration("sockjs.disconnect_delay", &raw.sockjs.disconnect_delay)?;
        positive("sockjs.response_limit", raw.sockjs.response_limit)?;
        let cluster = match &raw.cluster.nats_url {
            None => None,
            Some(url) => {
                let ok = url.split(',').all(|u| {
                    let u = u.trim();
                    ["nats://", "tls://", "ws://", "wss://"]
                        .iter()
                        .any(|p| u.starts_with(p) && u.len() > p.len())
                });
                if !ok {
                    return Err(bad(
                        "cluster.nats_url",
                        format!("{url:?} is not a NATS URL like nats://127.0.0.1:4222"),
                    ));
                }
                let stream = &raw.cluster.stream;
                if stream.is_empty()
                    || stream.len() > 32
                    || !stream
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(bad(
                        "cluster.stream",
                        format!("{stream:?} must be 1-32 of A-Z a-z 0-9 _ -"),
                    ));
                }
                let replicas = positive("cluster.replicas", raw.cluster.replicas)?;
                if replicas > 5 {
                    return Err(bad(
                        "cluster.replicas",
                        "JetStream allows at most 5 replicas",
                    ));
                }
                let lease = duration("cluster.lease", &raw.cluster.lease)?;
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&lease) {
                    return Err(bad(
                        "cluster.lease",
                        format!("{:?} (use 1s to 1h)", raw.cluster.lease),
                    ));
                }
                Some(ClusterConfig {
                    lease,
                    nats_url: url.clone(),
                    credentials: raw.cluster.credentials.clone(),
                    tls_ca: raw.cluster.tls_ca.clone(),
                    stream: stream.clone(),
                    replicas,
                })
            }
        };
        let webhooks = WebhookConfig {
            timeout: nonzero("webhooks.timeout", &raw.webhooks.timeout)?,
            disable_after: nonzero("webhooks.disable_after", &raw.webhooks.disable_after)?,
            retry_schedule: raw
                .webhooks
                .retry_schedule
                .iter()
                .enumerate()
                .map(|(i, d)| duration(&format!("webhooks.retry_schedule[{i}]"), d))
                .collect::<Result<_, _>>()?,
            allow_private_targets: raw.webhooks.allow_private_targets,
            concurrency_per_endpoint: positive(
                "webhooks.concurrency_per_endpoint",
                raw.webhooks.concurrency_per_endpoint,
            )?,
        };
        match raw.log.format.as_str() {
            "text" | "json" => {}
            other => return Err(bad("log.format", format!("{other:?} (use text or json)"))),
        }
        let retry = duration("sse.retry", &raw.sse.retry)?;
        Ok(Self {
            listen,
            data_dir: s.data_dir.clone(),
            memory: s.memory,
            durability,
            shutdown_grace: duration("server.shutdown_grace", &s.shutdown_grace)?,
            dedupe_window: duration("server.dedupe_window", &s.dedupe_window)?,
            limits,
            retention,
            sse_heartbeat: nonzero("sse.heartbeat", &raw.sse.heartbeat)?,
            sse_retry_ms: retry.as_millis() as u64,
            ws_ping_interval: nonzero("ws.ping_interval", &raw.ws.ping_interval)?,
            auth_keys,
            stomp_heartbeat,
            stomp_tcp_listen,
            stomp_apps,
            inbound,
            webhooks,
            cluster,
            raw,
        })
    }

    /// The effective configuration as TOML (for `herald config print`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.raw).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// Longest inbound receiver name (it is part of the idempotency key and the topic).
const MAX_INBOUND_NAME: usize = 64;

/// Validates one `[[inbound]]` section.
fn inbound_receiver(i: usize, s: &InboundSection) -> Result<InboundReceiver, ConfigError> {
    use herald_protocol::webhook::{Encoding, Secret, VerifyKey};
    let key = |k: &str| format!("inbound[{i}].{k}");
    let name = &s.name;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_INBOUND_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(bad(
            &key("name"),
            format!("{name:?} (use 1-64 characters of A-Z a-z 0-9 _ -)"),
        ));
    }
    if s.secret.trim().is_empty() {
        return Err(bad(&key("secret"), "is empty"));
    }
    let hmac_only = [
        ("header", s.header.is_some()),
        ("encoding", s.encoding.is_some()),
        ("prefix", s.prefix.is_some()),
    ];
    if s.kind != "hmac"
        && let Some((k, _)) = hmac_only.iter().find(|(_, set)| *set)
    {
        return Err(bad(&key(k), "is only used with kind = \"hmac\""));
    }
    let verifier = match s.kind.as_str() {
        "github" => {
            InboundVerifier::Github(Secret::raw(&s.secret).map_err(|e| bad(&key("secret"), e))?)
        }
        "standard" => {
            let keys = s
                .secret
                .split_whitespace()
                .map(VerifyKey::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    bad(
                        &key("secret"),
                        format!(
                            "{e} (use whsec_<base64> or whpk_<base64>, several separated by spaces)"
                        ),
                    )
                })?;
            InboundVerifier::Standard(keys)
        }
        "hmac" => {
            let header = s
                .header
                .as_deref()
                .ok_or_else(|| bad(&key("header"), "is required with kind = \"hmac\""))?;
            let header = axum::http::HeaderName::from_bytes(header.trim().as_bytes())
                .map_err(|_| bad(&key("header"), format!("{header:?} is not a header name")))?;
            let encoding = match s.encoding.as_deref() {
                None => Encoding::Hex,
                Some(e) => Encoding::parse(e)
                    .ok_or_else(|| bad(&key("encoding"), format!("{e:?} (use hex or base64)")))?,
            };
            InboundVerifier::Hmac {
                secret: Secret::raw(&s.secret).map_err(|e| bad(&key("secret"), e))?,
                header,
                encoding,
                prefix: s.prefix.clone().unwrap_or_default(),
            }
        }
        other => {
            return Err(bad(
                &key("kind"),
                format!("{other:?} (use github, standard or hmac)"),
            ));
        }
    };
    let template = s.topic.as_deref().unwrap_or(DEFAULT_INBOUND_TOPIC);
    let topic = topic_template(template, name).map_err(|e| bad(&key("topic"), e))?;
    Ok(InboundReceiver {
        name: name.clone(),
        verifier,
        topic,
    })
}

/// Checks a topic template: only `{name}` and `{event}` placeholders, and a valid topic once
/// they are filled. Returns it with `{name}` filled in.
fn topic_template(template: &str, name: &str) -> Result<String, String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{template:?} has an unclosed `{{`"))?;
        let placeholder = &after[..close];
        if placeholder != "name" && placeholder != "event" {
            return Err(format!(
                "{template:?}: unknown placeholder {{{placeholder}}} (use {{name}} and {{event}})"
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?} has a stray `}}`"));
    }
    let filled = template.replace("{name}", name);
    let sample = filled.replace("{event}", "message");
    herald_core::Topic::new(&sample)
        .map_err(|e| format!("{template:?} does not make a valid topic: {e}"))?;
    Ok(filled)
}

/// Parses STOMP's `"<send ms>,<receive ms>"`.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_heartbeat(s: &str) -> Result<(u64, u64), String> {
    let err = || format!("{s:?} (use \"<send ms>,<receive ms>\", e.g. \"10000,10000\")");
    let (a, b) = s.split_once(',').ok_or_else(err)?;
    Ok((
        a.trim().parse().map_err(|_| err())?,
        b.trim().parse().map_err(|_| err())?,
    ))
}

fn nonzero(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, s)?;
    if d.is_zero() {
        return Err(bad(key, "must be greater than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432_000));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_load() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_event_bytes, 1_048_576);
        assert_eq!(c.sse_retry_ms, 3000);
        assert!(matches!(c.durability, Durability::Fsync));
    }

    #[test]
    fn file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("h.toml");
        std::fs::write(&f, "[limits]\nmax_evnt_bytes = 5\n").unwrap();
        let e = Config::load(&Sources {
            file: Some(f.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("max_evnt_bytes"), "{e}");
        std::fs::write(&f, "[server]\ndurability = \"sometimes\"\n").unwrap();
        let e = Config::load(&Sources {
            file: Some(f.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("server.durability"), "{e}");
        std::fs::write(&f, "[[retention]]\npattern = \"a.>\"\nmax_events = 5\n").unwrap();
        let c = Config::load(&Sources {
            file: Some(f),
            overrides: Overrides {
                listen: Some("127.0.0.1:9999".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.retention.rules.len(), 1);
        assert_eq!(c.listen.port(), 9999);
    }

    fn inbound(kind: &str, secret: &str) -> InboundSection {
        InboundSection {
            name: "gh".into(),
            kind: kind.into(),
            secret: secret.into(),
            topic: None,
            header: None,
            encoding: None,
            prefix: None,
        }
    }

    fn with_inbound(sections: Vec<InboundSection>) -> Result<Config, ConfigError> {
        let mut raw = Config::defaults().unwrap().raw;
        raw.inbound = sections;
        Config::validate(raw)
    }

    #[test]
    fn inbound_receivers_validate() {
        let c = with_inbound(vec![
            inbound("github", "s3cret"),
            InboundSection {
                name: "stripe-like".into(),
                topic: Some("in.{name}.x-{event}".into()),
                ..inbound(
                    "standard",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_AAAA",
                )
            },
            InboundSection {
                name: "generic".into(),
                header: Some("X-Signature".into()),
                encoding: Some("base64".into()),
                prefix: Some("sha256=".into()),
                topic: Some("fixed".into()),
                ..inbound("hmac", "k")
            },
        ])
        .unwrap();
        assert_eq!(c.inbound.len(), 3);
        assert_eq!(c.inbound[0].topic, "webhooks.gh.{event}");
        assert_eq!(c.inbound[1].topic, "in.stripe-like.x-{event}");
        assert!(matches!(&c.inbound[1].verifier, InboundVerifier::Standard(k) if k.len() == 2));
        match &c.inbound[2].verifier {
            InboundVerifier::Hmac {
                header,
                encoding,
                prefix,
                ..
            } => {
                assert_eq!(header.as_str(), "x-signature");
                assert_eq!(*encoding, herald_protocol::webhook::Encoding::Base64);
                assert_eq!(prefix, "sha256=");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inbound_errors_name_the_key() {
        let cases: Vec<(InboundSection, &str)> = vec![
            (inbound("gitlab", "s"), "inbound[0].kind"),
            (inbound("github", " "), "inbound[0].secret"),
            (inbound("standard", "whsec_!!"), "inbound[0].secret"),
            (inbound("standard", "whsk_AAAA"), "inbound[0].secret"),
            (inbound("hmac", "s"), "inbound[0].header"),
            (
                InboundSection {
                    header: Some("x-sig".into()),
                    encoding: Some("hexadecimal".into()),
                    ..inbound("hmac", "s")
                },
                "inbound[0].encoding",
            ),
            (
                InboundSection {
                    header: Some("bad header".into()),
                    ..inbound("hmac", "s")
                },
                "inbound[0].header",
            ),
            (
                InboundSection {
                    prefix: Some("sha256=".into()),
                    ..inbound("github", "s")
                },
                "inbound[0].prefix",
            ),
            (
                InboundSection {
                    name: "a.b".into(),
                    ..inbound("github", "s")
                },
                "inbound[0].name",
            ),
            (
                InboundSection {
                    name: String::new(),
                    ..inbound("github", "s")
                },
                "inbound[0].name",
            ),
            (
                InboundSection {
                    topic: Some("webhooks.{repo}".into()),
                    ..inbound("github", "s")
                },
                "inbound[0].topic",
            ),
            (
                InboundSection {
                    topic: Some("webhooks..{event}".into()),
                    ..inbound("github", "s")
                },
                "inbound[0].topic",
            ),
            (
                InboundSection {
                    topic: Some("webhooks.{event".into()),
                    ..inbound("github", "s")
                },
                "inbound[0].topic",
            ),
        ];
        for (section, key) in cases {
            let e = with_inbound(vec![section.clone()]).unwrap_err().to_string();
            assert!(e.contains(key), "{section:?}: {e}");
        }
        let e = with_inbound(vec![
            inbound("github", "a"),
            inbound("standard", "whsec_AAAA"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("inbound[1].name"), "{e}");
    }
}
