//! What one client, and all clients together, may ask of the server: a token bucket per
//! client, and a fixed number of large answers (whole repos, blobs) in flight at once, of which
//! one client may hold at most half.
//!
//! A large answer holds its slot until its body is sent or dropped, so the memory they take
//! together is bounded by the number of slots; a request that finds none free within a short
//! wait, or whose client already holds its share, is answered `503` with `Retry-After` rather
//! than queued without end.
//!
//! A client is known by its IPv4 address, or by the /64 network of its IPv6 address (one host
//! is commonly given a whole /64, so its addresses are one client).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Refusal, ServeConfig};

tokio::task_local! {
    /// The address of the client whose request is being answered: set by the router's guard
    /// around each request, read by [`Slots::take`].
    pub(super) static CLIENT: IpAddr;
}

/// What a client is counted as: its IPv4 address (an IPv4-mapped IPv6 one too), or the /64
/// network of its IPv6 address.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// A token bucket per client (bounded: the oldest are forgotten).
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
        let ip = client_key(ip);
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
    /// Slots one client may hold (or wait for) at once.
    per_client: usize,
    /// Slots held or waited for, by client (only clients with some).
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A held slot: free again (for everyone and for its client's share) when dropped, with the
/// body that carries it.
#[derive(Debug)]
pub(super) struct Slot {
    _free: OwnedSemaphorePermit,
    _share: Share,
}

/// One of a client's share of the slots, given back when dropped.
#[derive(Debug)]
struct Share {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

impl Slots {
    /// `count` slots, of which one client may hold half (at least one).
    pub(super) fn new(count: usize, wait: Duration) -> Self {
        Self {
            free: Arc::new(Semaphore::new(count)),
            wait,
            per_client: (count / 2).max(1),
            held: Arc::default(),
        }
    }

    /// A free slot for the client of the request being answered (see [`CLIENT`]), as
    /// [`Slots::take_for`].
    pub(super) async fn take(&self) -> Result<Slot, Refusal> {
        let client = CLIENT
            .try_with(|ip| *ip)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.take_for(client).await
    }

    /// A free slot for `client`, waiting for one at most the configured time; else the `503`
    /// to answer, at once if `client` already holds its share.
    pub(super) async fn take_for(&self, client: IpAddr) -> Result<Slot, Refusal> {
        let share = self.share(client_key(client)).ok_or_else(|| {
            busy("this address is already being sent as many repos and blobs as one client may take at once: try again when one is done")
        })?;
        let free = match self.free.clone().try_acquire_owned() {
            Ok(free) => free,
            Err(_) => {
                match tokio::time::timeout(self.wait, self.free.clone().acquire_owned()).await {
                    Ok(Ok(free)) => free,
                    _ => return Err(busy(
                        "this node is sending as many repos and blobs as it can: try again shortly",
                    )),
                }
            }
        };
        Ok(Slot {
            _free: free,
            _share: share,
        })
    }

    /// One more of `client`'s share, if it has any left.
    fn share(&self, client: IpAddr) -> Option<Share> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(client).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Share {
            held: self.held.clone(),
            client,
        })
    }
}

/// The `503` of a server (or a client's share of it) that is busy.
pub(super) fn busy(message: &str) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "ServerBusy", message).retry_later()
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
        let slots = Slots::new(4, Duration::from_millis(20));
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let a = slots.take_for(ips[0]).await.unwrap();
        let _b = slots.take_for(ips[0]).await.unwrap();
        let _c = slots.take_for(ips[1]).await.unwrap();
        let _d = slots.take_for(ips[2]).await.unwrap();
        let refused = slots.take_for(ips[1]).await.unwrap_err();
        assert_eq!(refused.status, 503);
        assert_eq!(refused.name, "ServerBusy");
        assert!(refused.retry_after);
        drop(a);
        assert!(
            slots.take_for(ips[1]).await.is_ok(),
            "a freed slot is taken again"
        );
    }

    #[tokio::test]
    async fn one_client_takes_at_most_half_of_the_slots() {
        let slots = Slots::new(8, Duration::from_secs(60));
        let greedy = IpAddr::from([192, 0, 2, 1]);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slots.take_for(greedy).await.unwrap());
        }
        // Refused at once (no wait), although slots are free.
        let refused = tokio::time::timeout(Duration::from_secs(1), slots.take_for(greedy))
            .await
            .expect("refused without waiting")
            .unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.name), (503, "ServerBusy"));
        assert!(refused.retry_after);
        // The same client from another address of its /64 is still the same client.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let mut held6 = Vec::new();
        for i in 0..4 {
            held6.push(slots.take_for(v6(i)).await.unwrap());
        }
        assert!(slots.take_for(v6(99)).await.is_err());
        drop(held.pop());
        assert!(slots.take_for(greedy).await.is_ok(), "its share comes back");
        assert!(slots.held.lock().unwrap().len() <= 2);
        drop((held, held6));
        assert!(slots.held.lock().unwrap().is_empty(), "no client is kept");
        // The slot of a request is its client's (set by the guard).
        let one = Slots::new(2, Duration::ZERO);
        let client = IpAddr::from([192, 0, 2, 7]);
        let _s = CLIENT.scope(client, one.take()).await.unwrap();
        assert!(one.take_for(client).await.is_err());
        assert!(one.take_for(IpAddr::from([192, 0, 2, 8])).await.is_ok());
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_networks() {
        let v4 = IpAddr::from([203, 0, 113, 9]);
        assert_eq!(client_key(v4), v4);
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
    }
}
