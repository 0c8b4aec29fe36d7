//! `exchange_rate_per_minute`: token exchanges per client IP in a fixed one-minute window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Clients counted separately per window: about 3.3 MB at most (docs/security.md).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    counts: HashMap<IpAddr, u32>,
    /// Clients first seen once `counts` is full share this one count: a flood of addresses
    /// cannot turn the limit off (the limiter fails closed for newcomers, not open).
    overflow: u32,
}

#[derive(Debug)]
pub struct ExchangeLimiter {
    per_minute: u32,
    window: Mutex<Window>,
}

impl ExchangeLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, window: Mutex::new(Window::default()) }
    }

    /// True if `ip` may exchange a code now. IPv6 clients are counted per /64 (one host owns
    /// a whole /64 and could rotate through it).
    pub fn allow(&self, ip: IpAddr, now: i64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = match ip {
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
            v4 => v4,
        };
        let Ok(mut w) = self.window.lock() else { return false };
        let minute = now / 60;
        if w.minute != minute {
            *w = Window { minute, ..Window::default() };
        }
        let n = if w.counts.len() >= MAX_TRACKED && !w.counts.contains_key(&key) {
            &mut w.overflow
        } else {
            w.counts.entry(key).or_insert(0)
        };
        *n = n.saturating_add(1);
        *n <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_at_its_key_bound_shares_one_overflow_bucket_instead_of_failing_open() {
        let l = ExchangeLimiter::new(2);
        for i in 0..MAX_TRACKED as u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), 60));
        }
        // Unknown clients beyond the bound share one bucket of `per_minute`.
        let fresh = |i: u32| IpAddr::from((0xC000_0000 + i).to_be_bytes());
        assert!(l.allow(fresh(1), 60));
        assert!(l.allow(fresh(2), 60));
        assert!(!l.allow(fresh(3), 60), "a full limiter let an unknown client through");
        // Tracked clients keep their own count; the next window starts empty.
        assert!(l.allow(IpAddr::from(7u32.to_be_bytes()), 60));
        assert!(l.allow(fresh(3), 120));
    }
}
