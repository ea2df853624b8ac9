//! Integration tests: a real server on port 0, real clients over real sockets.
//!
//! One module per door; `util` holds the clients and checks they share.

mod cluster;
mod cluster_queues;
mod cluster_tls;
mod cluster_webhooks;
mod demo;
mod fanout;
mod inbound;
mod limits;
mod nats_cluster;
mod ops;
mod poll;
mod rest;
mod resume;
mod smoke;
mod sockjs;
mod sse;
mod stomp;
mod util;
mod webhooks;
mod ws;
