//! Failed-login backoff, per client address and per user name: after `FREE_FAILURES` failures,
//! each further attempt must wait (1 s, doubling, capped at `MAX_WAIT`) and is answered 429 in
//! the meantime, whether its password is right or not. A success clears the count. Guessing
//! passwords then costs an attacker time that grows with each miss, on any one address or
//! any one account, while a user who mistyped once is not slowed at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before any wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait one more failure can impose.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Entries older than this with no new failure are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most, so a flood of distinct names cannot grow memory without bound; past
/// it, the stalest go first.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Addr(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    until: Instant,
}

#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<Who, Entry>>,
}

fn keys(addr: Option<IpAddr>, user: Option<&str>) -> impl Iterator<Item = Who> {
    addr.map(Who::Addr).into_iter().chain(user.filter(|u| !u.is_empty()).map(|u| Who::User(u.to_string())))
}

impl Throttle {
    /// How long the caller must still wait, if it must.
    pub fn wait(&self, addr: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap();
        keys(addr, user)
            .filter_map(|k| entries.get(&k))
            .map(|e| e.until.saturating_duration_since(now))
            .max()
            .filter(|d| !d.is_zero())
    }

    pub fn failed(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
            if entries.len() >= MAX_ENTRIES {
                let mut lasts: Vec<Instant> = entries.values().map(|e| e.last).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                entries.retain(|_, e| e.last > cut);
            }
        }
        for k in keys(addr, user) {
            let e = entries.entry(k).or_insert(Entry { failures: 0, last: now, until: now });
            if now.duration_since(e.last) >= FORGET_AFTER {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now;
            if e.failures >= FREE_FAILURES {
                let doublings = (e.failures - FREE_FAILURES).min(16);
                e.until = now + (Duration::from_secs(1) * (1u32 << doublings)).min(MAX_WAIT);
            }
        }
    }

    pub fn succeeded(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let mut entries = self.entries.lock().unwrap();
        for k in keys(addr, user) {
            entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_free_failures_and_clears_on_success() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(Some(a), Some("alice"));
            assert!(t.wait(Some(a), Some("alice")).is_none());
        }
        t.failed(Some(a), Some("alice"));
        assert!(t.wait(Some(a), Some("alice")).is_some());
        // The same user from elsewhere, and another user from the same address, wait too.
        assert!(t.wait(Some("10.0.0.2".parse().unwrap()), Some("alice")).is_some());
        assert!(t.wait(Some(a), Some("bob")).is_some());
        assert!(t.wait(Some("10.0.0.2".parse().unwrap()), Some("bob")).is_none());
        for _ in 0..40 {
            t.failed(Some(a), Some("alice"));
        }
        assert!(t.wait(Some(a), None).unwrap() <= MAX_WAIT);
        t.succeeded(Some(a), Some("alice"));
        assert!(t.wait(Some(a), Some("alice")).is_none());
    }
}
