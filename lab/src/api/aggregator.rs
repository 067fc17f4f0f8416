//! The API aggregation layer: `apiregistration.k8s.io/v1` APIService objects, and the
//! aggregated group every lab cluster has, `metrics.k8s.io/v1beta1` (PodMetrics, NodeMetrics)
//! behind APIService `v1beta1.metrics.k8s.io`.
//!
//! What clients trip over on real clusters is an APIService that is registered but not
//! available: `/apis` still lists its group, but discovery of the group version and every
//! request to it answer 503 — a client that insists on complete discovery stalls or fails.
//! The lab reproduces that: the availability controller's part is done on every write of an
//! APIService (status is computed, never taken from the client), and a test switches the
//! metrics API down with the lab-only annotation [`UNAVAILABLE_ANNOTATION`] `: "true"`.
//! APIServices for other groups have no backend in the lab: they are registered, listed in
//! `/apis`, and unavailable, like the stale APIService of an uninstalled adapter.

use serde_json::{Value, json};

use super::error::ApiError;
use super::rest::State;
use super::store::Store;
use super::types::ResourceType;

/// The metrics API's APIService.
pub const METRICS_APISERVICE: &str = "v1beta1.metrics.k8s.io";
/// `lab.mtcd.io/unavailable: "true"` on the metrics APIService makes it unavailable (the lab's
/// switch: a real availability controller would overwrite a status written by a client).
pub const UNAVAILABLE_ANNOTATION: &str = "lab.mtcd.io/unavailable";
/// The body kube-aggregator writes for an unavailable APIService (`http.Error`, text/plain);
/// clients render the 503 as "the server is currently unable to handle the request".
pub const UNAVAILABLE_BODY: &str = "service unavailable\n";

fn apiservices() -> (String, String) {
    ("apiregistration.k8s.io".into(), "apiservices".into())
}

/// The `Available` condition an availability controller would write for `obj`.
pub fn status(store: &Store, obj: &Value) -> Value {
    let now = super::fields::now();
    let cond = |status: &str, reason: &str, message: String| {
        json!({"conditions": [{"type": "Available", "status": status, "lastTransitionTime": now,
            "reason": reason, "message": message}]})
    };
    let svc = &obj["spec"]["service"];
    if svc.is_null() {
        return cond("True", "Local", "Local APIServices are always available".into());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let (svc_ns, svc_name) = (svc["namespace"].as_str().unwrap_or_default(), svc["name"].as_str().unwrap_or_default());
    let down = obj["metadata"]["annotations"][UNAVAILABLE_ANNOTATION] == "true";
    if name == METRICS_APISERVICE && !down {
        return cond("True", "Passed", "all checks passed".into());
    }
    let service = store.get(&(String::new(), "services".into()), svc_ns, svc_name);
    let Some(service) = service else {
        return cond("False", "ServiceNotFound", format!("service/{svc_name} in {svc_ns:?} is not present"));
    };
    if name != METRICS_APISERVICE {
        return cond(
            "False",
            "MissingEndpoints",
            format!("endpoints for service/{svc_name} in {svc_ns:?} have no addresses with port name \"https\""),
        );
    }
    let ip = service["spec"]["clusterIP"].as_str().unwrap_or_default();
    let port = svc["port"].as_i64().unwrap_or(443);
    let gv = format!(
        "{}/{}",
        obj["spec"]["group"].as_str().unwrap_or_default(),
        obj["spec"]["version"].as_str().unwrap_or_default()
    );
    cond(
        "False",
        "FailedDiscoveryCheck",
        format!(
            "failing or missing response from https://{ip}:{port}/apis/{gv}: Get \"https://{ip}:{port}/apis/{gv}\": dial tcp {ip}:{port}: connect: connection refused"
        ),
    )
}

/// 422 unless an APIService is named `<version>.<group>`.
pub fn validate(ty: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    let (g, v) =
        (obj["spec"]["group"].as_str().unwrap_or_default(), obj["spec"]["version"].as_str().unwrap_or_default());
    if v.is_empty() {
        return Err(ApiError::invalid(&ty.kind, &ty.group, name, "spec.version", "Required value".into()));
    }
    let want = if g.is_empty() { v.to_string() } else { format!("{v}.{g}") };
    if name != want {
        return Err(ApiError::invalid(
            &ty.kind,
            &ty.group,
            name,
            "metadata.name",
            format!("Invalid value: {name:?}: must be {want}"),
        ));
    }
    Ok(())
}

/// How a group version is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// By this server (built-in or CRD types).
    Local,
    /// By an APIService that is available.
    Available,
    /// By an APIService that is not: 503.
    Unavailable,
    /// An aggregated type whose APIService was deleted: not served at all.
    Unregistered,
}

fn available(o: &Value) -> bool {
    o["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Available" && c["status"] == "True"))
}

/// Non-local APIServices: (group, version, available).
fn remote(store: &Store) -> Vec<(String, String, bool)> {
    store
        .range(&apiservices(), None, None)
        .filter(|(_, o)| !o["spec"]["service"].is_null())
        .map(|(_, o)| {
            let s = |k: &str| o["spec"][k].as_str().unwrap_or_default().to_string();
            (s("group"), s("version"), available(o))
        })
        .collect()
}

impl State {
    /// How `group/version` is served, for routing.
    pub fn serving(&self, group: &str, version: &str) -> Serving {
        let aggregated_type = {
            let t = self.types.read().unwrap_or_else(|e| e.into_inner());
            t.all().any(|ty| ty.aggregated && ty.group == group && ty.version == version)
        };
        let store = self.lock();
        match remote(&store).into_iter().find(|(g, v, _)| g == group && v == version) {
            Some((_, _, true)) => Serving::Available,
            Some((_, _, false)) => Serving::Unavailable,
            None if aggregated_type => Serving::Unregistered,
            None => Serving::Local,
        }
    }

    /// `/apis`: the local groups plus every registered APIService's group, available or
    /// not (as kube-aggregator lists them); aggregated groups without an APIService are gone.
    pub fn group_list(&self) -> Value {
        let mut list = self.types.read().unwrap_or_else(|e| e.into_inner()).group_list();
        let remote = remote(&self.lock());
        let registered = |g: &str, v: &str| remote.iter().any(|(rg, rv, _)| rg == g && rv == v);
        let aggregated: Vec<(String, String)> = self
            .types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all()
            .filter(|t| t.aggregated)
            .map(|t| (t.group.clone(), t.version.clone()))
            .collect();
        if let Some(groups) = list["groups"].as_array_mut() {
            groups.retain(|g| {
                let name = g["name"].as_str().unwrap_or_default();
                let all_unregistered = g["versions"].as_array().is_some_and(|vs| {
                    vs.iter().all(|v| {
                        let v = v["version"].as_str().unwrap_or_default();
                        aggregated.iter().any(|(ag, av)| ag == name && av == v) && !registered(name, v)
                    })
                });
                !all_unregistered
            });
            for (g, v, _) in &remote {
                if g.is_empty() || groups.iter().any(|x| x["name"] == *g) {
                    continue;
                }
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                groups.push(json!({"name": g, "versions": [gv], "preferredVersion": gv}));
            }
        }
        list
    }

    /// `/apis/<group>` of a group only APIServices serve (kube-aggregator answers it itself).
    pub fn remote_group(&self, group: &str) -> Option<Value> {
        let versions: Vec<Value> = remote(&self.lock())
            .into_iter()
            .filter(|(g, _, _)| g == group)
            .map(|(g, v, _)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first()?.clone();
        Some(
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": preferred}),
        )
    }
}

/// A request to an available aggregated type: the metrics API lists nothing (no pod or node
/// has been measured) and has no object to get; it serves only get and list.
pub fn serve(ty: &ResourceType, method: &http::Method, name: Option<&str>, watch: bool) -> Result<Value, ApiError> {
    match (method, name) {
        (&http::Method::GET, None) if !watch => Ok(json!({"kind": format!("{}List", ty.kind),
            "apiVersion": ty.api_version(), "metadata": {}, "items": []})),
        (&http::Method::GET, Some(n)) => {
            Err(ApiError::NotFound { resource: ty.plural.clone(), group: ty.group.clone(), name: n.into() })
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
