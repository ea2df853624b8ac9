// Cross-checks Herald's webhook signatures against libraries nobody here wrote:
// `standardwebhooks` (the Standard Webhooks reference library) and
// `@octokit/webhooks-methods` (GitHub's own).
//
// 1. Signatures made by Herald's signer (herald_protocol::webhook, passed in by the Rust
//    test as a JSON file) must verify with the libraries.
// 2. Requests signed by the libraries, POSTed to a running `herald serve` with `[[inbound]]`
//    receivers `std` (kind standard) and `github` (kind github), must be accepted (202),
//    recognised as repeats (200 {"duplicate":true}) and refused when tampered with (401).
//
// Usage: node webhook_sigs.mjs <base URL> <samples.json>
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";
import { sign as ghSign, verify as ghVerify } from "@octokit/webhooks-methods";

const [base, samplesPath] = process.argv.slice(2);
const s = JSON.parse(readFileSync(samplesPath, "utf8"));
let failed = 0;

function check(name, ok, detail = "") {
  if (ok) {
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name} ${detail}`);
  }
}

function throws(fn) {
  try {
    fn();
    return false;
  } catch {
    return true;
  }
}

// --- 1. Herald's signatures, third-party verifiers -----------------------------------------
const wh = new Webhook(s.standard_secret);
for (const [label, sample] of Object.entries(s.standard)) {
  const headers = {
    "webhook-id": sample.id,
    "webhook-timestamp": String(sample.timestamp),
    "webhook-signature": sample.signature,
  };
  let verified = null;
  try {
    verified = wh.verify(sample.body, headers);
  } catch (e) {
    verified = e;
  }
  check(
    `standardwebhooks verifies Herald's ${label} signature`,
    !(verified instanceof Error) && JSON.stringify(verified) === JSON.stringify(JSON.parse(sample.body)),
    String(verified),
  );
  check(
    `standardwebhooks rejects Herald's ${label} signature over a changed body`,
    throws(() => wh.verify(sample.body + " ", headers)),
  );
  // The library computes the same v1 signature for the same content.
  const theirs = wh.sign(sample.id, new Date(sample.timestamp * 1000), sample.body);
  check(
    `standardwebhooks signs ${label} as Herald does`,
    sample.signature.split(" ").includes(theirs),
    `${theirs} not in ${sample.signature}`,
  );
}

for (const sample of s.github) {
  check(
    "@octokit/webhooks-methods verifies Herald's x-hub-signature-256",
    await ghVerify(s.github_secret, sample.body, sample.signature),
  );
  check(
    "@octokit/webhooks-methods signs as Herald does",
    (await ghSign(s.github_secret, sample.body)) === sample.signature,
  );
  check(
    "@octokit/webhooks-methods rejects Herald's signature over a changed body",
    !(await ghVerify(s.github_secret, sample.body + " ", sample.signature)),
  );
}

// --- 2. Third-party signers, Herald's receivers ---------------------------------------------
async function post(name, headers, body) {
  const r = await fetch(`${base}/api/v1/webhooks/${name}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // left null
  }
  return { status: r.status, json, text };
}

{
  const body = JSON.stringify({ type: "invoice.paid", data: { amount: 42, note: "ünïcödé ✓" } });
  const id = `msg_${Date.now()}`;
  const now = new Date();
  const headers = {
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
    "webhook-signature": wh.sign(id, now, body),
  };
  let r = await post("std", headers, body);
  check("standard: signed by standardwebhooks -> 202", r.status === 202, r.text);
  check(
    "standard: topic and type from the body",
    r.json?.topic === "webhooks.std.invoice.paid" && r.json?.event === "invoice.paid",
    r.text,
  );
  const first = r.json?.id;
  r = await post("std", headers, body);
  check("standard: repeat -> 200 duplicate", r.status === 200 && r.json?.duplicate === true && r.json?.id === first, r.text);
  r = await post("std", headers, body.replace("42", "43"));
  check("standard: tampered body -> 401", r.status === 401, r.text);
  r = await post("std", { ...headers, "webhook-id": `${id}x` }, body);
  check("standard: tampered id -> 401", r.status === 401, r.text);
  const old = new Date(now.getTime() - 10 * 60 * 1000);
  r = await post(
    "std",
    {
      "webhook-id": `${id}-old`,
      "webhook-timestamp": String(Math.floor(old.getTime() / 1000)),
      "webhook-signature": wh.sign(`${id}-old`, old, body),
    },
    body,
  );
  check("standard: correctly signed but 10 minutes old -> 401", r.status === 401, r.text);
  const other = new Webhook("whsec_" + Buffer.from("another key, 24+ bytes long!").toString("base64"));
  r = await post(
    "std",
    { ...headers, "webhook-id": `${id}-k`, "webhook-signature": other.sign(`${id}-k`, now, body) },
    body,
  );
  check("standard: signed with another key -> 401", r.status === 401, r.text);
}

{
  const body = JSON.stringify({ action: "opened", number: 1347, pull_request: { title: "Amazing new feature" } });
  const delivery = `d-${Date.now()}`;
  const headers = {
    "x-github-event": "pull_request",
    "x-github-delivery": delivery,
    "x-hub-signature-256": await ghSign(s.github_secret, body),
  };
  let r = await post("github", headers, body);
  check("github: signed by @octokit/webhooks-methods -> 202", r.status === 202, r.text);
  check(
    "github: topic and type from x-github-event and action",
    r.json?.topic === "webhooks.github.pull_request.opened" && r.json?.event === "pull_request.opened",
    r.text,
  );
  r = await post("github", headers, body);
  check("github: redelivery -> 200 duplicate", r.status === 200 && r.json?.duplicate === true, r.text);
  r = await post("github", { ...headers, "x-github-delivery": `${delivery}-2` }, body.replace("1347", "1348"));
  check("github: tampered body -> 401", r.status === 401, r.text);
  r = await post(
    "github",
    { ...headers, "x-github-delivery": `${delivery}-3`, "x-hub-signature-256": await ghSign("wrong secret", body) },
    body,
  );
  check("github: signed with another secret -> 401", r.status === 401, r.text);
}

console.log(failed === 0 ? "all webhook signature checks passed" : `${failed} checks FAILED`);
process.exit(failed === 0 ? 0 : 1);
