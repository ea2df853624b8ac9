//! `JetStreamLog` against a real `nats-server -js` (each test starts its own on a free port).

mod cluster;
mod contract;
mod restart;
mod support;
mod webhooks;
