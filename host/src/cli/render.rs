//! Rendering the engine's events while it runs: live bars on a terminal (indicatif), plain
//! lines otherwise, or one JSON object per line with `--output json` (docs/output.md). Human
//! output goes to stderr, so stdout keeps only the report.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Output;
use super::errors::readable;
use crate::actions::dvm::Phase;
use crate::progress::{Event, ImagePhase};

/// Consumes events until the engine drops its sender.
pub async fn events(mut rx: UnboundedReceiver<Event>, output: Output) {
    match output {
        Output::Json => {
            while let Some(e) = rx.recv().await {
                if let Ok(line) = serde_json::to_string(&e) {
                    println!("{line}");
                }
            }
        }
        Output::Human => {
            let mut r = Human::new(std::io::stderr().is_terminal());
            while let Some(e) = rx.recv().await {
                r.event(e);
            }
            r.finish();
        }
    }
}

/// The human renderer: bars for volumes and images on a terminal, a line per state change
/// otherwise. Warnings and failures are printed once, as they happen.
struct Human {
    bars: Option<MultiProgress>,
    live: HashMap<String, ProgressBar>,
    /// Object failures with the same error are printed once, then counted.
    failures: super::errors::Grouped,
}

impl Human {
    fn new(tty: bool) -> Human {
        let bars = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Human { bars, live: HashMap::new(), failures: Default::default() }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(b) => {
                let _ = b.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn bar(&mut self, key: &str, total: u64) -> Option<&ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = self.live.entry(key.to_string()).or_insert_with(|| {
            let b = bars.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(
                    "  {prefix:30!} {bar:30} {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(key.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Some(bar)
    }

    fn done(&mut self, key: &str) {
        if let Some(b) = self.live.remove(key) {
            b.finish_and_clear();
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Warning { migration, message } => match migration {
                Some(m) => self.line(format!("warning: migration {m}: {}", readable(&message))),
                None => self.line(format!("warning: {}", readable(&message))),
            },
            Event::Resource { object, ok: false, error, .. } => {
                if let Some(line) = self.failures.failure(&object, error.as_deref().unwrap_or_default()) {
                    self.line(line);
                }
            }
            Event::Resource { .. } => {}
            Event::Image { image, phase, bytes_done, bytes_total, error, seconds, bytes_sent, .. } => match phase {
                ImagePhase::Started | ImagePhase::Copying => {
                    if let Some(b) = self.bar(&image, bytes_total) {
                        b.set_length(bytes_total);
                        b.set_position(bytes_done);
                    } else if phase == ImagePhase::Started {
                        self.line(format!("  image {image}: copying {}", human_bytes(bytes_total)));
                    }
                }
                ImagePhase::Done => {
                    self.done(&image);
                    self.line(format!("  image {image}: done, {} sent in {seconds:.1}s", human_bytes(bytes_sent)));
                }
                ImagePhase::Failed => {
                    self.done(&image);
                    let error = error.unwrap_or_default();
                    super::errors::printed(&error);
                    self.line(format!("  image {image}: FAILED: {}", readable(&error)));
                }
            },
            Event::Volume { pvc, phase, attempt, progress, message, .. } => match (progress, phase) {
                (Some(p), _) => {
                    let total = if p.percent > 0 { p.bytes.saturating_mul(100) / u64::from(p.percent) } else { 0 };
                    if let Some(b) = self.bar(&pvc, total) {
                        b.set_length(total.max(p.bytes));
                        b.set_position(p.bytes);
                        b.set_message(p.eta_seconds.map(|s| format!("{} left", clock(s))).unwrap_or_default());
                    }
                }
                (None, Phase::Done) => {
                    self.done(&pvc);
                    self.line(format!("  {pvc}: done"));
                }
                (None, phase) => {
                    if matches!(phase, Phase::Failed) {
                        self.done(&pvc);
                    }
                    match message {
                        Some(m) => self.line(format!("  {pvc}: {}: {m}", phase_word(phase))),
                        None => self.line(format!("  {pvc}: {} (attempt {attempt})", phase_word(phase))),
                    }
                }
            },
            Event::Velero { migration, object, phase } => {
                self.line(format!("  migration {migration}: {object}: {phase}"))
            }
            Event::Hook { migration, phase, hook, ok, error, .. } => match (ok, error) {
                (true, _) => self.line(format!("{phase} hook {hook} (migration {migration}): ok")),
                (false, e) => {
                    let e = e.unwrap_or_default();
                    super::errors::printed(&e);
                    self.line(format!("{phase} hook {hook} (migration {migration}): FAILED: {}", readable(&e)))
                }
            },
            Event::Quiesced { scaled, suspended, .. } => self.line(format!(
                "quiesced the source: {} workload(s) scaled to 0, {} CronJob(s) suspended",
                scaled.len(),
                suspended.len()
            )),
            Event::QuiesceWaiting { waiting_on, seconds, .. } => self.line(format!(
                "waiting for {} workload(s) to stop ({seconds}s): {}",
                waiting_on.len(),
                waiting_on.join(", ")
            )),
            Event::VerifyWaiting { waiting_on, seconds, .. } => self.line(format!(
                "waiting for {} destination workload(s) to be available ({seconds}s): {}",
                waiting_on.len(),
                waiting_on.join(", ")
            )),
            Event::ApplyWaiting { waiting_on, seconds, .. } => self.line(format!(
                "waiting for {} object(s) the destination makes ({seconds}s): {}",
                waiting_on.len(),
                waiting_on.join(", ")
            )),
            Event::LockWaiting { migration, lease, holder, held_seconds, seconds } => self.line(format!(
                "migration {migration}: waiting for the lock {lease}, held by {holder} for {held_seconds}s ({seconds}s waited)"
            )),
            Event::Step { migration, step } => self.line(format!("migration {migration}: {step}")),
            // A cycle's line is that cycle's report: stdout, like every report.
            Event::Cycle { cycle, changed, failed, bytes_sent, seconds, error } => {
                self.flush_failures();
                match error {
                    None => println!(
                        "cycle {cycle}: {changed} object(s) changed, {} sent, {failed} failed, {seconds:.1}s",
                        human_bytes(bytes_sent)
                    ),
                    Some(e) => println!("cycle {cycle}: failed: {} (retrying next interval)", readable(&e)),
                }
            }
        }
    }

    fn flush_failures(&mut self) {
        for line in self.failures.flush() {
            self.line(line);
        }
    }

    fn finish(&mut self) {
        self.flush_failures();
        for (_, b) in self.live.drain() {
            b.finish_and_clear();
        }
    }
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Cleanup => "cleanup",
        Phase::Pending => "pending",
        Phase::TunnelUp => "tunnel up",
        Phase::Transferring => "transferring",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

/// `1:02:03` / `2:03`: how long, the way rsync and most progress bars print it.
pub fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_sizes_read_like_rsync() {
        assert_eq!(clock(59), "0:59");
        assert_eq!(clock(3723), "1:02:03");
        assert_eq!(clock(90_000), "25:00:00");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
