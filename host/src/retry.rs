//! The one retry policy for requests to an API server: what a real API server asks to be
//! retried (conflicts, throttling, server errors, a dropped connection) is retried with
//! exponential backoff and jitter, a few times; anything else is the request's own fault and
//! comes back at once with the server's message. Every retry loop in mtcd goes through here.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// 0.2 s, 0.4 s, 0.8 s, 1.6 s (±jitter): about 3 s before giving up, so a dead cluster is
/// reported quickly instead of after minutes of silent retries.
pub fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

/// Whether a failed request may succeed if sent again.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 409 | 429 | 500..=599) && s.reason != "AlreadyExists",
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `f` under [`policy`], retrying [`transient`] failures.
pub async fn kube<T, F, Fut>(f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    f.retry(policy()).sleep(tokio::time::sleep).when(transient).await
}
