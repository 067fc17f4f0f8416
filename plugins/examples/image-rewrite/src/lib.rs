//! Rewrites container image references by registry prefix, e.g. when the destination pulls
//! from a different registry or mirror.
//!
//! ```toml
//! [[migration.transform]]
//! plugin = "image-rewrite.wasm"
//! config = { prefixes = { "quay.io/old/" = "registry.example.com/new/" } }
//! ```
//!
//! The longest matching prefix wins. Pods, pod templates (Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, Job, DeploymentConfig, ...) and CronJob job templates are covered:
//! every `containers`, `initContainers` and `ephemeralContainers` list under a pod spec.

use mtcd_plugin::{Context, Outcome, Transform, Value};

struct ImageRewrite;

impl Transform for ImageRewrite {
    fn transform(mut object: Value, ctx: &Context) -> Result<Outcome, String> {
        let prefixes = ctx
            .config
            .get("prefixes")
            .and_then(Value::as_object)
            .ok_or("config `prefixes` (a table of old prefix = new prefix) is required")?;
        let mut rules: Vec<(&str, &str)> = Vec::new();
        for (from, to) in prefixes {
            let to = to.as_str().ok_or_else(|| format!("prefix `{from}`: replacement must be a string"))?;
            rules.push((from.as_str(), to));
        }
        rules.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let changed = rewrite(&mut object, &rules);
        Ok(if changed > 0 { Outcome::Replace(object) } else { Outcome::Unchanged })
    }
}

/// Rewrites images in every pod spec of `object`; returns how many changed.
fn rewrite(object: &mut Value, rules: &[(&str, &str)]) -> usize {
    let mut changed = 0;
    for pod_spec in pod_specs(object) {
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for container in containers {
                let Some(image) = container.get_mut("image") else {
                    continue;
                };
                let Some(current) = image.as_str() else {
                    continue;
                };
                if let Some((from, to)) = rules.iter().find(|(from, _)| current.starts_with(from)) {
                    *image = Value::String(format!("{to}{}", &current[from.len()..]));
                    changed += 1;
                }
            }
        }
    }
    changed
}

/// The pod specs inside an object: `spec` of a Pod, `spec.template.spec` of workloads, and
/// `spec.jobTemplate.spec.template.spec` of CronJobs.
fn pod_specs(object: &mut Value) -> Vec<&mut Value> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(spec) = object.get_mut("spec") else {
        return Vec::new();
    };
    if kind == "Pod" {
        return vec![spec];
    }
    if kind == "CronJob" {
        return spec.pointer_mut("/jobTemplate/spec/template/spec").into_iter().collect();
    }
    spec.pointer_mut("/template/spec").into_iter().collect()
}

mtcd_plugin::export_transformer!(ImageRewrite);

#[cfg(test)]
mod tests {
    use super::*;
    use mtcd_plugin::json;

    #[test]
    fn longest_prefix_wins_in_cronjobs() {
        let mut obj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"image": "quay.io/a/b:1"}, {"image": "docker.io/x"}]}}}}}});
        let rules = [("quay.io/a/", "r.example/new/"), ("quay.io/", "r.example/")];
        assert_eq!(rewrite(&mut obj, &rules), 1);
        assert_eq!(
            obj.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image").unwrap(),
            "r.example/new/b:1"
        );
    }
}
