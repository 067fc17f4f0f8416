//! Finding the images to copy in the source objects. Pure: no I/O, so the plan can call it.
//!
//! Two sources of truth, as in MTC: ImageStreams (what the internal registry holds for the
//! namespace, with tag history) and pod templates (what workloads actually run, which may
//! name internal images no ImageStream tracks).

use indexmap::IndexMap;
use serde_json::Value;

use super::reference::{ImageRef, same_host};
use crate::spec::{DimOptions, NotReferenced};

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

/// Why a discovered image is not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Only finished pods, finished Jobs or old ReplicaSets (0 replicas, owned by a
    /// Deployment or DeploymentConfig) use it; `not_referenced = "copy"` copies it anyway.
    NotReferenced,
    /// `include_tags`/`exclude_tags` leave its tag out.
    ExcludedTag,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::NotReferenced => "not referenced (only finished pods, finished Jobs or old ReplicaSets use it)",
            SkipReason::ExcludedTag => "excluded by the tag filters",
        }
    }
}

/// An image of the internal registry found in the objects, and whether it is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub image: ImageRef,
    /// `None`: copied.
    pub skip: Option<SkipReason>,
    /// Who uses it, e.g. `ImageStream shop/web tag v2`, `Pod shop/job-x (Succeeded)`: the
    /// first few, for the plan.
    pub used_by: Vec<String>,
}

/// An image the plan lists but does not copy, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedImage {
    /// The reference as found (source registry).
    pub image: String,
    pub reason: SkipReason,
    /// The first few users, e.g. `Pod shop/job-x (Succeeded)`.
    pub used_by: Vec<String>,
}

impl Found {
    /// The plan's entry for a skipped image.
    pub fn skipped(&self) -> Option<SkippedImage> {
        self.skip.map(|reason| SkippedImage { image: self.image.to_string(), reason, used_by: self.used_by.clone() })
    }
}

/// How many users of an image are named in the plan.
const USERS_SHOWN: usize = 3;

/// One use of an image by one object.
struct Use {
    /// The tag the filters judge: the ImageStream tag name, or the reference's tag
    /// (`latest` when it has neither tag nor digest). `None`: digest only, never filtered.
    tag: Option<String>,
    /// Running or able to run (not a finished pod/Job or an old ReplicaSet).
    live: bool,
    who: String,
}

/// Images under `internal_hosts` referenced by `objects` and what the options make of each,
/// in first-seen order.
///
/// ImageStream tags contribute their first `max_history` items (at least the current one):
/// the current item carries the tag name (the destination gets the same tag), older items
/// are copied by digest only. Pod-template images keep the reference as written.
/// Unparseable references are skipped: they cannot be internal images that a registry
/// would serve, and the resource copy reports them if the API server rejects them.
///
/// An image is copied when at least one use passes the tag filters and is live (or
/// `not_referenced = "copy"`). ImageStream tags are always live: the registry keeps them.
pub fn select(objects: &[Value], internal_hosts: &[String], opts: &DimOptions) -> Vec<Found> {
    let internal = |r: &ImageRef| internal_hosts.iter().any(|h| same_host(h, &r.registry));
    let mut found: IndexMap<ImageRef, Vec<Use>> = IndexMap::new();
    for obj in objects {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = format!(
            "{}/{}",
            obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
            obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
        );
        if kind == "ImageStream" {
            let tags = obj.pointer("/status/tags").and_then(Value::as_array);
            for tag in tags.into_iter().flatten() {
                let tag_name = tag.get("tag").and_then(Value::as_str);
                let items = tag.get("items").and_then(Value::as_array);
                for (i, item) in items.into_iter().flatten().take(opts.max_history.max(1)).enumerate() {
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
                        r.digest =
                            item.get("image").and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string);
                    }
                    let filter_tag = tag_name.map(str::to_string).or_else(|| r.tag.clone());
                    r.tag = match (i, tag_name) {
                        (0, Some(name)) => Some(name.to_string()),
                        // History is addressed by digest; a tag would move the current one.
                        _ if r.digest.is_some() => None,
                        _ => r.tag,
                    };
                    let who = match (i, tag_name) {
                        (0, Some(t)) => format!("ImageStream {name} tag {t}"),
                        (_, Some(t)) => format!("ImageStream {name} tag {t} (history {i})"),
                        _ => format!("ImageStream {name}"),
                    };
                    found.entry(r).or_default().push(Use { tag: filter_tag, live: true, who });
                }
            }
            continue;
        }
        let Some(path) = pod_spec_path(kind) else {
            continue;
        };
        let (live, state) = liveness(kind, obj);
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
                    let tag = match (&r.tag, &r.digest) {
                        (Some(t), _) => Some(t.clone()),
                        (None, Some(_)) => None,
                        (None, None) => Some("latest".to_string()),
                    };
                    let who = format!("{kind} {name}{state}");
                    let uses = found.entry(r).or_default();
                    if !uses.iter().any(|u| u.who == who) {
                        uses.push(Use { tag, live, who });
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .map(|(image, uses)| {
            let selected: Vec<&Use> =
                uses.iter().filter(|u| u.tag.as_deref().is_none_or(|t| opts.tag_selected(t))).collect();
            let skip = if selected.is_empty() {
                Some(SkipReason::ExcludedTag)
            } else if opts.not_referenced == NotReferenced::Skip && !selected.iter().any(|u| u.live) {
                Some(SkipReason::NotReferenced)
            } else {
                None
            };
            let used_by = uses.iter().take(USERS_SHOWN).map(|u| u.who.clone()).collect();
            Found { image, skip, used_by }
        })
        .collect()
}

/// Whether a workload can still run its images, and a note for the plan: a pod that
/// finished (Succeeded/Failed), a Job that completed or failed, a ReplicaSet or
/// ReplicationController at 0 replicas that a Deployment or DeploymentConfig owns (an old
/// revision) cannot.
fn liveness(kind: &str, obj: &Value) -> (bool, String) {
    match kind {
        "Pod" => match obj.pointer("/status/phase").and_then(Value::as_str) {
            Some(p @ ("Succeeded" | "Failed")) => (false, format!(" ({p})")),
            _ => (true, String::new()),
        },
        "Job" => {
            let finished = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    matches!(c.get("type").and_then(Value::as_str), Some("Complete" | "Failed"))
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
                .and_then(|c| c.get("type").and_then(Value::as_str));
            match finished {
                Some(t) => (false, format!(" ({})", if t == "Complete" { "completed" } else { "failed" })),
                None => (true, String::new()),
            }
        }
        "ReplicaSet" | "ReplicationController" => {
            let zero = obj.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0);
            let owned =
                obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().any(|o| {
                    o.get("controller").and_then(Value::as_bool) == Some(true)
                        && matches!(o.get("kind").and_then(Value::as_str), Some("Deployment" | "DeploymentConfig"))
                });
            if zero && owned { (false, " (old revision, 0 replicas)".to_string()) } else { (true, String::new()) }
        }
        _ => (true, String::new()),
    }
}

/// Every image `select` copies, dropping the skipped ones.
pub fn discover(objects: &[Value], internal_hosts: &[String], opts: &DimOptions) -> Vec<ImageRef> {
    select(objects, internal_hosts, opts).into_iter().filter(|f| f.skip.is_none()).map(|f| f.image).collect()
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
    fn history(n: usize) -> DimOptions {
        DimOptions { max_history: n, ..Default::default() }
    }
    fn patterns(p: &[&str]) -> Vec<crate::spec::TagPattern> {
        p.iter().map(|p| crate::spec::TagPattern::new(p).unwrap()).collect()
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
        let got = discover(&[image_stream()], &hosts(), &history(1));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].repository, "shop/web");
        assert_eq!(got[0].tag.as_deref(), Some("v2"));
        assert_eq!(got[0].digest, Some(d(2)));
    }

    #[test]
    fn image_stream_history_depth() {
        let got = discover(&[image_stream()], &hosts(), &history(2));
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].digest, Some(d(1)));
        assert_eq!(got[1].tag, None, "history items are copied by digest only");
        assert_eq!(discover(&[image_stream()], &hosts(), &history(10)).len(), 3);
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
        let got: Vec<String> = discover(&objs, &hosts(), &history(1)).iter().map(|r| r.repository.clone()).collect();
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
        let got = discover(&objs, &hosts(), &history(1));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_string(), format!("{INT}/shop/x:1"));
        assert!(discover(&objs, &[], &history(1)).is_empty(), "no internal hosts: nothing is internal");
    }

    fn stream_with_tags(tags: &[(&str, u8)]) -> Value {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(t, n)| {
                json!({"tag": t, "items": [
                    {"dockerImageReference": format!("{INT}/shop/web@{}", d(*n)), "image": d(*n)},
                    {"dockerImageReference": format!("{INT}/shop/web@{}", d(n + 100)), "image": d(n + 100)}
                ]})
            })
            .collect();
        json!({"kind": "ImageStream", "metadata": {"name": "web", "namespace": "shop"}, "status": {"tags": tags}})
    }

    #[test]
    fn tag_filters_select_image_stream_tags_and_their_history() {
        let is = stream_with_tags(&[("v1", 1), ("v2", 2), ("latest", 3), ("dev-123", 4)]);
        let opts = DimOptions {
            max_history: 2,
            include_tags: patterns(&["v[0-9]+", "latest"]),
            exclude_tags: patterns(&["v1"]),
            ..Default::default()
        };
        let got = select(&[is], &hosts(), &opts);
        let copied: Vec<String> = got.iter().filter(|f| f.skip.is_none()).map(|f| f.image.to_string()).collect();
        assert_eq!(
            copied,
            [
                format!("{INT}/shop/web:v2@{}", d(2)),
                format!("{INT}/shop/web@{}", d(102)),
                format!("{INT}/shop/web:latest@{}", d(3)),
                format!("{INT}/shop/web@{}", d(103)),
            ],
            "v2 and latest with one history item each; v1 excluded, dev-123 not included"
        );
        let excluded: Vec<&Found> = got.iter().filter(|f| f.skip == Some(SkipReason::ExcludedTag)).collect();
        assert_eq!(excluded.len(), 4, "{excluded:?}");
        assert_eq!(excluded[0].used_by, ["ImageStream shop/web tag v1"]);
        assert_eq!(excluded[1].used_by, ["ImageStream shop/web tag v1 (history 1)"]);
    }

    #[test]
    fn patterns_match_the_whole_tag() {
        let opts = DimOptions { exclude_tags: patterns(&["latest"]), ..Default::default() };
        assert!(!opts.tag_selected("latest"));
        assert!(opts.tag_selected("latest-dev"), "anchored: `latest` does not exclude `latest-dev`");
        let opts = DimOptions { include_tags: patterns(&["v1|v2"]), ..Default::default() };
        assert!(opts.tag_selected("v2") && !opts.tag_selected("v22"), "alternation stays inside the anchors");
    }

    #[test]
    fn images_only_finished_or_old_workloads_use_are_not_referenced() {
        let pod = |name: &str, image: &str, phase: &str| {
            json!({"kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": format!("{INT}/shop/{image}")}]},
                "status": {"phase": phase}})
        };
        let rs = |name: &str, image: &str, replicas: i64, owner: Option<&str>| {
            let owners: Vec<Value> = owner
                .map(|k| json!({"apiVersion": "apps/v1", "kind": k, "name": "web", "uid": "u", "controller": true}))
                .into_iter()
                .collect();
            json!({"kind": "ReplicaSet", "metadata": {"name": name, "namespace": "shop", "ownerReferences": owners},
                "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": format!("{INT}/shop/{image}")}]}}}})
        };
        let job = |name: &str, image: &str, cond: &str| {
            json!({"kind": "Job", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("{INT}/shop/{image}")}]}}},
                "status": {"conditions": [{"type": cond, "status": "True"}]}})
        };
        let objs = vec![
            pod("done", "batch:1", "Succeeded"),
            pod("crashed", "tool:1", "Failed"),
            pod("running", "web:2", "Running"),
            pod("old-pod", "web:2", "Succeeded"),
            rs("web-1", "web:1", 0, Some("Deployment")),
            rs("web-2", "web:2", 3, Some("Deployment")),
            rs("manual", "manual:1", 0, None),
            job("migrate", "migrate:1", "Complete"),
            job("pending", "report:1", "Suspended"),
        ];
        let got = select(&objs, &hosts(), &DimOptions::default());
        let state: Vec<(String, Option<SkipReason>)> =
            got.iter().map(|f| (f.image.repository.clone() + ":" + f.image.tag.as_deref().unwrap(), f.skip)).collect();
        let nr = Some(SkipReason::NotReferenced);
        assert_eq!(
            state,
            [
                ("shop/batch:1".to_string(), nr),
                ("shop/tool:1".to_string(), nr),
                ("shop/web:2".to_string(), None),
                ("shop/web:1".to_string(), nr),
                ("shop/manual:1".to_string(), None),
                ("shop/migrate:1".to_string(), nr),
                ("shop/report:1".to_string(), None),
            ]
        );
        assert_eq!(got[0].used_by, ["Pod shop/done (Succeeded)"]);
        assert_eq!(got[3].used_by, ["ReplicaSet shop/web-1 (old revision, 0 replicas)"]);
        assert_eq!(got[2].used_by, ["Pod shop/running", "Pod shop/old-pod (Succeeded)", "ReplicaSet shop/web-2"]);
        let all = select(&objs, &hosts(), &DimOptions { not_referenced: NotReferenced::Copy, ..Default::default() });
        assert!(all.iter().all(|f| f.skip.is_none()), "not_referenced = \"copy\" copies them");
    }

    #[test]
    fn workload_tags_are_filtered_too_but_digests_never() {
        let dep = json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": format!("{INT}/shop/web:dev")},
            {"name": "b", "image": format!("{INT}/shop/web@{}", d(7))},
            {"name": "c", "image": format!("{INT}/shop/plain")}
        ]}}}});
        let opts = DimOptions { exclude_tags: patterns(&["dev", "latest"]), ..Default::default() };
        let skips: Vec<Option<SkipReason>> = select(&[dep], &hosts(), &opts).iter().map(|f| f.skip).collect();
        let ex = Some(SkipReason::ExcludedTag);
        assert_eq!(skips, [ex, None, ex], "an untagged reference is `latest`");
    }
}
