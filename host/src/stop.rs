//! Stopping long work without dropping it. A future dropped in the middle of a write leaves
//! the write on its way: a pod create that lands after the cleanup listed, a scale-down that
//! lands after the rollback restored the replicas. So work that writes is never cancelled
//! from outside; it is told to stop, and stops at its next wait, after every write it started
//! has been answered.

use tokio::sync::watch;

/// Why the work must stop (`Some`), read at the waits. A receiver whose sender is gone never
/// says stop.
pub type Stop = watch::Receiver<Option<String>>;

/// A stop signal and its sender.
pub fn channel() -> (watch::Sender<Option<String>>, Stop) {
    watch::channel(None)
}

/// A signal that never says stop.
pub fn never() -> Stop {
    channel().1
}

/// Resolves with the reason once `stop` says stop (at once if it already has); never, if it
/// cannot.
pub async fn stopped(mut stop: Stop) -> String {
    match stop.wait_for(Option::is_some).await {
        Ok(why) => why.clone().unwrap_or_default(),
        Err(_) => std::future::pending().await,
    }
}

/// `wait`, ended early by `stop` with its reason. Only for waits: a wait only reads, so it may
/// end anywhere; work that writes is told, never cut.
pub async fn unless<T>(stop: &Stop, wait: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::select! {
        r = wait => Ok(r),
        why = stopped(stop.clone()) => Err(why),
    }
}

/// The first of two signals to say stop.
pub async fn either(a: &Stop, b: &Stop) -> String {
    tokio::select! {
        why = stopped(a.clone()) => why,
        why = stopped(b.clone()) => why,
    }
}

/// Whether `stop` has said stop.
pub fn is_stopped(stop: &Stop) -> bool {
    stop.borrow().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_is_heard_once_said_and_never_from_a_signal_that_cannot_say_it() {
        let (tx, rx) = channel();
        assert!(!is_stopped(&rx));
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), either(&rx, &never())).await;
        assert!(quiet.is_err(), "nothing said yet");
        tx.send(Some("interrupted".into())).unwrap();
        assert_eq!(either(&never(), &rx).await, "interrupted");
        assert!(is_stopped(&rx));
        let gone = tokio::time::timeout(std::time::Duration::from_millis(20), stopped(never())).await;
        assert!(gone.is_err(), "a signal without a sender never stops");
    }
}
