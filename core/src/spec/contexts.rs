//! Both clusters' contexts must exist in the kubeconfig; reported like file errors, at the
//! line of the `context` key, with the contexts that do exist. `context = "in-cluster"` is
//! not a kubeconfig context: it is the cluster mtcd runs in (its pod's service account), so
//! it is never looked up.

use super::error::{Problem, Problems};
use super::model::Spec;
use super::names::short;

/// The `context` value that means "the cluster this pod runs in": the service account's
/// token and CA under `/var/run/secrets/kubernetes.io/serviceaccount/` and the API server
/// from `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`.
pub const IN_CLUSTER: &str = "in-cluster";

/// Whether a context names the cluster mtcd runs in rather than a kubeconfig context.
pub fn is_in_cluster(context: &str) -> bool {
    context == IN_CLUSTER
}

/// Whether the file needs a kubeconfig at all (one side at least is not `in-cluster`).
pub fn needs_kubeconfig(spec: &Spec) -> bool {
    !is_in_cluster(&spec.source.context) || !is_in_cluster(&spec.destination.context)
}

/// Problems for every cluster whose context is not among `available` (`in-cluster` is
/// never looked up).
pub fn check(spec: &Spec, kubeconfig: &std::path::Path, available: &[String]) -> Result<(), Problems> {
    // Names come from the kubeconfig and the file: a 10 MB name, or thousands of contexts,
    // must not make the message unreadable.
    const LISTED: usize = 20;
    let mut listed: Vec<String> = available.iter().take(LISTED).map(|c| short(c).into_owned()).collect();
    if available.len() > LISTED {
        listed.push(format!("… ({} more)", available.len() - LISTED));
    }
    let listed = listed.join(", ");
    let mut problems = Vec::new();
    for (side, cluster) in [("source", &spec.source), ("destination", &spec.destination)] {
        if is_in_cluster(&cluster.context) {
            continue;
        }
        if !available.iter().any(|c| c == &cluster.context) {
            let near: Vec<&str> = available.iter().map(String::as_str).collect();
            let hint = match super::reader::nearest(&cluster.context, &near) {
                Some(n) => format!("did you mean {:?}? contexts in {}: {listed}", short(n), kubeconfig.display()),
                None if available.is_empty() => format!("{} has no contexts", kubeconfig.display()),
                None => format!("contexts in {}: {listed}", kubeconfig.display()),
            };
            problems.push(Problem {
                location: cluster.context_at,
                message: format!("{side} context {:?} is not in the kubeconfig", short(&cluster.context)),
                hint: Some(hint),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Problems::new(spec.path.clone(), problems)) }
}
