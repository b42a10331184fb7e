//! A per-client token bucket for the report links: a flood from one address gets 429 while
//! everyone else is served. Clients are told apart by their peer address (put the service
//! behind a proxy that keeps one connection per client, or accept the proxy's address as one
//! client). The table is pruned so a flood of addresses cannot grow memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Clients remembered at most; beyond it, idle (full) buckets are forgotten.
const MAX_CLIENTS: usize = 10_000;

impl RateLimiter {
    pub fn new(burst: u32, per_second: u32) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = RateLimiter::new(3, 1);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..3).all(|_| limiter.allow(a, t)));
        assert!(!limiter.allow(a, t));
        assert!(limiter.allow(b, t), "other clients are unaffected");
        assert!(limiter.allow(a, t + Duration::from_secs(1)));
    }
}
