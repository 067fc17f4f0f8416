//! `apply --watch`: a sync every `sync.interval` until stopped. A failed cycle is reported
//! and retried next interval. Cycles start on a fixed grid (start, start + interval, …): a
//! cycle that outlasts its interval skips the grid points it covered, and those are counted
//! as missed intervals (metric `mtcd_missed_intervals_total`).

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
            // A stop during a cycle lets the cycle end at its next wait (crate::stop): its
            // transfer pods are removed, nothing it was writing is left on its way.
            let result = self.stop_on(&mut stop, self.apply(false)).await;
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
            if self.interrupted() {
                break;
            }
            // The next grid point after now; the ones this cycle ran over are missed.
            let elapsed = started.elapsed();
            let missed = if interval.is_zero() { 0 } else { (elapsed.as_nanos() / interval.as_nanos()) as u64 };
            if missed > 0 {
                report.missed_intervals += missed;
                if let Some(m) = &self.metrics {
                    m.missed(missed);
                }
            }
            let next = started + interval * (missed as u32 + 1);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = &mut stop => break,
            }
        }
        report
    }
}
