//! Desired-state file (version 1) → [`Spec`]. The format is documented in
//! docs/desired-state.md; keep the two in step.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Location, Problems, SpecError};
use super::files::MAX_DESIRED_FILE;
use super::model::*;
use super::names;
use super::reader::{Report, Table, Value};

/// The image with rsync and stunnel that transfer pods run, as in MTC.
pub const DEFAULT_TRANSFER_IMAGE: &str = "quay.io/konveyor/rsync-transfer:latest";

/// Reads and validates a desired-state file. Relative paths in it resolve against its folder.
/// The file must be a regular file of at most [`MAX_DESIRED_FILE`] bytes.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let text = super::files::read_bounded_string(path, MAX_DESIRED_FILE, "desired-state file")
        .map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parses `text` as if it were the file at `path` (used for messages and relative paths).
pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    let mut report = Report::new(text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // A document with syntax errors is not read further: its tree is a guess.
        for e in syntax {
            syntax_problem(&mut report, text, &e);
        }
        return Err(invalid(path, report));
    }
    let spec = read_spec(&mut report, &doc, path, &base);
    match spec {
        Some(spec) if !report.has_problems() => Ok(spec),
        _ => Err(invalid(path, report)),
    }
}

/// How deep the TOML parser nests arrays, inline tables and dotted keys (toml's own limit).
const TOML_NESTING_LIMIT: usize = 80;

/// A TOML syntax error, in words that name what is wrong: the duplicated key, and for too
/// deep nesting the line where the nesting began (the parser stops where it gave up, or
/// gives no position at all for dotted keys).
fn syntax_problem(r: &mut Report<'_>, text: &str, e: &toml::de::Error) {
    let message = e.message().trim_end();
    let span = e.span();
    if message.contains("recurs") {
        let offset = super::reader::nesting_start(text, span.map(|s| s.start), TOML_NESTING_LIMIT - 1);
        r.error_at_offset(
            offset,
            format!("invalid TOML: nesting deeper than {TOML_NESTING_LIMIT} levels starts here (arrays, inline tables or dotted keys)"),
            Some("a desired-state file never nests this deep; look for brackets that are never closed".into()),
        );
        return;
    }
    if message == "duplicate key"
        && let Some(span) = span.clone()
        && let Some(key) = text.get(span.clone())
    {
        let key = key.trim();
        let key = key.trim_matches(|c| c == '"' || c == '\'');
        r.error(
            &span,
            format!("invalid TOML: duplicate key `{}`", super::truncate(key, 80)),
            Some("a key may be set once per table, and a `[table]` header written once per file".into()),
        );
        return;
    }
    let offset = span.map_or(0, |s| s.start);
    r.error_at_offset(offset, format!("invalid TOML: {message}"), None);
}

fn invalid(path: &Path, report: Report<'_>) -> SpecError {
    let (problems, total) = report.into_problems();
    SpecError::Invalid(Problems { path: path.to_path_buf(), problems, total })
}

fn read_spec(r: &mut Report<'_>, doc: &Spanned<DeTable<'_>>, path: &Path, base: &Path) -> Option<Spec> {
    let mut root = Table::root(doc);
    match root.get("version") {
        None => r.at(
            Location { line: 1, column: 1 },
            "the file does not say its format version",
            Some("add `version = 1` at the top".into()),
        ),
        Some(v) => {
            if let Some(n) = r.integer(v, "version", 0, u64::MAX)
                && n != 1
            {
                r.error(&v.span(), format!("unsupported version {n}: this mtcd reads version 1"), None);
            }
        }
    }
    let clusters = root.require(r, "clusters").and_then(|v| read_clusters(r, v, base));
    let migrations = match root.get("migration") {
        None => {
            r.at(
                Location { line: 1, column: 1 },
                "the file has no `[[migration]]`",
                Some("add at least one `[[migration]]` table with a `name` and `namespaces`".into()),
            );
            None
        }
        Some(v) => read_migrations(r, v, base),
    };
    let plugin_registries = match root.get("plugins") {
        None => Some(Vec::new()),
        Some(v) => read_plugin_settings(r, v, base),
    };
    let sync = match root.get("sync") {
        None => Some(SyncOptions { interval: Duration::from_secs(600) }),
        Some(v) => read_sync(r, v),
    };
    let cutover = match root.get("cutover") {
        None => Some(CutoverOptions::default()),
        Some(v) => read_cutover(r, v),
    };
    root.finish(r);

    let (source, destination) = clusters?;
    let mut migrations = migrations?;
    check_images_have_registries(r, &source, &destination, &migrations);
    attach_plugin_registries(&mut migrations, &plugin_registries?, [&source, &destination], path);
    Some(Spec {
        path: path.to_path_buf(),
        source,
        destination,
        migrations: migrations.into_iter().map(|m| m.into_inner()).collect(),
        sync: sync?,
        cutover: cutover?,
    })
}

fn read_clusters(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<(ClusterSpec, ClusterSpec)> {
    let mut t = Table::new(r, v, "[clusters]")?;
    let source = t.require(r, "source").and_then(|v| read_cluster(r, v, "[clusters.source]", base));
    let destination = t.require(r, "destination").and_then(|v| read_cluster(r, v, "[clusters.destination]", base));
    t.finish(r);
    Some((source?, destination?))
}

fn read_cluster(r: &mut Report<'_>, v: &Value<'_>, name: &str, base: &Path) -> Option<ClusterSpec> {
    let mut t = Table::new(r, v, name)?;
    let context = t.require(r, "context").and_then(|v| {
        let s = r.string(v, "context")?;
        if s.is_empty() {
            r.error(&v.span(), "`context` must not be empty", None);
            return None;
        }
        Some((s, r.location(&v.span())))
    });
    let registry = match t.get("registry") {
        None => Some(None),
        Some(v) => read_registry(r, v, &format!("{name} registry"), base).map(Some),
    };
    t.finish(r);
    let (context, context_at) = context?;
    Some(ClusterSpec { context, context_at, registry: registry? })
}

/// `registry = "host:port"` or a `[clusters.X.registry]` table with auth and TLS settings.
fn read_registry(r: &mut Report<'_>, v: &Value<'_>, name: &str, base: &Path) -> Option<Registry> {
    if let DeValue::String(s) = v.get_ref() {
        return check_host(r, v, s, "registry").map(|address| Registry {
            address,
            internal_address: None,
            auth: RegistryAuth::Anonymous,
            tls: RegistryTls::Verify,
        });
    }
    let mut t = Table::new(r, v, format!("[{name}]"))?;
    let address = t.require(r, "address").and_then(|v| {
        let s = r.string(v, "address")?;
        check_host(r, v, &s, "address")
    });
    let internal_address = match t.get("internal_address") {
        None => Some(None),
        Some(v) => r.string(v, "internal_address").and_then(|s| check_host(r, v, &s, "internal_address")).map(Some),
    };
    let auth = match t.get("auth") {
        None => Some(RegistryAuth::Anonymous),
        Some(v) => read_registry_auth(r, v, base),
    };
    let tls = match t.get("tls") {
        None => Some(RegistryTls::Verify),
        Some(v) => read_registry_tls(r, v, base),
    };
    t.finish(r);
    Some(Registry { address: address?, internal_address: internal_address?, auth: auth?, tls: tls? })
}

/// A registry address is `host[:port]`: no scheme, no path (the TLS setting says the scheme).
fn check_host(r: &mut Report<'_>, v: &Value<'_>, s: &str, name: &str) -> Option<String> {
    if s.contains("://") || s.contains('/') || s.is_empty() || s.contains(char::is_whitespace) {
        r.error(
            &v.span(),
            format!(
                "`{name}` must be a registry host like \"registry.example.com\" or \"127.0.0.1:5000\", found {s:?}"
            ),
            Some("leave out the scheme and path; use `tls = \"insecure\"` for plain HTTP".into()),
        );
        return None;
    }
    Some(s.to_string())
}

fn read_registry_auth(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<RegistryAuth> {
    if let DeValue::String(_) = v.get_ref() {
        return r
            .choice(v, "auth", &[("anonymous", 0), ("kubeconfig-token", 1)])
            .map(|c| if c == 0 { RegistryAuth::Anonymous } else { RegistryAuth::KubeconfigToken });
    }
    let mut t = Table::new(r, v, "registry `auth`")?;
    let docker = t.get("docker_config");
    let user = t.get("username_env");
    let pass = t.get("password_env");
    let span = t.span();
    t.finish(r);
    match (docker, user, pass) {
        (Some(d), None, None) => {
            let p = r.string(d, "docker_config")?;
            Some(RegistryAuth::DockerConfig(resolve_existing(r, d, &p, base, "docker_config")?))
        }
        (None, Some(u), Some(p)) => {
            let username_env = r.string(u, "username_env")?;
            let password_env = r.string(p, "password_env")?;
            Some(RegistryAuth::BasicEnv { username_env, password_env })
        }
        _ => {
            r.error(
                &span,
                "registry `auth` must be \"anonymous\", \"kubeconfig-token\", { docker_config = \"PATH\" } or { username_env = \"VAR\", password_env = \"VAR\" }",
                Some("credentials are referenced, never written in the file".into()),
            );
            None
        }
    }
}

fn read_registry_tls(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<RegistryTls> {
    if let DeValue::String(_) = v.get_ref() {
        return r
            .choice(v, "tls", &[("verify", true), ("insecure", false)])
            .map(|verify| if verify { RegistryTls::Verify } else { RegistryTls::Insecure });
    }
    let mut t = Table::new(r, v, "registry `tls`")?;
    let ca = t.require(r, "ca_bundle");
    t.finish(r);
    let ca = ca?;
    let p = r.string(ca, "ca_bundle")?;
    Some(RegistryTls::CaBundle(resolve_existing(r, ca, &p, base, "ca_bundle")?))
}

fn resolve_existing(r: &mut Report<'_>, v: &Value<'_>, p: &str, base: &Path, name: &str) -> Option<PathBuf> {
    let path = base.join(p);
    if !path.exists() {
        r.error(
            &v.span(),
            format!("`{name}`: file {} does not exist", path.display()),
            Some(format!("paths are relative to the desired-state file's folder ({})", base.display())),
        );
        return None;
    }
    // Read later, within bounds: say now if it never could be.
    let (limit, what) = match name {
        "ca_bundle" => (super::files::MAX_CA_BUNDLE, "CA bundle"),
        _ => (super::files::MAX_DOCKER_CONFIG, "docker config"),
    };
    if let Err(e) = super::files::check_bounded(&path, limit, what) {
        r.error(&v.span(), format!("`{name}`: {e}"), Some(format!("`{name}` names a regular file")));
        return None;
    }
    Some(path)
}

fn read_sync(r: &mut Report<'_>, v: &Value<'_>) -> Option<SyncOptions> {
    let mut t = Table::new(r, v, "[sync]")?;
    let interval = match t.get("interval") {
        None => Some(Duration::from_secs(600)),
        Some(v) => r.duration(v, "sync.interval"),
    };
    t.finish(r);
    Some(SyncOptions { interval: interval? })
}

fn read_cutover(r: &mut Report<'_>, v: &Value<'_>) -> Option<CutoverOptions> {
    let mut t = Table::new(r, v, "[cutover]")?;
    let defaults = CutoverOptions::default();
    let quiesce_timeout = match t.get("quiesce_timeout") {
        None => Some(defaults.quiesce_timeout),
        Some(v) => r.duration(v, "cutover.quiesce_timeout"),
    };
    let verify_timeout = match t.get("verify_timeout") {
        None => Some(defaults.verify_timeout),
        Some(v) => r.duration(v, "cutover.verify_timeout"),
    };
    t.finish(r);
    Some(CutoverOptions { quiesce_timeout: quiesce_timeout?, verify_timeout: verify_timeout? })
}

fn read_migrations(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<Vec<Spanned<Migration>>> {
    let DeValue::Array(items) = v.get_ref() else {
        r.error(&v.span(), "`migration` must be written as `[[migration]]` tables", None);
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match read_migration(r, item, i, base) {
            Some(m) => out.push(Spanned::new(item.span(), m)),
            None => ok = false,
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, m) in out.iter().enumerate() {
        if seen.insert(m.get_ref().name.clone(), i).is_some() {
            r.error(
                &m.span(),
                format!("two migrations are named {:?}", m.get_ref().name),
                Some("migration names must be unique: they label what mtcd creates".into()),
            );
        }
    }
    // One destination namespace fed by two migrations would make them fight over its objects.
    let mut owner: HashMap<String, String> = HashMap::new();
    for m in &out {
        for dst in m.get_ref().namespace_map.values() {
            if let Some(other) = owner.insert(dst.clone(), m.get_ref().name.clone())
                && other != m.get_ref().name
            {
                r.error(
                    &m.span(),
                    format!("migrations {other:?} and {:?} both write destination namespace {dst:?}", m.get_ref().name),
                    None,
                );
            }
        }
    }
    ok.then_some(out)
}

fn read_migration(r: &mut Report<'_>, v: &Value<'_>, index: usize, base: &Path) -> Option<Migration> {
    let mut t = Table::new(r, v, format!("[[migration]] #{}", index + 1))?;
    let name = t.require(r, "name").and_then(|v| {
        let s = r.string(v, "name")?;
        names::check_label(r, v, &s, "migration name")
    });
    if let Some(n) = &name {
        t.set_name(format!("[[migration]] {n:?}"));
    }
    let namespaces = t.require(r, "namespaces").and_then(|v| {
        let list = r.string_list(v, "namespaces")?;
        if list.is_empty() {
            r.error(&v.span(), "`namespaces` must name at least one namespace", None);
            return Some((Vec::new(), false));
        }
        let mut ok = true;
        let mut out: Vec<Spanned<String>> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for ns in list {
            if names::check_label_str(ns.get_ref()).is_err() {
                r.error(
                    &ns.span(),
                    format!(
                        "{:?} is not a valid namespace name: {}",
                        ns.get_ref(),
                        names::check_label_str(ns.get_ref()).unwrap_err()
                    ),
                    None,
                );
                ok = false;
            } else if !seen.insert(ns.get_ref().clone()) {
                r.error(&ns.span(), format!("namespace {:?} is listed twice", ns.get_ref()), None);
                ok = false;
            } else {
                out.push(ns);
            }
        }
        Some((out, ok))
    });
    let namespace_map = match t.get("namespace_map") {
        None => Some(IndexMap::new()),
        Some(v) => r.string_map(v, "namespace_map"),
    };
    let resources = match t.get("resources") {
        None => Some(ResourceMode::Direct),
        Some(v) => r.choice(v, "resources", &[("direct", ResourceMode::Direct), ("velero", ResourceMode::Velero)]),
    };
    let volumes = match t.get("volumes") {
        None => Some(VolumeMode::Direct),
        Some(v) => r.choice(v, "volumes", &[("direct", VolumeMode::Direct), ("skip", VolumeMode::Skip)]),
    };
    let images = match t.get("images") {
        None => Some(ImageMode::Skip),
        Some(v) => r.choice(v, "images", &[("direct", ImageMode::Direct), ("skip", ImageMode::Skip)]),
    };
    let include_kinds = opt_kinds(r, t.get("include_kinds"), "include_kinds");
    let exclude_kinds = opt_kinds(r, t.get("exclude_kinds"), "exclude_kinds");
    let label_selector = match t.get("label_selector") {
        None => Some(None),
        Some(v) => r.string(v, "label_selector").and_then(|s| match names::check_selector(&s) {
            Ok(()) => Some(Some(s)),
            Err(e) => {
                r.error(
                    &v.span(),
                    format!("`label_selector` {s:?} is not a valid label selector: {e}"),
                    Some("e.g. \"app=shop,tier!=cache\"".into()),
                );
                None
            }
        }),
    };
    let storage_class_map = opt_name_map(r, t.get("storage_class_map"), "storage_class_map", "storage class name");
    let access_mode_map = opt_map(r, t.get("access_mode_map"), "access_mode_map");
    let pvc_name_map = opt_name_map(r, t.get("pvc_name_map"), "pvc_name_map", "PVC name");
    let start_workloads = opt_bool(r, t.get("start_workloads"), "start_workloads", false);
    let prune = opt_bool(r, t.get("prune"), "prune", true);
    let allow_system_namespaces = opt_bool(r, t.get("allow_system_namespaces"), "allow_system_namespaces", false);
    let adopt = opt_bool(r, t.get("adopt"), "adopt", false);
    let replace_kinds = match t.get("replace_kinds") {
        None => Some(vec!["Job".to_string()]),
        Some(v) => r.string_list(v, "replace_kinds").map(|l| l.into_iter().map(|s| s.into_inner()).collect()),
    };
    let keep_owned = opt_kinds(r, t.get("keep_owned"), "keep_owned");
    let pv_policy = match t.get("pv_policy") {
        None => Some(None),
        Some(v) => r.choice(v, "pv_policy", &[("copy", PvPolicy::Copy), ("dvm", PvPolicy::Dvm)]).map(Some),
    };
    let dvm = match t.get("dvm") {
        None => Some(default_dvm()),
        Some(v) => read_dvm(r, v),
    };
    let dim = match t.get("dim") {
        None => Some(default_dim()),
        Some(v) => read_dim(r, v),
    };
    let velero = match t.get("velero") {
        None => Some(default_velero()),
        Some(v) => read_velero(r, v),
    };
    let transforms = match t.get("transform") {
        None => Some(Vec::new()),
        Some(v) => read_transforms(r, v, base),
    };
    let hooks = match t.get("hook") {
        None => Some(Vec::new()),
        Some(v) => read_hooks(r, v, base),
    };
    // Access modes are checked here, where the spans still exist.
    if let Some(v) = t.get("access_mode_map") {
        check_access_modes(r, v);
    }
    t.finish(r);

    let (namespaces, mut ok) = namespaces?;
    let raw_map = namespace_map?;
    let mut namespace_map = IndexMap::new();
    let listed: HashSet<&str> = namespaces.iter().map(|n| n.get_ref().as_str()).collect();
    for (src, (k, dst)) in &raw_map {
        if !listed.contains(src.as_str()) {
            r.error(
                &k.span(),
                format!("`namespace_map` maps {src:?}, which is not in `namespaces`"),
                Some(format!("add {src:?} to `namespaces` or remove the mapping")),
            );
            ok = false;
        }
        if let Err(e) = names::check_label_str(dst.get_ref()) {
            r.error(&dst.span(), format!("{:?} is not a valid namespace name: {e}", dst.get_ref()), None);
            ok = false;
        }
    }
    // The cluster's own namespaces are never a source or a destination by accident.
    if allow_system_namespaces != Some(true) {
        for ns in &namespaces {
            let (dst, dst_span) = match raw_map.get(ns.get_ref()) {
                Some((_, d)) => (d.get_ref().clone(), d.span()),
                None => (ns.get_ref().clone(), ns.span()),
            };
            let mut sides = vec![(ns.get_ref().clone(), ns.span(), "source")];
            if dst != *ns.get_ref() {
                sides.push((dst, dst_span, "destination"));
            }
            for (name, span, side) in sides {
                if names::is_system_namespace(&name) {
                    r.error(
                        &span,
                        format!("{name:?} is one of the cluster's own namespaces and cannot be a {side} namespace"),
                        Some("migrate the application's namespaces; set `allow_system_namespaces = true` in this migration if you really mean it".into()),
                    );
                    ok = false;
                }
            }
        }
    }
    // Destination → the first source namespace mapped to it.
    let mut by_destination: HashMap<String, String> = HashMap::new();
    for ns in &namespaces {
        let dst = raw_map.get(ns.get_ref()).map(|(_, d)| d.get_ref().clone()).unwrap_or_else(|| ns.get_ref().clone());
        if let Some(other) = by_destination.get(&dst) {
            let span = raw_map.get(ns.get_ref()).map(|(_, d)| d.span()).unwrap_or(ns.span());
            r.error(
                &span,
                format!("namespaces {other:?} and {:?} are both mapped to {dst:?}", ns.get_ref()),
                Some("each source namespace needs its own destination namespace".into()),
            );
            ok = false;
        } else {
            by_destination.insert(dst.clone(), ns.get_ref().clone());
        }
        namespace_map.insert(ns.get_ref().clone(), dst);
    }
    if !ok {
        return None;
    }
    Some(Migration {
        name: name?,
        namespaces: namespaces.into_iter().map(|n| n.into_inner()).collect(),
        namespace_map,
        resources: resources?,
        volumes: volumes?,
        images: images?,
        filter: Filter {
            include_kinds: include_kinds?,
            exclude_kinds: exclude_kinds?,
            label_selector: label_selector?,
        },
        storage_class_map: storage_class_map?,
        access_mode_map: access_mode_map?,
        pvc_name_map: pvc_name_map?,
        start_workloads: start_workloads?,
        prune: prune?,
        allow_system_namespaces: allow_system_namespaces?,
        adopt: adopt?,
        replace_kinds: replace_kinds?,
        keep_owned: keep_owned?,
        pv_policy: pv_policy?,
        dvm: dvm?,
        dim: dim?,
        velero: velero?,
        transforms: transforms?,
        hooks: hooks?,
    })
}

fn check_access_modes(r: &mut Report<'_>, v: &Value<'_>) {
    let modes = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
    let DeValue::Table(t) = v.get_ref() else { return };
    for (k, val) in t.iter() {
        let key: &str = k.get_ref();
        if !modes.contains(&key) {
            r.error(
                &k.span(),
                format!("`access_mode_map`: {key:?} is not an access mode"),
                Some(format!("access modes are {}", super::reader::quote_list(&modes))),
            );
        }
        if let DeValue::String(s) = val.get_ref()
            && !modes.contains(&s.as_ref())
        {
            r.error(
                &val.span(),
                format!("`access_mode_map`: {s:?} is not an access mode"),
                Some(format!("access modes are {}", super::reader::quote_list(&modes))),
            );
        }
    }
}

fn opt_bool(r: &mut Report<'_>, v: Option<&Value<'_>>, name: &str, default: bool) -> Option<bool> {
    match v {
        None => Some(default),
        Some(v) => r.boolean(v, name),
    }
}

fn opt_map(r: &mut Report<'_>, v: Option<&Value<'_>>, name: &str) -> Option<IndexMap<String, String>> {
    match v {
        None => Some(IndexMap::new()),
        Some(v) => r.string_map(v, name).map(|m| m.into_iter().map(|(k, (_, v))| (k, v.into_inner())).collect()),
    }
}

/// A map of Kubernetes object names (PVCs, storage classes): every key and value an RFC 1123
/// subdomain, so none can be empty or change a request path (`/`).
fn opt_name_map(r: &mut Report<'_>, v: Option<&Value<'_>>, name: &str, what: &str) -> Option<IndexMap<String, String>> {
    let Some(v) = v else { return Some(IndexMap::new()) };
    let map = r.string_map(v, name)?;
    let mut ok = true;
    for (key, value) in map.values() {
        for (s, side) in [(key, "source"), (value, "destination")] {
            if let Err(e) = names::check_subdomain_str(s.get_ref()) {
                r.error(
                    &s.span(),
                    format!("`{name}`: {:?} is not a valid {side} {what}: {e}", names::short(s.get_ref())),
                    Some(format!("{what}s are RFC 1123 subdomains, e.g. \"data-v2\"")),
                );
                ok = false;
            }
        }
    }
    ok.then(|| map.into_iter().map(|(k, (_, v))| (k, v.into_inner())).collect())
}

fn opt_kinds(r: &mut Report<'_>, v: Option<&Value<'_>>, name: &str) -> Option<Vec<String>> {
    let Some(v) = v else { return Some(Vec::new()) };
    let list = r.string_list(v, name)?;
    let mut ok = true;
    for k in &list {
        let kind = k.get_ref().split('.').next().unwrap_or_default();
        if !kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            || !kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            r.error(
                &k.span(),
                format!("`{name}`: {:?} is not a kind", k.get_ref()),
                Some("write kinds as `Kind` or `Kind.group`, e.g. \"Secret\", \"Route.route.openshift.io\"".into()),
            );
            ok = false;
        }
    }
    ok.then(|| list.into_iter().map(|k| k.into_inner()).collect())
}

pub(crate) fn default_dvm() -> DvmOptions {
    DvmOptions {
        endpoint: EndpointKind::Route,
        subdomain: None,
        parallel: 4,
        streams_per_pvc: 1,
        bandwidth_limit: None,
        retries: 3,
        verify: false,
        transfer_image: DEFAULT_TRANSFER_IMAGE.into(),
        preserve_ownership: true,
        hard_links: true,
        xattrs: true,
        acls: true,
        exact_times: true,
        compress: false,
        tunnel_timeout: Duration::from_secs(120),
        security: TransferSecurity::default(),
        grow: false,
        source: VolumeSource::Live,
        pvc_source: IndexMap::new(),
        snapshot_class: None,
    }
}

fn read_dvm(r: &mut Report<'_>, v: &Value<'_>) -> Option<DvmOptions> {
    let mut t = Table::new(r, v, "[migration.dvm]")?;
    let d = default_dvm();
    let endpoint = match t.get("endpoint") {
        None => Some(d.endpoint),
        Some(v) => r.choice(
            v,
            "dvm.endpoint",
            &[
                ("route", EndpointKind::Route),
                ("ingress", EndpointKind::Ingress),
                ("loadbalancer", EndpointKind::LoadBalancer),
            ],
        ),
    };
    let subdomain = match t.get("subdomain") {
        None => Some(None),
        Some(v) => r.string(v, "dvm.subdomain").and_then(|s| match names::check_subdomain_str(&s) {
            Ok(()) => Some(Some(s)),
            Err(e) => {
                r.error(
                    &v.span(),
                    format!("`dvm.subdomain` {:?} is not a DNS subdomain: {e}", names::short(&s)),
                    Some("the apps domain routes are generated under, e.g. \"apps.cluster.example.com\"".into()),
                );
                None
            }
        }),
    };
    let parallel = t.get("parallel").map_or(Some(d.parallel as u64), |v| r.integer(v, "dvm.parallel", 1, 64));
    let streams =
        t.get("streams_per_pvc").map_or(Some(d.streams_per_pvc as u64), |v| r.integer(v, "dvm.streams_per_pvc", 1, 32));
    let bandwidth_limit = match t.get("bandwidth_limit") {
        None => Some(None),
        Some(v) => r.size(v, "dvm.bandwidth_limit").map(Some),
    };
    let retries = t.get("retries").map_or(Some(d.retries as u64), |v| r.integer(v, "dvm.retries", 0, 100));
    let verify = opt_bool(r, t.get("verify"), "dvm.verify", d.verify);
    let transfer_image = match t.get("transfer_image") {
        None => Some(d.transfer_image.clone()),
        Some(v) => r.string(v, "dvm.transfer_image").and_then(|s| names::check_image(r, v, s, "dvm.transfer_image")),
    };
    let preserve_ownership_value = t.get("preserve_ownership");
    let hard_links = opt_bool(r, t.get("hard_links"), "dvm.hard_links", d.hard_links);
    let xattrs = opt_bool(r, t.get("xattrs"), "dvm.xattrs", d.xattrs);
    let acls = opt_bool(r, t.get("acls"), "dvm.acls", d.acls);
    let exact_times = opt_bool(r, t.get("exact_times"), "dvm.exact_times", d.exact_times);
    let compress = opt_bool(r, t.get("compress"), "dvm.compress", d.compress);
    let tunnel_timeout =
        t.get("tunnel_timeout").map_or(Some(d.tunnel_timeout), |v| r.duration(v, "dvm.tunnel_timeout"));
    let id = |r: &mut Report<'_>, v: Option<&Value<'_>>, name: &str| match v {
        None => Some(None),
        Some(v) => r.integer(v, name, 0, i32::MAX as u64).map(|n| Some(n as u32)),
    };
    let run_as_user = id(r, t.get("run_as_user"), "dvm.run_as_user");
    let run_as_group = id(r, t.get("run_as_group"), "dvm.run_as_group");
    let fs_group_value = t.get("fs_group");
    let fs_group = id(r, fs_group_value, "dvm.fs_group");
    let selinux_type = match t.get("selinux_type") {
        None => Some(None),
        Some(v) => r.string(v, "dvm.selinux_type").map(Some),
    };
    // Owners can be kept only by root; a non-root run keeps them only when asked not to.
    let non_root = matches!(run_as_user, Some(Some(u)) if u != 0);
    let preserve_ownership = match preserve_ownership_value {
        None => Some(!non_root),
        Some(v) => match r.boolean(v, "dvm.preserve_ownership") {
            Some(true) if non_root => {
                r.error(
                    &v.span(),
                    "`dvm.preserve_ownership = true` needs root transfer pods, but `dvm.run_as_user` is not 0",
                    Some("remove `run_as_user` (root pods keep owners), or accept that files arrive owned by `run_as_user`/`fs_group` with `preserve_ownership = false`".into()),
                );
                None
            }
            b => b,
        },
    };
    // Root pods set the volume root's group from the source; an fsGroup would make the
    // kubelet change it (and, recursively, every file's) back on the next run.
    if let (Some(v), false, Some(Some(_))) = (fs_group_value, non_root, fs_group) {
        r.error(
            &v.span(),
            "`dvm.fs_group` is for non-root transfer pods (`dvm.run_as_user` not 0)",
            Some("root transfer pods keep every file's group as it is on the source; remove `fs_group`".into()),
        );
    }
    let grow = opt_bool(r, t.get("grow"), "dvm.grow", d.grow);
    let sources = [("live", VolumeSource::Live), ("snapshot", VolumeSource::Snapshot)];
    let source = match t.get("source") {
        None => Some(d.source),
        Some(v) => r.choice(v, "dvm.source", &sources),
    };
    let pvc_source = match t.get("pvc_source") {
        None => Some(IndexMap::new()),
        Some(v) => r.string_map(v, "dvm.pvc_source").and_then(|m| {
            let mut out = IndexMap::new();
            let mut ok = true;
            for (k, (_, v)) in m {
                let found = sources.iter().find(|(n, _)| *n == v.get_ref().as_str());
                match found {
                    Some((_, s)) => {
                        out.insert(k, *s);
                    }
                    None => {
                        r.error(
                            &v.span(),
                            format!("`dvm.pvc_source`: {:?} is not a source", v.get_ref()),
                            Some("a PVC's source is \"live\" or \"snapshot\"".into()),
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(out)
        }),
    };
    let snapshot_class = match t.get("snapshot_class") {
        None => Some(None),
        Some(v) => r.string(v, "dvm.snapshot_class").map(Some),
    };
    t.finish(r);
    Some(DvmOptions {
        endpoint: endpoint?,
        subdomain: subdomain?,
        parallel: parallel? as usize,
        streams_per_pvc: streams? as usize,
        bandwidth_limit: bandwidth_limit?,
        retries: retries? as u32,
        verify: verify?,
        transfer_image: transfer_image?,
        preserve_ownership: preserve_ownership?,
        hard_links: hard_links?,
        xattrs: xattrs?,
        acls: acls?,
        exact_times: exact_times?,
        compress: compress?,
        tunnel_timeout: tunnel_timeout?,
        security: TransferSecurity {
            run_as_user: run_as_user?,
            run_as_group: run_as_group?,
            fs_group: fs_group?,
            selinux_type: selinux_type?,
        },
        grow: grow?,
        source: source?,
        pvc_source: pvc_source?,
        snapshot_class: snapshot_class?,
    })
}

pub(crate) fn default_dim() -> DimOptions {
    DimOptions::default()
}

fn read_dim(r: &mut Report<'_>, v: &Value<'_>) -> Option<DimOptions> {
    let mut t = Table::new(r, v, "[migration.dim]")?;
    let d = default_dim();
    let internal_hosts = match t.get("internal_hosts") {
        None => Some(Vec::new()),
        Some(v) => r.string_list(v, "dim.internal_hosts").map(|l| l.into_iter().map(|s| s.into_inner()).collect()),
    };
    let concurrency =
        t.get("concurrency").map_or(Some(d.concurrency as u64), |v| r.integer(v, "dim.concurrency", 1, 64));
    let blob_concurrency = t
        .get("blob_concurrency")
        .map_or(Some(d.blob_concurrency as u64), |v| r.integer(v, "dim.blob_concurrency", 1, 64));
    // `tag_history` is the earlier name of `max_history`; one of the two may be given.
    let max_history = match (t.get("max_history"), t.get("tag_history")) {
        (Some(_), Some(old)) => {
            r.error(
                &old.span(),
                "`tag_history` and `max_history` are the same setting; give it once",
                Some("keep `max_history` (`tag_history` is its earlier name)".into()),
            );
            None
        }
        (Some(v), None) => r.integer(v, "dim.max_history", 1, 1000),
        (None, Some(v)) => r.integer(v, "dim.tag_history", 1, 1000),
        (None, None) => Some(d.max_history as u64),
    };
    let signatures = match t.get("signatures") {
        None => Some(d.signatures),
        Some(v) => r.choice(v, "dim.signatures", &[("copy", SignatureMode::Copy), ("skip", SignatureMode::Skip)]),
    };
    let include_tags = t.get("include_tags").map_or(Some(Vec::new()), |v| tag_patterns(r, v, "dim.include_tags"));
    let exclude_tags = t.get("exclude_tags").map_or(Some(Vec::new()), |v| tag_patterns(r, v, "dim.exclude_tags"));
    let not_referenced = match t.get("not_referenced") {
        None => Some(d.not_referenced),
        Some(v) => r.choice(v, "dim.not_referenced", &[("skip", NotReferenced::Skip), ("copy", NotReferenced::Copy)]),
    };
    t.finish(r);
    Some(DimOptions {
        internal_hosts: internal_hosts?,
        concurrency: concurrency? as usize,
        blob_concurrency: blob_concurrency? as usize,
        max_history: max_history? as usize,
        signatures: signatures?,
        include_tags: include_tags?,
        exclude_tags: exclude_tags?,
        not_referenced: not_referenced?,
    })
}

/// A list of tag regexes, each compiled (anchored: the whole tag must match); a pattern
/// that does not compile is reported at its own position.
fn tag_patterns(r: &mut Report<'_>, v: &Value<'_>, name: &str) -> Option<Vec<TagPattern>> {
    let mut ok = true;
    let mut out = Vec::new();
    for p in r.string_list(v, name)? {
        match TagPattern::new(p.get_ref()) {
            Ok(t) => out.push(t),
            Err(e) => {
                let reason = e.to_string();
                let reason = reason.lines().last().unwrap_or_default().trim().trim_start_matches("error: ");
                r.error(
                    &p.span(),
                    format!("`{name}`: {:?} is not a valid regular expression: {reason}", p.get_ref()),
                    Some(
                        "a pattern must match the whole tag, e.g. \"v[0-9]+\" or \"release-.*\" (regex crate syntax)"
                            .into(),
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

pub(crate) fn default_velero() -> VeleroOptions {
    VeleroOptions {
        namespace: "velero".into(),
        storage_location: "default".into(),
        existing_resource_policy: ExistingResourcePolicy::None,
        timeout: Duration::from_secs(30 * 60),
    }
}

fn read_velero(r: &mut Report<'_>, v: &Value<'_>) -> Option<VeleroOptions> {
    let mut t = Table::new(r, v, "[migration.velero]")?;
    let d = default_velero();
    let namespace = t.get("namespace").map_or(Some(d.namespace.clone()), |v| {
        let s = r.string(v, "velero.namespace")?;
        names::check_label(r, v, &s, "velero.namespace")
    });
    let storage_location =
        t.get("storage_location").map_or(Some(d.storage_location.clone()), |v| r.string(v, "velero.storage_location"));
    let policy = t.get("existing_resource_policy").map_or(Some(d.existing_resource_policy), |v| {
        r.choice(
            v,
            "velero.existing_resource_policy",
            &[("none", ExistingResourcePolicy::None), ("update", ExistingResourcePolicy::Update)],
        )
    });
    let timeout = t.get("timeout").map_or(Some(d.timeout), |v| r.duration(v, "velero.timeout"));
    t.finish(r);
    Some(VeleroOptions {
        namespace: namespace?,
        storage_location: storage_location?,
        existing_resource_policy: policy?,
        timeout: timeout?,
    })
}

fn read_transforms(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<Vec<PluginRef>> {
    let DeValue::Array(items) = v.get_ref() else {
        r.error(&v.span(), "`transform` must be written as `[[migration.transform]]` tables", None);
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        let Some(mut t) = Table::new(r, item, "[[migration.transform]]") else {
            ok = false;
            continue;
        };
        match read_plugin(r, &mut t, base, Duration::from_secs(1)) {
            Some(p) => out.push(p),
            None => ok = false,
        }
        t.finish(r);
    }
    ok.then_some(out)
}

fn read_hooks(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<Vec<HookRef>> {
    let DeValue::Array(items) = v.get_ref() else {
        r.error(&v.span(), "`hook` must be written as `[[migration.hook]]` tables", None);
        return None;
    };
    let phases = [
        ("pre-stage", HookPhase::PreStage),
        ("post-stage", HookPhase::PostStage),
        ("pre-backup", HookPhase::PreBackup),
        ("post-backup", HookPhase::PostBackup),
        ("pre-restore", HookPhase::PreRestore),
        ("post-restore", HookPhase::PostRestore),
        ("pre-cutover", HookPhase::PreCutover),
        ("post-cutover", HookPhase::PostCutover),
    ];
    let mut out = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        let Some(mut t) = Table::new(r, item, "[[migration.hook]]") else {
            ok = false;
            continue;
        };
        let phase = t.require(r, "phase").and_then(|v| r.choice(v, "hook.phase", &phases));
        let (job, exec) = (t.get("job"), t.get("exec"));
        let kind = match (job, exec) {
            (Some(j), None) => read_job_hook(r, j).map(HookKind::Job),
            (None, Some(e)) => read_exec_hook(r, e).map(HookKind::Exec),
            (Some(_), Some(e)) => {
                r.error(&e.span(), "a hook is a `plugin`, a `job` or an `exec`, not several", None);
                None
            }
            (None, None) => {
                read_plugin(r, &mut t, base, Duration::from_secs(300)).map(|p| HookKind::Plugin(Box::new(p)))
            }
        };
        if matches!(kind, Some(HookKind::Job(_) | HookKind::Exec(_))) && t.get("plugin").is_some() {
            r.error(&t.span(), "a hook is a `plugin`, a `job` or an `exec`, not several", None);
            ok = false;
        }
        t.finish(r);
        match (phase, kind) {
            (Some(phase), Some(kind)) => out.push(HookRef { phase, kind }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

const HOOK_ON_ERROR: [(&str, HookOnError); 2] = [("fail", HookOnError::Fail), ("ignore", HookOnError::Ignore)];
const SIDES: [(&str, Side); 2] = [("source", Side::Source), ("destination", Side::Destination)];

/// The keys a job and an exec hook share: where it runs, its command and what a failure does.
fn read_hook_common(
    r: &mut Report<'_>,
    t: &mut Table<'_, '_>,
    what: &str,
) -> (Option<Side>, Option<String>, Option<Vec<String>>, Option<HookOnError>) {
    let cluster = t.require(r, "cluster").and_then(|v| r.choice(v, &format!("{what}.cluster"), &SIDES));
    let namespace = t.require(r, "namespace").and_then(|v| {
        let s = r.string(v, "namespace")?;
        match names::check_label_str(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                r.error(&v.span(), format!("{s:?} is not a valid namespace name: {e}"), None);
                None
            }
        }
    });
    let command = t.require(r, "command").and_then(|v| {
        let list = r.string_list(v, "command")?;
        if list.is_empty() {
            r.error(
                &v.span(),
                "`command` must name the program to run",
                Some("e.g. [\"sh\", \"-c\", \"sync\"]".into()),
            );
            return None;
        }
        Some(list.into_iter().map(|s| s.into_inner()).collect())
    });
    let on_error = match t.get("on_error") {
        None => Some(HookOnError::Fail),
        Some(v) => r.choice(v, &format!("{what}.on_error"), &HOOK_ON_ERROR),
    };
    (cluster, namespace, command, on_error)
}

/// `job = { cluster, namespace, image, command, service_account?, deadline?, on_error? }`
fn read_job_hook(r: &mut Report<'_>, v: &Value<'_>) -> Option<JobHook> {
    let mut t = Table::new(r, v, "hook `job`")?;
    let (cluster, namespace, command, on_error) = read_hook_common(r, &mut t, "job");
    let image = t.require(r, "image").and_then(|v| {
        let s = r.string(v, "image")?;
        names::check_image(r, v, s, "job.image")
    });
    let service_account = match t.get("service_account") {
        None => Some(None),
        Some(v) => r.string(v, "service_account").map(Some),
    };
    let deadline = match t.get("deadline") {
        None => Some(Duration::from_secs(600)),
        Some(v) => r.duration(v, "job.deadline"),
    };
    t.finish(r);
    Some(JobHook {
        cluster: cluster?,
        namespace: namespace?,
        image: image?,
        command: command?,
        service_account: service_account?,
        deadline: deadline?,
        on_error: on_error?,
    })
}

/// `exec = { cluster, namespace, selector, command, container?, timeout?, on_error? }`
fn read_exec_hook(r: &mut Report<'_>, v: &Value<'_>) -> Option<ExecHook> {
    let mut t = Table::new(r, v, "hook `exec`")?;
    let (cluster, namespace, command, on_error) = read_hook_common(r, &mut t, "exec");
    let selector = t.require(r, "selector").and_then(|v| {
        let s = r.string(v, "selector")?;
        match names::check_selector(&s) {
            Ok(()) if !s.trim().is_empty() => Some(s),
            Ok(()) => {
                r.error(&v.span(), "`selector` must select pods (an empty selector matches every pod)", None);
                None
            }
            Err(e) => {
                r.error(&v.span(), format!("`selector` {s:?} is not a valid label selector: {e}"), None);
                None
            }
        }
    });
    let container = match t.get("container") {
        None => Some(None),
        Some(v) => r.string(v, "container").map(Some),
    };
    let timeout = match t.get("timeout") {
        None => Some(Duration::from_secs(60)),
        Some(v) => r.duration(v, "exec.timeout"),
    };
    t.finish(r);
    Some(ExecHook {
        cluster: cluster?,
        namespace: namespace?,
        selector: selector?,
        container: container?,
        command: command?,
        timeout: timeout?,
        on_error: on_error?,
    })
}

/// The keys a transform and a hook share: the component, its config, limits and grants.
fn read_plugin(r: &mut Report<'_>, t: &mut Table<'_, '_>, base: &Path, default_timeout: Duration) -> Option<PluginRef> {
    let mut at = None;
    let source = t.require(r, "plugin").and_then(|v| {
        let p = r.string(v, "plugin")?;
        let location = r.location(&v.span());
        at = Some(format!("{}:{}", location.line, location.column));
        if p.starts_with("oci://") {
            return read_oci_plugin(r, v, &p);
        }
        if p.contains("://") {
            r.error(
                &v.span(),
                format!("plugin {p:?}: only local paths and oci:// references are supported"),
                Some("publish the component with `mtcd plugin push FILE.wasm oci://REGISTRY/REPO:TAG`".into()),
            );
            return None;
        }
        let path = base.join(&p);
        if let Err(problem) = super::oci::check_component_file(&path) {
            let hint = if problem.contains("does not exist") {
                format!(
                    "build it first (plugins are built for wasm32-wasip2); paths are relative to {}",
                    base.display()
                )
            } else {
                "point `plugin` at the component built for wasm32-wasip2 (target/wasm32-wasip2/release/NAME.wasm)"
                    .to_string()
            };
            r.error(&v.span(), problem, Some(hint));
            return None;
        }
        Some(PluginSource::File(path))
    });
    let config = match t.get("config") {
        None => Some(serde_json::Value::Object(Default::default())),
        Some(v) => match to_json(v.get_ref()) {
            Ok(j) => Some(j),
            Err(e) => {
                r.error(&v.span(), format!("`config`: {e}"), None);
                None
            }
        },
    };
    let timeout = t.get("timeout").map_or(Some(default_timeout), |v| r.duration(v, "timeout"));
    let memory = t.get("memory").map_or(Some(64 * 1024 * 1024), |v| r.size(v, "memory"));
    let fuel = match t.get("fuel") {
        None => Some(None),
        Some(v) => r.integer(v, "fuel", 1, u64::MAX).map(Some),
    };
    let on_error = t.get("on_error").map_or(Some(OnError::Fail), |v| {
        r.choice(
            v,
            "on_error",
            &[("fail", OnError::Fail), ("skip-object", OnError::SkipObject), ("keep-original", OnError::KeepOriginal)],
        )
    });
    let grants = match t.get("grants") {
        None => Some(PluginGrants::default()),
        Some(v) => read_grants(r, v, base),
    };
    Some(PluginRef {
        source: source?,
        at,
        config: config?,
        limits: PluginLimits { timeout: timeout?, memory: memory?, fuel: fuel? },
        grants: grants?,
        on_error: on_error?,
    })
}

/// `oci://REGISTRY/REPO:TAG@sha256:…`. The digest is the trust anchor: a reference without
/// one is refused with the command that prints the pinned form. Registry settings are
/// attached once the whole file is read ([`attach_plugin_registries`]).
fn read_oci_plugin(r: &mut Report<'_>, v: &Value<'_>, text: &str) -> Option<PluginSource> {
    let reference = match super::oci::OciReference::parse(text) {
        Ok(reference) => reference,
        Err(e) => {
            r.error(&v.span(), format!("plugin {e}"), None);
            return None;
        }
    };
    if reference.digest.is_none() {
        r.error(
            &v.span(),
            format!("plugin {text:?} is not pinned: an oci:// plugin needs the digest of the manifest you reviewed"),
            Some(format!("run `mtcd plugin resolve {text}` and paste the oci://…@sha256:… reference it prints")),
        );
        return None;
    }
    let registry = Registry {
        address: reference.registry.clone(),
        internal_address: None,
        auth: RegistryAuth::Anonymous,
        tls: RegistryTls::Verify,
    };
    Some(PluginSource::Oci(OciPlugin { reference, registry }))
}

/// `[plugins]`: settings for plugins of every migration. Today only `registry`, a list of
/// registries plugins are pulled from, each `{ address, auth, tls }` as a cluster registry.
fn read_plugin_settings(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<Vec<Registry>> {
    let mut t = Table::new(r, v, "[plugins]")?;
    let registries = match t.get("registry") {
        None => Some(Vec::new()),
        Some(v) => {
            let DeValue::Array(items) = v.get_ref() else {
                r.error(&v.span(), "`registry` must be written as `[[plugins.registry]]` tables", None);
                return None;
            };
            let mut out = Vec::new();
            let mut ok = true;
            for item in items.iter() {
                if let DeValue::String(_) = item.get_ref() {
                    r.error(&item.span(), "a `[[plugins.registry]]` entry is a table with `address`", None);
                    ok = false;
                    continue;
                }
                match read_registry(r, item, "[plugins.registry]", base) {
                    Some(reg) if reg.auth == RegistryAuth::KubeconfigToken => {
                        r.error(
                            &item.span(),
                            "plugin registries cannot use `auth = \"kubeconfig-token\"` (plugins are pulled before any cluster is contacted)",
                            Some("use { docker_config = \"PATH\" } or { username_env = \"VAR\", password_env = \"VAR\" }".into()),
                        );
                        ok = false;
                    }
                    Some(reg) => out.push(reg),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    };
    t.finish(r);
    registries
}

/// Gives every oci:// plugin the settings of its registry: the `[[plugins.registry]]`
/// entry with that address, else a cluster registry with that address (unless it uses the
/// kubeconfig token, which only a cluster command has), else anonymous HTTPS. Also turns
/// each plugin's `LINE:COLUMN` into `FILE:LINE:COLUMN`.
fn attach_plugin_registries(
    migrations: &mut [Spanned<Migration>],
    plugin_registries: &[Registry],
    clusters: [&ClusterSpec; 2],
    path: &Path,
) {
    let find = |address: &str| {
        plugin_registries.iter().find(|reg| reg.address == address).cloned().or_else(|| {
            clusters
                .iter()
                .filter_map(|c| c.registry.as_ref())
                .find(|reg| reg.address == address && reg.auth != RegistryAuth::KubeconfigToken)
                .map(|reg| Registry { internal_address: None, ..reg.clone() })
        })
    };
    for m in migrations.iter_mut() {
        let m = m.get_mut();
        let plugins = m.transforms.iter_mut().chain(m.hooks.iter_mut().filter_map(|h| match &mut h.kind {
            HookKind::Plugin(p) => Some(&mut **p),
            _ => None,
        }));
        for p in plugins {
            if let Some(at) = &p.at {
                p.at = Some(format!("{}:{at}", path.display()));
            }
            if let PluginSource::Oci(o) = &mut p.source
                && let Some(reg) = find(&o.reference.registry)
            {
                o.registry = reg;
            }
        }
    }
}

fn read_grants(r: &mut Report<'_>, v: &Value<'_>, base: &Path) -> Option<PluginGrants> {
    let mut t = Table::new(r, v, "plugin `grants`")?;
    let env = match t.get("env") {
        None => Some(Vec::new()),
        Some(v) => r.string_list(v, "grants.env").map(|l| l.into_iter().map(|s| s.into_inner()).collect()),
    };
    let clock = opt_bool(r, t.get("clock"), "grants.clock", false);
    let dirs = match t.get("dirs") {
        None => Some(Vec::new()),
        Some(v) => {
            let DeValue::Array(items) = v.get_ref() else {
                r.error(
                    &v.span(),
                    "`grants.dirs` must be an array of { host = \"PATH\", guest = \"/PATH\", writable = false }",
                    None,
                );
                return None;
            };
            let mut out = Vec::new();
            let mut ok = true;
            for item in items.iter() {
                let Some(mut d) = Table::new(r, item, "a `grants.dirs` entry") else {
                    ok = false;
                    continue;
                };
                let host = d.require(r, "host").and_then(|v| {
                    let p = r.string(v, "host")?;
                    let path = base.join(&p);
                    if !path.is_dir() {
                        r.error(&v.span(), format!("granted directory {} does not exist", path.display()), None);
                        return None;
                    }
                    Some(path)
                });
                let guest = d.require(r, "guest").and_then(|v| r.string(v, "guest"));
                let writable = opt_bool(r, d.get("writable"), "writable", false);
                d.finish(r);
                match (host, guest, writable) {
                    (Some(host), Some(guest), Some(writable)) => out.push(DirGrant { host, guest, writable }),
                    _ => ok = false,
                }
            }
            ok.then_some(out)
        }
    };
    t.finish(r);
    Some(PluginGrants { dirs: dirs?, env: env?, clock: clock? })
}

fn to_json(v: &DeValue<'_>) -> Result<serde_json::Value, String> {
    Ok(match v {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).map_err(|e| e.to_string())?;
            serde_json::Value::from(n)
        }
        DeValue::Float(f) => {
            let n: f64 = f.as_str().replace('_', "").parse().map_err(|_| format!("bad float {}", f.as_str()))?;
            serde_json::Number::from_f64(n)
                .map(serde_json::Value::Number)
                .ok_or("NaN and infinity cannot be passed to plugins")?
        }
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect::<Result<_, _>>()?)
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| Ok((k.get_ref().to_string(), to_json(x.get_ref())?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// `images = "direct"` needs both registries; say so at the migration, not later mid-copy.
fn check_images_have_registries(
    r: &mut Report<'_>,
    source: &ClusterSpec,
    destination: &ClusterSpec,
    migrations: &[Spanned<Migration>],
) {
    for m in migrations {
        if m.get_ref().images == ImageMode::Direct {
            for (side, c) in [("source", source), ("destination", destination)] {
                if c.registry.is_none() {
                    r.error(
                        &m.span(),
                        format!("migration {:?} copies images (`images = \"direct\"`) but [clusters.{side}] has no `registry`", m.get_ref().name),
                        Some(format!("add `registry = \"HOST:PORT\"` to [clusters.{side}] or set `images = \"skip\"`")),
                    );
                }
            }
        }
    }
}
