//! The create-only "review" resources a real API server answers from its authenticator and
//! authorizer instead of storing anything: `authorization.k8s.io/v1` SelfSubjectAccessReview,
//! SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectRulesReview;
//! `authentication.k8s.io/v1` TokenReview and SelfSubjectReview; and the
//! `serviceaccounts/<name>/token` TokenRequest that mints bound service-account tokens.
//! They share the same authenticator ([`super::auth`]) and authorizer ([`super::rbac`]) that
//! guard every request, so a review answers exactly what a request would meet.

use serde_json::{Value, json};

use super::auth::{API_AUDIENCE, SaClaims, UserInfo};
use super::error::ApiError;
use super::rbac::{self, Attributes, Decision};
use super::rest::State;
use super::types::ResourceType;

impl State {
    /// Who a bearer token is (for `audience`), or `None` (401): a static token, or a
    /// service-account token this server signed whose service account still exists with
    /// the same uid — and, for a legacy token, whose Secret still holds it; for a bound token,
    /// that has not expired and was issued for `audience`.
    pub fn authenticate(&self, token: &str, audience: &str) -> Option<UserInfo> {
        if let Some(u) = self.authn.static_user(token) {
            return Some(u);
        }
        let claims = self.authn.verify(token)?;
        let (ns, sa, sa_uid) = match &claims {
            SaClaims::Legacy { ns, sa, sa_uid, .. } | SaClaims::Bound { ns, sa, sa_uid, .. } => (ns, sa, sa_uid),
        };
        let store = self.lock();
        let account = store.get(&(String::new(), "serviceaccounts".into()), ns, sa)?;
        if account["metadata"]["uid"].as_str() != Some(sa_uid.as_str()) {
            return None;
        }
        match &claims {
            SaClaims::Legacy { secret, .. } => {
                let s = store.get(&(String::new(), "secrets".into()), ns, secret)?;
                let held = s["data"]["token"].as_str().and_then(|t| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(t).ok()
                });
                if s["type"] != "kubernetes.io/service-account-token" || held.as_deref() != Some(token.as_bytes()) {
                    return None;
                }
            }
            SaClaims::Bound { exp, audiences, .. } => {
                if *exp <= chrono::Utc::now().timestamp() || !audiences.iter().any(|a| a == audience) {
                    return None;
                }
            }
        }
        Some(UserInfo::service_account(ns, sa, sa_uid))
    }

    /// The authorizer's decision for `user` (what every request and every access review asks).
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if user.is_master() {
            return Decision::Allow(String::new());
        }
        rbac::authorize(&self.lock(), user, a)
    }

    /// The service-account token controller's part of a new `kubernetes.io/service-account-token`
    /// Secret: `data.token` (unless the Secret already carries one), `ca.crt`, `namespace`, and
    /// the `kubernetes.io/service-account.uid` annotation. A Secret naming a service account that
    /// does not exist is deleted, as the controller does.
    pub fn populate_token_secret(self: &std::sync::Arc<Self>, ns: &str, name: &str) {
        use base64::Engine;
        let enc = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
        let Some(secrets) = self.resource("", "v1", "secrets") else { return };
        let Ok(secret) = self.get(&secrets, ns, name) else { return };
        let sa_name =
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"].as_str().unwrap_or_default();
        let account = self.lock().get(&(String::new(), "serviceaccounts".into()), ns, sa_name);
        let Some(account) = account else {
            let _ = self.delete(&secrets, ns, name, &Default::default(), &Value::Null);
            return;
        };
        let sa_uid = account["metadata"]["uid"].as_str().unwrap_or_default();
        let mut patch = json!({"metadata": {"annotations": {"kubernetes.io/service-account.uid": sa_uid}}, "data": {}});
        if secret["data"]["token"].as_str().is_none_or(str::is_empty) {
            patch["data"]["token"] = enc(&self.authn.legacy_token(ns, sa_name, sa_uid, name));
        }
        if secret["data"]["ca.crt"].is_null() {
            patch["data"]["ca.crt"] = enc(&self.ca_pem);
        }
        if secret["data"]["namespace"].is_null() {
            patch["data"]["namespace"] = enc(ns);
        }
        let body = serde_json::to_vec(&patch).unwrap_or_default();
        let q = Default::default();
        if let Err(e) =
            self.patch(&secrets, ns, name, "application/merge-patch+json", &body, &q, false, "kube-controller-manager")
        {
            tracing::debug!(secret = %format!("{ns}/{name}"), error = %e, "populating service account token");
        }
    }
}

fn invalid(ty: &ResourceType, field: &str, message: &str) -> ApiError {
    ApiError::invalid(&ty.kind, &ty.group, "", field, message.to_string())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Attributes from an access review's spec: exactly one of resourceAttributes and
/// nonResourceAttributes.
fn review_attributes(ty: &ResourceType, spec: &Value) -> Result<Attributes, ApiError> {
    let (r, n) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    match (r.is_object(), n.is_object()) {
        (true, false) => Ok(Attributes {
            verb: s(&r["verb"]),
            resource_request: true,
            path: String::new(),
            group: s(&r["group"]),
            version: s(&r["version"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: s(&r["namespace"]),
            name: s(&r["name"]),
        }),
        (false, true) => Ok(Attributes { verb: s(&n["verb"]), path: s(&n["path"]), ..Default::default() }),
        (true, true) => Err(invalid(
            ty,
            "spec.nonResourceAttributes",
            "Invalid value: \"null\": cannot be specified in combination with resourceAttributes",
        )),
        (false, false) => Err(invalid(
            ty,
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

fn review_status(d: &Decision) -> Value {
    match d {
        Decision::Allow(r) if r.is_empty() => json!({"allowed": true}),
        Decision::Allow(r) => json!({"allowed": true, "reason": r}),
        Decision::NoOpinion(r) if r.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(r) => json!({"allowed": false, "reason": r}),
    }
}

/// The object a review's create returns: what was sent, with `status` filled in.
fn answer(ty: &ResourceType, body: &Value, ns: Option<&str>, status: Value) -> Value {
    let mut meta = json!({"creationTimestamp": null});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"kind": ty.kind, "apiVersion": ty.api_version(), "metadata": meta,
        "spec": body.get("spec").cloned().unwrap_or_else(|| json!({})), "status": status})
}

/// POST on a create-only resource: evaluate and answer (201), store nothing.
pub fn create(
    state: &State,
    user: &UserInfo,
    ty: &ResourceType,
    ns: Option<&str>,
    body: &Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest("the body of the request is not a JSON object".into()));
    }
    let spec = &body["spec"];
    match (ty.group.as_str(), ty.plural.as_str()) {
        ("authorization.k8s.io", "selfsubjectaccessreviews") => {
            let a = review_attributes(ty, spec)?;
            Ok(answer(ty, body, None, review_status(&state.authorize(user, &a))))
        }
        ("authorization.k8s.io", "subjectaccessreviews" | "localsubjectaccessreviews") => {
            let mut a = review_attributes(ty, spec)?;
            if let Some(ns) = ns {
                if !a.resource_request {
                    return Err(invalid(
                        ty,
                        "spec.nonResourceAttributes",
                        "Invalid value: \"null\": disallowed on this kind of request",
                    ));
                }
                if a.namespace != ns {
                    return Err(invalid(
                        ty,
                        "spec.resourceAttributes.namespace",
                        &format!("Invalid value: {:?}: must match metadata.namespace", a.namespace),
                    ));
                }
                a.namespace = ns.to_string();
            }
            let subject = UserInfo {
                name: s(&spec["user"]),
                uid: s(&spec["uid"]),
                groups: spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    ty,
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            Ok(answer(ty, body, ns, review_status(&state.authorize(&subject, &a))))
        }
        ("authorization.k8s.io", "selfsubjectrulesreviews") => {
            let target = s(&spec["namespace"]);
            let rules = rbac::rules_for(&state.lock(), user, &target);
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in rules {
                if r["nonResourceURLs"].as_array().is_some_and(|u| !u.is_empty()) {
                    non_resource_rules.push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
                }
                if r["resources"].as_array().is_some_and(|u| !u.is_empty()) {
                    let mut rr = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
                    if r["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                        rr["resourceNames"] = r["resourceNames"].clone();
                    }
                    resource_rules.push(rr);
                }
            }
            Ok(answer(
                ty,
                body,
                None,
                json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false}),
            ))
        }
        ("authentication.k8s.io", "tokenreviews") => {
            let token = s(&spec["token"]);
            let audiences: Vec<String> = spec["audiences"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .filter(|a: &Vec<String>| !a.is_empty())
                .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
            let who = audiences.iter().find_map(|aud| state.authenticate(&token, aud).map(|u| (u, aud.clone())));
            let status = match who {
                Some((u, aud)) => json!({"authenticated": true, "user": u.to_json(), "audiences": [aud]}),
                None => json!({"user": {}, "error": "invalid bearer token"}),
            };
            Ok(answer(ty, body, None, status))
        }
        ("authentication.k8s.io", "selfsubjectreviews") => {
            Ok(answer(ty, body, None, json!({"userInfo": user.to_json()})))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// `POST serviceaccounts/<name>/token`: a bound token for the service account (TokenRequest,
/// `expirationSeconds` default 3600, at least 600; audiences default to the API server's).
pub fn token_request(state: &State, ns: &str, sa: &str, body: &Value) -> Result<Value, ApiError> {
    let account = state.lock().get(&(String::new(), "serviceaccounts".into()), ns, sa).ok_or_else(|| {
        ApiError::NotFound { resource: "serviceaccounts".into(), group: String::new(), name: sa.into() }
    })?;
    let spec = &body["spec"];
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let invalid = |field: &str, msg: String| ApiError::invalid("TokenRequest", "authentication.k8s.io", sa, field, msg);
    if seconds < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
    let now = chrono::Utc::now();
    let uid = account["metadata"]["uid"].as_str().unwrap_or_default();
    let token = state.authn.bound_token(ns, sa, uid, &audiences, now.timestamp(), seconds);
    let exp = (now + chrono::Duration::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out_spec = spec.clone();
    if !out_spec.is_object() {
        out_spec = json!({});
    }
    out_spec["audiences"] = json!(audiences);
    out_spec["expirationSeconds"] = json!(seconds);
    Ok(json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": super::fields::now()},
        "spec": out_spec, "status": {"token": token, "expirationTimestamp": exp}}))
}
