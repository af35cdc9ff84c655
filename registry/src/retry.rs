//! Retries with exponential backoff, shared by pull and push.

use std::future::Future;
use std::time::Duration;

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

/// The longest `Retry-After` honoured: a server asking for more gets this much.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Runs `op` until it succeeds, fails for good, or `retries` retries are used; `on_retry`
/// hears of each retry (attempt number, delay, reason) before the wait.
pub(crate) async fn with_retries<T, E, F, Fut>(
    retries: u32,
    base_delay: Duration,
    what: &str,
    mut on_retry: impl FnMut(u32, Duration, &E),
    mut op: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < retries => {
                attempt += 1;
                // The server's Retry-After when longer than our own backoff.
                let delay = backoff(base_delay, attempt)
                    .max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
                tracing::info!(what, attempt, ?delay, error = %e, "retrying");
                on_retry(attempt, delay, &e);
                tokio::time::sleep(delay).await;
            }
            Err(e) if attempt > 0 && e.is_transient() => return Err(E::gave_up(attempt + 1, e)),
            Err(e) => return Err(e),
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
