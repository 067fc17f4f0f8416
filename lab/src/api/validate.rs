//! Defaulting and validation that real API servers do and that trip real migrations:
//! names, immutable fields, Service IP and node-port allocation, selectors vs. templates.

use serde_json::{Map, Value, json};

use super::error::{ApiError, Cause};
use super::store::Store;
use super::types::ResourceType;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Invalid-value text the way Go's field errors print strings.
pub fn iv(v: &str) -> String {
    format!("Invalid value: {}", Value::String(v.to_string()))
}

/// The object name rule of a type: label for namespaces, DNS-1035 for services, path segment for RBAC.
pub fn validate_name(ty: &ResourceType, name: &str) -> Result<(), ApiError> {
    let err = |msg: &str| ApiError::invalid(&ty.kind, &ty.group, name, "metadata.name", format!("{}: {msg}", iv(name)));
    if name.is_empty() {
        return Err(ApiError::invalid(
            &ty.kind,
            &ty.group,
            name,
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    }
    match (ty.group.as_str(), ty.plural.as_str()) {
        ("", "namespaces") => {
            if name.len() > 63 {
                return Err(err("must be no more than 63 characters"));
            }
            if !is_label(name) {
                return Err(err(LABEL_MSG));
            }
        }
        ("", "services") => {
            if name.len() > 63 {
                return Err(err("must be no more than 63 characters"));
            }
            if !is_label(name) || !name.as_bytes()[0].is_ascii_lowercase() {
                return Err(err(DNS1035_MSG));
            }
        }
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." {
                return Err(err(&format!("may not be '{name}'")));
            }
            if name.contains('/') || name.contains('%') {
                return Err(err("may not contain '/' or '%'"));
            }
        }
        _ => {
            if name.len() > 253 {
                return Err(err("must be no more than 253 characters"));
            }
            if !is_subdomain(name) {
                return Err(err(SUBDOMAIN_MSG));
            }
        }
    }
    Ok(())
}

fn label_value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() <= 63
        && (b.is_empty()
            || (b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))))
}

fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_subdomain) && !name.is_empty() && label_value_ok(name)
}

/// Label keys and values (metadata.labels), as `ValidateLabels` does.
pub fn validate_labels(ty: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !label_key_ok(k) {
                causes.push(Cause { reason: "FieldValueInvalid", field: "metadata.labels".into(), message: format!("{}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", iv(k)) });
            }
            match v.as_str() {
                Some(s) if label_value_ok(s) => {}
                _ => causes.push(Cause { reason: "FieldValueInvalid", field: "metadata.labels".into(), message: format!("{}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", iv(v.as_str().unwrap_or_default())) }),
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid { kind: ty.kind.clone(), group: ty.group.clone(), name: name.into(), causes })
    }
}

/// An IPv4 CIDR such as `10.96.0.0/16`.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    pub base: u32,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, bits) = s.split_once('/')?;
        let ip: std::net::Ipv4Addr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        (bits <= 32).then(|| Cidr { base: u32::from(ip) & mask(bits), bits })
    }
    pub fn contains(&self, ip: u32) -> bool {
        ip & mask(self.bits) == self.base
    }
    fn size(&self) -> u32 {
        if self.bits == 0 { u32::MAX } else { 1u32 << (32 - self.bits) }
    }
}

fn mask(bits: u8) -> u32 {
    if bits == 0 { 0 } else { u32::MAX << (32 - bits) }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", std::net::Ipv4Addr::from(self.base), self.bits)
    }
}

fn svc_invalid(name: &str, field: String, message: String) -> ApiError {
    ApiError::invalid("Service", "", name, &field, message)
}

/// Validates a Service's clusterIP and nodePorts and allocates them (unless `dry_run`).
/// On update, unset allocated values are carried over from `old` like the real server does.
pub fn service_allocate(
    store: &mut Store,
    cidr: Cidr,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    new: &mut Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let owner = format!("{ns}/{name}");
    let spec = new["spec"].as_object_mut().ok_or_else(|| svc_invalid(name, "spec".into(), "Required value".into()))?;
    let svc_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str()).map(str::to_string);
    let mut ip = spec.get("clusterIP").and_then(Value::as_str).map(str::to_string).unwrap_or_default();
    if ip.is_empty()
        && let Some(first) = spec.get("clusterIPs").and_then(|v| v.get(0)).and_then(Value::as_str)
    {
        ip = first.to_string();
    }
    if let Some(old_ip) = &old_ip {
        if ip.is_empty() {
            ip = old_ip.clone();
        } else if ip != *old_ip {
            return Err(svc_invalid(
                name,
                "spec.clusterIPs[0]".into(),
                format!("Invalid value: []string{{\"{ip}\"}}: may not change once set"),
            ));
        }
    }
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if ports.is_empty() && svc_type != "ExternalName" && ip != "None" {
        return Err(svc_invalid(name, "spec.ports".into(), "Required value".into()));
    }
    let mut new_ip: Option<u32> = None;
    if svc_type == "ExternalName" {
        if !ip.is_empty() && ip != "None" && old.is_none() {
            return Err(svc_invalid(
                name,
                "spec.clusterIPs".into(),
                "Invalid value: must be empty for ExternalName services".into(),
            ));
        }
    } else if ip == "None" {
    } else if ip.is_empty() {
        let taken = |c: u32| store.cluster_ips.contains_key(&c);
        let start = cidr.base + 10;
        let mut cand = None;
        for i in 0..cidr.size().saturating_sub(12) {
            let c = start + i;
            if !taken(c) {
                cand = Some(c);
                break;
            }
        }
        let c =
            cand.ok_or_else(|| ApiError::Internal(format!("failed to allocate a serviceIP: range {cidr} is full")))?;
        new_ip = Some(c);
        ip = std::net::Ipv4Addr::from(c).to_string();
    } else {
        let parsed: std::net::Ipv4Addr = ip.parse().map_err(|_| {
            svc_invalid(
                name,
                "spec.clusterIPs[0]".into(),
                format!("{}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)", iv(&ip)),
            )
        })?;
        let n = u32::from(parsed);
        if !cidr.contains(n) {
            return Err(svc_invalid(
                name,
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
                ),
            ));
        }
        match store.cluster_ips.get(&n) {
            Some(o) if *o != owner => {
                return Err(svc_invalid(
                    name,
                    "spec.clusterIPs".into(),
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                ));
            }
            _ => new_ip = Some(n),
        }
    }
    if !ip.is_empty() {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    // Node ports.
    let wants_node_ports = matches!(svc_type.as_str(), "NodePort" | "LoadBalancer");
    let old_ports: Vec<Value> = old.and_then(|o| o["spec"]["ports"].as_array().cloned()).unwrap_or_default();
    let mut ports = ports;
    let mut claimed: Vec<u16> = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            return Err(svc_invalid(
                name,
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            ));
        }
        let mut np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if !wants_node_ports && np != 0 {
            // A type change away from NodePort/LoadBalancer drops the allocated ports the
            // client left in place (the real server's dropTypeDependentFields).
            let carried = old_ports.iter().any(|o| o["port"] == p["port"] && o["nodePort"].as_i64() == Some(np));
            if carried {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
                np = 0;
            }
        }
        if !wants_node_ports {
            if np != 0 {
                return Err(svc_invalid(
                    name,
                    format!("spec.ports[{i}].nodePort"),
                    format!("Forbidden: may not be used when `type` is '{svc_type}'"),
                ));
            }
            continue;
        }
        let np = if np != 0 {
            np
        } else {
            old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o.get("protocol") == p.get("protocol"))
                .and_then(|o| o["nodePort"].as_i64())
                .unwrap_or(0)
        };
        let np = if np == 0 {
            (30000u16..=32767)
                .find(|c| !store.node_ports.contains_key(c) && !claimed.contains(c))
                .ok_or_else(|| ApiError::Internal("node port range is full".into()))? as i64
        } else {
            if !(30000..=32767).contains(&np) {
                return Err(svc_invalid(
                    name,
                    format!("spec.ports[{i}].nodePort"),
                    format!(
                        "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                    ),
                ));
            }
            match store.node_ports.get(&(np as u16)) {
                Some(o) if *o != owner => {
                    return Err(svc_invalid(
                        name,
                        format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {np}: provided port is already allocated"),
                    ));
                }
                _ => {}
            }
            if claimed.contains(&(np as u16)) {
                return Err(ApiError::invalid(
                    "Service",
                    "",
                    name,
                    &format!("spec.ports[{i}].nodePort"),
                    format!("Duplicate value: {np}"),
                ));
            }
            np
        };
        claimed.push(np as u16);
        p["nodePort"] = json!(np);
    }
    if !ports.is_empty() {
        spec.insert("ports".into(), Value::Array(ports));
    }
    if !dry_run {
        store.cluster_ips.retain(|_, o| *o != owner);
        store.node_ports.retain(|_, o| *o != owner);
        if let Some(n) = new_ip {
            store.cluster_ips.insert(n, owner.clone());
        }
        for p in claimed {
            store.node_ports.insert(p, owner.clone());
        }
    }
    Ok(())
}

/// Frees a deleted Service's addresses.
pub fn service_release(store: &mut Store, ns: &str, name: &str) {
    let owner = format!("{ns}/{name}");
    store.cluster_ips.retain(|_, o| *o != owner);
    store.node_ports.retain(|_, o| *o != owner);
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.into(), v);
    }
}

/// Defaults of a PodSpec and its containers (the ones that show up in `kubectl get -o yaml`).
fn default_pod_spec(spec: &mut Value, restart: &str) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default(m, "restartPolicy", json!(restart));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "schedulerName", json!("default-scheduler"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let last = image.rsplit('/').next().unwrap_or_default();
                let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
                set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ps) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn validate_pod_spec(ty: &ResourceType, name: &str, spec: &Value, field: &str) -> Result<(), ApiError> {
    let cs = spec["containers"].as_array().filter(|a| !a.is_empty());
    let Some(cs) = cs else {
        return Err(ApiError::invalid(
            &ty.kind,
            &ty.group,
            name,
            &format!("{field}.containers"),
            "Required value".into(),
        ));
    };
    for (i, c) in cs.iter().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                &ty.kind,
                &ty.group,
                name,
                &format!("{field}.containers[{i}].name"),
                "Required value".into(),
            ));
        }
        if c["image"].as_str().is_none_or(str::is_empty) && ty.kind != "DeploymentConfig" {
            return Err(ApiError::invalid(
                &ty.kind,
                &ty.group,
                name,
                &format!("{field}.containers[{i}].image"),
                "Required value".into(),
            ));
        }
    }
    Ok(())
}

fn selector_matches_labels(selector: &Value, labels: &Value) -> bool {
    let ok_labels = selector["matchLabels"].as_object().is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ok_expr = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&Value> = e["values"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            let actual = labels.get(key);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => actual.is_some_and(|a| vals.contains(&a)),
                "NotIn" => actual.is_none_or(|a| !vals.contains(&a)),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                _ => false,
            }
        })
    });
    ok_labels && ok_expr
}

fn check_selector(ty: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    let sel = &obj["spec"]["selector"];
    if sel.is_null() || (sel["matchLabels"].is_null() && sel["matchExpressions"].is_null()) {
        return Err(ApiError::invalid(&ty.kind, &ty.group, name, "spec.selector", "Required value".into()));
    }
    let labels = &obj["spec"]["template"]["metadata"]["labels"];
    if !selector_matches_labels(sel, labels) {
        return Err(ApiError::invalid(
            &ty.kind,
            &ty.group,
            name,
            "spec.template.metadata.labels",
            format!("Invalid value: {}: `selector` does not match template `labels`", labels),
        ));
    }
    Ok(())
}

/// `type` defaults to RollingUpdate, and a RollingUpdate strategy gets its parameters, field
/// by field (an emptied strategy is defaulted again).
fn default_strategy(spec: &mut Map<String, Value>, field: &str, rolling: Value) {
    let strategy = spec.entry(field.to_string()).or_insert_with(|| json!({}));
    if !strategy.is_object() {
        *strategy = json!({});
    }
    if strategy["type"].is_null() {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" && strategy["rollingUpdate"].is_null() {
        strategy["rollingUpdate"] = rolling;
    }
}

fn service_defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let t = spec["type"].as_str().unwrap_or_default().to_string();
    if t != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if t == "NodePort" || t == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if t == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ps) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ps.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

fn workload_defaults(kind: &str, obj: &mut Value) {
    default_pod_spec(&mut obj["spec"]["template"]["spec"], "Always");
    let spec = obj["spec"].as_object_mut().expect("spec checked");
    if kind != "DaemonSet" {
        set_default(spec, "replicas", json!(1));
    }
    if kind != "ReplicaSet" {
        set_default(spec, "revisionHistoryLimit", json!(10));
    }
    match kind {
        "Deployment" => {
            set_default(spec, "progressDeadlineSeconds", json!(600));
            default_strategy(spec, "strategy", json!({"maxSurge": "25%", "maxUnavailable": "25%"}));
        }
        "StatefulSet" => {
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            default_strategy(spec, "updateStrategy", json!({"partition": 0}));
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            if let Some(ts) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
                for t in ts.iter_mut() {
                    if t["spec"]["volumeMode"].is_null() {
                        t["spec"]["volumeMode"] = json!("Filesystem");
                    }
                    t["apiVersion"] = json!("v1");
                    t["kind"] = json!("PersistentVolumeClaim");
                }
            }
        }
        "DaemonSet" => {
            default_strategy(spec, "updateStrategy", json!({"maxSurge": 0, "maxUnavailable": 1}));
        }
        _ => {}
    }
}

/// Defaults again after an update, as the real server defaults every write: a field an
/// applier stopped sending or a PUT left out comes back with its default value.
pub fn redefault(ty: &ResourceType, obj: &mut Value) {
    match (ty.group.as_str(), ty.kind.as_str()) {
        ("", "Pod") => default_pod_spec(&mut obj["spec"], "Always"),
        ("", "Service") => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                service_defaults(spec);
            }
        }
        ("", "PersistentVolumeClaim") if obj["spec"]["volumeMode"].is_null() => {
            obj["spec"]["volumeMode"] = json!("Filesystem");
        }
        ("apps", kind @ ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")) if obj["spec"].is_object() => {
            workload_defaults(kind, obj)
        }
        ("batch", "Job") => {
            let rp = obj["spec"]["template"]["spec"]["restartPolicy"].as_str().unwrap_or("Never").to_string();
            default_pod_spec(&mut obj["spec"]["template"]["spec"], &rp);
        }
        _ => {}
    }
}

/// Defaults and validates a new object of a built-in type (after name checks).
pub fn prepare_create(ty: &ResourceType, name: &str, obj: &mut Value, store: &Store) -> Result<(), ApiError> {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    match (ty.group.as_str(), ty.kind.as_str()) {
        ("", "Namespace") => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "Pod") => {
            validate_pod_spec(ty, name, &obj["spec"], "spec")?;
            default_pod_spec(&mut obj["spec"], "Always");
            // What the ServiceAccount admission plugin fills in.
            let spec = obj["spec"].as_object_mut().expect("spec checked");
            set_default(spec, "serviceAccountName", json!("default"));
            let sa = spec["serviceAccountName"].clone();
            set_default(spec, "serviceAccount", sa);
            set_default(spec, "enableServiceLinks", json!(true));
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "ConfigMap") => validate_data_keys(ty, name, obj)?,
        ("", "Secret") => {
            validate_data_keys(ty, name, obj)?;
            if obj["type"] == "kubernetes.io/service-account-token"
                && obj["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                    .as_str()
                    .is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    &ty.kind,
                    "",
                    name,
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "Required value".into(),
                ));
            }
            if let Some(sd) =
                obj.as_object_mut().and_then(|m| m.remove("stringData")).and_then(|v| v.as_object().cloned())
            {
                use base64::Engine;
                for (k, v) in sd {
                    obj["data"][k.as_str()] =
                        json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default()));
                }
            }
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
        }
        ("", "Service") => {
            let spec = obj["spec"]
                .as_object_mut()
                .ok_or_else(|| ApiError::invalid(&ty.kind, "", name, "spec", "Required value".into()))?;
            service_defaults(spec);
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "PersistentVolumeClaim") => {
            let spec = &obj["spec"];
            if spec["accessModes"].as_array().is_none_or(|a| a.is_empty()) {
                return Err(ApiError::invalid(
                    &ty.kind,
                    "",
                    name,
                    "spec.accessModes",
                    "Required value: at least 1 access mode is required".into(),
                ));
            }
            if spec["resources"]["requests"]["storage"].is_null() && spec["dataSource"].is_null() {
                return Err(ApiError::invalid(&ty.kind, "", name, "spec.resources[storage]", "Required value".into()));
            }
            // dataSource and dataSourceRef mirror each other (AnyVolumeDataSource, GA in 1.33).
            let spec = &mut obj["spec"];
            if spec["dataSourceRef"].is_null() && spec["dataSource"].is_object() {
                spec["dataSourceRef"] = spec["dataSource"].clone();
            } else if spec["dataSource"].is_null()
                && spec["dataSourceRef"].is_object()
                && spec["dataSourceRef"]["namespace"].as_str().is_none_or(str::is_empty)
            {
                let mut ds = spec["dataSourceRef"].clone();
                ds.as_object_mut().map(|m| m.remove("namespace"));
                spec["dataSource"] = ds;
            }
            let spec = &obj["spec"];
            if let Some(s) = spec["resources"]["requests"]["storage"].as_str()
                && parse_quantity(s).is_none()
            {
                return Err(ApiError::invalid(
                    &ty.kind,
                    "",
                    name,
                    "spec.resources.requests[storage]",
                    format!(
                        "{}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                        iv(s)
                    ),
                ));
            }
            if obj["spec"].get("storageClassName").is_none() {
                let default =
                    store.range(&("storage.k8s.io".into(), "storageclasses".into()), None, None).find(|(_, sc)| {
                        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"].as_str()
                            == Some("true")
                    });
                if let Some((_, sc)) = default {
                    obj["spec"]["storageClassName"] = sc["metadata"]["name"].clone();
                }
            }
            if obj["spec"]["volumeMode"].is_null() {
                obj["spec"]["volumeMode"] = json!("Filesystem");
            }
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "PersistentVolume") => {
            let bound = !obj["spec"]["claimRef"].is_null();
            if obj["spec"]["persistentVolumeReclaimPolicy"].is_null() {
                obj["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
            }
            if obj["spec"]["volumeMode"].is_null() {
                obj["spec"]["volumeMode"] = json!("Filesystem");
            }
            obj["status"] = json!({"phase": if bound { "Bound" } else { "Available" }});
        }
        ("apps", kind @ ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")) => {
            check_selector(ty, name, obj)?;
            validate_pod_spec(ty, name, &obj["spec"]["template"]["spec"], "spec.template.spec")?;
            workload_defaults(kind, obj);
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        ("batch", "Job") => {
            let manual = obj["spec"]["manualSelector"].as_bool() == Some(true);
            if !manual {
                if !obj["spec"]["selector"].is_null() {
                    return Err(ApiError::invalid(
                        &ty.kind,
                        &ty.group,
                        name,
                        "spec.selector",
                        "Invalid value: `selector` will be auto-generated".into(),
                    ));
                }
                obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/job-name", name),
                    ("controller-uid", uid.as_str()),
                    ("job-name", name),
                ] {
                    labels[k] = json!(v);
                }
            } else {
                check_selector(ty, name, obj)?;
            }
            validate_pod_spec(ty, name, &obj["spec"]["template"]["spec"], "spec.template.spec")?;
            let rp = obj["spec"]["template"]["spec"]["restartPolicy"].as_str().unwrap_or("Always").to_string();
            if rp != "Never" && rp != "OnFailure" {
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    name,
                    "spec.template.spec.restartPolicy",
                    format!("Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\""),
                ));
            }
            default_pod_spec(&mut obj["spec"]["template"]["spec"], &rp);
            let spec = obj["spec"].as_object_mut().expect("spec");
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completions", json!(1));
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        ("batch", "CronJob") => {
            if obj["spec"]["schedule"].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(&ty.kind, &ty.group, name, "spec.schedule", "Required value".into()));
            }
            let spec = obj["spec"].as_object_mut().expect("spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        ("rbac.authorization.k8s.io", kind @ ("RoleBinding" | "ClusterRoleBinding")) => {
            validate_binding(ty, name, kind, obj)?;
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let spec = &obj["spec"];
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            let group = spec["group"].as_str().unwrap_or_default();
            if plural.is_empty() || group.is_empty() || spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    name,
                    "spec.names",
                    "Required value: group, names.plural and names.kind are required".into(),
                ));
            }
            if name != format!("{plural}.{group}") {
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    name,
                    "metadata.name",
                    format!("{}: must be spec.names.plural+\".\"+spec.group", iv(name)),
                ));
            }
            if spec["versions"].as_array().is_none_or(|v| v.is_empty()) {
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    name,
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version".into(),
                ));
            }
            // apiextensions.k8s.io/v1 requires a structural schema per version.
            for (i, v) in spec["versions"].as_array().into_iter().flatten().enumerate() {
                if !v["schema"]["openAPIV3Schema"].is_object() {
                    return Err(ApiError::Invalid {
                        kind: ty.kind.clone(),
                        group: ty.group.clone(),
                        name: name.into(),
                        causes: vec![super::error::Cause {
                            reason: "FieldValueRequired",
                            field: format!("spec.versions[{i}].schema.openAPIV3Schema"),
                            message: "Required value: schemas are required".into(),
                        }],
                    });
                }
            }
        }
        _ => {
            if ty.has_status {
                obj.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    Ok(())
}

fn config_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// ConfigMap and Secret keys and total size, as `ValidateConfigMap`/`ValidateSecret` check them.
pub fn validate_data_keys(ty: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    let mut total = 0usize;
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj[field].as_object() {
            for (k, v) in m {
                if !config_key_ok(k) {
                    return Err(ApiError::invalid(
                        &ty.kind,
                        "",
                        name,
                        &format!("{field}[{k}]"),
                        format!(
                            "{}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            iv(k)
                        ),
                    ));
                }
                total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            }
        }
    }
    if total > 1024 * 1024 {
        return Err(ApiError::invalid(&ty.kind, "", name, "data", "Too long: must have at most 1048576 bytes".into()));
    }
    Ok(())
}

/// Bytes of a resource quantity such as `10Gi`, `500M` or `1e3`.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let idx = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn without(v: &Value, paths: &[&[&str]]) -> Value {
    fn rm(v: &mut Value, path: &[&str]) {
        match path {
            [] => {}
            [last] => {
                if let Some(m) = v.as_object_mut() {
                    m.remove(*last);
                }
            }
            [first, rest @ ..] => {
                if let Some(n) = v.get_mut(*first) {
                    rm(n, rest);
                }
            }
        }
    }
    let mut v = v.clone();
    for p in paths {
        rm(&mut v, p);
    }
    v
}

fn immutable(ty: &ResourceType, name: &str, field: &str, value: &Value) -> ApiError {
    ApiError::invalid(&ty.kind, &ty.group, name, field, format!("Invalid value: {}: field is immutable", value))
}

/// The PersistentVolumeClaimResize admission plugin: a larger request is for bound claims
/// only (validation), and only when the claim's storage class allows expansion (admission, a
/// 403 as on a real server).
pub fn admit_resize(store: &Store, ty: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let q = |v: &Value| v["spec"]["resources"]["requests"]["storage"].as_str().and_then(parse_quantity);
    let (Some(o), Some(n)) = (q(old), q(new)) else { return Ok(()) };
    if n == o {
        return Ok(());
    }
    if old["status"]["phase"] != "Bound" {
        return Err(ApiError::Invalid {
            kind: ty.kind.clone(),
            group: String::new(),
            name: name.into(),
            causes: vec![Cause { reason: "FieldValueForbidden", field: "spec".into(), message: "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into() }],
        });
    }
    let class = old["spec"]["storageClassName"].as_str().unwrap_or_default();
    let allows = !class.is_empty()
        && store
            .get(&("storage.k8s.io".into(), "storageclasses".into()), "", class)
            .is_some_and(|sc| sc["allowVolumeExpansion"].as_bool() == Some(true));
    if allows {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        message: format!(
            "{} \"{name}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            ty.qualified()
        ),
        name: name.into(),
        kind: ty.plural.clone(),
        group: String::new(),
    })
}

/// Update checks: immutable fields and status carry-over rules of built-in types.
pub fn check_update(ty: &ResourceType, name: &str, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    match (ty.group.as_str(), ty.kind.as_str()) {
        ("", "PersistentVolumeClaim") => {
            // The binder may fill volumeName and a missing class once; everything else but a
            // storage increase is fixed after creation.
            let mut new_cmp = new["spec"].clone();
            if old["spec"]["volumeName"].as_str().is_none_or(str::is_empty) {
                new_cmp["volumeName"] = old["spec"]["volumeName"].clone();
                if new_cmp["volumeName"].is_null() {
                    new_cmp.as_object_mut().map(|m| m.remove("volumeName"));
                }
            }
            let strip: &[&[&str]] = &[&["resources", "requests", "storage"], &["volumeAttributesClassName"]];
            if without(&new_cmp, strip) != without(&old["spec"], strip) {
                return Err(ApiError::Invalid {
                    kind: ty.kind.clone(),
                    group: String::new(),
                    name: name.into(),
                    causes: vec![Cause { reason: "FieldValueForbidden", field: "spec".into(), message: "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into() }],
                });
            }
            let q = |v: &Value| v["spec"]["resources"]["requests"]["storage"].as_str().and_then(parse_quantity);
            if let (Some(o), Some(n)) = (q(old), q(new))
                && n < o
            {
                return Err(ApiError::Invalid {
                    kind: ty.kind.clone(),
                    group: String::new(),
                    name: name.into(),
                    causes: vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "spec.resources.requests.storage".into(),
                        message: "Forbidden: field can not be less than previous value".into(),
                    }],
                });
            }
        }
        ("", "ConfigMap" | "Secret") if old["immutable"].as_bool() == Some(true) => {
            if new["immutable"].as_bool() != Some(true) {
                return Err(ApiError::Invalid {
                    kind: ty.kind.clone(),
                    group: String::new(),
                    name: name.into(),
                    causes: vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "immutable".into(),
                        message: "Forbidden: field is immutable when `immutable` is set".into(),
                    }],
                });
            }
            for f in ["data", "binaryData", "stringData"] {
                if f == "stringData" && new.get(f).is_some() || f != "stringData" && old.get(f) != new.get(f) {
                    return Err(ApiError::Invalid {
                        kind: ty.kind.clone(),
                        group: String::new(),
                        name: name.into(),
                        causes: vec![Cause {
                            reason: "FieldValueForbidden",
                            field: f.into(),
                            message: "Forbidden: field is immutable when `immutable` is set".into(),
                        }],
                    });
                }
            }
        }
        ("", "Pod") => {
            // Only images, activeDeadlineSeconds and tolerations may change on a pod.
            let strip = |spec: &Value| {
                let mut v = spec.clone();
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = v[list].as_array_mut() {
                        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                            c.remove("image");
                        }
                    }
                }
                if let Some(m) = v.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("terminationGracePeriodSeconds");
                    m.remove("schedulingGates");
                }
                v
            };
            if strip(&old["spec"]) != strip(&new["spec"]) {
                return Err(ApiError::Invalid {
                    kind: ty.kind.clone(),
                    group: String::new(),
                    name: name.into(),
                    causes: vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "spec".into(),
                        message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                    }],
                });
            }
        }
        ("batch", "Job") => {
            for f in ["selector", "template"] {
                if old["spec"][f] != new["spec"][f] {
                    return Err(immutable(ty, name, &format!("spec.{f}"), &new["spec"][f]));
                }
            }
        }
        ("apps", kind) => {
            if old["spec"]["selector"] != new["spec"]["selector"] {
                return Err(immutable(ty, name, "spec.selector", &new["spec"]["selector"]));
            }
            check_selector(ty, name, new)?;
            if kind == "StatefulSet" {
                let mutable: &[&[&str]] = &[
                    &["replicas"],
                    &["ordinals"],
                    &["template"],
                    &["updateStrategy"],
                    &["persistentVolumeClaimRetentionPolicy"],
                    &["minReadySeconds"],
                ];
                if without(&old["spec"], mutable) != without(&new["spec"], mutable) {
                    return Err(ApiError::Invalid {
                        kind: ty.kind.clone(),
                        group: ty.group.clone(),
                        name: name.into(),
                        causes: vec![Cause { reason: "FieldValueForbidden", field: "spec".into(), message: "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into() }],
                    });
                }
            }
        }
        ("apiextensions.k8s.io", _) if old["spec"]["scope"] != new["spec"]["scope"] => {
            return Err(immutable(ty, name, "spec.scope", &new["spec"]["scope"]));
        }
        ("rbac.authorization.k8s.io", kind @ ("RoleBinding" | "ClusterRoleBinding")) => {
            validate_binding(ty, name, kind, new)?;
            if old["roleRef"] != new["roleRef"] {
                let r = &new["roleRef"];
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                return Err(ApiError::invalid(
                    &ty.kind,
                    &ty.group,
                    name,
                    "roleRef",
                    format!(
                        "Invalid value: rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}: cannot change roleRef",
                        s(&r["apiGroup"]),
                        s(&r["kind"]),
                        s(&r["name"])
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// RoleBinding/ClusterRoleBinding: a roleRef to a Role or ClusterRole of rbac's group, and
/// subjects of a known kind with a name (a ServiceAccount of a ClusterRoleBinding needs a
/// namespace).
fn validate_binding(ty: &ResourceType, name: &str, kind: &str, obj: &Value) -> Result<(), ApiError> {
    let err = |field: &str, msg: String| ApiError::invalid(&ty.kind, &ty.group, name, field, msg);
    let r = &obj["roleRef"];
    let ref_kind = r["kind"].as_str().unwrap_or_default();
    let allowed: &[&str] = if kind == "RoleBinding" { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    if !allowed.contains(&ref_kind) {
        let supported = allowed.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ");
        return Err(err("roleRef.kind", format!("Unsupported value: {ref_kind:?}: supported values: {supported}")));
    }
    if r["apiGroup"] != "rbac.authorization.k8s.io" {
        let g = r["apiGroup"].as_str().unwrap_or_default();
        return Err(err(
            "roleRef.apiGroup",
            format!("Unsupported value: {g:?}: supported values: \"rbac.authorization.k8s.io\""),
        ));
    }
    if r["name"].as_str().is_none_or(str::is_empty) {
        return Err(err("roleRef.name", "Required value".into()));
    }
    for (i, s) in obj["subjects"].as_array().into_iter().flatten().enumerate() {
        let k = s["kind"].as_str().unwrap_or_default();
        if s["name"].as_str().is_none_or(str::is_empty) {
            return Err(err(&format!("subjects[{i}].name"), "Required value".into()));
        }
        match k {
            "User" | "Group" => {}
            "ServiceAccount" => {
                if kind == "ClusterRoleBinding" && s["namespace"].as_str().is_none_or(str::is_empty) {
                    return Err(err(&format!("subjects[{i}].namespace"), "Required value".into()));
                }
            }
            other => {
                return Err(err(
                    &format!("subjects[{i}].kind"),
                    format!("Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_subdomain("a.b-c"));
        assert!(!is_subdomain("A"));
        assert!(!is_subdomain("-a"));
        assert!(is_label("abc-1"));
        assert!(!is_label("a.b"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("500M"), Some(5e8));
        assert!(parse_quantity("1Gx").is_none());
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.96.0.0/16").unwrap();
        assert!(c.contains(u32::from(std::net::Ipv4Addr::new(10, 96, 3, 4))));
        assert!(!c.contains(u32::from(std::net::Ipv4Addr::new(10, 97, 0, 1))));
    }
}
