//! What one client, and all clients together, may ask of the server: a token bucket per
//! client address, and a fixed number of large answers (whole repos, blobs) in flight at once.
//!
//! A large answer holds its slot until its body is sent or dropped, so the memory they take
//! together is bounded by the number of slots; a request that finds none free within a short
//! wait is answered `503` with `Retry-After` rather than queued without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Refusal, ServeConfig};

/// A token bucket per client address (bounded: the oldest are forgotten).
pub(super) struct Limiter {
    pub(super) config: ServeConfig,
    pub(super) buckets: HashMap<IpAddr, (f64, Instant)>,
}

const MAX_TRACKED_CLIENTS: usize = 10_000;

impl Limiter {
    pub(super) fn new(config: ServeConfig) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
        }
    }

    pub(super) fn allow(&mut self, ip: IpAddr) -> bool {
        let now = Instant::now();
        if self.buckets.len() >= MAX_TRACKED_CLIENTS && !self.buckets.contains_key(&ip) {
            let full = self.config.burst;
            let rate = self.config.requests_per_second;
            // Forget clients whose buckets have refilled: they lose nothing.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < full);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.config.burst, now));
        *tokens = (*tokens
            + now.duration_since(*at).as_secs_f64() * self.config.requests_per_second)
            .min(self.config.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Slots for large answers.
#[derive(Clone)]
pub(super) struct Slots {
    free: Arc<Semaphore>,
    wait: Duration,
}

/// A held slot: free again when dropped (with the body that carries it).
pub(super) type Slot = OwnedSemaphorePermit;

impl Slots {
    pub(super) fn new(count: usize, wait: Duration) -> Self {
        Self {
            free: Arc::new(Semaphore::new(count)),
            wait,
        }
    }

    /// A free slot, waiting for one at most the configured time; else the `503` to answer.
    pub(super) async fn take(&self) -> Result<Slot, Refusal> {
        if let Ok(slot) = self.free.clone().try_acquire_owned() {
            return Ok(slot);
        }
        match tokio::time::timeout(self.wait, self.free.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(busy()),
        }
    }
}

fn busy() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServerBusy",
        "this node is sending as many repos and blobs as it can: try again shortly",
    )
    .retry_later()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_refuses() {
        let mut l = Limiter::new(ServeConfig {
            requests_per_second: 0.001,
            burst: 5.0,
            ..ServeConfig::default()
        });
        let ip = IpAddr::from([127, 0, 0, 1]);
        let allowed = (0..20).filter(|_| l.allow(ip)).count();
        assert_eq!(allowed, 5);
        assert!(
            l.allow(IpAddr::from([127, 0, 0, 2])),
            "another client has its own budget"
        );
    }

    #[tokio::test]
    async fn past_the_slots_a_request_is_told_to_come_back() {
        let slots = Slots::new(2, Duration::from_millis(20));
        let a = slots.take().await.unwrap();
        let _b = slots.take().await.unwrap();
        let refused = slots.take().await.unwrap_err();
        assert_eq!(refused.status, 503);
        assert_eq!(refused.name, "ServerBusy");
        assert!(refused.retry_after);
        drop(a);
        assert!(slots.take().await.is_ok(), "a freed slot is taken again");
    }
}
