//! Outbound webhooks in cluster mode: NOT IMPLEMENTED YET (a documented partial).
//!
//! The planned design (see the crate docs): endpoints in the KV bucket `<stream>_webhooks`
//! watched by every node into an [`EndpointSet`]; deliveries in the work-queue stream
//! `<stream>_DLV` written by an "outbox" durable pull consumer on the events stream (the event
//! log is the outbox, the durable consumer the dispatch cursor; `Nats-Msg-Id` =
//! `<event id>.<endpoint id>` dedupes a redo after a crash); attempts in `<stream>_ATTEMPTS`.
//!
//! Until then every write answers [`LogError::Unavailable`], so an endpoint can never be
//! created that would silently get no deliveries, and reads answer "nothing".

use std::{collections::HashSet, sync::Arc};

use futures::future::{BoxFuture, FutureExt};
use herald_core::{
    Endpoint, LogError, Webhooks,
    webhook::{
        DeliveryRecord, Due, EndpointChange, EndpointSet, NewDelivery, Outcome, QueueStats, Signal,
        Status,
    },
};

use crate::{NatsError, NatsOptions, log::Shared};

/// What every write answers.
pub(crate) const NOT_YET: &str = "webhooks in cluster mode are not implemented yet";

fn not_yet<T: Send + 'static>() -> BoxFuture<'static, Result<T, LogError>> {
    futures::future::ready(Err(LogError::Unavailable(NOT_YET.into()))).boxed()
}

/// The [`Webhooks`] of a [`crate::JetStreamLog`] (partial, see the module docs).
pub(crate) struct NatsWebhooks {
    endpoints: EndpointSet,
    signal: Arc<Signal>,
}

impl NatsWebhooks {
    pub(crate) async fn open(_shared: Arc<Shared>, _opts: &NatsOptions) -> Result<Self, NatsError> {
        Ok(Self {
            endpoints: EndpointSet::new(),
            signal: Arc::default(),
        })
    }

    pub(crate) async fn close(&self) {}
}

impl Webhooks for NatsWebhooks {
    fn create(&self, _endpoint: Endpoint) -> BoxFuture<'_, Result<Endpoint, LogError>> {
        not_yet()
    }

    fn modify(
        &self,
        _id: &str,
        _change: EndpointChange,
    ) -> BoxFuture<'_, Result<Option<Endpoint>, LogError>> {
        not_yet()
    }

    fn delete(&self, _id: &str) -> BoxFuture<'_, Result<bool, LogError>> {
        not_yet()
    }

    fn get(&self, id: &str) -> Option<Endpoint> {
        self.endpoints.get(id).map(|c| c.endpoint.clone())
    }

    fn list(&self) -> Vec<Endpoint> {
        self.endpoints
            .list()
            .into_iter()
            .map(|c| c.endpoint.clone())
            .collect()
    }

    fn enqueue(&self, _deliveries: Vec<NewDelivery>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        not_yet()
    }

    fn due<'a>(
        &'a self,
        _endpoint: &'a str,
        _now_ms: i64,
        _limit: usize,
        _skip: &'a HashSet<u64>,
    ) -> BoxFuture<'a, Result<Due, LogError>> {
        futures::future::ready(Ok((Vec::new(), None))).boxed()
    }

    fn record(&self, _outcomes: Vec<Outcome>) -> BoxFuture<'_, Result<(), LogError>> {
        not_yet()
    }

    fn deliveries<'a>(
        &'a self,
        _endpoint: &'a str,
        _status: Option<Status>,
        _after: u64,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>, LogError>> {
        futures::future::ready(Ok(Vec::new())).boxed()
    }

    fn retry(
        &self,
        _endpoint: &str,
        _delivery: Option<u64>,
        _since_ms: i64,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        not_yet()
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStats>, LogError>> {
        futures::future::ready(Ok(Vec::new())).boxed()
    }

    fn signal(&self) -> Arc<Signal> {
        self.signal.clone()
    }
}
