//! What the accept loop does when `accept` fails: most often EMFILE/ENFILE (out of file
//! descriptors), which stays true until connections close, so retrying at once only spins and
//! floods the log. As Go's `net/http` does, wait 5 ms after the first failure, doubling up to
//! 1 s while failures continue, and start over after a success; log the first failure of a run
//! and then at most once every 10 s, with how many were not logged.

use std::time::Duration;

use tokio::time::Instant;

const FIRST: Duration = Duration::from_millis(5);
const MAX: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The next wait; zero after a success.
    delay: Duration,
    last_log: Option<Instant>,
    /// Failures not logged since the last line.
    unlogged: u64,
}

impl AcceptBackoff {
    /// Records a failure and returns how long to wait before accepting again.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.delay = if self.delay.is_zero() { FIRST } else { (self.delay * 2).min(MAX) };
        let now = Instant::now();
        if self.last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(
                error = %error,
                retry_in_ms = self.delay.as_millis() as u64,
                not_logged = self.unlogged,
                "accept failed; backing off (out of file descriptors? raise `ulimit -n` or lower http.maxconnections)"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.delay
    }

    /// An accept succeeded: the next failure starts again at 5 ms.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let waits: Vec<u128> = (0..10).map(|_| b.failed(&e).as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.unlogged, 9, "one line for the burst");
        b.succeeded();
        assert_eq!(b.failed(&e).as_millis(), 5);
    }
}
