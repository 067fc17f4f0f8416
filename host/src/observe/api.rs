//! Reads through the kube dynamic API, as JSON values with `apiVersion` and `kind` set.

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use crate::snapshot::ApiType;

/// A type by name, for the few built-in types mtcd reads or writes directly (namespaces,
/// CRDs, transfer pods…) without a discovery round trip.
pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

/// The kube resource of a discovered type.
pub fn resource(t: &ApiType) -> ApiResource {
    ApiResource {
        group: t.group.clone(),
        version: t.version.clone(),
        api_version: t.api_version.clone(),
        kind: t.kind.clone(),
        plural: t.plural.clone(),
    }
}

fn api(client: &kube::Client, ty: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ty),
        None => Api::all_with(client.clone(), ty),
    }
}

/// Every object of `ty` in `namespace` (paged), as JSON with apiVersion and kind set. A page
/// that fails fails the whole list: a partial list is never returned.
pub async fn list(
    client: &kube::Client,
    ty: &ApiResource,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Value>, kube::Error> {
    let api = api(client, ty, namespace);
    let mut params = ListParams::default().limit(500);
    if let Some(s) = selector {
        params = params.labels(s);
    }
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await?;
        for item in page.items {
            out.push(to_value(item, ty));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// One object, or `None` if it does not exist.
pub async fn get(
    client: &kube::Client,
    ty: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, kube::Error> {
    Ok(api(client, ty, namespace).get_opt(name).await?.map(|o| to_value(o, ty)))
}

pub fn to_value(obj: DynamicObject, ty: &ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(ty.api_version.clone()));
        o.insert("kind".into(), Value::String(ty.kind.clone()));
    }
    v
}
