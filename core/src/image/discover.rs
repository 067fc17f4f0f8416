//! Finding the images to copy in the source objects. Pure: no I/O, so the plan can call it.
//!
//! Two sources of truth, as in MTC: ImageStreams (what the internal registry holds for the
//! namespace, with tag history) and pod templates (what workloads actually run, which may
//! name internal images no ImageStream tracks).

use indexmap::IndexSet;
use serde_json::Value;

use super::reference::{ImageRef, same_host};

/// Where the pod spec sits in each workload kind.
pub(crate) fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "DeploymentConfig"
        | "ReplicationController" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

pub(crate) const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Images under `internal_hosts` referenced by `objects`, deduplicated, in first-seen order.
///
/// ImageStream tags contribute their first `tag_history` items (at least the current one):
/// the current item carries the tag name (the destination gets the same tag), older items
/// are copied by digest only. Pod-template images keep the reference as written.
/// Unparseable references are skipped: they cannot be internal images that a registry
/// would serve, and the resource copy reports them if the API server rejects them.
pub fn discover(objects: &[Value], internal_hosts: &[String], tag_history: usize) -> Vec<ImageRef> {
    let internal = |r: &ImageRef| internal_hosts.iter().any(|h| same_host(h, &r.registry));
    let mut found: IndexSet<ImageRef> = IndexSet::new();
    for obj in objects {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind == "ImageStream" {
            let tags = obj.pointer("/status/tags").and_then(Value::as_array);
            for tag in tags.into_iter().flatten() {
                let name = tag.get("tag").and_then(Value::as_str);
                let items = tag.get("items").and_then(Value::as_array);
                for (i, item) in items.into_iter().flatten().take(tag_history.max(1)).enumerate() {
                    let Some(text) = item.get("dockerImageReference").and_then(Value::as_str) else {
                        continue;
                    };
                    let Ok(mut r) = ImageRef::parse(text) else {
                        continue;
                    };
                    if !internal(&r) {
                        continue;
                    }
                    if r.digest.is_none() {
                        // Items record the digest beside the reference; pin to it.
                        r.digest = item.get("image").and_then(Value::as_str).map(str::to_string);
                    }
                    r.tag = match (i, name) {
                        (0, Some(name)) => Some(name.to_string()),
                        // History is addressed by digest; a tag would move the current one.
                        _ if r.digest.is_some() => None,
                        _ => r.tag,
                    };
                    found.insert(r);
                }
            }
            continue;
        }
        let Some(path) = pod_spec_path(kind) else {
            continue;
        };
        let mut spec = obj;
        for key in path {
            match spec.get(key) {
                Some(v) => spec = v,
                None => break,
            }
        }
        for list in CONTAINER_LISTS {
            for c in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
                let Some(text) = c.get("image").and_then(Value::as_str) else {
                    continue;
                };
                if let Ok(r) = ImageRef::parse(text)
                    && internal(&r)
                {
                    found.insert(r);
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INT: &str = "image-registry.openshift-image-registry.svc:5000";
    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }
    fn hosts() -> Vec<String> {
        vec![INT.to_string(), "registry.apps.src.example".to_string()]
    }

    fn image_stream() -> Value {
        json!({
            "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": "web", "namespace": "shop"},
            "status": {"tags": [
                {"tag": "v2", "items": [
                    {"dockerImageReference": format!("{INT}/shop/web@{}", d(2)), "image": d(2)},
                    {"dockerImageReference": format!("{INT}/shop/web@{}", d(1)), "image": d(1)},
                    {"dockerImageReference": format!("{INT}/shop/web@{}", d(0)), "image": d(0)}
                ]},
                {"tag": "ext", "items": [
                    {"dockerImageReference": format!("quay.io/org/web@{}", d(9)), "image": d(9)}
                ]}
            ]}
        })
    }

    #[test]
    fn image_stream_current_tag_only_by_default() {
        let got = discover(&[image_stream()], &hosts(), 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].repository, "shop/web");
        assert_eq!(got[0].tag.as_deref(), Some("v2"));
        assert_eq!(got[0].digest, Some(d(2)));
    }

    #[test]
    fn image_stream_history_depth() {
        let got = discover(&[image_stream()], &hosts(), 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].digest, Some(d(1)));
        assert_eq!(got[1].tag, None, "history items are copied by digest only");
        assert_eq!(discover(&[image_stream()], &hosts(), 10).len(), 3);
    }

    #[test]
    fn pod_templates_of_every_workload_kind() {
        let tpl = |img: &str| {
            json!({"spec": {"initContainers": [{"name": "i", "image": format!("{INT}/shop/init:1")}],
                                                "containers": [{"name": "c", "image": img}]}})
        };
        let objs = vec![
            json!({"kind": "Deployment", "spec": {"template": tpl(&format!("{INT}/shop/a:1"))}}),
            json!({"kind": "StatefulSet", "spec": {"template": tpl(&format!("{INT}/shop/b:1"))}}),
            json!({"kind": "DaemonSet", "spec": {"template": tpl(&format!("{INT}/shop/c:1"))}}),
            json!({"kind": "ReplicaSet", "spec": {"template": tpl(&format!("{INT}/shop/d:1"))}}),
            json!({"kind": "Job", "spec": {"template": tpl(&format!("{INT}/shop/e:1"))}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": tpl(&format!("{INT}/shop/f:1"))}}}}),
            json!({"kind": "DeploymentConfig", "spec": {"template": tpl(&format!("{INT}/shop/g:1"))}}),
            json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "registry.apps.src.example/shop/h:1"}]}}),
            json!({"kind": "ConfigMap", "data": {"image": format!("{INT}/shop/zzz:1")}}),
        ];
        let got: Vec<String> = discover(&objs, &hosts(), 1).iter().map(|r| r.repository.clone()).collect();
        assert_eq!(got, ["shop/init", "shop/a", "shop/b", "shop/c", "shop/d", "shop/e", "shop/f", "shop/g", "shop/h"]);
    }

    #[test]
    fn external_images_ignored_and_duplicates_removed() {
        let objs = vec![
            json!({"kind": "Pod", "spec": {"containers": [
                {"name": "a", "image": "nginx:1.25"},
                {"name": "b", "image": "quay.io/org/x:1"},
                {"name": "c", "image": format!("{INT}/shop/x:1")},
                {"name": "d", "image": format!("{INT}/shop/x:1")},
                {"name": "e", "image": "not a ref"}
            ]}}),
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": format!("{INT}/shop/x:1")}]}}}}),
        ];
        let got = discover(&objs, &hosts(), 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_string(), format!("{INT}/shop/x:1"));
        assert!(discover(&objs, &[], 1).is_empty(), "no internal hosts: nothing is internal");
    }
}
