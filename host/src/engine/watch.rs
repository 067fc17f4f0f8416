//! `apply --watch`: a sync every `sync.interval` until stopped. A failed cycle is reported
//! and retried next interval.

use std::future::Future;
use std::time::Instant;

use super::{Engine, WatchReport};
use crate::progress::Event;

impl Engine {
    /// Syncs every `sync.interval` until `stop` completes (Ctrl-C in the CLI).
    pub async fn watch(&self, stop: impl Future<Output = ()>) -> WatchReport {
        let interval = self.spec.sync.interval;
        let mut report = WatchReport::default();
        let mut stop = std::pin::pin!(stop);
        loop {
            report.cycles += 1;
            let started = Instant::now();
            let result = self.apply(false).await;
            let seconds = started.elapsed().as_secs_f64();
            let event = match &result {
                Ok(r) => Event::Cycle {
                    cycle: report.cycles,
                    changed: r.changed(),
                    failed: r.failed(),
                    bytes_sent: r.bytes_sent(),
                    seconds,
                    error: None,
                },
                Err(e) => Event::Cycle {
                    cycle: report.cycles,
                    changed: 0,
                    failed: 0,
                    bytes_sent: 0,
                    seconds,
                    error: Some(crate::error_chain(e)),
                },
            };
            report.last_failed = result.as_ref().map_or(true, |r| r.failed() > 0);
            self.events.emit(event);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut stop => break,
            }
        }
        report
    }
}
