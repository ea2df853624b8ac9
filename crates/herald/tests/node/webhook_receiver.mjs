// A webhook receiver that checks Herald's outbound deliveries with libraries nobody here
// wrote: `standardwebhooks` (the Standard Webhooks reference library) verifies
// `webhook-signature`, `@octokit/webhooks-methods` (GitHub's own) verifies
// `x-hub-signature-256`, and Node's crypto (OpenSSL) verifies ed25519 `v1a` signatures, which
// `standardwebhooks` 1.1.1 does not implement (its `verify` skips every entry that is not `v1`).
//
// Driven by crates/herald/tests/webhook_sigs.rs:
// - it listens on 127.0.0.1 (a free port) and prints {"listening": <port>} as its first line;
// - `PUT /_routes` {"<path>": <route>, ...} says how requests to <path> are checked:
//     standard: ["whsec_...", ...]  each must verify the request on its own
//     v1: N                         exactly N `v1,` entries in webhook-signature
//     github: "whsec_..." | null    x-hub-signature-256 must verify with this whole string,
//                                   or (null) be absent
//     ed25519: ["whpk_...", ...]    each must verify some `v1a,` entry
// - every other request is a delivery: it prints one JSON line
//   {"path","id","event","ok","passed":[...],"failures":[...]} and answers 200 when every check
//   passed, 400 (with the failures as body, which Herald records) otherwise.
//
// The npm packages live in tests/browser/node_modules (scripts/test-deps installs them); the
// Rust test runs a copy of this file next to a `node_modules` link to that directory.
//
// Usage: node webhook_receiver.mjs
import http from "node:http";
import crypto from "node:crypto";
import { Webhook } from "standardwebhooks";
import { verify as ghVerify } from "@octokit/webhooks-methods";

const TOLERANCE_S = 5 * 60;
const routes = new Map();

function b64urlFromStd(s) {
  return s.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function ed25519Key(whpk) {
  if (!whpk.startsWith("whpk_")) throw new Error(`not a whpk_ key: ${whpk}`);
  const raw = Buffer.from(whpk.slice("whpk_".length), "base64");
  if (raw.length !== 32) throw new Error(`whpk_ key of ${raw.length} bytes`);
  return crypto.createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: b64urlFromStd(raw.toString("base64")) },
    format: "jwk",
  });
}

async function check(route, body, headers, r) {
  const pass = (name) => r.passed.push(name);
  const fail = (name, detail) => r.failures.push(`${name}: ${detail}`);
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const sig = headers["webhook-signature"] ?? "";
  const entries = sig.split(" ").filter((e) => e.length > 0);

  // The request itself, as SPEC 7.1 describes it.
  if (headers["content-type"] !== "application/json") fail("content-type", headers["content-type"]);
  if (!String(headers["user-agent"] ?? "").startsWith("herald/")) fail("user-agent", headers["user-agent"]);
  let parsed = null;
  try {
    parsed = JSON.parse(body);
  } catch (e) {
    fail("body is JSON", String(e));
  }
  if (parsed !== null) {
    for (const k of ["id", "topic", "event", "data", "time"]) {
      if (!(k in parsed)) fail("body fields", `no ${k}`);
    }
    if (parsed.id !== "0" && id !== `msg_${parsed.id}`) fail("webhook-id", `${id} for event ${parsed.id}`);
    if (headers["x-webhook-event"] !== parsed.event) fail("x-webhook-event", headers["x-webhook-event"]);
  }

  for (const [i, secret] of (route.standard ?? []).entries()) {
    const name = `standardwebhooks verifies with secret #${i}`;
    try {
      const out = new Webhook(secret).verify(body, headers);
      if (JSON.stringify(out) === JSON.stringify(parsed)) pass(name);
      else fail(name, "verify returned another payload");
    } catch (e) {
      fail(name, String(e));
    }
    // The library really checks: a changed body or id is refused.
    const tampered = [
      [`${body} `, headers],
      [body, { ...headers, "webhook-id": `${id}x` }],
    ];
    for (const [b, h] of tampered) {
      try {
        new Webhook(secret).verify(b, h);
        fail(`standardwebhooks refuses a tampered request (secret #${i})`, "it verified");
      } catch {
        // expected
      }
    }
  }
  if (route.v1 !== undefined) {
    const n = entries.filter((e) => e.startsWith("v1,")).length;
    if (n === route.v1) pass(`${n} v1 signature(s)`);
    else fail("v1 signatures", `${n} in ${JSON.stringify(sig)}, expected ${route.v1}`);
  }

  const gh = headers["x-hub-signature-256"];
  if (route.github === null) {
    if (gh === undefined) pass("no x-hub-signature-256");
    else fail("x-hub-signature-256", `unexpected: ${gh}`);
  } else if (route.github !== undefined) {
    const name = "@octokit/webhooks-methods verifies x-hub-signature-256";
    try {
      if (gh !== undefined && (await ghVerify(route.github, body, gh))) pass(name);
      else fail(name, `${gh} does not verify`);
      if (await ghVerify(route.github, `${body} `, gh ?? "")) {
        fail("@octokit/webhooks-methods refuses a tampered body", "it verified");
      }
    } catch (e) {
      fail(name, String(e));
    }
  }

  for (const [i, whpk] of (route.ed25519 ?? []).entries()) {
    const name = `node:crypto verifies a v1a signature with public key #${i}`;
    try {
      const key = ed25519Key(whpk);
      const age = Math.floor(Date.now() / 1000) - Number.parseInt(ts, 10);
      if (!(Math.abs(age) <= TOLERANCE_S)) throw new Error(`timestamp ${ts} is ${age} s off`);
      const content = Buffer.from(`${id}.${ts}.${body}`, "utf8");
      const ok = entries
        .filter((e) => e.startsWith("v1a,"))
        .some((e) => crypto.verify(null, content, key, Buffer.from(e.slice(4), "base64")));
      if (ok) pass(name);
      else fail(name, `no v1a entry verifies in ${JSON.stringify(sig)}`);
      const tampered = Buffer.from(`${id}.${ts}.${body} `, "utf8");
      if (entries.some((e) => e.startsWith("v1a,") && crypto.verify(null, tampered, key, Buffer.from(e.slice(4), "base64")))) {
        fail("node:crypto refuses a tampered body", "it verified");
      }
    } catch (e) {
      fail(name, String(e));
    }
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString("utf8");
    const path = new URL(req.url, "http://receiver").pathname;
    if (req.method === "PUT" && path === "/_routes") {
      for (const [p, route] of Object.entries(JSON.parse(body))) routes.set(p, route);
      res.writeHead(204).end();
      return;
    }
    const r = {
      path,
      id: req.headers["webhook-id"] ?? null,
      event: req.headers["x-webhook-event"] ?? null,
      passed: [],
      failures: [],
    };
    const route = routes.get(path);
    if (req.method !== "POST") r.failures.push(`method ${req.method}`);
    if (route === undefined) r.failures.push(`no route for ${path}`);
    else await check(route, body, req.headers, r);
    const ok = r.failures.length === 0 && r.passed.length > 0;
    console.log(JSON.stringify({ ...r, ok }));
    res.writeHead(ok ? 200 : 400, { "content-type": "application/json" }).end(JSON.stringify(r));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, failures: [`receiver error: ${e}`] }));
    res.writeHead(500).end(String(e));
  }
});

server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
