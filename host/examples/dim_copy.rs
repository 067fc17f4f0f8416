//! One Direct Image Migration copy between two plain-HTTP registries, as a process of its
//! own so the benchmark can measure its wall time and peak memory (`/usr/bin/time`).
//!
//! ```text
//! dim_copy SRC_HOST:PORT DST_HOST:PORT REPO:TAG[,DST_TAG] ... [--concurrency N] [--blob-concurrency N]
//! ```
//! Prints one JSON line per image with the engine's own counters (bytes sent, blobs sent,
//! skipped, mounted). Exit status 1 when any image failed.

use mtcd::actions::dim::{self, ImageCopy, ImageRef, RegistryClient};
use mtcd::spec::{DimOptions, Registry, RegistryAuth, RegistryTls};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: dim_copy SRC DST REPO:TAG[,DST_TAG]... [--concurrency N] [--blob-concurrency N]");
    };
    let mut opts = DimOptions { concurrency: 2, blob_concurrency: 6, ..Default::default() };
    let mut copies = vec![];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--concurrency" => opts.concurrency = args.next().unwrap_or_default().parse()?,
            "--blob-concurrency" => opts.blob_concurrency = args.next().unwrap_or_default().parse()?,
            image => {
                let (from, to_tag) = image.split_once(',').unwrap_or((image, ""));
                let source = ImageRef::parse(&format!("{src}/{from}"))?;
                let mut destination = ImageRef::parse(&format!("{dst}/{from}"))?;
                if !to_tag.is_empty() {
                    destination.tag = Some(to_tag.to_string());
                }
                copies.push(ImageCopy { source, destination });
            }
        }
    }
    let registry = |address: &str| Registry {
        address: address.to_string(),
        internal_address: None,
        auth: RegistryAuth::Anonymous,
        tls: RegistryTls::Insecure,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let s = RegistryClient::new(&registry(&src), None)?;
        let d = RegistryClient::new(&registry(&dst), None)?;
        let report = dim::copy_all(&s, &d, &copies, &opts, |_| {}).await;
        let mut failed = false;
        for r in &report.images {
            match &r.outcome {
                Ok(stats) => println!(
                    "{}",
                    serde_json::json!({"image": r.copy.destination.to_string(), "ok": true,
                        "seconds": r.elapsed.as_secs_f64(), "stats": stats})
                ),
                Err(e) => {
                    failed = true;
                    println!("{}", serde_json::json!({"image": r.copy.destination.to_string(), "ok": false, "error": e.to_string()}));
                }
            }
        }
        if failed {
            std::process::exit(1);
        }
        Ok(())
    })
}
