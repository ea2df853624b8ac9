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
    pub stream: String,
    pub replicas: u64,
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
        nonzero("sockjs.heartbeat", &raw.sockjs.heartbeat)?;
        duration("sockjs.disconnect_delay", &raw.sockjs.disconnect_delay)?;
        positive("sockjs.response_limit", raw.sockjs.response_limit)?;
        duration("webhooks.timeout", &raw.webhooks.timeout)?;
        duration("webhooks.disable_after", &raw.webhooks.disable_after)?;
        for (i, d) in raw.webhooks.retry_schedule.iter().enumerate() {
            duration(&format!("webhooks.retry_schedule[{i}]"), d)?;
        }
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
            raw,
        })
    }

    /// The effective configuration as TOML (for `herald config print`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.raw).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
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
}
