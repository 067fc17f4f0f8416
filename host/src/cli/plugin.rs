//! `mtcd plugin …`: the plugin author's commands. They need no cluster.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::Exit;
use crate::plugins::{self, PluginError, TestOptions};
use crate::spec::{DirGrant, HookPhase, PluginGrants, PluginLimits};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a plugin on objects from a YAML file, offline: a transform prints a diff per
    /// object, a hook (`--phase`) its verdict. The report goes to stdout; exit code 1 and
    /// a one-line summary on stderr when anything failed.
    Test(PluginTestArgs),
    /// Create a new plugin crate from the template.
    New(PluginNewArgs),
    /// Push a component to a registry as an OCI artifact and print the pinned reference to
    /// paste into desired.toml.
    Push(PluginPushArgs),
    /// Print the pinned `oci://…@sha256:…` reference of an existing tag.
    Resolve(PluginResolveArgs),
    /// Pull a pinned oci:// plugin into the local cache (`plan` then needs no network).
    Pull(PluginPullArgs),
}

#[derive(Debug, Args)]
pub struct PluginTestArgs {
    /// The plugin component (`.wasm`, built for wasm32-wasip2).
    pub plugin: PathBuf,
    /// Objects to feed it: a multi-document YAML file. They also answer `lookup`.
    pub objects: PathBuf,
    /// Plugin configuration entries, `key=value` (repeatable; dots nest, JSON values parse).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Run it as a hook at this phase (pre-backup, …, post-cutover) instead of as a transform.
    #[arg(long, value_name = "PHASE")]
    pub phase: Option<String>,
    /// Wall-clock limit per call, as in desired.toml (default 1s, 5m for hooks).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Linear memory limit, as in desired.toml (default 64MiB).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Deterministic fuel budget per call (default: none).
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<u64>,
    /// Grant a host directory at a guest path, read-only unless `:rw` (repeatable).
    #[arg(long = "grant-dir", value_name = "HOST:GUEST[:rw]")]
    pub grant_dirs: Vec<String>,
    /// Grant an environment variable by name (repeatable).
    #[arg(long = "grant-env", value_name = "VAR")]
    pub grant_env: Vec<String>,
    /// Grant the real wall and monotonic clocks.
    #[arg(long = "grant-clock")]
    pub grant_clock: bool,
}

#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// Crate name of the new plugin (lowercase letters, digits and `-`).
    pub name: String,
    /// Folder to create it in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Create a hook (runs at a migration phase) instead of a transform.
    #[arg(long)]
    pub hook: bool,
    #[command(flatten)]
    pub _globals: HiddenGlobals,
}

/// The global options (`--kubeconfig`, `--output`, `--verbose`) mean nothing to a command
/// that only writes files: declaring them here, hidden, keeps clap from listing the global
/// ones in its `--help` (they are still accepted).
#[derive(Debug, Args)]
pub struct HiddenGlobals {
    #[arg(long, hide = true)]
    kubeconfig: Option<PathBuf>,
    #[arg(long, short = 'o', hide = true)]
    output: Option<super::Output>,
    #[arg(long, short = 'v', hide = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// How to reach a registry from the command line; the same choices as a registry in
/// desired.toml. Credentials are referenced, never passed as values.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Plain HTTP (a test registry). Never a fallback.
    #[arg(long)]
    pub insecure: bool,
    /// Trust this PEM bundle in addition to the system roots.
    #[arg(long, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
    /// Credentials from a docker config.json (the entry for the registry host).
    #[arg(long, value_name = "PATH")]
    pub docker_config: Option<PathBuf>,
    /// Basic-auth user name from this environment variable (with --password-env).
    #[arg(long, value_name = "VAR", requires = "password_env")]
    pub username_env: Option<String>,
    /// Basic-auth password from this environment variable (with --username-env).
    #[arg(long, value_name = "VAR", requires = "username_env")]
    pub password_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct PluginPushArgs {
    /// The component to push (`.wasm`).
    pub file: PathBuf,
    /// Where: `oci://REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    /// Use oci-client's older media types (`application/vnd.wasm.content.layer.v1+wasm`) for
    /// registries that refuse the CNCF wasm artifact types.
    #[arg(long)]
    pub legacy_media_types: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PluginResolveArgs {
    /// `oci://REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PluginPullArgs {
    /// `oci://REGISTRY/REPOSITORY[:TAG]@sha256:…`.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl PluginTestArgs {
    fn options(&self) -> anyhow::Result<TestOptions> {
        use std::io::IsTerminal;
        let phase = self.phase.as_deref().map(parse_phase).transpose()?;
        let defaults =
            if phase.is_some() { plugins::default_hook_limits() } else { plugins::default_transform_limits() };
        let timeout = match &self.timeout {
            None => defaults.timeout,
            Some(t) => humantime::parse_duration(t)
                .with_context(|| format!("--timeout {t}: not a duration like 1s or 500ms"))?,
        };
        anyhow::ensure!(timeout > Duration::ZERO, "--timeout must be longer than zero");
        let memory = match &self.memory {
            None => defaults.memory,
            Some(m) => {
                crate::spec::parse_size(m).ok_or_else(|| anyhow::anyhow!("--memory {m}: not a size like 64MiB"))?
            }
        };
        let mut dirs = Vec::new();
        for d in &self.grant_dirs {
            let (host, rest) =
                d.split_once(':').ok_or_else(|| anyhow::anyhow!("--grant-dir {d}: expected HOST:GUEST[:rw]"))?;
            let (guest, writable) = match rest.strip_suffix(":rw") {
                Some(g) => (g, true),
                None => (rest.strip_suffix(":ro").unwrap_or(rest), false),
            };
            anyhow::ensure!(PathBuf::from(host).is_dir(), "--grant-dir {d}: {host} is not a directory");
            dirs.push(DirGrant { host: host.into(), guest: guest.to_string(), writable });
        }
        Ok(TestOptions {
            config: plugins::config_from_pairs(&self.config)?,
            limits: Some(PluginLimits { timeout, memory, fuel: self.fuel }),
            grants: PluginGrants { dirs, env: self.grant_env.clone(), clock: self.grant_clock },
            phase,
            color: std::io::stdout().is_terminal(),
        })
    }
}

fn parse_phase(s: &str) -> anyhow::Result<HookPhase> {
    let phases = [
        HookPhase::PreBackup,
        HookPhase::PostBackup,
        HookPhase::PreRestore,
        HookPhase::PostRestore,
        HookPhase::PreCutover,
        HookPhase::PostCutover,
    ];
    phases.into_iter().find(|p| plugins::phase_name(*p) == s).ok_or_else(|| {
        let names: Vec<&str> = phases.iter().map(|p| plugins::phase_name(*p)).collect();
        anyhow::anyhow!("--phase {s}: expected one of {}", names.join(", "))
    })
}

/// Runs one `mtcd plugin` subcommand.
pub fn run(command: PluginCommand) -> anyhow::Result<Exit> {
    match command {
        PluginCommand::Test(a) => {
            let options = a.options()?;
            match plugins::test_plugin(&a.plugin, &a.objects, &options) {
                Ok(report) => {
                    print!("{report}");
                    Ok(Exit::Success)
                }
                // The report is the command's output; stderr gets only the summary.
                Err(PluginError::TestFailed { report, failed, total }) => {
                    print!("{report}");
                    if options.phase.is_some() {
                        eprintln!("error: the hook failed");
                    } else {
                        eprintln!("error: {failed} of {total} objects failed");
                    }
                    Ok(Exit::Failed)
                }
                Err(e) => Err(e.into()),
            }
        }
        PluginCommand::New(a) => {
            let path = plugins::scaffold(&a.name, &a.dir, a.hook)?;
            println!(
                "Created {}. Build it with: cargo build --release --target wasm32-wasip2 --manifest-path {}/Cargo.toml",
                path.display(),
                path.display()
            );
            Ok(Exit::Success)
        }
        PluginCommand::Push(a) => {
            let registry = a.registry.registry(&a.reference)?;
            let pinned = plugins::push(&a.file, &a.reference, &registry, a.legacy_media_types)?;
            println!("{pinned}");
            Ok(Exit::Success)
        }
        PluginCommand::Resolve(a) => {
            let registry = a.registry.registry(&a.reference)?;
            println!("{}", plugins::resolve(&a.reference, &registry)?);
            Ok(Exit::Success)
        }
        PluginCommand::Pull(a) => {
            let registry = a.registry.registry(&a.reference)?;
            let report = plugins::pull(&a.reference, &registry, None)?;
            println!("{report}");
            Ok(Exit::Success)
        }
    }
}

impl RegistryArgs {
    /// The registry settings for `reference`'s host.
    fn registry(&self, reference: &str) -> anyhow::Result<crate::spec::Registry> {
        use crate::spec::{RegistryAuth, RegistryTls};
        let parsed = crate::spec::OciReference::parse(reference).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = match (&self.ca_bundle, self.insecure) {
            (Some(_), true) => anyhow::bail!("--insecure and --ca-bundle exclude each other"),
            (Some(ca), false) => RegistryTls::CaBundle(ca.clone()),
            (None, true) => RegistryTls::Insecure,
            (None, false) => RegistryTls::Verify,
        };
        let auth = match (&self.docker_config, &self.username_env, &self.password_env) {
            (Some(_), Some(_), _) => anyhow::bail!("--docker-config and --username-env exclude each other"),
            (Some(p), None, _) => RegistryAuth::DockerConfig(p.clone()),
            (None, Some(u), Some(p)) => RegistryAuth::BasicEnv { username_env: u.clone(), password_env: p.clone() },
            _ => RegistryAuth::Anonymous,
        };
        Ok(crate::spec::Registry { address: parsed.registry, internal_address: None, auth, tls })
    }
}
