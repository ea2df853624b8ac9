//! Webhook signatures (SPEC 7), pure code: secrets and keys, Standard Webhooks signing and
//! verification, GitHub's `x-hub-signature-256`, and a generic HMAC header.
//!
//! - **Standard Webhooks** (<https://www.standardwebhooks.com>): the signed content is
//!   `{webhook-id}.{webhook-timestamp}.{body}`. A symmetric secret is `whsec_` + base64 of the
//!   key and signs as `v1,<base64 HMAC-SHA256>`; an asymmetric key pair is `whsk_` (base64 of
//!   the 32-byte ed25519 seed) / `whpk_` (base64 of the 32-byte public key) and signs as
//!   `v1a,<base64 ed25519 signature>`. `webhook-signature` is a space-separated list (several
//!   keys during a rotation); a verifier accepts the message when any entry matches any of
//!   its keys, and only when `webhook-timestamp` is within a tolerance of "now" (given by the
//!   caller, so tests and replays are deterministic).
//! - **GitHub**: `x-hub-signature-256: sha256=<hex HMAC-SHA256(secret, body)>`, where the key
//!   is the UTF-8 bytes of the whole secret string (a `whsec_...` secret included).
//! - **Generic HMAC**: HMAC-SHA256 of the body in a configured header, hex or base64, with an
//!   optional prefix (`sha256=`); GitHub's scheme is one instance of it.
//!
//! Every comparison of a computed MAC with a received one is constant-time ([`subtle`]);
//! ed25519 signatures are checked by `ed25519-dalek` (strict verification).

use std::{fmt, time::Duration};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use ed25519_dalek::Signer as _;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Prefix of a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Prefix of an ed25519 signing (private) key.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of an ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// Standard Webhooks message id header.
pub const HEADER_ID: &str = "webhook-id";
/// Standard Webhooks timestamp header (unix seconds).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks signature header.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// GitHub's signature header.
pub const GITHUB_HEADER: &str = "x-hub-signature-256";
/// Prefix of GitHub's signature.
pub const GITHUB_PREFIX: &str = "sha256=";
/// How far `webhook-timestamp` may be from now, either way (the reference libraries' 5 min).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Random bytes in a generated secret (SPEC 7.1 allows 24–64).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Fewest random bytes a generated secret may have.
pub const MIN_SECRET_BYTES: usize = 24;
/// Most random bytes a generated secret may have.
pub const MAX_SECRET_BYTES: usize = 64;

/// A secret or key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The part after the prefix is not base64.
    #[error("the secret is not valid base64 after its `{0}` prefix")]
    Base64(&'static str),
    /// Nothing to sign with.
    #[error("the secret is empty")]
    Empty,
    /// An ed25519 key that is not 32 bytes, or not a valid point.
    #[error("not a valid ed25519 key (`whsk_`/`whpk_` + base64 of 32 bytes)")]
    Ed25519,
    /// The prefix says what kind of key this is, and it is not the kind wanted here.
    #[error("unexpected key kind: {0}")]
    Kind(&'static str),
    /// A generated secret length outside 24–64 bytes.
    #[error("a secret has 24 to 64 random bytes, not {0}")]
    Length(usize),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent (or empty).
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("`webhook-timestamp` is not a unix time in seconds")]
    BadTimestamp,
    /// The timestamp is older than the tolerance allows (a replay, or a clock far behind).
    #[error("`webhook-timestamp` is too old ({0} s ago)")]
    TooOld(i64),
    /// The timestamp is further in the future than the tolerance allows.
    #[error("`webhook-timestamp` is too far in the future ({0} s ahead)")]
    TooNew(i64),
    /// The signature header lacks the configured prefix or is not hex/base64.
    #[error("the signature is malformed")]
    Malformed,
    /// No signature matched any key.
    #[error("no signature matches")]
    NoMatch,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, KeyError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .ok()
        .or_else(|| STANDARD_NO_PAD.decode(s).ok())
}

/// A symmetric HMAC key, keyed once (each use clones the keyed state). `Debug` never
/// shows it.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    keyed: HmacSha256,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.key.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.key.ct_eq(&other.key))
    }
}

impl Eq for Secret {}

impl Secret {
    /// A secret from key bytes.
    ///
    /// # Errors
    /// [`KeyError::Empty`] for no bytes.
    pub fn from_key(key: Vec<u8>) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        // HMAC takes keys of any length (long ones are hashed first): this cannot fail for
        // a non-empty key, but the error is kept rather than unwrapped.
        let keyed = HmacSha256::new_from_slice(&key).map_err(|_| KeyError::Empty)?;
        Ok(Self { key, keyed })
    }

    /// A Standard Webhooks secret: `whsec_<base64>` (the key is the decoded part), or bare
    /// base64 as the reference libraries also accept.
    ///
    /// # Errors
    /// [`KeyError`] when the text is not base64, decodes to nothing, or is a `whsk_`/`whpk_`
    /// key.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.starts_with(SIGNING_KEY_PREFIX) || s.starts_with(PUBLIC_KEY_PREFIX) {
            return Err(KeyError::Kind(
                "an ed25519 key where an HMAC secret is expected",
            ));
        }
        let (prefix, body) = match s.strip_prefix(SECRET_PREFIX) {
            Some(b) => (SECRET_PREFIX, b),
            None => ("", s),
        };
        let key = decode_b64(body).ok_or(KeyError::Base64(prefix))?;
        Self::from_key(key)
    }

    /// A secret used as it is: the key is the bytes of the string (GitHub, generic HMAC;
    /// for GitHub a `whsec_...` secret is used whole, prefix included).
    ///
    /// # Errors
    /// [`KeyError::Empty`] for an empty string.
    pub fn raw(s: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Self::from_key(s.as_ref().to_vec())
    }

    /// A fresh secret of [`GENERATED_SECRET_BYTES`] random bytes (show it with
    /// [`Secret::to_whsec`]).
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS has no randomness to give.
    pub fn generate() -> Result<Self, KeyError> {
        Self::generate_len(GENERATED_SECRET_BYTES)
    }

    /// A fresh secret of `n` (24–64) random bytes.
    ///
    /// # Errors
    /// [`KeyError::Length`] outside 24–64, [`KeyError::Random`].
    pub fn generate_len(n: usize) -> Result<Self, KeyError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
            return Err(KeyError::Length(n));
        }
        Self::from_key(random_bytes(n)?)
    }

    /// The key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// `whsec_` + base64 of the key: how the secret is shown to users.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

/// An ed25519 signing key (`whsk_`). `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().to_whpk())
    }
}

impl SigningKey {
    /// Parses `whsk_<base64 of the 32-byte seed>`.
    ///
    /// # Errors
    /// [`KeyError`] when the prefix, base64 or length is wrong.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let b = s
            .trim()
            .strip_prefix(SIGNING_KEY_PREFIX)
            .ok_or(KeyError::Kind("an ed25519 signing key starts with `whsk_`"))?;
        let bytes = decode_b64(b).ok_or(KeyError::Base64(SIGNING_KEY_PREFIX))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Ed25519)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// A fresh random key pair.
    ///
    /// # Errors
    /// [`KeyError::Random`].
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// `whsk_` + base64 of the seed.
    pub fn to_whsk(&self) -> String {
        format!("{SIGNING_KEY_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    fn sign(&self, content: &[u8]) -> [u8; 64] {
        self.0.sign(content).to_bytes()
    }
}

/// An ed25519 public key (`whpk_`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_whpk())
    }
}

impl PublicKey {
    /// Parses `whpk_<base64 of the 32-byte public key>`.
    ///
    /// # Errors
    /// [`KeyError`] when the prefix, base64, length or point is wrong.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let b = s
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(KeyError::Kind("an ed25519 public key starts with `whpk_`"))?;
        let bytes = decode_b64(b).ok_or(KeyError::Base64(PUBLIC_KEY_PREFIX))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Ed25519)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::Ed25519)
    }

    /// `whpk_` + base64 of the key.
    pub fn to_whpk(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }
}

/// What a Standard Webhooks sender signs with.
#[derive(Debug, Clone)]
pub enum Signer {
    /// `whsec_`: `v1` signatures.
    Hmac(Secret),
    /// `whsk_`: `v1a` signatures.
    Ed25519(SigningKey),
}

impl Signer {
    /// `whsk_...` is an ed25519 key; anything else a `whsec_` (or bare base64) secret.
    ///
    /// # Errors
    /// [`KeyError`] when the text is no valid key.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.trim().starts_with(SIGNING_KEY_PREFIX) {
            SigningKey::parse(s).map(Self::Ed25519)
        } else {
            Secret::parse(s).map(Self::Hmac)
        }
    }
}

/// What a Standard Webhooks receiver verifies with.
#[derive(Debug, Clone)]
pub enum VerifyKey {
    /// `whsec_`: checks `v1` signatures.
    Hmac(Secret),
    /// `whpk_`: checks `v1a` signatures.
    Ed25519(PublicKey),
}

impl VerifyKey {
    /// `whpk_...` is an ed25519 public key; anything else a `whsec_` (or bare base64) secret.
    ///
    /// # Errors
    /// [`KeyError`] when the text is no valid key (a `whsk_` private key included: give the
    /// receiver the public half).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.trim().starts_with(PUBLIC_KEY_PREFIX) {
            PublicKey::parse(s).map(Self::Ed25519)
        } else {
            Secret::parse(s).map(Self::Hmac)
        }
    }
}

/// One `v1,...` or `v1a,...` signature for `{msg_id}.{timestamp}.{body}`.
fn sign_one(key: &Signer, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    match key {
        Signer::Hmac(s) => {
            let mac = s.hmac(&[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
            format!("v1,{}", STANDARD.encode(mac))
        }
        Signer::Ed25519(k) => {
            let content = signed_content(msg_id, timestamp, body);
            format!("v1a,{}", STANDARD.encode(k.sign(&content)))
        }
    }
}

fn signed_content(msg_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    c.extend_from_slice(msg_id.as_bytes());
    c.push(b'.');
    c.extend_from_slice(timestamp.as_bytes());
    c.push(b'.');
    c.extend_from_slice(body);
    c
}

/// The `webhook-signature` value for a message: one signature per key, space-separated (two
/// keys during a rotation).
pub fn sign(msg_id: &str, timestamp: i64, body: &[u8], keys: &[Signer]) -> String {
    let ts = timestamp.to_string();
    keys.iter()
        .map(|k| sign_one(k, msg_id, &ts, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks headers of a received request.
#[derive(Debug, Clone, Copy)]
pub struct StandardHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

impl<'a> StandardHeaders<'a> {
    /// Collects the headers through `get` (a header-map lookup); a missing or empty one is
    /// an error naming it.
    ///
    /// # Errors
    /// [`VerifyError::MissingHeader`].
    pub fn from_lookup(get: impl Fn(&'static str) -> Option<&'a str>) -> Result<Self, VerifyError> {
        let need = |name: &'static str| {
            get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(VerifyError::MissingHeader(name))
        };
        Ok(Self {
            id: need(HEADER_ID)?,
            timestamp: need(HEADER_TIMESTAMP)?,
            signature: need(HEADER_SIGNATURE)?,
        })
    }
}

/// Checks a Standard Webhooks request: the timestamp is within `tolerance` of `now` (unix
/// seconds) and some entry of `webhook-signature` matches some key. Entries of unknown
/// versions are skipped, as the specification asks.
///
/// # Errors
/// [`VerifyError`]: bad or out-of-tolerance timestamp, or no matching signature.
pub fn verify(
    headers: &StandardHeaders<'_>,
    body: &[u8],
    keys: &[VerifyKey],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts_text = headers.timestamp.trim();
    if ts_text.is_empty() || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    let ts: i64 = ts_text.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let age = now.saturating_sub(ts);
    if age > tol {
        return Err(VerifyError::TooOld(age));
    }
    let ahead = ts.saturating_sub(now);
    if ahead > tol {
        return Err(VerifyError::TooNew(ahead));
    }
    // Computed once per key, whatever the number of entries.
    let mut content: Option<Vec<u8>> = None;
    let macs: Vec<Option<[u8; 32]>> = keys
        .iter()
        .map(|k| match k {
            VerifyKey::Hmac(s) => {
                Some(s.hmac(&[headers.id.as_bytes(), b".", ts_text.as_bytes(), b".", body]))
            }
            VerifyKey::Ed25519(_) => None,
        })
        .collect();
    let mut matched = false;
    for entry in headers.signature.split_ascii_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        let Some(sig) = decode_b64(sig) else {
            continue;
        };
        for (key, mac) in keys.iter().zip(&macs) {
            match (version, key, mac) {
                ("v1", VerifyKey::Hmac(_), Some(mac)) => {
                    // Not short-circuited: every entry costs the same.
                    matched |= bool::from(mac.as_slice().ct_eq(&sig));
                }
                ("v1a", VerifyKey::Ed25519(pk), _) => {
                    let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
                        continue;
                    };
                    let c =
                        content.get_or_insert_with(|| signed_content(headers.id, ts_text, body));
                    matched |= pk.0.verify_strict(c, &sig).is_ok();
                }
                _ => {}
            }
        }
    }
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// How a generic HMAC signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lowercase hex (uppercase accepted when verifying).
    Hex,
    /// Standard base64 (unpadded accepted when verifying).
    Base64,
}

impl Encoding {
    /// `hex` or `base64`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            _ => None,
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Hex => hex_encode(bytes),
            Self::Base64 => STANDARD.encode(bytes),
        }
    }

    fn decode(self, s: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex_decode(s),
            Self::Base64 => decode_b64(s),
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// `prefix` + HMAC-SHA256(secret, body) in `encoding`.
pub fn hmac_signature(secret: &Secret, body: &[u8], encoding: Encoding, prefix: &str) -> String {
    format!("{prefix}{}", encoding.encode(&secret.hmac(&[body])))
}

/// Checks a generic HMAC header value: `prefix` then HMAC-SHA256(secret, body) in
/// `encoding`, compared in constant time. Surrounding whitespace is ignored; the prefix is
/// matched case-insensitively (`SHA256=` works too).
///
/// # Errors
/// [`VerifyError::Malformed`] without the prefix or with bad hex/base64,
/// [`VerifyError::NoMatch`] for a wrong signature.
pub fn verify_hmac(
    secret: &Secret,
    body: &[u8],
    header_value: &str,
    encoding: Encoding,
    prefix: &str,
) -> Result<(), VerifyError> {
    let v = header_value.trim();
    let rest = match v.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => &v[prefix.len()..],
        _ => return Err(VerifyError::Malformed),
    };
    let got = encoding.decode(rest).ok_or(VerifyError::Malformed)?;
    let want = secret.hmac(&[body]);
    if bool::from(want.as_slice().ct_eq(&got)) {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// GitHub's `x-hub-signature-256` value: `sha256=<hex HMAC-SHA256(secret, body)>`, with
/// the secret taken whole as its UTF-8 bytes ([`Secret::raw`]).
pub fn github_signature(secret: &Secret, body: &[u8]) -> String {
    hmac_signature(secret, body, Encoding::Hex, GITHUB_PREFIX)
}

/// Checks GitHub's `x-hub-signature-256` against a raw secret ([`Secret::raw`]).
///
/// # Errors
/// As [`verify_hmac`].
pub fn verify_github(secret: &Secret, body: &[u8], header_value: &str) -> Result<(), VerifyError> {
    verify_hmac(secret, body, header_value, Encoding::Hex, GITHUB_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's reference vector (used by every library's tests).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    // GitHub's documented example ("Validating webhook deliveries", test values).
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn spec_key() -> Vec<VerifyKey> {
        vec![VerifyKey::parse(SPEC_SECRET).unwrap()]
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> StandardHeaders<'a> {
        StandardHeaders {
            id,
            timestamp: ts,
            signature: sig,
        }
    }

    #[test]
    fn standard_spec_vector_signs() {
        let s = Signer::parse(SPEC_SECRET).unwrap();
        assert_eq!(sign(SPEC_ID, SPEC_TS, SPEC_BODY, &[s]), SPEC_SIG);
        // Bare base64 (no prefix) is the same key, as in the reference libraries.
        let bare = Signer::parse(SPEC_SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(sign(SPEC_ID, SPEC_TS, SPEC_BODY, &[bare]), SPEC_SIG);
    }

    #[test]
    fn standard_spec_vector_verifies() {
        let ts = SPEC_TS.to_string();
        let h = headers(SPEC_ID, &ts, SPEC_SIG);
        verify(&h, SPEC_BODY, &spec_key(), SPEC_TS, DEFAULT_TOLERANCE).unwrap();
        // Within tolerance either way.
        verify(&h, SPEC_BODY, &spec_key(), SPEC_TS + 299, DEFAULT_TOLERANCE).unwrap();
        verify(&h, SPEC_BODY, &spec_key(), SPEC_TS - 299, DEFAULT_TOLERANCE).unwrap();
    }

    #[test]
    fn standard_rejects_tampering() {
        let ts = SPEC_TS.to_string();
        let keys = spec_key();
        let ok = |h: &StandardHeaders<'_>, body: &[u8]| {
            verify(h, body, &keys, SPEC_TS, DEFAULT_TOLERANCE)
        };
        // Body.
        assert_eq!(
            ok(&headers(SPEC_ID, &ts, SPEC_SIG), br#"{"test": 2432232315}"#),
            Err(VerifyError::NoMatch)
        );
        // Id.
        assert_eq!(
            ok(
                &headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", &ts, SPEC_SIG),
                SPEC_BODY
            ),
            Err(VerifyError::NoMatch)
        );
        // Timestamp (in tolerance, but signed content differs).
        let other = (SPEC_TS + 1).to_string();
        assert_eq!(
            ok(&headers(SPEC_ID, &other, SPEC_SIG), SPEC_BODY),
            Err(VerifyError::NoMatch)
        );
        // Signature bytes.
        assert_eq!(
            ok(
                &headers(
                    SPEC_ID,
                    &ts,
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
                ),
                SPEC_BODY
            ),
            Err(VerifyError::NoMatch)
        );
        // Wrong version tag, truncated, garbage, empty.
        for bad in [
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,g0hM9SsE+OTPJTGt",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,!!!",
            "v1,",
        ] {
            assert_eq!(
                ok(&headers(SPEC_ID, &ts, bad), SPEC_BODY),
                Err(VerifyError::NoMatch),
                "{bad}"
            );
        }
        // Another secret.
        let other_key = vec![VerifyKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx").unwrap()];
        assert_eq!(
            verify(
                &headers(SPEC_ID, &ts, SPEC_SIG),
                SPEC_BODY,
                &other_key,
                SPEC_TS,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn standard_timestamp_tolerance() {
        let ts = SPEC_TS.to_string();
        let h = headers(SPEC_ID, &ts, SPEC_SIG);
        let keys = spec_key();
        assert_eq!(
            verify(&h, SPEC_BODY, &keys, SPEC_TS + 301, DEFAULT_TOLERANCE),
            Err(VerifyError::TooOld(301))
        );
        assert_eq!(
            verify(&h, SPEC_BODY, &keys, SPEC_TS - 301, DEFAULT_TOLERANCE),
            Err(VerifyError::TooNew(301))
        );
        assert_eq!(
            verify(&h, SPEC_BODY, &keys, SPEC_TS + 10, Duration::from_secs(5)),
            Err(VerifyError::TooOld(10))
        );
        for bad in [
            "",
            "abc",
            "-1614265330",
            "1614265330.5",
            "1e9",
            "99999999999999999999999",
        ] {
            assert_eq!(
                verify(
                    &headers(SPEC_ID, bad, SPEC_SIG),
                    SPEC_BODY,
                    &keys,
                    SPEC_TS,
                    DEFAULT_TOLERANCE
                ),
                Err(VerifyError::BadTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn standard_rotation_any_signature_any_key() {
        let old = Secret::generate().unwrap();
        let new = Secret::generate().unwrap();
        let sig = sign(
            "msg_1",
            100,
            b"{}",
            &[Signer::Hmac(old.clone()), Signer::Hmac(new.clone())],
        );
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
        let h = headers("msg_1", "100", &sig);
        for k in [&old, &new] {
            verify(
                &h,
                b"{}",
                &[VerifyKey::Hmac(k.clone())],
                100,
                DEFAULT_TOLERANCE,
            )
            .unwrap();
        }
        // A receiver that knows both keys, signature from one.
        let only_new = sign("msg_1", 100, b"{}", &[Signer::Hmac(new.clone())]);
        verify(
            &headers("msg_1", "100", &only_new),
            b"{}",
            &[VerifyKey::Hmac(old.clone()), VerifyKey::Hmac(new.clone())],
            100,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        // Unknown entries around a good one are skipped.
        let mixed = format!("v9,abc {only_new}  garbage");
        verify(
            &headers("msg_1", "100", &mixed),
            b"{}",
            &[VerifyKey::Hmac(new.clone())],
            100,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        assert_eq!(
            verify(
                &headers("msg_1", "100", &mixed),
                b"{}",
                &[VerifyKey::Hmac(old)],
                100,
                DEFAULT_TOLERANCE,
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn ed25519_sign_and_verify() {
        let sk = SigningKey::generate().unwrap();
        let whsk = sk.to_whsk();
        assert!(whsk.starts_with("whsk_"));
        let sk2 = SigningKey::parse(&whsk).unwrap();
        let pk = sk2.public_key();
        let whpk = pk.to_whpk();
        assert!(whpk.starts_with("whpk_"));
        assert_eq!(PublicKey::parse(&whpk).unwrap(), pk);

        let hmac = Secret::generate().unwrap();
        let sig = sign(
            "msg_2",
            7,
            b"body",
            &[Signer::Hmac(hmac.clone()), Signer::parse(&whsk).unwrap()],
        );
        let (v1, v1a) = sig.split_once(' ').unwrap();
        assert!(v1.starts_with("v1,") && v1a.starts_with("v1a,"), "{sig}");
        let keys = [VerifyKey::parse(&whpk).unwrap()];
        verify(
            &headers("msg_2", "7", &sig),
            b"body",
            &keys,
            7,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        verify(
            &headers("msg_2", "7", v1a),
            b"body",
            &keys,
            7,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        // The v1 entry does not satisfy a receiver holding only the public key.
        assert_eq!(
            verify(
                &headers("msg_2", "7", v1),
                b"body",
                &keys,
                7,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                &headers("msg_2", "7", &sig),
                b"bodY",
                &keys,
                7,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                &headers("msg_3", "7", &sig),
                b"body",
                &keys,
                7,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch)
        );
        let other = SigningKey::generate().unwrap().public_key();
        assert_eq!(
            verify(
                &headers("msg_2", "7", &sig),
                b"body",
                &[VerifyKey::Ed25519(other)],
                7,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn ed25519_rfc8032_vector() {
        // RFC 8032 section 7.1, TEST 2 (one-byte message 0x72).
        let seed = decode_hex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
        let whsk = format!("whsk_{}", STANDARD.encode(&seed));
        let sk = SigningKey::parse(&whsk).unwrap();
        let pk = decode_hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
        assert_eq!(
            sk.public_key().to_whpk(),
            format!("whpk_{}", STANDARD.encode(&pk))
        );
        let sig = decode_hex(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        );
        assert_eq!(sk.sign(&[0x72]).to_vec(), sig);
    }

    fn decode_hex(s: &str) -> Vec<u8> {
        hex_decode(s).unwrap()
    }

    #[test]
    fn key_parsing_errors() {
        assert_eq!(Secret::parse("whsec_!!!"), Err(KeyError::Base64("whsec_")));
        assert_eq!(Secret::parse("whsec_"), Err(KeyError::Empty));
        assert!(matches!(Secret::parse("whpk_AAAA"), Err(KeyError::Kind(_))));
        assert_eq!(Secret::raw(""), Err(KeyError::Empty));
        assert_eq!(
            SigningKey::parse("whsk_AAAA").unwrap_err(),
            KeyError::Ed25519
        );
        assert!(matches!(
            SigningKey::parse("whsec_AAAA"),
            Err(KeyError::Kind(_))
        ));
        assert_eq!(
            PublicKey::parse("whpk_AAAA").unwrap_err(),
            KeyError::Ed25519
        );
        assert!(matches!(
            VerifyKey::parse("whsk_AAAA"),
            Err(KeyError::Kind(_))
        ));
        // Debug output never shows key material.
        let s = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(24 bytes)");
    }

    #[test]
    fn generated_secrets() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.key().len(), GENERATED_SECRET_BYTES);
        let text = a.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), a);
        assert_eq!(Secret::generate_len(24).unwrap().key().len(), 24);
        assert_eq!(Secret::generate_len(64).unwrap().key().len(), 64);
        assert_eq!(Secret::generate_len(23), Err(KeyError::Length(23)));
        assert_eq!(Secret::generate_len(65), Err(KeyError::Length(65)));
    }

    #[test]
    fn github_documented_vector() {
        let s = Secret::raw(GH_SECRET).unwrap();
        assert_eq!(github_signature(&s, GH_BODY), GH_SIG);
        verify_github(&s, GH_BODY, GH_SIG).unwrap();
        verify_github(&s, GH_BODY, &GH_SIG.to_uppercase()).unwrap();
        assert_eq!(
            hmac_signature(&s, GH_BODY, Encoding::Hex, "sha256="),
            GH_SIG
        );
    }

    #[test]
    fn github_rejects_tampering() {
        let s = Secret::raw(GH_SECRET).unwrap();
        assert_eq!(
            verify_github(&s, b"Hello, World?", GH_SIG),
            Err(VerifyError::NoMatch)
        );
        let other = Secret::raw("It's a Secret to Everybody!").unwrap();
        assert_eq!(
            verify_github(&other, GH_BODY, GH_SIG),
            Err(VerifyError::NoMatch)
        );
        let flipped = GH_SIG.replace("757107ea", "757107eb");
        assert_eq!(
            verify_github(&s, GH_BODY, &flipped),
            Err(VerifyError::NoMatch)
        );
        for bad in [
            "",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
            "sha256=757",
        ] {
            assert_eq!(
                verify_github(&s, GH_BODY, bad),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
        // Truncated but well-formed hex: the lengths differ, no match.
        assert_eq!(
            verify_github(&s, GH_BODY, "sha256=757107ea"),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn generic_hmac_encodings_and_prefixes() {
        let s = Secret::raw("topsecret").unwrap();
        let body = br#"{"a":1}"#;
        for (enc, prefix) in [
            (Encoding::Hex, ""),
            (Encoding::Hex, "sha256="),
            (Encoding::Base64, ""),
            (Encoding::Base64, "v1="),
        ] {
            let sig = hmac_signature(&s, body, enc, prefix);
            assert!(sig.starts_with(prefix));
            verify_hmac(&s, body, &sig, enc, prefix).unwrap();
            verify_hmac(&s, body, &format!(" {sig} "), enc, prefix).unwrap();
            assert_eq!(
                verify_hmac(&s, br#"{"a":2}"#, &sig, enc, prefix),
                Err(VerifyError::NoMatch)
            );
            let other = Secret::raw("topsecreT").unwrap();
            assert_eq!(
                verify_hmac(&other, body, &sig, enc, prefix),
                Err(VerifyError::NoMatch)
            );
        }
        // Hex where base64 is configured and vice versa.
        let hex = hmac_signature(&s, body, Encoding::Hex, "");
        assert!(verify_hmac(&s, body, &hex, Encoding::Base64, "").is_err());
        let b64 = hmac_signature(&s, body, Encoding::Base64, "");
        assert!(verify_hmac(&s, body, &b64, Encoding::Hex, "").is_err());
        // Unpadded base64 is accepted.
        verify_hmac(&s, body, b64.trim_end_matches('='), Encoding::Base64, "").unwrap();
        assert_eq!(Encoding::parse("hex"), Some(Encoding::Hex));
        assert_eq!(Encoding::parse("base64"), Some(Encoding::Base64));
        assert_eq!(Encoding::parse("HEX"), None);
    }

    #[test]
    fn headers_from_lookup() {
        let map = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "5"),
            ("webhook-signature", "v1,x"),
        ];
        let h =
            StandardHeaders::from_lookup(|n| map.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
                .unwrap();
        assert_eq!((h.id, h.timestamp, h.signature), ("msg_1", "5", "v1,x"));
        let e = StandardHeaders::from_lookup(|n| {
            map.iter()
                .find(|(k, _)| *k == n && n != "webhook-timestamp")
                .map(|(_, v)| *v)
        })
        .unwrap_err();
        assert_eq!(e, VerifyError::MissingHeader("webhook-timestamp"));
        let e = StandardHeaders::from_lookup(|n| {
            if n == "webhook-id" {
                Some(" ")
            } else {
                Some("x")
            }
        })
        .unwrap_err();
        assert_eq!(e, VerifyError::MissingHeader("webhook-id"));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Whatever the id, timestamp and body: what `sign` makes, `verify` accepts, and
            /// changing any one byte of the body makes it refuse.
            #[test]
            fn sign_verify_roundtrip(
                id in "[A-Za-z0-9_-]{1,40}",
                ts in 0i64..4_000_000_000,
                body in proptest::collection::vec(any::<u8>(), 0..256),
                flip in any::<prop::sample::Index>(),
                key in proptest::collection::vec(any::<u8>(), 1..80),
            ) {
                let secret = Secret::from_key(key).unwrap();
                let sig = sign(&id, ts, &body, &[Signer::Hmac(secret.clone())]);
                let tstext = ts.to_string();
                let h = StandardHeaders { id: &id, timestamp: &tstext, signature: &sig };
                let keys = [VerifyKey::Hmac(secret.clone())];
                prop_assert!(verify(&h, &body, &keys, ts, DEFAULT_TOLERANCE).is_ok());
                let gh = hmac_signature(&secret, &body, Encoding::Hex, GITHUB_PREFIX);
                prop_assert!(verify_github(&secret, &body, &gh).is_ok());
                if !body.is_empty() {
                    let mut tampered = body.clone();
                    let i = flip.index(tampered.len());
                    tampered[i] ^= 0x01;
                    prop_assert_eq!(
                        verify(&h, &tampered, &keys, ts, DEFAULT_TOLERANCE),
                        Err(VerifyError::NoMatch)
                    );
                    prop_assert_eq!(
                        verify_github(&secret, &tampered, &gh),
                        Err(VerifyError::NoMatch)
                    );
                }
            }

            /// Arbitrary header text never panics and never verifies.
            #[test]
            fn arbitrary_headers_are_refused(
                ts in "\\PC{0,24}",
                sig in "\\PC{0,200}",
                hmac_header in "\\PC{0,120}",
            ) {
                let secret = Secret::raw("k").unwrap();
                let body: &[u8] = b"[]";
                let h = StandardHeaders { id: "msg", timestamp: &ts, signature: &sig };
                prop_assert!(verify(&h, body, &[VerifyKey::Hmac(secret.clone())], 0, DEFAULT_TOLERANCE).is_err());
                prop_assert!(verify_hmac(&secret, body, &hmac_header, Encoding::Base64, "").is_err());
                prop_assert!(verify_github(&secret, body, &hmac_header).is_err());
            }
        }
    }
}
