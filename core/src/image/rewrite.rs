//! Pointing migrated objects at the destination registry. Pure: the transform stage calls
//! it on each object before apply.
//!
//! Only references under the source registry hosts change; the tag and digest are kept
//! (the copy preserves digests, so a pinned `@sha256:` reference stays valid).

use indexmap::IndexMap;
use serde_json::Value;

use super::discover::{CONTAINER_LISTS, pod_spec_path};
use super::reference::{ImageRef, map_repository, same_host};

/// Rewrites image references in a workload or ImageStream from `from_hosts` to `to_host`,
/// mapping the namespace component of the repository. Returns whether anything changed.
pub fn rewrite_object(
    obj: &mut Value,
    from_hosts: &[String],
    to_host: &str,
    namespace_map: &IndexMap<String, String>,
) -> bool {
    let rw = |text: &str| -> Option<String> {
        let r = ImageRef::parse(text).ok()?;
        if !from_hosts.iter().any(|h| same_host(h, &r.registry)) {
            return None;
        }
        Some(r.moved(to_host, map_repository(&r.repository, namespace_map)).to_string())
    };
    let mut changed = false;
    let mut set = |v: Option<&mut Value>, f: &dyn Fn(&str) -> Option<String>| {
        if let Some(v) = v
            && let Some(new) = v.as_str().and_then(f)
            && v.as_str() != Some(new.as_str())
        {
            *v = Value::String(new);
            changed = true;
        }
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if kind == "ImageStream" {
        // `status.dockerImageRepository` is a repository without tag: rewrite host and path.
        let repo_rw = |text: &str| -> Option<String> {
            let (host, repo) = text.split_once('/')?;
            if !from_hosts.iter().any(|h| same_host(h, host)) {
                return None;
            }
            Some(format!("{}/{}", to_host.to_ascii_lowercase(), map_repository(repo, namespace_map)))
        };
        set(obj.pointer_mut("/status/dockerImageRepository"), &repo_rw);
        set(obj.pointer_mut("/status/publicDockerImageRepository"), &repo_rw);
        if let Some(tags) = obj.pointer_mut("/status/tags").and_then(Value::as_array_mut) {
            for tag in tags {
                for item in tag.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
                    set(item.get_mut("dockerImageReference"), &rw);
                }
            }
        }
        if let Some(tags) = obj.pointer_mut("/spec/tags").and_then(Value::as_array_mut) {
            for tag in tags {
                let from = tag.get_mut("from");
                if let Some(from) = from
                    && from.get("kind").and_then(Value::as_str) == Some("DockerImage")
                {
                    set(from.get_mut("name"), &rw);
                }
            }
        }
        return changed;
    }
    let Some(path) = pod_spec_path(&kind) else {
        return false;
    };
    let mut spec = Some(&mut *obj);
    for key in path {
        spec = spec.and_then(|s| s.get_mut(*key));
    }
    if let Some(spec) = spec {
        for list in CONTAINER_LISTS {
            for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                set(c.get_mut("image"), &rw);
            }
        }
    }
    if kind == "DeploymentConfig"
        && let Some(triggers) = obj.pointer_mut("/spec/triggers").and_then(Value::as_array_mut)
    {
        for t in triggers {
            set(t.pointer_mut("/imageChangeParams/lastTriggeredImage"), &rw);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SRC: &str = "image-registry.openshift-image-registry.svc:5000";
    const DST: &str = "registry.dst.example";
    fn map() -> IndexMap<String, String> {
        [("shop".to_string(), "shop-prod".to_string())].into()
    }
    fn from() -> Vec<String> {
        vec![SRC.to_string()]
    }

    #[test]
    fn rewrites_containers_and_init_containers_keeping_tag_and_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let mut dep = json!({"kind": "Deployment", "spec": {"template": {"spec": {
        "initContainers": [{"name": "i", "image": format!("{SRC}/shop/init@{digest}")}],
        "containers": [
            {"name": "a", "image": format!("{SRC}/shop/web:v2")},
            {"name": "b", "image": "docker.io/library/nginx:1"},
            {"name": "c", "image": format!("{SRC}/other/lib:1")}
        ]}}}});
        assert!(rewrite_object(&mut dep, &from(), DST, &map()));
        let spec = &dep["spec"]["template"]["spec"];
        assert_eq!(spec["initContainers"][0]["image"], format!("{DST}/shop-prod/init@{digest}"));
        assert_eq!(spec["containers"][0]["image"], format!("{DST}/shop-prod/web:v2"));
        assert_eq!(spec["containers"][1]["image"], "docker.io/library/nginx:1", "external untouched");
        assert_eq!(spec["containers"][2]["image"], format!("{DST}/other/lib:1"), "unmapped namespace kept");
        assert!(!rewrite_object(&mut dep, &from(), DST, &map()), "second pass changes nothing");
    }

    #[test]
    fn rewrites_cronjob_and_leaves_others_alone() {
        let mut cj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": format!("{SRC}/shop/batch:1")}]}}}}}});
        assert!(rewrite_object(&mut cj, &from(), DST, &map()));
        assert_eq!(
            cj.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image").unwrap(),
            &json!(format!("{DST}/shop-prod/batch:1"))
        );
        let mut cm = json!({"kind": "ConfigMap", "data": {"x": format!("{SRC}/shop/batch:1")}});
        let before = cm.clone();
        assert!(!rewrite_object(&mut cm, &from(), DST, &map()));
        assert_eq!(cm, before);
    }

    #[test]
    fn rewrites_image_stream_status_and_spec() {
        let d = format!("sha256:{}", "cd".repeat(32));
        let mut is = json!({"kind": "ImageStream", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"tags": [
                {"name": "v2", "from": {"kind": "DockerImage", "name": format!("{SRC}/shop/web:v2")}},
                {"name": "alias", "from": {"kind": "ImageStreamTag", "name": "web:v2"}}
            ]},
            "status": {"dockerImageRepository": format!("{SRC}/shop/web"),
                "tags": [{"tag": "v2", "items": [{"dockerImageReference": format!("{SRC}/shop/web@{d}"), "image": d}]}]}});
        assert!(rewrite_object(&mut is, &from(), DST, &map()));
        assert_eq!(is["status"]["dockerImageRepository"], format!("{DST}/shop-prod/web"));
        assert_eq!(is["status"]["tags"][0]["items"][0]["dockerImageReference"], format!("{DST}/shop-prod/web@{d}"));
        assert_eq!(is["spec"]["tags"][0]["from"]["name"], format!("{DST}/shop-prod/web:v2"));
        assert_eq!(is["spec"]["tags"][1]["from"]["name"], "web:v2", "ImageStreamTag refs are not registry refs");
    }
}
