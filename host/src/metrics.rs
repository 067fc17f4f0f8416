//! `apply --watch --metrics-addr ADDR`: Prometheus metrics of the re-sync loop, served as the
//! Prometheus text format (0.0.4) on `/metrics`, and `/healthz` for a liveness probe. The
//! series (names and labels are in docs/output.md):
//!
//! | series | type | labels |
//! |---|---|---|
//! | `mtcd_last_sync_timestamp_seconds` | gauge | `migration` |
//! | `mtcd_last_success_timestamp_seconds` | gauge | `migration` |
//! | `mtcd_last_sync_success` | gauge (1 or 0) | `migration` |
//! | `mtcd_objects_out_of_sync` | gauge | `migration` |
//! | `mtcd_transferred_bytes_total` | counter | `migration`, `kind` (`image`, `volume`), `name` |
//! | `mtcd_sync_duration_seconds` | histogram | `migration` |
//! | `mtcd_syncs_total` | counter | `migration`, `outcome` |
//! | `mtcd_sync_failures_total` | counter | `migration` |
//! | `mtcd_missed_intervals_total` | counter | — |
//!
//! Names follow Prometheus' conventions: an `mtcd_` prefix, base units (seconds, bytes) as a
//! suffix before `_total` (as `node_network_receive_bytes_total`), `_total` on counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::{ApplyReport, EngineError};
use crate::spec::Spec;

/// The metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationLabels {
    migration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    migration: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    migration: String,
    kind: String,
    name: String,
}

fn duration_histogram() -> Histogram {
    // 1 s … ~68 min: a sync of unchanged objects takes a second, a first volume copy an hour.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 13))
}

/// The re-sync loop's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    last_sync: Family<MigrationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_success: Family<MigrationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_ok: Family<MigrationLabels, Gauge>,
    out_of_sync: Family<MigrationLabels, Gauge>,
    bytes: Family<TransferLabels, Counter>,
    duration: Family<MigrationLabels, Histogram, fn() -> Histogram>,
    syncs: Family<OutcomeLabels, Counter>,
    failures: Family<MigrationLabels, Counter>,
    missed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            last_sync: Family::default(),
            last_success: Family::default(),
            last_ok: Family::default(),
            out_of_sync: Family::default(),
            bytes: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            syncs: Family::default(),
            failures: Family::default(),
            missed: Counter::default(),
        };
        r.register_with_unit(
            "mtcd_last_sync_timestamp",
            "When the last sync of the migration ended (Unix time), whatever its outcome",
            Unit::Seconds,
            m.last_sync.clone(),
        );
        r.register_with_unit(
            "mtcd_last_success_timestamp",
            "When the last sync of the migration that had no failure ended (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        r.register(
            "mtcd_last_sync_success",
            "1 if the last sync of the migration had no failure, else 0",
            m.last_ok.clone(),
        );
        r.register(
            "mtcd_objects_out_of_sync",
            "Objects the last sync found different from the source (to create, update, replace, adopt or prune)",
            m.out_of_sync.clone(),
        );
        r.register_with_unit(
            "mtcd_transferred",
            "Bytes sent per image and volume (registry blobs, rsync's bytes on the wire)",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register_with_unit(
            "mtcd_sync_duration",
            "How long a sync took (lock, plan, images, objects, volume data)",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register("mtcd_syncs", "Syncs run, by outcome (succeeded, failed, error)", m.syncs.clone());
        r.register(
            "mtcd_sync_failures",
            "Syncs that stopped with an error or had a failed object, image or volume",
            m.failures.clone(),
        );
        r.register(
            "mtcd_missed_intervals",
            "sync.interval ticks skipped because a sync outlasted its interval",
            m.missed.clone(),
        );
        *m.registry.lock().expect("metrics registry") = r;
        m
    }

    /// Records one run of `spec`'s migrations: its report, or the error that stopped it.
    pub fn observe(
        &self,
        spec: &Spec,
        result: &Result<ApplyReport, EngineError>,
        started: chrono::DateTime<chrono::Utc>,
    ) {
        let now = chrono::Utc::now();
        let seconds = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
        let ts = now.timestamp_millis() as f64 / 1000.0;
        for m in &spec.migrations {
            let l = MigrationLabels { migration: m.name.clone() };
            let report = result.as_ref().ok().and_then(|r| r.migrations.iter().find(|r| r.migration == m.name));
            let error = result.as_ref().err();
            let outcome = crate::engine::records::outcome(report, error.map(|_| ""));
            self.last_sync.get_or_create(&l).set(ts);
            self.duration.get_or_create(&l).observe(seconds);
            self.syncs.get_or_create(&OutcomeLabels { migration: m.name.clone(), outcome: outcome.into() }).inc();
            if outcome == "succeeded" {
                self.last_success.get_or_create(&l).set(ts);
                self.last_ok.get_or_create(&l).set(1);
            } else {
                self.last_ok.get_or_create(&l).set(0);
                self.failures.get_or_create(&l).inc();
            }
            let Some(r) = report else { continue };
            self.out_of_sync.get_or_create(&l).set(r.drift as i64);
            for i in &r.images {
                let t = TransferLabels { migration: m.name.clone(), kind: "image".into(), name: i.destination.clone() };
                self.bytes.get_or_create(&t).inc_by(i.bytes_sent);
            }
            for v in &r.volumes {
                let t = TransferLabels { migration: m.name.clone(), kind: "volume".into(), name: v.pvc.clone() };
                self.bytes.get_or_create(&t).inc_by(v.stats.bytes_sent);
            }
        }
    }

    /// Starts every migration's counters at 0 (Prometheus' advice: a counter that appears
    /// only at its first increment makes `rate()` miss that increment).
    pub fn init(&self, spec: &Spec) {
        for m in &spec.migrations {
            let _ = self.failures.get_or_create(&MigrationLabels { migration: m.name.clone() });
            for outcome in ["succeeded", "failed", "error"] {
                let _ = self.syncs.get_or_create(&OutcomeLabels { migration: m.name.clone(), outcome: outcome.into() });
            }
        }
    }

    /// `n` intervals were skipped.
    pub fn missed(&self, n: u64) {
        self.missed.inc_by(n);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// New metrics, served on `addr` (see [`serve`]).
pub async fn start(addr: SocketAddr) -> Result<(Arc<Metrics>, tokio::task::JoinHandle<()>), MetricsError> {
    let metrics = Arc::new(Metrics::new());
    let server = serve(addr, metrics.clone()).await?;
    Ok((metrics, server))
}

/// Serves `/metrics` and `/healthz` on `addr` until the returned task is aborted. Binding
/// happens before this returns, so a bad address fails the command at once.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, ctype, body) = match (req.method(), req.uri().path()) {
                            (&hyper::Method::GET, "/metrics") => (
                                StatusCode::OK,
                                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                                metrics.render(),
                            ),
                            (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                            _ => {
                                (StatusCode::NOT_FOUND, "text/plain", "not found: /metrics and /healthz only\n".into())
                            }
                        };
                        Response::builder()
                            .status(status)
                            .header(hyper::header::CONTENT_TYPE, ctype)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_series_is_exposed() {
        let m = Metrics::new();
        m.missed(2);
        let spec_text = "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\n";
        let spec = crate::spec::parse(spec_text, std::path::Path::new("d.toml")).unwrap();
        m.init(&spec);
        assert!(m.render().contains("mtcd_sync_failures_total{migration=\"shop\"} 0"), "{}", m.render());
        let image = crate::engine::ImageReport {
            source: "src/app/web:v1".into(),
            destination: "dst/app/web:v1".into(),
            ok: true,
            up_to_date: false,
            bytes_sent: 4096,
            blobs_sent: 1,
            blobs_skipped: 0,
            blobs_mounted: 0,
            artifacts_copied: 0,
            artifacts_present: 0,
            seconds: 0.1,
            error: None,
        };
        let report = ApplyReport {
            migrations: vec![crate::engine::MigrationReport {
                migration: "shop".into(),
                drift: 3,
                images: vec![image],
                ..Default::default()
            }],
        };
        m.observe(&spec, &Ok(report), chrono::Utc::now());
        let text = m.render();
        for series in [
            "mtcd_last_sync_timestamp_seconds{migration=\"shop\"}",
            "mtcd_last_success_timestamp_seconds{migration=\"shop\"}",
            "mtcd_last_sync_success{migration=\"shop\"} 1",
            "mtcd_objects_out_of_sync{migration=\"shop\"} 3",
            "mtcd_sync_duration_seconds_count{migration=\"shop\"} 1",
            "mtcd_syncs_total{migration=\"shop\",outcome=\"succeeded\"} 1",
            "mtcd_missed_intervals_total 2",
            "mtcd_transferred_bytes_total{migration=\"shop\",kind=\"image\",name=\"dst/app/web:v1\"} 4096",
            "mtcd_sync_failures_total{migration=\"shop\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}
