//! `mtcd-lab`: start, stop and seed the two-cluster lab. See docs/lab.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mtcd_lab::lab::{self, LabOptions, Profile};

#[derive(Parser)]
#[command(name = "mtcd-lab", about = "Two simulated Kubernetes clusters on one machine, for mtcd's tests and demos")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    /// Directory for kubeconfig, lab.json, certificates, storage and logs.
    #[arg(long)]
    dir: PathBuf,
    /// Profile of the source cluster.
    #[arg(long, value_enum, default_value = "openshift")]
    source_profile: Profile,
    /// Profile of the destination cluster.
    #[arg(long, value_enum, default_value = "openshift")]
    destination_profile: Profile,
}

impl UpArgs {
    fn options(&self) -> LabOptions {
        LabOptions {
            dir: self.dir.clone(),
            source_profile: self.source_profile,
            destination_profile: self.destination_profile,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start both clusters; runs until Ctrl-C unless --detach.
    Up {
        #[command(flatten)]
        args: UpArgs,
        /// Return once both clusters answer, leaving a supervisor running (pid in DIR/lab.pid).
        #[arg(long)]
        detach: bool,
    },
    /// Stop a detached lab and remove every process, network namespace and mount it made.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Create the objects of a multi-document YAML file in a cluster (plus lab.mtcd.io/v1
    /// VolumeData and Image documents).
    Seed {
        #[arg(long)]
        dir: PathBuf,
        /// kubeconfig context: lab-src or lab-dst.
        #[arg(long, default_value = "lab-src")]
        context: String,
        /// YAML file, or - for stdin.
        file: PathBuf,
    },
    #[command(name = "__supervise", hide = true)]
    Supervise {
        #[command(flatten)]
        args: UpArgs,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MTCD_LAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up { args, detach: false } => lab::run_foreground(&args.options()).await?,
        Command::Up { args, detach: true } => {
            let info = lab::up_detached(&args.options()).await?;
            println!(
                "lab ready: kubeconfig {} (contexts lab-src, lab-dst, lab-src-limited, lab-dst-limited, lab-src-alias)",
                info.kubeconfig.display()
            );
        }
        Command::Supervise { args } => lab::supervise(&args.options()).await?,
        Command::Down { dir } => lab::down(&dir).await?,
        Command::Seed { dir, context, file } => {
            let text = if file.as_os_str() == "-" {
                // Bounded like a file: `yes | mtcd-lab seed -` stops at the limit.
                let limit = mtcd_core::spec::files::MAX_SEED_YAML;
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), limit + 1), &mut s)?;
                anyhow::ensure!(s.len() as u64 <= limit, "seed YAML on stdin is over the {} MiB limit", limit >> 20);
                s
            } else {
                mtcd_core::spec::read_bounded_string(&file, mtcd_core::spec::files::MAX_SEED_YAML, "seed file")?
            };
            let report = mtcd_lab::seed::seed(&dir, &context, &text).await?;
            for c in &report.created {
                println!("created {c}");
            }
            if report.files_written > 0 {
                println!("wrote {} volume entries", report.files_written);
            }
            for i in &report.images {
                println!("pushed {i}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // A pod's container: set up its namespaces and mounts, then exec (never returns on
    // success). Checked before anything else runs: no threads may exist for setns/unshare.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__container") {
        let spec = args.get(2).map(String::as_str).unwrap_or("");
        std::process::exit(mtcd_lab::node::container_main(spec));
    }
    // pods/exec: enter a running container's namespaces and exec (single-threaded, as above).
    if args.get(1).map(String::as_str) == Some("__exec") {
        std::process::exit(mtcd_lab::node::exec_main(args.get(2).map(String::as_str).unwrap_or("")));
    }
    init_tracing();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
