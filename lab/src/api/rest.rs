//! The generic REST verbs over the store, with the semantics clients rely on: preconditions,
//! no-op writes that keep the resourceVersion, status subresources, finalizers, namespace
//! termination, and owner-reference garbage collection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use base64::Engine;
use serde_json::{Value, json};

use super::error::ApiError;
use super::fields;
use super::openapi::{self, FieldValidation};
use super::patch;
use super::selector::{FieldSelector, LabelSelector};
use super::store::Store;
use super::types::{ResourceType, TypeTable, types_from_crd};
use super::validate::{self, Cidr};

/// Query parameters of one request.
pub type Query = HashMap<String, String>;

thread_local! {
    /// Warnings of the request being handled on this thread (the `Warning` response header):
    /// the handler clears them before it calls into the state, which never awaits.
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes (and clears) the warnings collected on this thread.
pub fn take_warnings() -> Vec<String> {
    WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// Everything one simulated cluster's API server holds.
pub struct State {
    pub cluster: String,
    pub profile: String,
    pub cidr: Cidr,
    pub state_dir: PathBuf,
    /// Static tokens and the service-account token key.
    pub authn: super::auth::Authenticator,
    /// The lab CA (service-account token Secrets carry it as `ca.crt`).
    pub ca_pem: String,
    /// The token this server presents to node agents (`pods/exec`), whose user is
    /// [`super::rbac::KUBELET_CLIENT_USER`].
    pub kubelet_token: String,
    /// Routes without spec.host get `<name>-<namespace>.<apps_domain>`, as on OpenShift.
    pub apps_domain: String,
    /// The cluster's registry (`127.0.0.1:port`), once started: ImageStreams report it.
    pub registry: RwLock<Option<String>>,
    pub types: RwLock<TypeTable>,
    pub store: Mutex<Store>,
}

/// Which kind of write changes ownership, for managedFields.
pub enum Manager<'a> {
    Update(&'a str),
    /// Server-side apply already computed the managedFields.
    Precomputed,
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn meta_str<'a>(obj: &'a Value, k: &str) -> &'a str {
    obj["metadata"][k].as_str().unwrap_or_default()
}

/// The object without fields the server rewrites on every write, for no-op detection.
fn content(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl State {
    /// `tokens`: the static users (kubeconfig tokens); the kubelet client token is added here.
    pub fn new(
        cluster: &str,
        profile: &str,
        cidr: Cidr,
        state_dir: PathBuf,
        tokens: Vec<super::auth::StaticToken>,
        ca_pem: String,
        apps_domain: String,
    ) -> Self {
        let kubelet_token = {
            use rand::RngCore;
            let mut b = [0u8; 24];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        };
        let mut tokens = tokens;
        tokens.push(super::auth::StaticToken {
            token: kubelet_token.clone(),
            user: super::auth::UserInfo::new(super::rbac::KUBELET_CLIENT_USER, &[super::auth::AUTHENTICATED]),
        });
        Self {
            cluster: cluster.into(),
            profile: profile.into(),
            cidr,
            state_dir,
            authn: super::auth::Authenticator::new(tokens),
            ca_pem,
            kubelet_token,
            apps_domain,
            registry: RwLock::new(None),
            types: RwLock::new(TypeTable::builtin(profile)),
            store: Mutex::new(Store::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.read().unwrap_or_else(|e| e.into_inner()).get(group, version, plural)
    }

    fn not_found(ty: &ResourceType, name: &str) -> ApiError {
        ApiError::NotFound { resource: ty.plural.clone(), group: ty.group.clone(), name: name.into() }
    }

    /// With the store locked: 404 for a missing namespace, 403 for a terminating one.
    fn check_namespace(&self, store: &Store, ty: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        match store.get(&(String::new(), "namespaces".into()), "", ns) {
            None => Err(ApiError::NotFound { resource: "namespaces".into(), group: String::new(), name: ns.into() }),
            Some(n) if n["status"]["phase"] == "Terminating" => Err(ApiError::Forbidden {
                message: format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    ty.qualified()
                ),
                name: name.into(),
                kind: ty.plural.clone(),
                group: ty.group.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    pub fn get(&self, ty: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let store = self.lock();
        store.get(&ty.gr(), ns, name).map(|o| self.render(ty, &o)).ok_or_else(|| Self::not_found(ty, name))
    }

    /// Sets apiVersion for the requested version (custom resources may be served in several).
    pub fn render(&self, ty: &ResourceType, obj: &Value) -> Value {
        if ty.crd.is_some() && obj["apiVersion"].as_str() != Some(&ty.api_version()) {
            let mut o = obj.clone();
            o["apiVersion"] = json!(ty.api_version());
            return o;
        }
        obj.clone()
    }

    pub fn list(&self, ty: &ResourceType, ns: Option<&str>, q: &Query) -> Result<Value, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), &ty.kind)?;
        let limit: usize = match q.get("limit") {
            Some(l) => l.parse().map_err(|_| ApiError::BadRequest(format!("invalid limit: {l}")))?,
            None => 0,
        };
        let after: Option<(String, String)> = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(tok) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(tok)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
                    .ok_or_else(|| ApiError::BadRequest("continue key is not valid: illegal base64 data".into()))?;
                Some(raw)
            }
            None => None,
        };
        let store = self.lock();
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        if let (Some(name), None) = (fields.only_name(), &after) {
            // The common single-object watch/list: no scan.
            if let Some(o) = store.get(&ty.gr(), ns.unwrap_or(""), name)
                && labels.matches(&o)
            {
                items.push(self.render(ty, &o));
            }
        } else {
            for (key, o) in store.range(&ty.gr(), ns, after.as_ref()) {
                if !(labels.matches(o) && fields.matches(o)) {
                    continue;
                }
                if limit > 0 && items.len() == limit {
                    if next.is_none() {
                        next = Some(key.clone());
                    }
                    remaining += 1;
                    continue;
                }
                items.push(self.render(ty, o));
            }
        }
        let mut meta = json!({"resourceVersion": store.rv.to_string()});
        if let Some(_first_unreturned) = next {
            let last = items
                .last()
                .map(|o| (meta_str(o, "namespace").to_string(), meta_str(o, "name").to_string()))
                .unwrap_or_default();
            let tok =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&last).unwrap_or_default());
            meta["continue"] = json!(tok);
            meta["remainingItemCount"] = json!(remaining);
        }
        Ok(
            json!({"kind": format!("{}List", ty.kind), "apiVersion": ty.api_version(), "metadata": meta, "items": items}),
        )
    }

    /// POST. `manager`: fieldManager, or derived from the User-Agent.
    pub fn create(
        &self,
        ty: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        q: &Query,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the body of the request is not a JSON object".into()));
        }
        self.check_type_meta(ty, &obj)?;
        self.check_fields(None, ty, &mut obj, q, true)?;
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        }
        if let Some(ns) = ns {
            match obj["metadata"]["namespace"].as_str() {
                Some(b) if !b.is_empty() && b != ns => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let mut name = meta_str(&obj, "name").to_string();
        let generate = meta_str(&obj, "generateName").to_string();
        if name.is_empty() && !generate.is_empty() {
            name = format!("{generate}{}", random_suffix());
            obj["metadata"]["name"] = json!(name);
        }
        let rv = meta_str(&obj, "resourceVersion");
        if !rv.is_empty() {
            return Err(ApiError::invalid(
                &ty.kind,
                &ty.group,
                &name,
                "metadata.resourceVersion",
                format!("{}: must be empty", validate::iv(rv)),
            ));
        }
        validate::validate_name(ty, &name)?;
        validate::validate_labels(ty, &name, &obj)?;
        let dry = dry_run(q);
        let mut store = self.lock();
        let ns_key = ns.unwrap_or("");
        if let Some(ns) = ns {
            self.check_namespace(&store, ty, ns, &name)?;
        }
        if store.get(&ty.gr(), ns_key, &name).is_some() {
            return Err(ApiError::AlreadyExists { resource: ty.plural.clone(), group: ty.group.clone(), name });
        }
        obj["apiVersion"] = json!(ty.api_version());
        obj["kind"] = json!(ty.kind);
        let meta = obj["metadata"].as_object_mut().expect("metadata object");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(fields::now()));
        meta.remove("deletionTimestamp");
        meta.remove("selfLink");
        if ty.has_status || ty.crd.is_some() {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        validate::prepare_create(ty, &name, &mut obj, &store)?;
        if ty.group == "apiregistration.k8s.io" {
            super::aggregator::validate(ty, &name, &obj)?;
            obj["status"] = super::aggregator::status(&store, &obj);
        }
        if ty.group.is_empty() && ty.plural == "pods" && obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            // The lab's scheduler: every cluster has one node, and a pod that does not fit it
            // (node selector, required node affinity) stays Pending, unbound.
            let node_name = super::schedule::node_name(&self.cluster);
            let node = self.resource("", "v1", "nodes").and_then(|t| store.get(&t.gr(), "", &node_name));
            match node.as_deref().and_then(|n| super::schedule::misfit(&obj, n)) {
                None => obj["spec"]["nodeName"] = json!(node_name),
                Some(why) => {
                    obj["status"]["conditions"] = super::schedule::unschedulable_conditions(why, &fields::now())
                }
            }
        }
        self.openshift_defaults(ty, ns_key, &name, &mut obj);
        if ty.group.is_empty() && ty.plural == "services" {
            validate::service_allocate(&mut store, self.cidr, ns_key, &name, None, &mut obj, dry)?;
        }
        if ty.plural == "customresourcedefinitions" {
            let types = types_from_crd(&obj);
            if types.is_empty() {
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    &name,
                    "spec.versions",
                    "Required value: at least one served version".into(),
                ));
            }
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": obj["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": fields::now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": fields::now()},
                ],
            });
            if !dry {
                let mut table = self.types.write().unwrap_or_else(|e| e.into_inner());
                for t in types {
                    table.insert(t);
                }
            }
        }
        if matches!(manager, "") {
            obj["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
        } else if obj["metadata"]["managedFields"]
            .as_array()
            .is_none_or(|a| a.iter().all(|e| e["operation"] != "Apply"))
        {
            let mf = fields::track_update(None, &obj, manager, &ty.api_version(), false);
            obj["metadata"]["managedFields"] = mf;
        }
        if dry {
            return Ok(obj);
        }
        let rv = store.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = store.put(&ty.gr(), ns_key, &name, obj, rv);
        Ok((*stored).clone())
    }

    /// What OpenShift's API server fills in: a generated Route host, ImageStream repository
    /// and tag status (tags that point at an image are reported as imported).
    fn openshift_defaults(&self, ty: &ResourceType, ns: &str, name: &str, obj: &mut Value) {
        match (ty.group.as_str(), ty.plural.as_str()) {
            ("route.openshift.io", "routes") if obj["spec"]["host"].as_str().is_none_or(str::is_empty) => {
                obj["spec"]["host"] = json!(format!("{name}-{ns}.{}", self.apps_domain));
                obj["metadata"]["annotations"]["openshift.io/host.generated"] = json!("true");
            }
            ("image.openshift.io", "imagestreams") => {
                let registry = self.registry.read().unwrap_or_else(|e| e.into_inner()).clone();
                let repo = registry.map(|r| format!("{r}/{ns}/{name}"));
                let mut tags = Vec::new();
                for t in obj["spec"]["tags"].as_array().cloned().unwrap_or_default() {
                    let from = &t["from"];
                    let reference = match from["kind"].as_str() {
                        Some("DockerImage") => from["name"].as_str().map(str::to_string),
                        Some("ImageStreamTag") => repo.as_ref().and_then(|r| {
                            from["name"].as_str().map(|n| format!("{r}:{}", n.rsplit(':').next().unwrap_or(n)))
                        }),
                        _ => None,
                    };
                    if let (Some(tag), Some(reference)) = (t["name"].as_str(), reference) {
                        tags.push(json!({"tag": tag, "items": [{"dockerImageReference": reference,
                            "created": obj["metadata"]["creationTimestamp"], "generation": 1, "image": ""}]}));
                    }
                }
                // Tags pushed straight to the registry are kept (written through /status).
                let mut status = obj["status"].clone();
                if let Some(r) = &repo {
                    status["dockerImageRepository"] = json!(r);
                    status["publicDockerImageRepository"] = json!(r);
                }
                let mut merged: Vec<Value> = status["tags"].as_array().cloned().unwrap_or_default();
                for t in tags {
                    merged.retain(|m| m["tag"] != t["tag"]);
                    merged.push(t);
                }
                if !merged.is_empty() {
                    status["tags"] = Value::Array(merged);
                }
                if !status.is_null() {
                    obj["status"] = status;
                }
            }
            _ => {}
        }
    }

    /// Server-side field validation (`?fieldValidation=`): fields the type's schema does not
    /// declare are dropped, with a warning (Warn, the default) or silently (Ignore), or the
    /// write is refused (Strict) with the decoder's message. `decoding`: the object is a
    /// request body (create, update) rather than the result of a patch.
    fn check_fields(
        &self,
        store: Option<&Store>,
        ty: &ResourceType,
        obj: &mut Value,
        q: &Query,
        decoding: bool,
    ) -> Result<(), ApiError> {
        let mode = FieldValidation::from_query(q)?;
        let crd = ty.crd.as_ref().and_then(|name| {
            let gr = ("apiextensions.k8s.io".to_string(), "customresourcedefinitions".to_string());
            match store {
                Some(s) => s.get(&gr, "", name),
                None => self.lock().get(&gr, "", name),
            }
        });
        let unknown = openapi::prune_unknown(&openapi::type_schema(ty, crd.as_deref()), obj);
        if unknown.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        match mode {
            FieldValidation::Strict if decoding => Err(ApiError::BadRequest(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = ty.kind,
                v = ty.version
            ))),
            FieldValidation::Strict => {
                Err(ApiError::BadRequest(format!("strict decoding error: {}", fields.join(", "))))
            }
            FieldValidation::Warn => {
                WARNINGS.with(|w| w.borrow_mut().extend(fields));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    fn check_type_meta(&self, ty: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let av = obj["apiVersion"].as_str().unwrap_or_default();
        if (!kind.is_empty() && kind != ty.kind) || (!av.is_empty() && av != ty.api_version()) {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                ty.api_version()
            )));
        }
        Ok(())
    }

    /// PUT on the object or its status subresource.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        q: &Query,
        status_sub: bool,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the body of the request is not a JSON object".into()));
        }
        self.check_type_meta(ty, &obj)?;
        let mut obj = obj;
        self.check_fields(None, ty, &mut obj, q, true)?;
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        let mut store = self.lock();
        let old = store.get(&ty.gr(), ns, name).ok_or_else(|| Self::not_found(ty, name))?;
        self.commit(&mut store, ty, ns, name, &old, obj, status_sub, Manager::Update(manager), dry_run(q))
    }

    /// PATCH: JSON patch, merge patch, strategic merge patch or server-side apply.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        q: &Query,
        status_sub: bool,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(format!("error decoding patch: {e}"));
        if ct == "application/apply-patch+yaml" {
            // Clients usually send JSON (valid YAML); the JSON parser is much cheaper.
            let config: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => serde_yaml::from_slice(body).map_err(|e| bad(&e))?,
            };
            let Some(fm) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                return Err(ApiError::BadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into()));
            };
            return self.apply(ty, ns, name, config, q, fm, status_sub);
        }
        let mut store = self.lock();
        let old = store.get(&ty.gr(), ns, name).ok_or_else(|| Self::not_found(ty, name))?;
        let mut new = (*old).clone();
        match ct {
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| bad(&e))?;
                json_patch::patch(&mut new, &p).map_err(|e| {
                    ApiError::invalid(
                        &ty.kind,
                        &ty.group,
                        name,
                        "",
                        format!("the server rejected our request due to an error in our request: {e}"),
                    )
                })?;
            }
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
                json_patch::merge(&mut new, &p);
            }
            "application/strategic-merge-patch+json" => {
                let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
                if ty.crd.is_some() {
                    return Err(ApiError::UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string()));
                }
                patch::strategic_merge(&mut new, &p);
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{} (got {other:?})",
                    if ty.crd.is_some() { "" } else { ", application/strategic-merge-patch+json" }
                )));
            }
        }
        if meta_str(&new, "name") != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name")
            )));
        }
        self.check_fields(Some(&store), ty, &mut new, q, false)?;
        self.commit(&mut store, ty, ns, name, &old, new, status_sub, Manager::Update(manager), dry_run(q))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        config: Value,
        q: &Query,
        manager: &str,
        status_sub: bool,
    ) -> Result<Value, ApiError> {
        if !config.is_object() {
            return Err(ApiError::BadRequest("apply configuration must be an object".into()));
        }
        let kind = config["kind"].as_str().unwrap_or_default();
        let av = config["apiVersion"].as_str().unwrap_or_default();
        if kind.is_empty() || av.is_empty() {
            return Err(ApiError::BadRequest(
                "invalid object type: apiVersion and kind must be set in an apply configuration".into(),
            ));
        }
        self.check_type_meta(ty, &config)?;
        let mut config = config;
        self.check_fields(None, ty, &mut config, q, false)?;
        let cfg_name = meta_str(&config, "name");
        if cfg_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({cfg_name}) does not match the name on the URL ({name})"
            )));
        }
        let force = q.get("force").is_some_and(|f| f == "true");
        let existing = self.lock().get(&ty.gr(), ns, name);
        let Some(_) = existing else {
            if status_sub {
                return Err(Self::not_found(ty, name));
            }
            let uid = meta_str(&config, "uid");
            if !uid.is_empty() {
                return Err(ApiError::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: ",
                        ty.qualified()
                    ),
                    resource: ty.plural.clone(),
                    group: ty.group.clone(),
                    name: name.into(),
                    causes: vec![],
                });
            }
            let obj = fields::apply(ty, name, None, &config, manager, force, false)?;
            let ns_opt = ty.namespaced.then_some(ns);
            return match self.create(ty, ns_opt, obj, q, manager) {
                // Raced with another creator: apply onto what they made.
                Err(ApiError::AlreadyExists { .. }) => self.apply(ty, ns, name, config, q, manager, status_sub),
                other => other,
            };
        };
        let mut store = self.lock();
        let old = store.get(&ty.gr(), ns, name).ok_or_else(|| Self::not_found(ty, name))?;
        let mut merged = fields::apply(ty, name, Some(&old), &config, manager, force, status_sub)?;
        // Apply configurations never carry a precondition unless they set one explicitly.
        if config["metadata"]["resourceVersion"].is_null() {
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        self.commit(&mut store, ty, ns, name, &old, merged, status_sub, Manager::Precomputed, dry_run(q))
    }

    /// The shared tail of every update: preconditions, subresource rules, validation, no-op
    /// detection, generation, finalizer completion, and the write itself.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        store: &mut Store,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        old: &Arc<Value>,
        mut new: Value,
        status_sub: bool,
        manager: Manager<'_>,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let req_uid = meta_str(&new, "uid");
        if !req_uid.is_empty() && req_uid != meta_str(old, "uid") {
            return Err(ApiError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {req_uid}, UID in object meta: {}",
                    ty.qualified(),
                    meta_str(old, "uid")
                ),
                resource: ty.plural.clone(),
                group: ty.group.clone(),
                name: name.into(),
                causes: vec![],
            });
        }
        let req_rv = meta_str(&new, "resourceVersion");
        if !req_rv.is_empty() && req_rv != meta_str(old, "resourceVersion") {
            return Err(ApiError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    ty.qualified()
                ),
                resource: ty.plural.clone(),
                group: ty.group.clone(),
                name: name.into(),
                causes: vec![],
            });
        }
        if status_sub {
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            let mf = new["metadata"]["managedFields"].clone();
            new = (**old).clone();
            match status {
                Value::Null => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
                s => new["status"] = s,
            }
            if matches!(manager, Manager::Precomputed) {
                new["metadata"]["managedFields"] = mf;
            }
        } else if ty.has_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        if ty.group == "apiregistration.k8s.io" {
            // The availability controller owns an APIService's status.
            super::aggregator::validate(ty, name, &new)?;
            new["status"] = super::aggregator::status(store, &new);
        }
        {
            let meta = new["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            if !matches!(manager, Manager::Precomputed) {
                match old["metadata"].get("managedFields") {
                    Some(v) => meta.insert("managedFields".into(), v.clone()),
                    None => meta.remove("managedFields"),
                };
            }
        }
        if ty.group.is_empty()
            && ty.plural == "secrets"
            && let Some(sd) =
                new.as_object_mut().and_then(|m| m.remove("stringData")).and_then(|v| v.as_object().cloned())
        {
            for (k, v) in sd {
                new["data"][k.as_str()] =
                    json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default()));
            }
        }
        if !status_sub {
            validate::redefault(ty, &mut new);
            self.openshift_defaults(ty, ns, name, &mut new);
            validate::validate_labels(ty, name, &new)?;
            if ty.group.is_empty() && matches!(ty.plural.as_str(), "configmaps" | "secrets") {
                validate::validate_data_keys(ty, name, &new)?;
            }
            validate::check_update(ty, name, old, &mut new)?;
            if ty.group.is_empty() && ty.plural == "persistentvolumeclaims" {
                validate::admit_resize(store, ty, name, old, &new)?;
            }
            if ty.group.is_empty() && ty.plural == "services" {
                validate::service_allocate(store, self.cidr, ns, name, Some(old), &mut new, true)?;
            }
        }
        if content(&new) == content(old)
            && fields::decode(&new)
                .iter()
                .map(|e| (&e.manager, &e.fields))
                .eq(fields::decode(old).iter().map(|e| (&e.manager, &e.fields)))
        {
            return Ok((**old).clone());
        }
        if let Manager::Update(m) = manager
            && !m.is_empty()
        {
            let mf = fields::track_update(Some(old), &new, m, &ty.api_version(), status_sub);
            new["metadata"]["managedFields"] = mf;
        }
        if new["metadata"]["managedFields"].as_array().is_some_and(|a| a.is_empty()) {
            new["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
        }
        if (ty.has_status || ty.crd.is_some()) && spec_part(&new) != spec_part(old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if dry {
            return Ok(new);
        }
        if ty.group.is_empty() && ty.plural == "services" && !status_sub {
            validate::service_allocate(store, self.cidr, ns, name, Some(old), &mut new, false)?;
        }
        if ty.plural == "customresourcedefinitions" {
            let mut table = self.types.write().unwrap_or_else(|e| e.into_inner());
            table.remove_crd(name);
            for t in types_from_crd(&new) {
                table.insert(t);
            }
        }
        let rv = store.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let finishing = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
            && !(ty.group.is_empty() && ty.plural == "namespaces");
        if finishing {
            self.remove_now(store, ty, ns, name, new.clone(), rv);
            return Ok(new);
        }
        let stored = store.put(&ty.gr(), ns, name, new, rv);
        Ok((*stored).clone())
    }

    fn remove_now(&self, store: &mut Store, ty: &ResourceType, ns: &str, name: &str, obj: Value, rv: u64) {
        if ty.group.is_empty() && ty.plural == "services" {
            validate::service_release(store, ns, name);
        }
        let crd_gr = (ty.plural == "customresourcedefinitions").then(|| {
            (
                obj["spec"]["group"].as_str().unwrap_or_default().to_string(),
                obj["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string(),
            )
        });
        store.remove(&ty.gr(), ns, name, obj, rv);
        if let Some(gr) = crd_gr {
            self.types.write().unwrap_or_else(|e| e.into_inner()).remove_crd(name);
            // Instances go with their definition, as on a real server.
            let keys: Vec<(String, String)> = store.range(&gr, None, None).map(|(k, _)| k.clone()).collect();
            for (ns, n) in keys {
                if let Some(o) = store.get(&gr, &ns, &n) {
                    let rv = store.next_rv();
                    let mut o = (*o).clone();
                    o["metadata"]["resourceVersion"] = json!(rv.to_string());
                    store.remove(&gr, &ns, &n, o, rv);
                }
            }
        }
    }

    /// DELETE. Returns the object as deleted (or as marked, when finalizers hold it).
    pub fn delete(
        self: &Arc<Self>,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        q: &Query,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let mut store = self.lock();
        let old = store.get(&ty.gr(), ns, name).ok_or_else(|| Self::not_found(ty, name))?;
        let pre = &options["preconditions"];
        let conflict = |what: &str, want: &str, have: &str| ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}: {want}, {what} in object meta: {have}",
                ty.qualified()
            ),
            resource: ty.plural.clone(),
            group: ty.group.clone(),
            name: name.into(),
            causes: vec![],
        };
        if let Some(uid) = pre["uid"].as_str()
            && uid != meta_str(&old, "uid")
        {
            return Err(conflict("UID", uid, meta_str(&old, "uid")));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(conflict("ResourceVersion", rv, meta_str(&old, "resourceVersion")));
        }
        let dry = dry_run(q) || options["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All"));
        if dry {
            return Ok((*old).clone());
        }
        let is_ns = ty.group.is_empty() && ty.plural == "namespaces";
        let has_finalizers = old["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if is_ns || has_finalizers {
            if !old["metadata"]["deletionTimestamp"].is_null() {
                return Ok((*old).clone());
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = json!(fields::now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_ns {
                new["status"]["phase"] = json!("Terminating");
            }
            let rv = store.next_rv();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let stored = store.put(&ty.gr(), ns, name, new, rv);
            drop(store);
            if is_ns {
                let me = self.clone();
                let ns_name = name.to_string();
                tokio::spawn(async move { me.finalize_namespace(&ns_name).await });
            }
            return Ok((*stored).clone());
        }
        let rv = store.next_rv();
        let mut obj = (*old).clone();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.remove_now(&mut store, ty, ns, name, obj.clone(), rv);
        drop(store);
        let orphan = q.get("propagationPolicy").map(String::as_str) == Some("Orphan")
            || options["propagationPolicy"] == "Orphan"
            || options["orphanDependents"] == true;
        if !orphan {
            let uid = meta_str(&obj, "uid").to_string();
            let me = self.clone();
            let ns = ns.to_string();
            tokio::spawn(async move { me.collect_dependents(&ns, &uid) });
        }
        Ok(obj)
    }

    /// Deletes objects whose ownerReferences point at a deleted owner (the garbage collector).
    fn collect_dependents(self: &Arc<Self>, ns: &str, owner_uid: &str) {
        if ns.is_empty() {
            return;
        }
        let victims: Vec<(Arc<ResourceType>, String)> = {
            let store = self.lock();
            if !store.has_dependents(owner_uid) {
                return;
            }
            let types: Vec<Arc<ResourceType>> =
                self.types.read().unwrap_or_else(|e| e.into_inner()).all().filter(|t| t.namespaced).cloned().collect();
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for t in types {
                if !seen.insert(t.gr()) {
                    continue;
                }
                for ((_, name), o) in store.range(&t.gr(), Some(ns), None) {
                    if o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
                    {
                        out.push((t.clone(), name.clone()));
                    }
                }
            }
            out
        };
        for (t, name) in victims {
            let _ = self.delete(&t, ns, &name, &Query::new(), &Value::Null);
        }
    }

    /// Empties a terminating namespace, then removes it (what the namespace controller does).
    async fn finalize_namespace(self: Arc<Self>, ns: &str) {
        let ns_ty = self.resource("", "v1", "namespaces").expect("namespaces type");
        loop {
            let keys = self.lock().keys_in_namespace(ns);
            for (gr, name) in keys {
                let ty = self.types.read().unwrap_or_else(|e| e.into_inner()).all().find(|t| t.gr() == gr).cloned();
                if let Some(ty) = ty {
                    let _ = self.delete(&ty, ns, &name, &Query::new(), &Value::Null);
                }
            }
            {
                let mut store = self.lock();
                let Some(obj) = store.get(&ns_ty.gr(), "", ns) else {
                    return;
                };
                if store.namespace_is_empty(ns) {
                    let rv = store.next_rv();
                    let mut o = (*obj).clone();
                    o["metadata"]["resourceVersion"] = json!(rv.to_string());
                    if let Some(m) = o["spec"].as_object_mut() {
                        m.insert("finalizers".into(), json!([]));
                    }
                    store.remove(&ns_ty.gr(), "", ns, o, rv);
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// DELETE on a collection (with selectors), returning the deleted objects as a list.
    pub fn delete_collection(
        self: &Arc<Self>,
        ty: &ResourceType,
        ns: Option<&str>,
        q: &Query,
    ) -> Result<Value, ApiError> {
        let mut lq = q.clone();
        lq.remove("limit");
        lq.remove("continue");
        let list = self.list(ty, ns, &lq)?;
        let mut items = Vec::new();
        for o in list["items"].as_array().cloned().unwrap_or_default() {
            if let Ok(d) = self.delete(ty, meta_str(&o, "namespace"), meta_str(&o, "name"), q, &Value::Null) {
                items.push(d);
            }
        }
        Ok(json!({"kind": format!("{}List", ty.kind), "apiVersion": ty.api_version(), "metadata": {}, "items": items}))
    }
}
