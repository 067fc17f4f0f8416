//! Both clusters' contexts must exist in the kubeconfig; reported like file errors, at the
//! line of the `context` key, with the contexts that do exist.

use super::error::{Problem, Problems};
use super::model::Spec;

/// Problems for every cluster whose context is not among `available`.
pub fn check(spec: &Spec, kubeconfig: &std::path::Path, available: &[String]) -> Result<(), Problems> {
    let mut problems = Vec::new();
    for (side, cluster) in [("source", &spec.source), ("destination", &spec.destination)] {
        if !available.iter().any(|c| c == &cluster.context) {
            let near: Vec<&str> = available.iter().map(String::as_str).collect();
            let hint = match super::reader::nearest(&cluster.context, &near) {
                Some(n) => {
                    format!("did you mean {n:?}? contexts in {}: {}", kubeconfig.display(), available.join(", "))
                }
                None if available.is_empty() => format!("{} has no contexts", kubeconfig.display()),
                None => format!("contexts in {}: {}", kubeconfig.display(), available.join(", ")),
            };
            problems.push(Problem {
                location: cluster.context_at,
                message: format!("{side} context {:?} is not in the kubeconfig", cluster.context),
                hint: Some(hint),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Problems::new(spec.path.clone(), problems)) }
}
