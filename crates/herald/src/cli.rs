//! The command line, declared with clap's derive API: one struct per command, parsed once in
//! `main` and handed to the command's module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Herald: a real-time event gateway (SSE, WebSocket, long polling, webhooks) in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about,
    long_about = "Herald: a real-time event gateway in one binary.\n\n\
        Events go in once (REST, WebSocket, ...) and out over every real-time channel a client \
        may need: Server-Sent Events, WebSocket, long polling and webhooks. The same binary \
        runs the server (`herald serve`) and talks to one (`publish`, `tail`, `webhooks`, \
        `bench`).",
    after_help = "EXAMPLES:\n  \
        herald serve --memory                    start a server that keeps events in memory\n  \
        herald publish orders.eu '{\"total\": 3}'  publish one event\n  \
        herald tail 'orders.>'                   print events of every orders topic as they come\n  \
        herald webhooks list                     show the outbound webhook endpoints\n  \
        herald config print > herald.toml        write out the effective configuration\n  \
        herald bench --subscribers 1000          measure fan-out latency and throughput"
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Check or print the configuration.
    Config(ConfigArgs),
    /// Publish one event.
    Publish(PublishArgs),
    /// Print events of a topic pattern as they arrive, one JSON object per line.
    Tail(TailArgs),
    /// Manage outbound webhook endpoints and their deliveries.
    Webhooks(WebhooksArgs),
    /// Measure fan-out: many subscribers, one stream of events, delivery latency.
    Bench(BenchArgs),
}

/// Where configuration comes from, shared by `serve` and `config`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigFileArg {
    /// TOML configuration file; `HERALD_<SECTION>__<KEY>` variables override it.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "HERALD_CONFIG"
    )]
    pub(crate) file: Option<PathBuf>,
}

/// `herald serve`.
#[derive(Debug, Args)]
#[command(
    long_about = "Run the server.\n\n\
        Configuration is the built-in defaults, then the TOML file given with -c, then \
        HERALD_<SECTION>__<KEY> environment variables (e.g. HERALD_LIMITS__MAX_EVENT_BYTES=2048), \
        then these flags. A bad configuration is reported in one line naming the key, and the \
        process exits with code 2. SIGTERM or SIGINT shuts down gracefully (a second signal \
        exits at once). Logs go to stderr; RUST_LOG overrides `log.level`.",
    after_help = "EXAMPLES:\n  \
        herald serve --memory\n  \
        herald serve -c herald.toml --listen 0.0.0.0:8080\n  \
        herald serve --data-dir /var/lib/herald\n  \
        HERALD_LOG__FORMAT=json herald serve"
)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) config: ConfigFileArg,
    /// Address to listen on (`server.listen`, default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Directory of the embedded store (`server.data_dir`, default ./herald-data).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Keep everything in memory: nothing survives a restart (`server.memory`).
    #[arg(long)]
    pub(crate) memory: bool,
    /// Join a cluster through this NATS JetStream server (`cluster.nats_url`).
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
}

/// `herald config`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    herald config check -c herald.toml\n  \
    herald config print > herald.toml\n  \
    HERALD_LIMITS__MAX_EVENT_BYTES=2048 herald config print")]
pub(crate) struct ConfigArgs {
    /// `check` or `print`.
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
}

/// `herald config check|print`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate the configuration: prints `configuration OK` (exit 0) or the first problem,
    /// naming the key (exit 2).
    Check(ConfigFileArg),
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Print(ConfigFileArg),
}

/// The server a client command talks to.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the Herald server.
    #[arg(
        long,
        value_name = "URL",
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) server: String,
    /// API key or JWT, sent as `Authorization: Bearer <TOKEN>`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HERALD_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

/// `herald publish`.
#[derive(Debug, Args)]
#[command(
    long_about = "Publish one event to a topic and print the server's receipt \
        ({\"id\",\"topic\",\"event\",\"time\"}).\n\n\
        DATA is sent as JSON when it parses as JSON, otherwise as a JSON string; `-` reads it \
        from stdin; without DATA the event's data is null. An HTTP error prints the server's \
        explanation and exits with code 1.",
    after_help = "EXAMPLES:\n  \
        herald publish orders.eu.created '{\"id\": 42, \"total\": 9.5}'\n  \
        herald publish chat.lobby 'hello there' --event said\n  \
        herald publish orders.eu.created '{\"id\": 42}' --key order-42   # sent once, even if retried\n  \
        cat event.json | herald publish orders.eu.created -"
)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Topic to publish to, e.g. `orders.eu.created`.
    pub(crate) topic: String,
    /// The event's data: JSON, or any text (sent as a JSON string); `-` reads stdin.
    pub(crate) data: Option<String>,
    /// Event type (default `message`).
    #[arg(long, value_name = "TYPE")]
    pub(crate) event: Option<String>,
    /// Idempotency key: a second publish with the same key returns the first event's id.
    #[arg(long, value_name = "KEY")]
    pub(crate) key: Option<String>,
}

/// How `tail` and `bench` receive events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// Server-Sent Events (`Accept: text/event-stream`).
    Sse,
    /// The JSON WebSocket protocol at `/api/v1/ws`.
    Ws,
    /// Long polling (`?after=N&wait=30`).
    Poll,
}

/// `herald tail`.
#[derive(Debug, Args)]
#[command(
    long_about = "Print the events of a topic pattern as they arrive, one JSON object per line \
        ({\"id\",\"topic\",\"event\",\"data\",\"time\"}), until interrupted.\n\n\
        `*` matches one segment and `>` one or more trailing segments. Without --after only new \
        events are printed. On a dropped connection tail reconnects and resumes after the last \
        event it printed, so nothing is missed while the server still retains it. Over SSE the \
        server sends neither topic nor time, so those fields are left out.",
    after_help = "EXAMPLES:\n  \
        herald tail 'orders.>'\n  \
        herald tail 'orders.*.created' --after 0          # everything retained, then live\n  \
        herald tail chat.lobby --via ws\n  \
        herald tail 'metrics.>' --via poll | jq .data"
)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Topic or pattern, e.g. `orders.>` or `orders.*.created`.
    pub(crate) pattern: String,
    /// Start after this event id (`0`: from the oldest retained event); default: new events only.
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Via::Sse)]
    pub(crate) via: Via,
}

/// Options every `herald webhooks` command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct WebhookCommon {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Print the server's JSON answer instead of the human-readable form.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `herald webhooks`.
#[derive(Debug, Args)]
#[command(
    long_about = "Manage outbound webhook endpoints (subscriptions) and their deliveries; needs \
        an admin key (--token, HERALD_TOKEN).\n\n\
        Every event published to a topic that matches an endpoint's patterns (and, if given, \
        its event types) becomes one delivery: a signed POST to the endpoint's URL, retried \
        on failure. Receivers verify `webhook-signature` (Standard Webhooks) with the \
        endpoint's `whsec_` secret, or `v1a` signatures with its `whpk_` public key \
        (--ed25519), and may verify GitHub-style `x-hub-signature-256` with the whole secret \
        string.\n\n\
        Every command takes --json to print the server's JSON answer as it is. An HTTP error \
        prints the server's explanation in one line and exits with code 1; a bad argument \
        exits with code 2.",
    after_help = "EXAMPLES:\n  \
        herald webhooks add --url https://example.com/hook --topic 'orders.>'\n  \
        herald webhooks list\n  \
        herald webhooks deliveries wh_01jq... --status failed\n  \
        herald webhooks retry wh_01jq... 42\n  \
        herald webhooks recover wh_01jq... --since 2026-01-31T12:00:00Z\n  \
        herald webhooks rm wh_01jq..."
)]
pub(crate) struct WebhooksArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: WebhooksCommand,
}

/// The `herald webhooks` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Create an endpoint and print its id and secret (or public key).
    Add(WebhookAddArgs),
    /// List the endpoints: id, enabled, URL, topics, and why a disabled one was disabled.
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks list\n  \
        herald webhooks list --json | jq -r '.webhooks[].id'")]
    List(WebhookCommon),
    /// Print one endpoint as JSON (secret or public key included).
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks show wh_01jq...")]
    Show(WebhookIdArgs),
    /// Delete an endpoint and its deliveries.
    #[command(
        visible_alias = "delete",
        long_about = "Delete an endpoint and its deliveries; nothing more is sent to it. The \
            server answers without a body, so --json prints {\"id\",\"deleted\":true}.",
        after_help = "EXAMPLES:\n  \
        herald webhooks rm wh_01jq..."
    )]
    Rm(WebhookIdArgs),
    /// Enable an endpoint: it gets deliveries again and its pending ones resume (also after
    /// the server disabled it).
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks enable wh_01jq...")]
    Enable(WebhookIdArgs),
    /// Disable an endpoint: nothing is sent to it until it is enabled again; matching events
    /// still queue up as pending deliveries.
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks disable wh_01jq...")]
    Disable(WebhookIdArgs),
    /// List an endpoint's deliveries, oldest first: id, event id, status, attempts, last
    /// result.
    Deliveries(WebhookDeliveriesArgs),
    /// Send one delivery again now (whatever its status).
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks retry wh_01jq... 42")]
    Retry(WebhookRetryArgs),
    /// Send again every failed delivery of an endpoint created since a time.
    Recover(WebhookRecoverArgs),
    /// Send a `herald.test` event to this endpoint only.
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks test wh_01jq...\n  \
        herald webhooks deliveries wh_01jq... --status pending")]
    Test(WebhookIdArgs),
    /// Give an endpoint a new generated secret (or key pair); the previous one keeps signing
    /// for 24 hours, so receivers can switch over.
    #[command(after_help = "EXAMPLES:\n  \
        herald webhooks rotate-secret wh_01jq...")]
    RotateSecret(WebhookIdArgs),
    /// Measure delivery throughput and latency with a local receiver (creates and deletes
    /// its own endpoints).
    Bench(crate::webhook_bench::WebhookBenchArgs),
}

/// `herald webhooks add`.
#[derive(Debug, Args)]
#[command(
    long_about = "Create an outbound webhook endpoint and print its id, URL and the secret \
        (or, with --ed25519, the public key) its receivers verify signatures with.\n\n\
        Every event published to a topic matching one of the --topic patterns (`*` one \
        segment, `>` one or more trailing segments) and, when --event is given, of one of \
        those types, is POSTed to --url as {\"id\",\"topic\",\"event\",\"data\",\"time\"} with \
        Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) and, for \
        HMAC endpoints, x-hub-signature-256. Without --secret the server generates one.",
    after_help = "EXAMPLES:\n  \
        herald webhooks add --url https://example.com/hook --topic 'orders.>'\n  \
        herald webhooks add --url \"$URL\" --topic 'orders.*.created' --topic 'refunds.>' --event created\n  \
        herald webhooks add --url \"$URL\" --topic 'audit.>' --header x-team=payments --rate-limit 10\n  \
        herald webhooks add --url \"$URL\" --topic 'orders.>' --ed25519\n  \
        herald webhooks add --url \"$URL\" --topic 'orders.>' --disabled --json"
)]
pub(crate) struct WebhookAddArgs {
    #[command(flatten)]
    pub(crate) common: WebhookCommon,
    /// Where deliveries are POSTed (http:// or https://).
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,
    /// Topic pattern to deliver, e.g. `orders.>` (repeatable, at least one).
    #[arg(long = "topic", value_name = "PATTERN", required = true)]
    pub(crate) topics: Vec<String>,
    /// Only events of this type (repeatable; default: every type).
    #[arg(long = "event", value_name = "TYPE")]
    pub(crate) events: Vec<String>,
    /// The signing secret, `whsec_<base64>` (`whsk_<base64>` with --ed25519); default: a
    /// generated one.
    #[arg(long, value_name = "SECRET")]
    pub(crate) secret: Option<String>,
    /// Free text shown with the endpoint.
    #[arg(long, value_name = "TEXT")]
    pub(crate) description: Option<String>,
    /// Extra request header, `NAME=VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// Most deliveries per second to this endpoint (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate_limit: Option<u32>,
    /// Sign with an ed25519 key pair (`v1a` signatures; receivers get the `whpk_` public
    /// key) instead of an HMAC secret.
    #[arg(long)]
    pub(crate) ed25519: bool,
    /// Create the endpoint disabled (`herald webhooks enable` starts it).
    #[arg(long)]
    pub(crate) disabled: bool,
}

/// `NAME=VALUE` of `--header`.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!(
            "{s:?} is not NAME=VALUE (e.g. --header x-team=payments)"
        ));
    };
    let name = name.trim();
    if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
        return Err(format!(
            "{name:?} is not a header name (e.g. --header x-team=payments)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The commands that name one endpoint.
#[derive(Debug, Args)]
pub(crate) struct WebhookIdArgs {
    #[command(flatten)]
    pub(crate) common: WebhookCommon,
    /// The endpoint's id (`wh_...`, see `herald webhooks list`).
    #[arg(value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) id: String,
}

/// The states of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeliveryStatus {
    /// Not delivered yet (first attempt or a retry to come).
    Pending,
    /// A 2xx answer.
    Succeeded,
    /// No more attempts (replay with `retry` or `recover`).
    Failed,
}

impl DeliveryStatus {
    /// The name in the API.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// `herald webhooks deliveries`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    herald webhooks deliveries wh_01jq...\n  \
    herald webhooks deliveries wh_01jq... --status failed --limit 10\n  \
    herald webhooks deliveries wh_01jq... --after 50        # the next page\n  \
    herald webhooks deliveries wh_01jq... --json | jq '.deliveries[].attempts[-1]'")]
pub(crate) struct WebhookDeliveriesArgs {
    #[command(flatten)]
    pub(crate) common: WebhookCommon,
    /// The endpoint's id (`wh_...`).
    #[arg(value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) id: String,
    /// Only deliveries in this state.
    #[arg(long, value_enum)]
    pub(crate) status: Option<DeliveryStatus>,
    /// Start after this delivery id (the last one of the previous page).
    #[arg(long, value_name = "DELIVERY_ID")]
    pub(crate) after: Option<String>,
    /// Most deliveries to list (1 to 1000; the server's default is 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: Option<u32>,
}

/// `herald webhooks retry`.
#[derive(Debug, Args)]
pub(crate) struct WebhookRetryArgs {
    #[command(flatten)]
    pub(crate) common: WebhookCommon,
    /// The endpoint's id (`wh_...`).
    #[arg(value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) id: String,
    /// The delivery's id (see `herald webhooks deliveries`).
    #[arg(value_name = "DELIVERY_ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) delivery: String,
}

/// `herald webhooks recover`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    herald webhooks recover wh_01jq... --since 2026-01-31T12:00:00Z\n  \
    herald webhooks recover wh_01jq... --since \"$(date -u -d '2 hours ago' +%FT%TZ)\"")]
pub(crate) struct WebhookRecoverArgs {
    #[command(flatten)]
    pub(crate) common: WebhookCommon,
    /// The endpoint's id (`wh_...`).
    #[arg(value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub(crate) id: String,
    /// Re-send the failed deliveries created at or after this RFC 3339 time, e.g.
    /// 2026-01-31T12:00:00Z.
    #[arg(long, value_name = "TIME")]
    pub(crate) since: String,
}

/// `herald bench`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Measure fan-out against a running server.\n\n\
        Connects --subscribers subscribers spread over --topics topics (`<prefix>.t0`, \
        `<prefix>.t1`, ...), waits until all are subscribed, then publishes --events events \
        round-robin over the topics, each carrying {\"seq\": n, \"t\": <send time, Unix ns>}. \
        Reports the delivery rate, the publish rate and latency, the delivery latency \
        percentiles, and the events lost, duplicated or delivered out of order. Every \
        subscriber expects every event published to its topic. The bench stops when all were \
        delivered, or --timeout seconds after the last publish.\n\n\
        Subscribers (--via): `sse` (Server-Sent Events), `ws` (the JSON WebSocket protocol at \
        /api/v1/ws), `stomp` (STOMP 1.2 over WebSocket at /ws, subprotocol v12.stomp, \
        destination /topic/<topic>), `sockjs` (the same STOMP 1.2 exchange over SockJS's \
        websocket transport, as sockjs-client and stompjs in a browser: a new session \
        /ws/<server>/<session>/websocket per connection, frames sent as [\"...\"] and read \
        from a[...]) or `longpoll` (GET .../events?after=N&wait=30&limit=1000 in a loop).\n\n\
        Other servers (Nchan, say) are measured with URL templates, where `{topic}` is the \
        topic name and `{server}` the --server URL: --pub-url makes the publishers POST the \
        bare {\"seq\",\"t\"} object (any 2xx is success) instead of Herald's envelope; \
        --sub-url is where subscribers connect. With --via ws and --sub-url, each WebSocket \
        message is taken as one event's data and no subscribe message is sent (--ws-raw). \
        With --via sockjs, --sub-url is the SockJS service URL, under which the session \
        paths are added. \
        Events are told apart by `seq`: ids that are not numbers are only used to resume.\n\n\
        --server-pid PID (a server on this machine) adds the server's memory per connection \
        (VmRSS growth while connecting, after --hold) and its CPU time per delivery over the \
        publish and delivery phase; the bench's own CPU share is always reported. With \
        --events 0 --hold SECS it only connects, holds the connections and measures memory.\n\n\
        Each subscriber is one connection (one file descriptor here and one on the server): \
        raise `ulimit -n` on both sides for large runs. With a server on 127.0.0.1 and more \
        than 25,000 subscribers (--per-source), connections are spread over the source \
        addresses 127.0.0.2, 127.0.0.3, ... so the ephemeral ports do not run out.",
    after_help = "EXAMPLES:\n  \
        herald bench                                          # 1000 SSE subscribers, 10000 events\n  \
        herald bench --via ws --subscribers 10000 --topics 10\n  \
        herald bench --via stomp --events 100000 --publishers 16 --json\n  \
        herald bench --via sockjs --subscribers 5000\n  \
        herald bench --via longpoll --subscribers 1000 --rate 1000\n  \
        herald bench --via ws --events 0 --hold 5 --subscribers 10000 --server-pid $(pidof herald)\n  \
        herald bench --via sse --also-via ws --subscribers 19000 --events 10 --hold 5   # half and half\n  \
        herald bench --sub-url 'http://127.0.0.1:8081/sub/{topic}' --pub-url 'http://127.0.0.1:8081/pub?chan={topic}'\n  \
        herald bench --server http://10.0.0.5:8080 --token $KEY --subscribers 50000"
)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Number of subscribers (one connection each).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(crate) subscribers: usize,
    /// Subscriber transport.
    #[arg(long, value_enum, default_value_t = BenchVia::Sse)]
    pub(crate) via: BenchVia,
    /// A second subscriber transport: subscribers alternate between --via and this one
    /// (e.g. `--via sse --also-via ws`: half SSE, half WebSocket, on the same topics).
    #[arg(long, value_enum, value_name = "VIA")]
    pub(crate) also_via: Option<BenchVia>,
    /// Number of topics; subscribers and events are spread evenly over them.
    #[arg(long, default_value_t = 1, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) topics: u64,
    /// Topic names are `<PREFIX>.t0`, `<PREFIX>.t1`, ...
    #[arg(long, default_value = "bench", value_name = "PREFIX")]
    pub(crate) topic_prefix: String,
    /// Total number of events to publish (0: connect, --hold, report, publish nothing).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub(crate) events: u64,
    /// Events per second to publish (0: as fast as the publishers go).
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    pub(crate) rate: f64,
    /// Concurrent HTTP publishers, each with one kept-alive HTTP/1.1 connection of its own.
    #[arg(long, default_value_t = 4, value_name = "P", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) publishers: u64,
    /// Events per publish request: above 1 the publishers POST batches to /api/v1/events
    /// (Herald only), each event to its own topic in turn.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) batch: u64,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) timeout: f64,
    /// Subscribers connecting at the same time.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connect_concurrency: u64,
    /// Where subscribers connect, with `{topic}` and `{server}` placeholders (default: the
    /// Herald endpoint of --via on --server).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) sub_url: Option<String>,
    /// Where events are published, with `{topic}` and `{server}` placeholders; the body is
    /// the bare event data `{"seq","t"}` (default: Herald's REST API and envelope).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) pub_url: Option<String>,
    /// Another Herald server to publish to, with Herald's REST API and envelope (default:
    /// --server). With two nodes of a cluster: subscribers on --server, publishes on this
    /// one, so every delivery crosses nodes.
    #[arg(long, value_name = "URL", conflicts_with = "pub_url")]
    pub(crate) pub_server: Option<String>,
    /// With --via ws: every WebSocket message is one event's data, no subscribe message is
    /// sent (implied by --sub-url).
    #[arg(long)]
    pub(crate) ws_raw: bool,
    /// PID of the server (on this machine): report its memory per connection and CPU time
    /// per delivery.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// Keep the connections open this long once all are subscribed, before publishing and
    /// before the server's memory is read.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub(crate) hold: f64,
    /// Subscribers per loopback source address (127.0.0.2, 127.0.0.3, ...) when the
    /// subscribers connect to 127.0.0.1 or localhost and are more than this.
    #[arg(long, default_value_t = 25_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) per_source: u64,
    /// Print the results as one JSON line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Transports `bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchVia {
    /// Server-Sent Events.
    Sse,
    /// The JSON WebSocket protocol (or, with --sub-url, raw messages).
    Ws,
    /// STOMP 1.2 over WebSocket.
    Stomp,
    /// STOMP 1.2 over SockJS (its websocket transport).
    #[value(name = "sockjs")]
    SockJs,
    /// Long polling.
    #[value(alias = "poll")]
    Longpoll,
}

impl BenchVia {
    /// The name used on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
            Self::Stomp => "stomp",
            Self::SockJs => "sockjs",
            Self::Longpoll => "longpoll",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headers_are_name_equals_value() {
        assert_eq!(
            parse_header("x-team=payments"),
            Ok(("x-team".into(), "payments".into()))
        );
        assert_eq!(parse_header("x-q=a=b"), Ok(("x-q".into(), "a=b".into())));
        assert_eq!(
            parse_header("x-empty="),
            Ok(("x-empty".into(), String::new()))
        );
        for bad in ["x-team", "=v", "x team=v", "x:y=v", ""] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn webhooks_add_needs_a_topic() {
        let e =
            Cli::try_parse_from(["herald", "webhooks", "add", "--url", "http://x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let ok = Cli::try_parse_from([
            "herald", "webhooks", "add", "--url", "http://x", "--topic", "a.>", "--topic", "b",
            "--header", "k=v", "--json",
        ]);
        assert!(ok.is_ok(), "{ok:?}");
    }
}
