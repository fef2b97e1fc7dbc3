//! Bounded polling for the TLS, TCP and UDP probes. The Go helpers retry connection and read
//! errors while the configuration converges, but fail at once on an answer that was read and
//! is wrong; [`Attempt`] keeps the two apart.

use std::time::{Duration, Instant};

/// The longest a single connect, handshake or read may take (Go's request timeout).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed attempt (Go's poll interval for these helpers).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why one attempt did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Connecting, the handshake or a read failed: the next attempt may pass.
    Retry(String),
    /// An answer arrived and is wrong: the case fails now.
    Fatal(String),
}

impl Attempt {
    pub fn retry(e: impl std::fmt::Display) -> Self {
        Self::Retry(e.to_string())
    }

    /// The reason, whichever kind of failure it was.
    pub fn into_reason(self) -> String {
        match self {
            Self::Retry(e) | Self::Fatal(e) => e,
        }
    }
}

/// Runs `attempt` until it passes, fails fatally, or `budget` is spent (one attempt at
/// least). `attempt` gets the I/O timeout to use: what is left of the budget, between 1 s
/// and [`IO_TIMEOUT`]. The error is the fatal or the last retryable reason.
pub fn poll<T>(
    budget: Duration,
    mut attempt: impl FnMut(Duration) -> Result<T, Attempt>,
) -> Result<T, String> {
    let deadline = Instant::now() + budget;
    loop {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), IO_TIMEOUT);
        match attempt(timeout) {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) if Instant::now() >= deadline => return Err(e),
            Err(Attempt::Retry(_)) => std::thread::sleep(RETRY_PAUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_a_pass_and_stops_at_a_fatal_answer() {
        let mut n = 0;
        let got = poll(Duration::from_secs(5), |_| {
            n += 1;
            if n < 3 {
                Err(Attempt::retry("refused"))
            } else {
                Ok(n)
            }
        });
        assert_eq!(got, Ok(3));

        let mut n = 0;
        let got: Result<(), String> = poll(Duration::from_secs(5), |_| {
            n += 1;
            Err(Attempt::Fatal("wrong pod".into()))
        });
        assert_eq!((got, n), (Err("wrong pod".into()), 1));
    }

    #[test]
    fn a_spent_budget_still_makes_one_attempt_and_reports_its_error() {
        let mut n = 0;
        let got: Result<(), String> = poll(Duration::ZERO, |timeout| {
            n += 1;
            assert_eq!(timeout, Duration::from_secs(1));
            Err(Attempt::retry("reset"))
        });
        assert_eq!((got, n), (Err("reset".into()), 1));
    }
}
