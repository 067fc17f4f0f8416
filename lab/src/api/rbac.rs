//! Authorization as kube-apiserver does it with `--authorization-mode=RBAC`: every request is
//! turned into attributes (verb, API group, resource, subresource, namespace, name, or a
//! non-resource path) the way the server's RequestInfo does, and allowed only if a rule of a
//! Role or ClusterRole bound to the user (or one of its groups, or its service account) covers
//! it. `system:masters` is allowed everything before RBAC is asked, as on a real server.
//!
//! The policy lives in the API (`rbac.authorization.k8s.io/v1` objects in the store), so a test
//! grants or revokes access exactly as an administrator would. A cluster starts with the
//! bootstrap roles a real one has ([`bootstrap_policy`]).

use http::Method;
use serde_json::{Value, json};

use super::auth::UserInfo;
use super::error::ApiError;
use super::rest::Query;
use super::store::Store;

const RBAC: &str = "rbac.authorization.k8s.io";

/// What a request asks to do: kube-apiserver's `authorizer.Attributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    /// The URL path, for non-resource requests (`/version`, `/apis`).
    pub path: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// The attributes of an HTTP request, parsed like the server's RequestInfoFactory: `/api`
    /// and `/apis` paths with at least a resource are resource requests; GET without a name is
    /// `list` or `watch` (a `metadata.name=` field selector names the object), DELETE without a
    /// name is `deletecollection`; everything else is a non-resource request whose verb is the
    /// lower-cased method.
    pub fn from_request(method: &Method, path: &str, query: &Query) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let non_resource =
            || Attributes { verb: method.as_str().to_ascii_lowercase(), path: path.to_string(), ..Default::default() };
        if parts.len() < 3 {
            return non_resource();
        }
        let mut a = Attributes { resource_request: true, path: path.to_string(), ..Default::default() };
        let mut rest: &[&str] = match parts[0] {
            "api" => &parts[1..],
            "apis" if parts.len() >= 4 => {
                a.group = parts[1].to_string();
                &parts[2..]
            }
            _ => return non_resource(),
        };
        a.version = rest[0].to_string();
        rest = &rest[1..];
        if rest.first() == Some(&"watch") && rest.len() > 1 {
            a.verb = "watch".into();
            rest = &rest[1..];
        } else {
            a.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .into();
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        if let Some(r) = rest.first() {
            a.resource = r.to_string();
        }
        if let Some(n) = rest.get(1) {
            a.name = n.to_string();
        }
        if let Some(s) = rest.get(2) {
            a.subresource = s.to_string();
        }
        if a.name.is_empty() && a.verb == "get" {
            a.verb = if query.get("watch").is_some_and(|w| w == "true" || w == "1") { "watch" } else { "list" }.into();
            if let Some(name) = query.get("fieldSelector").and_then(|f| exact_name(f)) {
                a.name = name;
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".into();
        }
        a
    }

    /// `pods/exec`, or `pods`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`), which a list or
/// watch is authorized with.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        (k.trim() == "metadata.name" && !k.ends_with('!') && !v.is_empty()).then(|| v.trim().to_string())
    })
}

/// What an authorizer concluded and why (the reason access reviews report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    /// RBAC never denies: it has no opinion, and with no other authorizer that means 403.
    NoOpinion(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(v: &Value, want: &str) -> bool {
    strs(v).any(|s| s == want || s == "*")
}

/// rbac/v1 `ResourceMatches`: `*`, an exact `resource/subresource`, or `*/subresource`.
fn resource_matches(rule: &Value, combined: &str, subresource: &str) -> bool {
    strs(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

fn url_matches(rule: &Value, path: &str) -> bool {
    strs(&rule["nonResourceURLs"])
        .any(|u| u == "*" || u == path || (u.ends_with('*') && path.starts_with(&u[..u.len() - 1])))
}

/// Whether one PolicyRule allows the request (rbac's `RuleAllows`).
pub fn rule_allows(a: &Attributes, rule: &Value) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if !a.resource_request {
        return url_matches(rule, &a.path);
    }
    if !has(&rule["apiGroups"], &a.group) || !resource_matches(rule, &a.combined_resource(), &a.subresource) {
        return false;
    }
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

/// The subject of a binding that names `user`, if any. `binding_ns` is the RoleBinding's
/// namespace (a ServiceAccount subject without a namespace means that one), "" for a
/// ClusterRoleBinding.
fn matching_subject<'a>(binding: &'a Value, user: &UserInfo, binding_ns: &str) -> Option<&'a Value> {
    binding["subjects"].as_array()?.iter().find(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("User") => name == user.name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns = s["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

fn describe_subject(s: &Value, binding_ns: &str) -> String {
    let kind = s["kind"].as_str().unwrap_or_default();
    let name = s["name"].as_str().unwrap_or_default();
    if kind == "ServiceAccount" {
        let ns = s["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
        return format!("{kind} {:?}", format!("{name}/{ns}"));
    }
    format!("{kind} {name:?}")
}

fn gr(resource: &str) -> (String, String) {
    (RBAC.to_string(), resource.to_string())
}

/// The rules a binding grants: its Role (in the binding's namespace) or ClusterRole.
fn role_rules(store: &Store, binding: &Value, binding_ns: &str) -> Vec<Value> {
    let r = &binding["roleRef"];
    let name = r["name"].as_str().unwrap_or_default();
    let role = match r["kind"].as_str() {
        Some("ClusterRole") => store.get(&gr("clusterroles"), "", name),
        Some("Role") if !binding_ns.is_empty() => store.get(&gr("roles"), binding_ns, name),
        _ => None,
    };
    role.and_then(|o| o["rules"].as_array().cloned()).unwrap_or_default()
}

/// Visits every rule that applies to `user` for a request in `ns` (cluster bindings first),
/// with the text RBAC names the grant by; stops when `f` returns true.
fn visit_rules(store: &Store, user: &UserInfo, ns: &str, mut f: impl FnMut(&Value, &dyn Fn() -> String) -> bool) {
    for (_, crb) in store.range(&gr("clusterrolebindings"), None, None) {
        let Some(subject) = matching_subject(crb, user, "") else { continue };
        for rule in role_rules(store, crb, "") {
            let source = || {
                format!(
                    "ClusterRoleBinding {:?} of {} {:?} to {}",
                    crb["metadata"]["name"].as_str().unwrap_or_default(),
                    crb["roleRef"]["kind"].as_str().unwrap_or_default(),
                    crb["roleRef"]["name"].as_str().unwrap_or_default(),
                    describe_subject(subject, "")
                )
            };
            if f(&rule, &source) {
                return;
            }
        }
    }
    if ns.is_empty() {
        return;
    }
    for (_, rb) in store.range(&gr("rolebindings"), Some(ns), None) {
        let Some(subject) = matching_subject(rb, user, ns) else { continue };
        for rule in role_rules(store, rb, ns) {
            let source = || {
                format!(
                    "RoleBinding {:?} of {} {:?} to {}",
                    format!("{}/{ns}", rb["metadata"]["name"].as_str().unwrap_or_default()),
                    rb["roleRef"]["kind"].as_str().unwrap_or_default(),
                    rb["roleRef"]["name"].as_str().unwrap_or_default(),
                    describe_subject(subject, ns)
                )
            };
            if f(&rule, &source) {
                return;
            }
        }
    }
}

/// The privileged-group authorizer, then RBAC.
pub fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> Decision {
    if user.is_master() {
        return Decision::Allow(String::new());
    }
    let mut decision = Decision::NoOpinion(String::new());
    let ns = if a.resource_request { a.namespace.as_str() } else { "" };
    visit_rules(store, user, ns, |rule, source| {
        // Non-resource URLs are granted by ClusterRoleBindings only (requests have no namespace).
        if rule_allows(a, rule) {
            decision = Decision::Allow(format!("RBAC: allowed by {}", source()));
            return true;
        }
        false
    });
    decision
}

/// Every rule that applies to `user` in `ns` (SelfSubjectRulesReview).
pub fn rules_for(store: &Store, user: &UserInfo, ns: &str) -> Vec<Value> {
    if user.is_master() {
        return vec![
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ];
    }
    let mut out = Vec::new();
    visit_rules(store, user, ns, |rule, _| {
        out.push(rule.clone());
        false
    });
    out
}

/// The 403 a real server writes (`responsewriters.Forbidden` + `NewForbidden`):
/// `widgets.example.com is forbidden: User "limited" cannot list resource "widgets" in API
/// group "example.com" in the namespace "shop"`.
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut msg = if !a.resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path)
    } else if !a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name,
            a.verb,
            a.combined_resource(),
            a.group,
            a.namespace
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name,
            a.verb,
            a.combined_resource(),
            a.group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = match (a.resource.as_str(), a.group.as_str()) {
        ("", _) => String::new(),
        (r, "") => r.to_string(),
        (r, g) => format!("{r}.{g}"),
    };
    let message = match (qualified.is_empty(), a.name.is_empty()) {
        (true, _) => format!("forbidden: {msg}"),
        (false, true) => format!("{qualified} is forbidden: {msg}"),
        (false, false) => format!("{qualified} {:?} is forbidden: {msg}", a.name),
    };
    ApiError::Forbidden { message, name: a.name.clone(), kind: a.resource.clone(), group: a.group.clone() }
}

/// The atomic rules of one rule: one per verb × group × resource × name, or verb × URL
/// (rbac validation's `BreakdownRule`).
fn breakdown(rule: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    for verb in strs(&rule["verbs"]) {
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                if names.is_empty() {
                    out.push(json!({"verbs": [verb], "apiGroups": [g], "resources": [r]}));
                }
                for n in &names {
                    out.push(json!({"verbs": [verb], "apiGroups": [g], "resources": [r], "resourceNames": [n]}));
                }
            }
        }
        for u in strs(&rule["nonResourceURLs"]) {
            out.push(json!({"verbs": [verb], "nonResourceURLs": [u]}));
        }
    }
    out
}

/// Whether `owner` grants everything the atomic rule `servant` does (rbac's `ruleCovers`).
fn covers(owner: &Value, servant: &Value) -> bool {
    let one = |v: &Value| strs(v).next().unwrap_or_default().to_string();
    if !has(&owner["verbs"], &one(&servant["verbs"])) {
        return false;
    }
    if servant["nonResourceURLs"].is_array() {
        let url = one(&servant["nonResourceURLs"]);
        return strs(&owner["nonResourceURLs"])
            .any(|u| u == "*" || u == url || (u.ends_with('*') && url.starts_with(&u[..u.len() - 1])));
    }
    let resource = one(&servant["resources"]);
    let resource_ok = strs(&owner["resources"])
        .any(|r| r == "*" || r == resource || resource.split_once('/').is_some_and(|(_, sub)| r == format!("*/{sub}")));
    let owner_names: Vec<&str> = strs(&owner["resourceNames"]).collect();
    let names_ok =
        owner_names.is_empty() || strs(&servant["resourceNames"]).next().is_some_and(|n| owner_names.contains(&n));
    has(&owner["apiGroups"], &one(&servant["apiGroups"])) && resource_ok && names_ok
}

/// The atomic rules of `servant` that no rule of `owner` covers.
pub fn not_covered(owner: &[Value], servant: &[Value]) -> Vec<Value> {
    servant.iter().flat_map(breakdown).filter(|a| !owner.iter().any(|o| covers(o, a))).collect()
}

/// A rule as Go's `PolicyRule.CompactString` prints it in escalation errors.
fn compact(rule: &Value) -> String {
    let list = |v: &Value| strs(v).map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    for (field, key) in [
        ("APIGroups", "apiGroups"),
        ("Resources", "resources"),
        ("ResourceNames", "resourceNames"),
        ("NonResourceURLs", "nonResourceURLs"),
    ] {
        if rule[key].as_array().is_some_and(|a| !a.is_empty()) {
            parts.push(format!("{field}:[{}]", list(&rule[key])));
        }
    }
    parts.push(format!("Verbs:[{}]", list(&rule["verbs"])));
    format!("{{{}}}", parts.join(", "))
}

/// RBAC's escalation check for a write of `obj` (a Role, ClusterRole or binding of `ty`):
/// a user may only grant what it holds itself, unless it has `escalate` on the role (for
/// roles) or `bind` on the referenced role (for bindings).
pub fn check_escalation(store: &Store, user: &UserInfo, resource: &str, obj: &Value) -> Result<(), ApiError> {
    if user.is_master() {
        return Ok(());
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let ask = |verb: &str, res: &str, ns: &str, name: &str| {
        let a = Attributes {
            verb: verb.into(),
            resource_request: true,
            group: RBAC.into(),
            version: "v1".into(),
            resource: res.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        authorize(store, user, &a).allowed()
    };
    let servant: Vec<Value> = match resource {
        "roles" | "clusterroles" => {
            if ask("escalate", resource, &ns, &name) {
                return Ok(());
            }
            obj["rules"].as_array().cloned().unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let r = &obj["roleRef"];
            let role_name = r["name"].as_str().unwrap_or_default();
            let (role_res, role_ns) = match r["kind"].as_str() {
                Some("Role") => ("roles", ns.as_str()),
                _ => ("clusterroles", ""),
            };
            if ask("bind", role_res, &ns, role_name) {
                return Ok(());
            }
            match store.get(&gr(role_res), role_ns, role_name) {
                Some(role) => role["rules"].as_array().cloned().unwrap_or_default(),
                None => {
                    return Err(ApiError::NotFound {
                        resource: role_res.into(),
                        group: RBAC.into(),
                        name: role_name.into(),
                    });
                }
            }
        }
        _ => return Ok(()),
    };
    let missing = not_covered(&rules_for(store, user, &ns), &servant);
    if missing.is_empty() {
        return Ok(());
    }
    let groups = user.groups.iter().map(|g| format!("{g:?}")).collect::<Vec<_>>().join(" ");
    let held = missing.iter().map(compact).collect::<Vec<_>>().join("\n");
    Err(ApiError::Forbidden {
        message: format!(
            "{resource}.{RBAC} {name:?} is forbidden: user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{held}",
            user.name
        ),
        name,
        kind: resource.into(),
        group: RBAC.into(),
    })
}

/// Metadata every bootstrap RBAC object carries on a real cluster.
fn bootstrap_meta(name: &str) -> Value {
    json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// The rules of `view` (read everything namespaced except Secrets and RBAC).
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
            ],
        ),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
        rule(READ, &["snapshot.storage.k8s.io"], &["volumesnapshots"]),
    ]
}

/// `edit` = `view` + writes to workloads, Secrets, pods/exec; no RBAC, no quotas.
fn edit_rules() -> Vec<Value> {
    let mut r = view_rules();
    r.extend([
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(WRITE, &[""], &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(READ, &[""], &["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"]),
        rule(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
        rule(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
        rule(WRITE, &["snapshot.storage.k8s.io"], &["volumesnapshots"]),
    ]);
    r
}

/// `admin` = `edit` + Roles and RoleBindings in the namespace and local access reviews.
fn admin_rules() -> Vec<Value> {
    let mut r = edit_rules();
    r.extend([
        rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
        rule(
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            &[RBAC],
            &["rolebindings", "roles"],
        ),
    ]);
    r
}

/// The user the API server authenticates as when it calls a node agent (`pods/exec`), bound
/// to `system:kubelet-api-admin` like kubeadm's `kube-apiserver-kubelet-client`.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The ClusterRoles and ClusterRoleBindings a fresh real cluster has that matter to clients:
/// `cluster-admin` (bound to `system:masters`), the user-facing `admin`, `edit`, `view`,
/// `system:discovery`, `system:basic-user` and `system:public-info-viewer` (bound to every
/// authenticated user), and `system:kubelet-api-admin` for the API server's kubelet client.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let role = |name: &str, rules: Vec<Value>| {
        (
            "clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": bootstrap_meta(name), "rules": rules}),
        )
    };
    let binding = |name: &str, role: &str, subjects: Value| {
        (
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": bootstrap_meta(name),
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role}, "subjects": subjects}),
        )
    };
    let group = |g: &str| json!({"apiGroup": RBAC, "kind": "Group", "name": g});
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let mut out = vec![
        role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), json!({"verbs": ["*"], "nonResourceURLs": ["*"]})]),
        role("admin", admin_rules()),
        role("edit", edit_rules()),
        role("view", view_rules()),
        role("system:discovery", vec![json!({"verbs": ["get"], "nonResourceURLs": discovery_urls})]),
        role("system:public-info-viewer", vec![json!({"verbs": ["get"], "nonResourceURLs": public_urls})]),
        role(
            "system:basic-user",
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        role(
            "system:kubelet-api-admin",
            vec![
                rule(&["get", "list", "watch"], &[""], &["nodes"]),
                rule(&["proxy"], &[""], &["nodes"]),
                rule(&["*"], &[""], &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"]),
            ],
        ),
    ];
    out.extend([
        binding("cluster-admin", "cluster-admin", json!([group("system:masters")])),
        binding("system:discovery", "system:discovery", json!([group("system:authenticated")])),
        binding("system:basic-user", "system:basic-user", json!([group("system:authenticated")])),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            json!([group("system:authenticated"), group("system:unauthenticated")]),
        ),
        binding(
            "system:kube-apiserver",
            "system:kubelet-api-admin",
            json!([{"apiGroup": RBAC, "kind": "User", "name": KUBELET_CLIENT_USER}]),
        ),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn request_info_like_the_real_server() {
        let a = Attributes::from_request(&Method::GET, "/apis/example.com/v1/namespaces/shop/widgets", &q(&[]));
        assert_eq!((a.verb.as_str(), a.group.as_str(), a.resource.as_str()), ("list", "example.com", "widgets"));
        assert_eq!(a.namespace, "shop");
        let a = Attributes::from_request(&Method::GET, "/api/v1/namespaces/shop/pods", &q(&[("watch", "true")]));
        assert_eq!(a.verb, "watch");
        let a = Attributes::from_request(
            &Method::GET,
            "/api/v1/namespaces/shop/configmaps",
            &q(&[("fieldSelector", "metadata.name=one")]),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "one"));
        let a = Attributes::from_request(&Method::DELETE, "/api/v1/namespaces/shop/configmaps", &q(&[]));
        assert_eq!(a.verb, "deletecollection");
        let a = Attributes::from_request(&Method::POST, "/api/v1/namespaces/shop/pods/p/exec", &q(&[]));
        assert_eq!((a.verb.as_str(), a.combined_resource().as_str(), a.name.as_str()), ("create", "pods/exec", "p"));
        // A namespace is its own namespace; its status is a subresource.
        let a = Attributes::from_request(&Method::PUT, "/api/v1/namespaces/shop/status", &q(&[]));
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.subresource.as_str()), ("namespaces", "shop", "status"));
        assert_eq!(a.namespace, "shop");
        for p in ["/api", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v2"] {
            let a = Attributes::from_request(&Method::GET, p, &q(&[]));
            assert!(!a.resource_request && a.verb == "get", "{p}");
        }
    }

    #[test]
    fn rules_match_verbs_groups_subresources_and_names() {
        let a = |verb: &str, res: &str, sub: &str, name: &str| Attributes {
            verb: verb.into(),
            resource_request: true,
            group: "apps".into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        };
        let r =
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"]});
        assert!(rule_allows(&a("get", "deployments", "", "web"), &r));
        assert!(!rule_allows(&a("get", "deployments", "", "db"), &r));
        assert!(!rule_allows(&a("list", "deployments", "", ""), &r));
        assert!(
            !rule_allows(&a("get", "deployments", "scale", "web"), &r),
            "a resource does not grant its subresources"
        );
        // Escalation: `view` does not cover `edit`; `*` covers everything.
        let view = view_rules();
        assert!(!not_covered(&view, &edit_rules()).is_empty());
        assert!(not_covered(&[rule(&["*"], &["*"], &["*"])], &admin_rules()).is_empty());
        let any_scale = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]});
        assert!(rule_allows(&a("patch", "deployments", "scale", "web"), &any_scale));
        assert!(!rule_allows(&a("patch", "deployments", "", "web"), &any_scale));
        let url = json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]});
        let nr = Attributes { verb: "get".into(), path: "/apis/apps/v1".into(), ..Default::default() };
        assert!(rule_allows(&nr, &url));
    }
}
