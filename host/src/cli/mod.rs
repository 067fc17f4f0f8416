//! The `mtcd` command line: a thin layer over the library. Each subcommand is a struct with
//! a `run`; errors travel up as `anyhow` with context and are printed once, here, with their
//! cause chain.

mod errors;
mod plan;
mod plugin;
mod render;
mod report;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use plugin::PluginCommand;
pub use session::Session;

/// Declarative migration of Kubernetes applications between clusters.
#[derive(Debug, Parser)]
#[command(name = "mtcd", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// kubeconfig to read contexts from (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, env = "MTCD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// `human` for people, `json` for scripts (one JSON document, or JSON lines for progress).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// More logging (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `apply` would change. Exit code 0: nothing to do, 2: changes pending, 1: error.
    Plan(PlanArgs),
    /// Make the destination match the desired state (stage sync; workloads stay at 0 replicas
    /// until cutover unless `start_workloads = true`).
    Apply(ApplyArgs),
    /// Quiesce the source, run a final sync and start the workloads on the destination.
    Cutover(CutoverArgs),
    /// Undo a cutover on the source side: restore replicas and CronJobs; scale the destination
    /// back to 0. Never deletes data.
    Rollback(RollbackArgs),
    /// Where each migration stands.
    Status(FileArgs),
    /// Remove everything mtcd created for transfers (pods, services, routes, secrets).
    Cleanup(FileArgs),
    /// Print (or apply, or delete) what runs the scheduled re-sync inside a cluster: RBAC,
    /// the desired file as a ConfigMap, a CronJob per migration (docs/in-cluster.md).
    Deploy(crate::deploy::DeployArgs),
    /// Write and test WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The desired-state file (TOML, version 1; see docs/desired-state.md).
    pub file: PathBuf,
    /// Only this migration of the file (repeat for several; default: all of them).
    #[arg(long = "migration", value_name = "NAME")]
    pub migrations: Vec<String>,
}

/// A desired-state file and what the command line may allow beyond it.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Take over destination objects mtcd did not create (as `adopt = true` does).
    #[arg(long)]
    pub adopt: bool,
    /// Replace (delete and recreate) objects of any kind whose change touches an immutable
    /// field; without it only the kinds in `replace_kinds` are.
    #[arg(long)]
    pub allow_replace: bool,
}

impl PlanArgs {
    fn options(&self) -> crate::engine::Options {
        crate::engine::Options { adopt: self.adopt, allow_replace: self.allow_replace, ..Default::default() }
    }
}

#[derive(Debug, Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// After a failure, leave the source quiesced instead of restoring it.
    #[arg(long)]
    pub keep_source_quiesced: bool,
    /// Do not wait for the destination's workloads to become available.
    #[arg(long)]
    pub no_verify: bool,
    /// When the destination does not become available, roll back (source restored,
    /// destination held at 0).
    #[arg(long)]
    pub rollback_on_failure: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub file: FileArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// For the commands that hold the migrations' locks (engine::lease).
#[derive(Debug, Args)]
pub struct LockArgs {
    /// How long to wait for a migration's lock another run holds before giving up
    /// (`0s`: refuse at once; default 40s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub file: PlanArgs,
    /// Keep re-syncing every `sync.interval` until stopped (Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    /// The cron schedule this run belongs to (what `mtcd deploy` passes to a CronJob's run):
    /// the run record's next sync time is computed from it.
    #[arg(long, value_name = "CRON", conflicts_with = "watch", value_parser = parse_schedule)]
    pub schedule: Option<crate::deploy::cron::Schedule>,
    /// With `--watch`: serve Prometheus metrics on ADDR (`/metrics`) and `/healthz`.
    #[arg(long, value_name = "ADDR", requires = "watch")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

fn parse_schedule(s: &str) -> Result<crate::deploy::cron::Schedule, String> {
    crate::deploy::cron::Schedule::parse(s).map_err(|e| e.reason)
}

/// What a finished command tells the process.
pub enum Exit {
    Success,
    /// `plan` found changes to make.
    Changes,
    /// The command ran but part of it failed (already reported).
    Failed,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose, cli.global.output);
    crate::tls::init();
    let output = cli.global.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Changes) => ExitCode::from(2),
        Ok(Exit::Failed) => ExitCode::from(1),
        Err(e) => {
            errors::report_error(&e, output);
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let global = cli.global;
    let none = crate::engine::Options::default();
    let mut next_sync = crate::engine::NextSync::None;
    let mut metrics_addr = None;
    let (options, file, command) = match cli.command {
        Command::Plugin(c) => return plugin::run(c),
        Command::Deploy(a) => return crate::deploy::run(a, &global).await.map(|()| Exit::Success),
        Command::Plan(a) => (a.options(), a.file, Lifecycle::Plan),
        Command::Apply(a) => {
            let options = crate::engine::Options { lock_wait: a.lock.lock_wait, ..a.file.options() };
            if let Some(s) = a.schedule {
                next_sync = crate::engine::NextSync::Cron(s);
            }
            metrics_addr = a.metrics_addr;
            (options, a.file.file, if a.watch { Lifecycle::Watch } else { Lifecycle::Apply })
        }
        Command::Cutover(a) => (
            crate::engine::Options { lock_wait: a.lock.lock_wait, ..a.plan.options() },
            a.plan.file,
            Lifecycle::Cutover(crate::engine::CutoverFlags {
                keep_source_quiesced: a.keep_source_quiesced,
                no_verify: a.no_verify,
                rollback_on_failure: a.rollback_on_failure,
            }),
        ),
        Command::Rollback(a) => {
            (crate::engine::Options { lock_wait: a.lock.lock_wait, ..none }, a.file, Lifecycle::Rollback)
        }
        Command::Status(a) => (none, a, Lifecycle::Status),
        Command::Cleanup(a) => (none, a, Lifecycle::Cleanup),
    };
    let (events, rx) = crate::progress::Events::channel();
    let renderer = tokio::spawn(render::events(rx, global.output));
    let result = match Session::open(&global, &file.file, &file.migrations, events).await {
        Ok(mut session) => {
            session.engine.options = options;
            if matches!(command, Lifecycle::Watch) {
                next_sync = crate::engine::NextSync::Interval(session.engine.spec.sync.interval);
            }
            session.engine.next_sync = next_sync;
            match metrics_addr {
                Some(addr) => match crate::metrics::start(addr).await {
                    Ok((metrics, server)) => {
                        metrics.init(&session.engine.spec);
                        session.engine.metrics = Some(metrics);
                        let r = command.run(session.engine).await;
                        server.abort();
                        r
                    }
                    Err(e) => Err(e.into()),
                },
                None => command.run(session.engine).await,
            }
        }
        Err(e) => Err(e),
    };
    // The engine (and with it every sender) is gone: the renderer drains what is left.
    let _ = renderer.await;
    let (exit, report) = result?;
    report.print(global.output, global.verbose > 0);
    Ok(exit)
}

/// The commands that work on a desired-state file against both clusters.
enum Lifecycle {
    Plan,
    Apply,
    Watch,
    Cutover(crate::engine::CutoverFlags),
    Rollback,
    Status,
    Cleanup,
}

impl Lifecycle {
    /// Runs the command; what it returns is printed after the last event.
    async fn run(self, engine: crate::engine::Engine) -> anyhow::Result<(Exit, report::Report)> {
        use report::Report;
        Ok(match self {
            Lifecycle::Plan => {
                let planned = engine.plan(false).await?;
                // A type that could not be read is a failed plan (the plan says which).
                let stuck = planned.plan.unread().next().is_some()
                    || planned.plan.blocked().next().is_some()
                    || planned.plan.failed_checks(true).next().is_some();
                let exit = match (stuck, planned.plan.pending()) {
                    (true, _) => Exit::Failed,
                    (false, 0) => Exit::Success,
                    (false, _) => Exit::Changes,
                };
                (exit, Report::Plan(planned.plan))
            }
            Lifecycle::Apply => {
                let r = stoppable(&engine, engine.apply(false)).await??;
                (if r.failed() > 0 { Exit::Failed } else { Exit::Success }, Report::Apply(r))
            }
            Lifecycle::Watch => {
                let r = engine.watch(interrupted()).await;
                (if r.last_failed { Exit::Failed } else { Exit::Success }, Report::Watch(r))
            }
            Lifecycle::Cutover(flags) => (Exit::Success, Report::Cutover(engine.cutover(flags, interrupted()).await?)),
            Lifecycle::Rollback => (Exit::Success, Report::Rollback(engine.rollback().await?)),
            Lifecycle::Status => (Exit::Success, Report::Status(engine.status().await?)),
            Lifecycle::Cleanup => (Exit::Success, Report::Cleanup(engine.cleanup().await?)),
        })
    }
}

/// Runs `work`: the first Ctrl-C or SIGTERM tells it to stop at its next wait (its transfer
/// pods are removed, what it did is reported); a second one stops at once, leaving what
/// `mtcd cleanup` removes.
async fn stoppable<T>(engine: &crate::engine::Engine, work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    // Every listener hears a signal: the first one reaches both `stop_on` and `twice`.
    let twice = async {
        interrupted().await;
        eprintln!("interrupted: stopping at the next wait (again to stop at once)");
        interrupted().await;
    };
    tokio::select! {
        r = engine.stop_on(interrupted(), work) => Ok(r),
        () = twice => anyhow::bail!(
            "interrupted twice: stopped at once; transfer pods may be left behind (`mtcd cleanup FILE` removes them, as does the next apply)"
        ),
    }
}

/// Ctrl-C or SIGTERM (what `kubectl delete` of a Job's pod, systemd or a closing terminal
/// send).
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Logs go to stderr: text for people, JSON lines with `--output json` (a script reading
/// JSON never gets human text).
fn init_tracing(verbose: u8, output: Output) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // kube logs every failed request at error level; mtcd reports those itself, once.
        0 => "warn,kube_client=off",
        1 => "mtcd=info,warn,kube_client=off",
        2 => "mtcd=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match output {
        Output::Human => logs.try_init(),
        Output::Json => logs.json().try_init(),
    };
}
