//! Writes the two schema files the lab's API server serves from:
//!
//! * `lab/schema/openapi.json`: `{"definitions": {...}}` in Swagger 2.0 form, one definition per
//!   type the lab serves, from k8s-openapi's JSON schemas (descriptions, types, formats,
//!   required), plus what kube-apiserver's OpenAPI carries and k8s-openapi leaves out:
//!   `x-kubernetes-group-version-kind` on kinds and lists, and the markers of the Go types
//!   (`x-kubernetes-patch-strategy`, `-patch-merge-key`, `-list-type`, `-list-map-keys`,
//!   `-map-type`) read from the comments k8s-pb keeps from the `.proto` files.
//! * `lab/schema/proto.json`: the protobuf messages of those types (k8s-pb's generated prost
//!   code: field numbers and wire types), each field under its JSON name (from the OpenAPI
//!   definition of the same type), so the server can translate between JSON and protobuf
//!   without typed code per kind.
//!
//! Usage: `cargo run --release -- <repo root>` (lab/tools/schema-gen/generate.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::Resource;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, autoscaling::v1 as as1,
    autoscaling::v2 as as2, batch::v1 as batch, coordination::v1 as coord, core::v1 as core,
    discovery::v1 as disc, events::v1 as events, networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;

/// A kind and whether it has a List (subresource kinds such as Scale have none).
struct Kinds<'a> {
    generator: &'a mut SchemaGenerator,
    gvks: Vec<(String, String, String, String, bool)>,
}

impl Kinds<'_> {
    fn add<T: Resource + JsonSchema>(&mut self, list: bool) -> &mut Self {
        self.generator.subschema_for::<T>();
        self.gvks.push((T::GROUP.into(), T::VERSION.into(), T::KIND.into(), T::schema_name().into(), list));
        self
    }
}

/// Protobuf packages (k8s-pb module paths) of the groups the lab serves.
const PACKAGES: &[&str] = &[
    "api/core/v1",
    "api/apps/v1",
    "api/batch/v1",
    "api/networking/v1",
    "api/discovery/v1",
    "api/policy/v1",
    "api/autoscaling/v1",
    "api/autoscaling/v2",
    "api/scheduling/v1",
    "api/rbac/v1",
    "api/storage/v1",
    "api/coordination/v1",
    "api/events/v1",
    "api/authorization/v1",
    "api/authentication/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/api/resource",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1",
    "kube_aggregator/pkg/apis/apiregistration/v1",
    "metrics/pkg/apis/metrics/v1beta1",
];

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: lab-schema-gen <repo root>"));
    let mut defs = openapi_definitions();
    let pb = k8s_pb_dir();
    let mut messages = BTreeMap::new();
    for pkg in PACKAGES {
        parse_package(&pb, pkg, &mut messages);
    }
    let proto = resolve(&messages, &mut defs);
    let out = root.join("lab/schema");
    std::fs::create_dir_all(&out).expect("mkdir lab/schema");
    let mut text = String::from("{\"definitions\": {\n");
    let n = defs.len();
    for (i, (k, v)) in defs.iter().enumerate() {
        text.push_str(&format!(
            "{}: {}{}\n",
            serde_json::to_string(k).unwrap(),
            serde_json::to_string(v).unwrap(),
            if i + 1 < n { "," } else { "" }
        ));
    }
    text.push_str("}}\n");
    std::fs::write(out.join("openapi.json"), text).expect("write openapi.json");
    let mut text = String::from("{\n");
    let n = proto.len();
    for (i, (k, v)) in proto.iter().enumerate() {
        text.push_str(&format!(
            "{}: {}{}\n",
            serde_json::to_string(k).unwrap(),
            serde_json::to_string(v).unwrap(),
            if i + 1 < n { "," } else { "" }
        ));
    }
    text.push_str("}\n");
    std::fs::write(out.join("proto.json"), text).expect("write proto.json");
    eprintln!("{} definitions, {} messages", defs.len(), proto.len());
}

fn openapi_definitions() -> BTreeMap<String, Value> {
    // Swagger 2.0 form: `#/definitions/`, and `$ref` keeps its `description` sibling as in
    // kube-apiserver's /openapi/v2.
    let settings = SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
        s.transforms.clear();
    });
    let mut generator = settings.into_generator();
    let mut k = Kinds { generator: &mut generator, gvks: Vec::new() };
    k.add::<core::Namespace>(true)
        .add::<core::ConfigMap>(true)
        .add::<core::Secret>(true)
        .add::<core::Service>(true)
        .add::<core::ServiceAccount>(true)
        .add::<core::PersistentVolumeClaim>(true)
        .add::<core::PersistentVolume>(true)
        .add::<core::Pod>(true)
        .add::<core::Endpoints>(true)
        .add::<core::Event>(true)
        .add::<core::Node>(true)
        .add::<core::ReplicationController>(true)
        .add::<core::LimitRange>(true)
        .add::<core::ResourceQuota>(true)
        .add::<core::Binding>(false)
        .add::<disc::EndpointSlice>(true)
        .add::<policy::PodDisruptionBudget>(true)
        .add::<policy::Eviction>(false)
        .add::<as2::HorizontalPodAutoscaler>(true)
        .add::<as1::Scale>(false)
        .add::<net::IngressClass>(true)
        .add::<net::Ingress>(true)
        .add::<net::NetworkPolicy>(true)
        .add::<sched::PriorityClass>(true)
        .add::<events::Event>(true)
        .add::<coord::Lease>(true)
        .add::<apps::Deployment>(true)
        .add::<apps::StatefulSet>(true)
        .add::<apps::DaemonSet>(true)
        .add::<apps::ReplicaSet>(true)
        .add::<batch::Job>(true)
        .add::<batch::CronJob>(true)
        .add::<rbac::Role>(true)
        .add::<rbac::RoleBinding>(true)
        .add::<rbac::ClusterRole>(true)
        .add::<rbac::ClusterRoleBinding>(true)
        .add::<storage::StorageClass>(true)
        .add::<apiext::CustomResourceDefinition>(true)
        .add::<authz::SelfSubjectAccessReview>(false)
        .add::<authz::SelfSubjectRulesReview>(false)
        .add::<authz::SubjectAccessReview>(false)
        .add::<authz::LocalSubjectAccessReview>(false)
        .add::<authn::TokenReview>(false)
        .add::<authn::SelfSubjectReview>(false)
        .add::<authn::TokenRequest>(false)
        .add::<apireg::APIService>(true);
    let gvks = std::mem::take(&mut k.gvks);
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::WatchEvent<()>>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::APIGroupList>();
    generator.subschema_for::<meta::APIVersions>();
    generator.subschema_for::<meta::Patch>();
    let mut defs: BTreeMap<String, Value> =
        generator.take_definitions(false).into_iter().map(|(k, v)| (k, normalize(v))).collect();
    for (group, version, kind, def, list) in gvks {
        let gvk = json!([{"group": group, "kind": kind, "version": version}]);
        let d = defs.get_mut(&def).expect("kind definition");
        d["x-kubernetes-group-version-kind"] = gvk;
        // k8s-openapi makes `metadata` a required Rust field; the API's schema does not.
        if let Some(r) = d["required"].as_array_mut() {
            r.retain(|f| f != "metadata");
            if r.is_empty() {
                d.as_object_mut().unwrap().remove("required");
            }
        }
        if list {
            let list_def = format!("{def}List");
            defs.insert(
                list_def,
                json!({
                    "description": format!("{kind}List is a list of {kind} objects."),
                    "type": "object",
                    "properties": {
                        "apiVersion": defs[&def]["properties"]["apiVersion"].clone(),
                        "items": {"description": format!("List of {kind} objects."), "type": "array", "items": {"$ref": format!("#/definitions/{def}")}},
                        "kind": defs[&def]["properties"]["kind"].clone(),
                        "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta", "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"},
                    },
                    "required": ["items"],
                    "x-kubernetes-group-version-kind": [{"group": group, "kind": format!("{kind}List"), "version": version}],
                }),
            );
        }
    }
    defs
}

/// schemars writes `#/definitions/x` refs already; drop `null` leftovers if any.
fn normalize(v: Value) -> Value {
    v
}

fn k8s_pb_dir() -> PathBuf {
    let out = std::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata output");
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "k8s-pb")
        .expect("k8s-pb in cargo metadata");
    Path::new(pkg["manifest_path"].as_str().unwrap()).parent().unwrap().join("src")
}

/// A protobuf field as prost generated it.
#[derive(Debug, Clone)]
struct PbField {
    rust: String,
    /// `string`, `int32`, `int64`, `bool`, `double`, `bytes`, or `message`.
    kind: String,
    repeated: bool,
    /// `Some(value kind)` for `map<string, V>`.
    map_value: Option<String>,
    tag: u32,
    /// Message type (package, name) for message fields and message map values.
    message: Option<(String, String)>,
    markers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct PbMessage {
    fields: Vec<PbField>,
    markers: Vec<(String, String)>,
}

fn parse_package(src: &Path, pkg: &str, out: &mut BTreeMap<(String, String), PbMessage>) {
    let text = std::fs::read_to_string(src.join(pkg).join("mod.rs")).unwrap_or_else(|e| panic!("{pkg}: {e}"));
    let module: Vec<&str> = pkg.split('/').collect();
    let mut docs: Vec<String> = Vec::new();
    let mut attr: Option<String> = None;
    let mut current: Option<(String, PbMessage)> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            docs.push(d.trim().to_string());
            continue;
        }
        if let Some(a) = t.strip_prefix("#[prost(") {
            attr = Some(a.trim_end_matches(")]").to_string());
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(" {").trim().to_string();
            let markers = markers(&docs);
            current = Some((name, PbMessage { fields: Vec::new(), markers }));
            docs.clear();
            continue;
        }
        if line == "}" {
            if let Some((name, msg)) = current.take() {
                out.insert((pkg.to_string(), name), msg);
            }
            docs.clear();
            continue;
        }
        if let (Some(a), Some(decl), Some((_, msg))) = (attr.take(), t.strip_prefix("pub "), current.as_mut()) {
            let mut decl = decl.to_string();
            while !(decl.ends_with(',') && decl.matches('<').count() == decl.matches('>').count()) {
                decl.push_str(lines.next().expect("field declaration").trim());
            }
            let (rust, ty) = decl.split_once(':').expect("field name");
            let rust = rust.trim().trim_start_matches("r#").to_string();
            let ty = ty.trim().trim_end_matches(',').replace(' ', "");
            msg.fields.push(field(&module, &a, rust, &ty, markers(&docs)));
            docs.clear();
            continue;
        }
        if !t.starts_with("#[") {
            docs.clear();
        }
    }
}

fn markers(docs: &[String]) -> Vec<(String, String)> {
    docs.iter()
        .filter_map(|d| d.strip_prefix('+'))
        .filter_map(|m| m.split_once('='))
        .filter(|(k, _)| matches!(*k, "patchMergeKey" | "patchStrategy" | "listType" | "listMapKey" | "mapType" | "structType"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field(module: &[&str], attr: &str, rust: String, ty: &str, markers: Vec<(String, String)>) -> PbField {
    let parts: Vec<String> = attr.split(", ").map(str::to_string).collect();
    let tag = parts
        .iter()
        .find_map(|p| p.strip_prefix("tag = \"").map(|t| t.trim_end_matches('"').parse().unwrap()))
        .expect("tag");
    let repeated = parts.iter().any(|p| p == "repeated");
    let first = &parts[0];
    let (kind, map_value) = if let Some(m) = attr.strip_prefix("btree_map = \"") {
        let (_k, v) = m.split_once('"').expect("map types").0.split_once(", ").expect("map types");
        ("map".to_string(), Some(v.to_string()))
    } else if first.starts_with("bytes") {
        ("bytes".to_string(), None)
    } else {
        (first.clone(), None)
    };
    let needs_message = kind == "message" || map_value.as_deref() == Some("message");
    let message = needs_message.then(|| message_path(module, ty));
    PbField { rust, kind, repeated, map_value, tag, message, markers }
}

/// The (package, name) of the message a field type names, from prost's relative path.
fn message_path(module: &[&str], ty: &str) -> (String, String) {
    let mut t = ty.to_string();
    for wrapper in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"] {
        while let Some(inner) = t.strip_prefix(wrapper) {
            t = inner.strip_suffix('>').unwrap().to_string();
        }
    }
    if let Some(inner) = t.strip_prefix("::prost::alloc::collections::BTreeMap<") {
        let inner = inner.strip_suffix(",>").or(inner.strip_suffix('>')).unwrap();
        t = inner.split_once(',').unwrap().1.trim_end_matches(',').to_string();
    }
    let mut path: Vec<&str> = module.to_vec();
    let segs: Vec<&str> = t.split("::").collect();
    let (name, prefix) = segs.split_last().unwrap();
    for s in prefix {
        if *s == "super" {
            path.pop();
        } else {
            path.push(s);
        }
    }
    (path.join("/"), name.to_string())
}

/// `api/core/v1` → `io.k8s.api.core.v1`, as the OpenAPI definitions name packages.
fn openapi_package(pkg: &str) -> String {
    let p = pkg
        .replace("apiextensions_apiserver", "apiextensions-apiserver")
        .replace("kube_aggregator", "kube-aggregator")
        .replace('/', ".");
    format!("io.k8s.{p}")
}

/// Compares Go, proto, Rust and JSON spellings of one name: `podIPs`, `pod_i_ps`,
/// `x-kubernetes-list-type`, `x_kubernetes_list_type`, `$ref`, `ref`.
fn norm(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '_' | '-' | '$')).flat_map(char::to_lowercase).collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Names every message as its OpenAPI definition is named, every field by its JSON name,
/// and copies the Go markers into the OpenAPI definitions.
fn resolve(
    messages: &BTreeMap<(String, String), PbMessage>,
    defs: &mut BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let by_norm: BTreeMap<String, String> = defs.keys().map(|k| (norm(k), k.clone())).collect();
    let name_of = |pkg: &str, name: &str| -> String {
        let full = format!("{}.{name}", openapi_package(pkg));
        by_norm.get(&norm(&full)).cloned().unwrap_or(full)
    };
    let mut out = BTreeMap::new();
    for ((pkg, name), msg) in messages {
        let full = name_of(pkg, name);
        let def_props: Option<Map<String, Value>> =
            defs.get(&full).and_then(|d| d["properties"].as_object()).cloned();
        if def_props.is_none() {
            eprintln!("note: {full}: no OpenAPI definition");
        }
        let required: Vec<String> = defs
            .get(&full)
            .and_then(|d| d["required"].as_array())
            .map(|r| r.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let mut fields = Vec::new();
        for f in &msg.fields {
            let found = def_props.as_ref().and_then(|p| p.keys().find(|k| norm(k) == norm(&f.rust)).cloned());
            // A Go struct embedded with `json:",inline"` is a message field in protobuf
            // whose fields sit in the parent's JSON: its fields are all among the parent's
            // properties while its own name is not.
            if found.is_none()
                && let (Some(props), Some((p, n))) = (&def_props, &f.message)
                && let Some(inner) = messages.get(&(p.clone(), n.clone()))
                && !f.repeated
                && f.map_value.is_none()
                && (norm(&f.rust) == norm(n)
                    || inner.fields.iter().all(|i| props.keys().any(|k| norm(k) == norm(&i.rust))))
            {
                fields.push(json!([f.tag, f.rust, name_of(p, n), 0, 1]));
                continue;
            }
            let json_name = found
                .unwrap_or_else(|| {
                    if def_props.is_some() {
                        eprintln!("note: {full}.{}: not in the OpenAPI definition (newer than it)", f.rust);
                    }
                    lower_camel(&f.rust)
                });
            let target = f.message.as_ref().map(|(p, n)| name_of(p, n));
            let ty = match (f.kind.as_str(), &f.map_value) {
                ("map", Some(v)) if v == "message" => format!("map:{}", target.clone().unwrap()),
                ("map", Some(v)) => format!("map:{v}"),
                ("message", _) => target.clone().unwrap(),
                (k, _) => k.to_string(),
            };
            let ty = if f.repeated { format!("[]{ty}") } else { ty };
            let req = required.contains(&json_name);
            fields.push(json!([f.tag, json_name, ty, if req { 1 } else { 0 }]));
            if let Some(prop) = defs.get_mut(&full).and_then(|d| d["properties"].get_mut(&json_name)) {
                add_markers(prop, &f.markers);
            }
        }
        if let Some(d) = defs.get_mut(&full)
            && msg.markers.iter().any(|(k, v)| k == "structType" && v == "atomic")
        {
            d["x-kubernetes-map-type"] = json!("atomic");
        }
        out.insert(full, Value::Array(fields));
    }
    out
}

fn add_markers(prop: &mut Value, markers: &[(String, String)]) {
    let keys: Vec<String> = markers.iter().filter(|(k, _)| k == "listMapKey").map(|(_, v)| v.clone()).collect();
    for (k, v) in markers {
        match k.as_str() {
            "patchMergeKey" => prop["x-kubernetes-patch-merge-key"] = json!(v),
            "patchStrategy" => prop["x-kubernetes-patch-strategy"] = json!(v),
            "listType" => prop["x-kubernetes-list-type"] = json!(v),
            "mapType" => prop["x-kubernetes-map-type"] = json!(v),
            _ => {}
        }
    }
    if !keys.is_empty() {
        prop["x-kubernetes-list-map-keys"] = json!(keys);
    }
}
