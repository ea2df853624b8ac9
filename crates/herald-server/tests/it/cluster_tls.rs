//! `[cluster] tls_ca` and `credentials` against a `nats-server` that requires them: a node
//! configured for the server joins the cluster (a publish on it is acknowledged and read back),
//! a node without the setting is refused at start-up.
//!
//! Everything is made at test time with the `openssl` CLI: a CA and a server certificate for
//! 127.0.0.1, and the ed25519 keys of a NATS operator, account and user, from which the test
//! builds the operator / account / user JWTs (nats-io/jwt v2 claims) and the user's `.creds`
//! file. The module name starts with `cluster` so that the NATS re-run of the suite
//! (`scripts/test`) skips it: these nodes bring their own server.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use herald_server::config::{Config, RawConfig};
use herald_test_support::NatsServer;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::util::T;

/// How long a refused node may take to give up (the connect timeout is 5 s).
const REFUSED_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Nodes

/// A cluster node's configuration as `TestServer::spawn_node` makes it, then `tweak` (a closure
/// here: the CA and the credentials are files of this test).
fn node_config(nats_url: &str, data_dir: &Path, tweak: impl FnOnce(&mut RawConfig)) -> Config {
    let mut raw = Config::defaults().expect("default config").raw;
    raw.server.data_dir = data_dir.to_path_buf();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.shutdown_grace = "5s".into();
    raw.cluster.nats_url = Some(nats_url.to_owned());
    tweak(&mut raw);
    Config::validate(raw).expect("valid test config")
}

/// A node serving on a port of its own.
struct Node {
    base: String,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node on the NATS server at `nats_url` and waits until it answers `/readyz`
    /// (panics with the start-up error when it stops instead).
    async fn start(nats_url: &str, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = node_config(nats_url, dir.path(), tweak);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let token = CancellationToken::new();
        let mut task = tokio::spawn(herald_server::run(config, listener, token.clone()));
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if task.is_finished() {
                let outcome = (&mut task).await.expect("the node panicked");
                panic!("the node did not start: {outcome:?}");
            }
            if http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node was not ready within {T:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            base,
            token,
            task,
            _dir: dir,
        }
    }

    /// Publishes an event through this node, reads it back from the topic's history and
    /// checks NATS is the log.
    async fn publish_and_read_back(&self, topic: &str) {
        let http = reqwest::Client::builder()
            .timeout(T)
            .build()
            .expect("client");
        let ready: Value = http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("readyz is JSON");
        assert_eq!(ready["backend"], "nats", "{ready}");
        let r = http
            .post(format!("{}/api/v1/topics/{topic}/events", self.base))
            .json(&json!({"data": {"over": topic}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 201, "publish: {}", r.text().await.unwrap());
        let receipt: Value = r.json().await.expect("receipt");
        let page: Value = http
            .get(format!(
                "{}/api/v1/topics/{topic}/events?after=0",
                self.base
            ))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("history is JSON");
        let events = page["events"].as_array().expect("events");
        assert_eq!(events.len(), 1, "{page}");
        assert_eq!(events[0]["id"], receipt["id"]);
        assert_eq!(events[0]["data"], json!({"over": topic}));
    }

    /// Cancels the node and asserts it stopped cleanly.
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the node did not stop within 15 s")
            .expect("the node panicked")
            .expect("the node returned an error");
    }
}

/// Runs a node that must not start: returns its start-up error (`{:#}`, the whole chain).
async fn refused(nats_url: &str, tweak: impl FnOnce(&mut RawConfig)) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = node_config(nats_url, dir.path(), tweak);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let token = CancellationToken::new();
    let outcome = tokio::time::timeout(
        REFUSED_WITHIN,
        herald_server::run(config, listener, token.clone()),
    )
    .await;
    token.cancel();
    match outcome {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("the node started and stopped without an error"),
        Err(_) => panic!("the node neither started nor failed within {REFUSED_WITHIN:?}"),
    }
}

/// The last lines of a nats-server log (for failure messages).
fn log_tail(nats: &NatsServer) -> String {
    let text = std::fs::read_to_string(nats.log_file()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// openssl

/// Runs `openssl <args>` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI on PATH (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost signed by it
/// (`server.pem`, `server.key`) in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Herald test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\n\
         basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_tls_ca_joins_a_tls_only_nats_and_one_without_is_refused() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let nats = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n",
        file("server.pem"),
        file("server.key"),
    ));
    let port = nats.url().rsplit(':').next().expect("a port").to_owned();
    let ca = certs.path().join("ca.pem");

    // tls:// and nats:// URLs both work with the CA (the server asks for TLS either way).
    for (i, url) in [format!("tls://127.0.0.1:{port}"), nats.url()]
        .iter()
        .enumerate()
    {
        let ca = ca.clone();
        let node = Node::start(url, move |c| c.cluster.tls_ca = Some(ca)).await;
        node.publish_and_read_back(&format!("tls.url{i}")).await;
        node.stop().await;
    }

    // Without the CA the server's certificate is not trusted.
    let why = refused(&nats.url(), |_| {}).await;
    assert!(
        why.contains("joining the cluster through NATS")
            && why.contains("invalid peer certificate"),
        "{why}\n{}",
        log_tail(&nats)
    );
    println!("without tls_ca: {why}");
    // With another CA neither.
    let other = tempfile::tempdir().expect("temp dir");
    make_certificates(other.path());
    let other_ca = other.path().join("ca.pem");
    let why = refused(&format!("tls://127.0.0.1:{port}"), move |c| {
        c.cluster.tls_ca = Some(other_ca)
    })
    .await;
    assert!(
        why.contains("joining the cluster through NATS")
            && why.contains("invalid peer certificate"),
        "{why}\n{}",
        log_tail(&nats)
    );
    println!("with another CA: {why}");
}

// ---------------------------------------------------------------------------------------------
// Credentials: NATS operator mode, built offline

/// CRC-16/XMODEM, the checksum of an encoded nkey.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// RFC 4648 base32 without padding (how nkeys are written).
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Base64url without padding (how JWT parts are written).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// An nkey's role: the prefix byte of its public key.
#[derive(Clone, Copy)]
enum Role {
    Operator,
    Account,
    User,
}

impl Role {
    fn prefix(self) -> u8 {
        match self {
            Self::Operator => 14 << 3,
            Self::Account => 0,
            Self::User => 20 << 3,
        }
    }
}

/// An ed25519 key pair (an openssl PEM file in the test's dir) used as an nkey.
struct Nkey {
    role: Role,
    pem: PathBuf,
    seed: [u8; 32],
    public: [u8; 32],
}

impl Nkey {
    fn generate(dir: &Path, name: &str, role: Role) -> Self {
        let pem = dir.join(format!("{name}.pem"));
        let pem_arg = pem.display().to_string();
        openssl(
            dir,
            &["genpkey", "-algorithm", "ed25519", "-out", pem_arg.as_str()],
        );
        // The DER forms end with the raw 32-byte seed and public key.
        let private = openssl(dir, &["pkey", "-in", &pem_arg, "-outform", "DER"]);
        let public = openssl(
            dir,
            &["pkey", "-in", &pem_arg, "-pubout", "-outform", "DER"],
        );
        let last32 =
            |der: &[u8]| -> [u8; 32] { der[der.len() - 32..].try_into().expect("32 bytes") };
        Self {
            role,
            seed: last32(&private),
            public: last32(&public),
            pem,
        }
    }

    /// The public key, nkey-encoded (`O...`, `A...`, `U...`).
    fn public_key(&self) -> String {
        let mut raw = vec![self.role.prefix()];
        raw.extend_from_slice(&self.public);
        raw.extend_from_slice(&crc16(&raw).to_le_bytes());
        base32(&raw)
    }

    /// The seed, nkey-encoded (`SO...`, `SA...`, `SU...`).
    fn seed(&self) -> String {
        let p = self.role.prefix();
        let mut raw = vec![(18 << 3) | (p >> 5), (p & 31) << 3];
        raw.extend_from_slice(&self.seed);
        raw.extend_from_slice(&crc16(&raw).to_le_bytes());
        base32(&raw)
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let dir = self.pem.parent().expect("the key's dir");
        let input = dir.join("to-sign");
        std::fs::write(&input, message).expect("write the input");
        openssl(
            dir,
            &[
                "pkeyutl",
                "-sign",
                "-rawin",
                "-inkey",
                &self.pem.display().to_string(),
                "-in",
                &input.display().to_string(),
            ],
        )
    }

    /// A JWT (nats-io/jwt v2) about `subject` with `nats` claims, signed by this key.
    fn issue(&self, subject: &str, name: &str, nats: Value) -> String {
        let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let mut claims = json!({
            "iat": 1_700_000_000,
            "iss": self.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let jti = base32(&Sha256::digest(claims.to_string().as_bytes()));
        claims["jti"] = json!(jti);
        let signing_input = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
        let signature = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", base64url(&signature))
    }
}

/// An operator JWT (self-signed).
fn operator_jwt(operator: &Nkey) -> String {
    operator.issue(
        &operator.public_key(),
        "herald-test",
        json!({"type": "operator", "version": 2}),
    )
}

/// An account JWT with no limits, JetStream enabled when `jetstream` (never on the system
/// account).
fn account_jwt(operator: &Nkey, account: &Nkey, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[k] = json!(-1);
        }
    }
    operator.issue(
        &account.public_key(),
        name,
        json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    )
}

/// A `.creds` file for `user` of `account`: the user JWT and the user's seed.
fn creds_file(dir: &Path, name: &str, account: &Nkey, user: &Nkey) -> PathBuf {
    let jwt = account.issue(
        &user.public_key(),
        name,
        json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            user.seed()
        ),
    )
    .expect("write the creds file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_credentials_joins_an_operator_mode_nats_and_one_without_is_refused() {
    let keys = tempfile::tempdir().expect("temp dir");
    let dir = keys.path();
    let operator = Nkey::generate(dir, "operator", Role::Operator);
    let account = Nkey::generate(dir, "account", Role::Account);
    let user = Nkey::generate(dir, "user", Role::User);
    // JetStream in operator mode needs a system account.
    let system = Nkey::generate(dir, "system", Role::Account);
    // A user of an account the server does not know.
    let stranger_account = Nkey::generate(dir, "stranger-account", Role::Account);
    let stranger = Nkey::generate(dir, "stranger", Role::User);

    let nats = NatsServer::start_with_config(&format!(
        "operator: \"{}\"\n\
         system_account: \"{sys}\"\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: \"{}\"\n  {}: \"{}\"\n}}\n",
        operator_jwt(&operator),
        account_jwt(&operator, &system, "SYS", false),
        account.public_key(),
        account_jwt(&operator, &account, "herald", true),
        sys = system.public_key(),
    ));
    let creds = creds_file(dir, "herald", &account, &user);
    let node = Node::start(&nats.url(), move |c| c.cluster.credentials = Some(creds)).await;
    node.publish_and_read_back("creds.ok").await;
    node.stop().await;

    let why = refused(&nats.url(), |_| {}).await;
    assert!(
        why.contains("joining the cluster through NATS") && why.contains("authorization violation"),
        "{why}\n{}",
        log_tail(&nats)
    );
    println!("without credentials: {why}");
    let strangers = creds_file(dir, "stranger", &stranger_account, &stranger);
    let why = refused(&nats.url(), move |c| {
        c.cluster.credentials = Some(strangers)
    })
    .await;
    assert!(
        why.contains("joining the cluster through NATS") && why.contains("authorization violation"),
        "{why}\n{}",
        log_tail(&nats)
    );
    println!("with an unknown account's credentials: {why}");
}
