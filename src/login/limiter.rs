//! `exchange_rate_per_minute`: token exchanges per client IP in a fixed one-minute window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct ExchangeLimiter {
    per_minute: u32,
    window: Mutex<(i64, HashMap<IpAddr, u32>)>,
}

impl ExchangeLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, window: Mutex::new((0, HashMap::new())) }
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
        if w.0 != minute {
            *w = (minute, HashMap::new());
        }
        if w.1.len() >= MAX_TRACKED && !w.1.contains_key(&key) {
            // Bounded memory; the global cap on exchanges in flight still applies.
            return true;
        }
        let n = w.1.entry(key).or_insert(0);
        *n += 1;
        *n <= self.per_minute
    }
}
