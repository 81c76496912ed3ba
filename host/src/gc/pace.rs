//! Pacing: a run inside a server may keep storage busy for only a share of the time, so the
//! requests the server is there for keep most of the machine (and, on a filesystem, each push's
//! durability barrier does not have to flush a flood of deletions).

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Pacer {
    /// Share of wall time the run may work (1.0: flat out).
    share: f64,
    since: Mutex<Instant>,
}

impl Pacer {
    pub fn new(share: f64) -> Pacer {
        Pacer { share: share.clamp(0.01, 1.0), since: Mutex::new(Instant::now()) }
    }

    /// Called between units of work: sleeps so that the work since the last call is `share` of
    /// the time.
    pub async fn breathe(&self) {
        if self.share >= 1.0 {
            return;
        }
        let worked = {
            let mut since = self.since.lock().unwrap();
            let w = since.elapsed();
            *since = Instant::now();
            w
        };
        let rest = worked.mul_f64(1.0 / self.share - 1.0).min(Duration::from_secs(5));
        tokio::time::sleep(rest).await;
        *self.since.lock().unwrap() = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rests_in_proportion_to_the_work() {
        let p = Pacer::new(0.5);
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        p.breathe().await;
        assert!(t.elapsed() >= Duration::from_millis(45), "{:?}", t.elapsed());
        let full = Pacer::new(1.0);
        let t = Instant::now();
        full.breathe().await;
        assert!(t.elapsed() < Duration::from_millis(5));
    }
}
