//! `exchange_rate_per_minute`: token exchanges per client IP in a fixed one-minute window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug)]
pub struct ExchangeLimiter {
    per_minute: u32,
    window: Mutex<(i64, HashMap<IpAddr, u32>)>,
}

impl ExchangeLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window: Mutex::new((0, HashMap::new())),
        }
    }

    /// True if `ip` may exchange a code now.
    pub fn allow(&self, ip: IpAddr, now: i64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        let minute = now / 60;
        if w.0 != minute {
            *w = (minute, HashMap::new());
        }
        let n = w.1.entry(ip).or_insert(0);
        *n += 1;
        *n <= self.per_minute
    }
}
