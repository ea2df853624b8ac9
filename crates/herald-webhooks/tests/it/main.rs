//! The dispatcher against real receivers on 127.0.0.1 (port 0), over a `MemoryLog`.

// Integration-test modules: `pub` inside a test binary is unreachable by definition.
#![allow(unreachable_pub)]

/// What a request looks like: headers, signatures, rotation, ed25519, recorded attempts.
mod delivery;
/// Private targets refused, bad URLs.
mod guard;
/// A slow or dead endpoint never delays others; concurrency cap; rate limit; shutdown.
mod isolation;
/// Retries, their end, `Retry-After`, abort, `410`, manual retry, disabling.
mod retries;
mod support;
