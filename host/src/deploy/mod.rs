//! `mtcd deploy`: everything a cluster needs to run the scheduled re-sync itself — a
//! namespace, a ServiceAccount with generated RBAC, the desired file as a ConfigMap, a
//! reference to a kubeconfig Secret for the other cluster, and a CronJob per migration
//! (or, `--watch-mode`, one Deployment running `apply --watch`). It prints plain YAML for
//! `kubectl apply -f -` or kustomize; `--apply` applies it (server-side apply), `--delete`
//! removes it. docs/in-cluster.md has the details.

pub mod cron;
pub mod objects;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;

use crate::spec::Side;

/// The field manager of what `mtcd deploy --apply` writes.
pub const FIELD_MANAGER: &str = "mtcd-deploy";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterSide {
    Source,
    Destination,
}

/// `mtcd deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The desired-state file to run in the cluster.
    pub file: PathBuf,
    /// The CronJobs' schedule (five-field cron, UTC), e.g. "*/15 * * * *".
    #[arg(long, value_name = "CRON", required_unless_present_any = ["watch_mode", "delete"])]
    pub schedule: Option<String>,
    /// The mtcd image (scripts/image.sh builds one).
    #[arg(long, value_name = "REF", required_unless_present = "delete")]
    pub image: Option<String>,
    /// The namespace the deployment lives in.
    #[arg(long, default_value = "mtcd")]
    pub namespace: String,
    /// Which side of the file the Jobs run in; the other is reached with the kubeconfig
    /// Secret.
    #[arg(long, value_enum, default_value_t = ClusterSide::Destination)]
    pub cluster: ClusterSide,
    /// The Secret (key `kubeconfig`) with a kubeconfig for the other cluster.
    #[arg(long, value_name = "NAME", default_value = "mtcd-kubeconfig")]
    pub kubeconfig_secret: String,
    /// One Deployment running `mtcd apply --watch` (metrics on :9090) instead of CronJobs.
    #[arg(long)]
    pub watch_mode: bool,
    /// Apply the objects to the cluster (`--cluster`'s context in the file) instead of
    /// printing them.
    #[arg(long, conflicts_with = "delete")]
    pub apply: bool,
    /// Remove what `deploy --apply` created (the kubeconfig Secret is left alone).
    #[arg(long)]
    pub delete: bool,
}

/// What `mtcd deploy` could not do.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The schedule is not a valid cron expression.
    #[error(transparent)]
    Schedule(#[from] cron::CronError),
    /// The file could not be read again as TOML for the pod's copy.
    #[error("{path}: {source}")]
    Toml {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    /// `--apply`/`--delete` needs a kubeconfig context for the cluster.
    #[error(
        "the {side} context is \"in-cluster\" in the file: `--apply` and `--delete` need a kubeconfig context for the cluster to deploy to (or print the YAML and use kubectl)"
    )]
    NoContext { side: &'static str },
    /// A write was refused.
    #[error("{kind} {name}: {}", crate::cluster::short_error(source))]
    Write {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl DeployArgs {
    fn side(&self) -> Side {
        match self.cluster {
            ClusterSide::Source => Side::Source,
            ClusterSide::Destination => Side::Destination,
        }
    }

    fn plan(&self) -> objects::Plan {
        objects::Plan {
            namespace: self.namespace.clone(),
            image: self.image.clone().unwrap_or_default(),
            schedule: if self.watch_mode { None } else { self.schedule.clone() },
            cluster: self.side(),
            kubeconfig_secret: self.kubeconfig_secret.clone(),
            watch_mode: self.watch_mode,
        }
    }
}

/// Runs `mtcd deploy`.
pub async fn run(args: DeployArgs, global: &crate::cli::Global) -> anyhow::Result<()> {
    let spec = crate::spec::load(&args.file)?;
    if let Some(s) = &args.schedule {
        cron::Schedule::parse(s).map_err(DeployError::from)?;
    }
    let text = std::fs::read_to_string(&args.file)?;
    let mut objects = objects::objects(&args.plan(), &spec, &text)
        .map_err(|source| DeployError::Toml { path: args.file.display().to_string(), source })?;
    if !args.apply && !args.delete {
        print!("{}", objects::to_yaml(&objects));
        return Ok(());
    }
    let side = args.side();
    let context = match side {
        Side::Source => &spec.source.context,
        Side::Destination => &spec.destination.context,
    };
    if crate::spec::contexts::is_in_cluster(context) {
        return Err(DeployError::NoContext { side: side.as_str() }.into());
    }
    let path = crate::cluster::kubeconfig_path(global.kubeconfig.as_deref());
    let kubeconfig = crate::cluster::read_kubeconfig(&path)?;
    let cluster = crate::cluster::connect(&kubeconfig, &path, context).await?;
    if args.delete {
        // What `--watch-mode` and the CronJobs made, whichever was deployed: both kinds.
        let mut other = objects::objects(&objects::Plan { watch_mode: !args.watch_mode, ..args.plan() }, &spec, &text)
            .map_err(|source| DeployError::Toml { path: args.file.display().to_string(), source })?;
        objects.append(&mut other);
        // Reverse apply order: the workloads first, the namespace last.
        let rank = |o: &serde_json::Value| match o["kind"].as_str() {
            Some("CronJob" | "Deployment") => 0,
            Some("Namespace") => 2,
            _ => 1,
        };
        objects.sort_by_key(rank);
        let mut seen = std::collections::HashSet::new();
        for o in objects {
            let (ar, name, ns) = resource(&o);
            if !seen.insert((ar.kind.clone(), ns.clone(), name.clone())) {
                continue;
            }
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
                None => Api::all_with(cluster.client.clone(), &ar),
            };
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => println!("{}/{name} deleted", ar.kind),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(DeployError::Write { kind: ar.kind, name, source }.into()),
            }
        }
        return Ok(());
    }
    for o in &objects {
        let (ar, name, ns) = resource(o);
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
            None => Api::all_with(cluster.client.clone(), &ar),
        };
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(o))
            .await
            .map_err(|source| DeployError::Write { kind: ar.kind.clone(), name: name.clone(), source })?;
        println!("{}/{name} applied", ar.kind);
    }
    Ok(())
}

/// The API resource, name and namespace of one generated object (only the kinds
/// [`objects::objects`] makes).
fn resource(o: &serde_json::Value) -> (ApiResource, String, Option<String>) {
    let kind = o["kind"].as_str().unwrap_or_default();
    let (group, version, plural) = match kind {
        "Namespace" => ("", "v1", "namespaces"),
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "ConfigMap" => ("", "v1", "configmaps"),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles"),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        "CronJob" => ("batch", "v1", "cronjobs"),
        "Deployment" => ("apps", "v1", "deployments"),
        other => unreachable!("mtcd deploy generates no {other}"),
    };
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: kind.into(),
        plural: plural.into(),
    };
    let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let ns = o["metadata"]["namespace"].as_str().map(String::from);
    (ar, name, ns)
}
