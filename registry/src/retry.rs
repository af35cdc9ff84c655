//! Retries with exponential backoff, shared by pull and push: the loop, the backoff, and each
//! retry reported as an event.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

/// An error that may go away when the request is repeated.
pub(crate) trait Retryable: Sized + std::fmt::Display {
    /// Connection failures, 5xx, 429, a body cut short: worth another attempt.
    fn is_transient(&self) -> bool;
    /// The error reported after `attempts` attempts all failed, the last with `last`.
    fn gave_up(attempts: u32, last: Self) -> Self;
    /// How long the server asked to wait (`Retry-After`), if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// An event that says a transient failure is being retried (`PullEvent::Retrying`,
/// `PushEvent::Retrying`).
pub(crate) trait RetryEvent {
    fn retrying(what: String, attempt: u32, delay: Duration, reason: String) -> Self;
}

/// The longest `Retry-After` honoured: a server asking for more gets this much.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How one pull or push retries, and where it reports each retry.
pub(crate) struct Retry<'a, Ev> {
    /// Further attempts after the first.
    pub(crate) retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub(crate) delay: Duration,
    pub(crate) events: &'a UnboundedSender<Ev>,
}

impl<Ev: RetryEvent> Retry<'_, Ev> {
    /// Runs `op` until it succeeds, fails for good, or the retries are used; each retry is
    /// reported (attempt number, delay, reason) before the wait.
    pub(crate) async fn run<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    // The server's Retry-After when longer than our own backoff.
                    let delay = backoff(self.delay, attempt)
                        .max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
                    tracing::info!(what, attempt, ?delay, error = %e, "retrying");
                    let _ = self.events.send(Ev::retrying(
                        what.to_string(),
                        attempt,
                        delay,
                        e.to_string(),
                    ));
                    tokio::time::sleep(delay).await;
                }
                Err(e) if attempt > 0 && e.is_transient() => {
                    return Err(E::gave_up(attempt + 1, e))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Exponential backoff: `base * 2^(attempt-1)`, capped at 10 s, with up to 25% jitter so that
/// parallel transfers do not retry in lockstep.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = capped.mul_f64(f64::from(nanos % 1000) / 4000.0);
    capped + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let d1 = backoff(base, 1);
        let d3 = backoff(base, 3);
        assert!(d1 >= base && d1 <= base.mul_f64(1.25), "{d1:?}");
        assert!(d3 >= base * 4 && d3 <= (base * 4).mul_f64(1.25), "{d3:?}");
        assert!(backoff(base, 30) <= Duration::from_millis(12500));
    }
}
