//! A kube client per kubeconfig context.
//!
//! mtcd talks to clusters only through a normal kubeconfig, the way kubectl does; it has no
//! idea whether the other end is a real API server or the lab.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

mod files;

pub use files::read_kubeconfig;

/// Errors reaching a cluster. Each names the context, so the user knows which side failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig file could not be parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig, or a file it names for the context (CA bundle, client certificate or
    /// key, token file), is missing, not a regular file, or over its size limit.
    #[error("{}{source}", context.as_ref().map(|c| format!("context {c:?}: ")).unwrap_or_default())]
    File {
        context: Option<String>,
        #[source]
        source: crate::spec::FileError,
    },
    /// The context is not in the kubeconfig.
    #[error("context {context:?} is not in kubeconfig {path} (contexts there: {available})")]
    MissingContext { context: String, path: String, available: String },
    /// Building a client for the context failed (bad certificate data, unknown auth...).
    #[error("context {context:?}: {source}")]
    Config {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built.
    #[error("context {context:?}: {source}")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// `context = "in-cluster"`, but this process is not in a pod (or its service account
    /// token is not mounted).
    #[error(
        "context \"in-cluster\": {source}. It means the cluster this pod runs in: it needs KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT and the service account files under /var/run/secrets/kubernetes.io/serviceaccount/ (automountServiceAccountToken)"
    )]
    InCluster {
        #[source]
        source: kube::config::InClusterError,
    },
    /// The API server did not answer.
    #[error("context {context:?}: API server {url} could not be reached: {reason}")]
    Unreachable {
        context: String,
        url: String,
        /// The innermost cause ("Connection refused", a TLS error...), which is what a user
        /// can act on; kube's own message only says "client error".
        reason: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    pub context: String,
    pub client: kube::Client,
    /// The resolved connection settings (server URL, TLS, auth). Holds credentials: never
    /// print it.
    pub config: kube::Config,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.config.cluster_url.to_string())
            .finish_non_exhaustive()
    }
}

/// The kubeconfig path in effect: `--kubeconfig`, else `$KUBECONFIG` (its first non-empty
/// entry; an empty `KUBECONFIG=` counts as unset, as kubectl does), else `~/.kube/config`.
pub fn kubeconfig_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return p.to_path_buf();
    }
    if let Some(env) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&env).find(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".kube").join("config")
}

/// Names of the contexts in a kubeconfig, in file order.
pub fn context_names(kubeconfig: &Kubeconfig) -> Vec<String> {
    kubeconfig.contexts.iter().map(|c| c.name.clone()).collect()
}

/// Builds a client for `context` without contacting the server.
pub async fn client_for(kubeconfig: &Kubeconfig, path: &Path, context: &str) -> Result<Cluster, ClusterError> {
    crate::tls::init();
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        return Err(ClusterError::MissingContext {
            context: context.to_string(),
            path: path.display().to_string(),
            available: context_names(kubeconfig).join(", "),
        });
    }
    let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let mut kubeconfig = kubeconfig.clone();
    files::inline_context_files(&mut kubeconfig, context)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ClusterError::Config { context: context.to_string(), source })?;
    Cluster::from_config(context, config)
}

impl Cluster {
    /// A client for `config`. kube would retry 429/503/504 silently, with backoff, for
    /// minutes (an aggregated API that is down stalled a plan for 281 s): mtcd turns that off
    /// and decides itself what to retry (crate::retry), and says so.
    pub fn from_config(context: &str, mut config: kube::Config) -> Result<Cluster, ClusterError> {
        config.default_retry = false;
        let client = kube::Client::try_from(config.clone())
            .map_err(|source| ClusterError::Client { context: context.to_string(), source })?;
        Ok(Cluster { context: context.to_string(), client, config })
    }
}

/// A client for the cluster this process runs in, from its pod's service account, exactly as
/// kube's (and client-go's) in-cluster configuration: `KUBERNETES_SERVICE_HOST` and
/// `KUBERNETES_SERVICE_PORT`, the CA in `ca.crt`, the token read from `token` — and read
/// again as the kubelet rotates it (kube reloads a token file before it expires).
pub fn in_cluster() -> Result<Cluster, ClusterError> {
    crate::tls::init();
    let config = kube::Config::incluster().map_err(|source| ClusterError::InCluster { source })?;
    Cluster::from_config(crate::spec::contexts::IN_CLUSTER, config)
}

/// A client for a context of the desired file: `in-cluster`, or a kubeconfig context (the
/// kubeconfig is only needed for the latter).
pub async fn client_for_context(
    kubeconfig: Option<&Kubeconfig>,
    path: &Path,
    context: &str,
) -> Result<Cluster, ClusterError> {
    if crate::spec::contexts::is_in_cluster(context) {
        return in_cluster();
    }
    match kubeconfig {
        Some(kc) => client_for(kc, path, context).await,
        None => Err(ClusterError::MissingContext {
            context: context.to_string(),
            path: path.display().to_string(),
            available: String::new(),
        }),
    }
}

/// Builds a client and checks the API server answers (`/version`).
pub async fn connect(kubeconfig: &Kubeconfig, path: &Path, context: &str) -> Result<Cluster, ClusterError> {
    connect_context(Some(kubeconfig), path, context).await
}

/// [`connect`] for a context of the desired file, `in-cluster` included.
pub async fn connect_context(
    kubeconfig: Option<&Kubeconfig>,
    path: &Path,
    context: &str,
) -> Result<Cluster, ClusterError> {
    let cluster = client_for_context(kubeconfig, path, context).await?;
    cluster.client.apiserver_version().await.map_err(|source| {
        let mut reason = source.to_string();
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&source);
        while let Some(c) = cause {
            reason = c.to_string();
            cause = c.source();
        }
        ClusterError::Unreachable {
            context: context.to_string(),
            url: cluster.config.cluster_url.to_string(),
            reason,
            source: Box::new(source),
        }
    })?;
    Ok(cluster)
}

/// Whether the API server answered (with a Status, or a body mtcd could not read), as
/// opposed to not answering at all (connection refused, TLS failure, timeout).
pub fn is_answer(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(_) | kube::Error::SerdeError(_))
}

/// One line about what went wrong, for people: the API server's message and reason, or the
/// innermost cause of a transport failure ("Connection refused"), which is what a user can
/// act on (kube's own text says only "client error (Connect)").
pub fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 => {
            "the credentials were rejected (401 Unauthorized); log in again or fix the kubeconfig user".into()
        }
        // "field is immutable" and friends carry the whole Go struct of the old value; the
        // causes name the field and the reason, which is what a person can act on.
        kube::Error::Api(s) if s.code == 422 && s.details.as_ref().is_some_and(|d| !d.causes.is_empty()) => {
            let d = s.details.as_ref().expect("checked");
            let causes: Vec<String> = d
                .causes
                .iter()
                .map(|c| {
                    let why = c.message.rsplit(": ").next().unwrap_or(&c.message);
                    if c.field.is_empty() { why.to_string() } else { format!("{}: {why}", c.field) }
                })
                .collect();
            format!("{} {:?} is invalid: {} (422 {})", d.kind, d.name, causes.join("; "), s.reason)
        }
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => {
            let mut reason = other.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(other);
            while let Some(c) = cause {
                reason = c.to_string();
                cause = c.source();
            }
            reason
        }
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    fn api(v: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(v).unwrap()))
    }

    #[test]
    fn an_immutable_field_is_named_without_the_go_struct_dump() {
        let dump = format!("core.PodTemplateSpec{{ObjectMeta:v1.ObjectMeta{{Name:\"\", {}}}}}", "x".repeat(5000));
        let e = api(
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": format!("Job.batch \"migrate\" is invalid: spec.template: Invalid value: {dump}: field is immutable"),
            "details": {"name": "migrate", "group": "batch", "kind": "Job",
                "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {dump}: field is immutable"), "field": "spec.template"}]}}),
        );
        assert_eq!(short_error(&e), "Job \"migrate\" is invalid: spec.template: field is immutable (422 Invalid)");
    }

    #[test]
    fn rejected_credentials_say_so() {
        let e = api(
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401, "message": "Unauthorized"}),
        );
        assert!(short_error(&e).starts_with("the credentials were rejected"), "{}", short_error(&e));
    }
}
