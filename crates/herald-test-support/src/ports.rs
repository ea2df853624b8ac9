//! [`free_port`]: a loopback port for a server process a test starts itself.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Ports handed out lie below Linux's ephemeral range (32768–60999 by default), so that no
/// outgoing connection of a concurrently running test can take one between the moment it is
/// picked and the moment the server binds it. (Port 0 hands out ephemeral ports, which is
/// exactly where outgoing connections get theirs.)
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that was free a moment ago, chosen at random below the ephemeral
/// range; tests running in other processes at the same time pick from the same range, so a
/// clash is unlikely but possible: starters should still check that their server came up.
///
/// # Panics
/// When no port of the range could be bound in 1,000 tries.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state =
        nanos ^ (u64::from(std::process::id()) << 32) ^ NEXT.fetch_add(1, Ordering::Relaxed) | 1;
    let span = u64::from(RANGE.end - RANGE.start);
    for _ in 0..1_000 {
        // xorshift64*: good enough to spread processes over the range.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = RANGE.start + (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {RANGE:?}");
}
