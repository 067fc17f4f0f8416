//! Every validation error, checked for its message and its line:column.

use std::path::Path;

use super::*;

const HEAD: &str = r#"version = 1
[clusters.source]
context = "lab-src"
registry = "127.0.0.1:5001"
[clusters.destination]
context = "lab-dst"
registry = "127.0.0.1:5002"
"#;

/// The file's problems, or a panic if it parsed.
fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new("/nonexistent/desired.toml")) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(SpecError::Invalid(p)) => p.problems,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Asserts one problem is at `line:column` and its message contains `needle`.
fn assert_problem(text: &str, line: usize, column: usize, needle: &str) {
    let all = problems(text);
    assert!(
        all.iter().any(|p| p.location == Location { line, column } && p.message.contains(needle)),
        "no problem at {line}:{column} containing {needle:?}; got:\n{all:#?}"
    );
}

fn migration(body: &str) -> String {
    format!("{HEAD}[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\n{body}")
}

#[test]
fn a_valid_file_parses_into_the_model_with_defaults() {
    let text = migration(
        "namespace_map = { shop = \"shop-prod\" }\nimages = \"direct\"\nstorage_class_map = { standard = \"fast\" }\n[migration.dvm]\nendpoint = \"loadbalancer\"\nparallel = 2\nbandwidth_limit = \"50MiB\"\n[sync]\ninterval = \"90s\"\n",
    );
    let spec = parse(&text, Path::new("/x/desired.toml")).unwrap();
    assert_eq!(spec.source.context, "lab-src");
    assert_eq!(spec.source.context_at, Location { line: 3, column: 11 });
    assert_eq!(spec.source.registry.as_ref().unwrap().address, "127.0.0.1:5001");
    let m = &spec.migrations[0];
    assert_eq!(m.namespace_map.get("shop").map(String::as_str), Some("shop-prod"));
    assert_eq!(m.images, ImageMode::Direct);
    assert_eq!(m.volumes, VolumeMode::Direct);
    assert_eq!(m.resources, ResourceMode::Direct);
    assert_eq!(m.dvm.endpoint, EndpointKind::LoadBalancer);
    assert_eq!(m.dvm.parallel, 2);
    assert_eq!(m.dvm.bandwidth_limit, Some(50 * 1024 * 1024));
    assert_eq!(m.dvm.transfer_image, DEFAULT_TRANSFER_IMAGE);
    assert!(!m.start_workloads);
    assert_eq!(spec.sync.interval, std::time::Duration::from_secs(90));
}

#[test]
fn identity_mapping_is_filled_in_for_unmapped_namespaces() {
    let text =
        format!("{HEAD}[[migration]]\nname = \"m\"\nnamespaces = [\"a\", \"b\"]\nnamespace_map = {{ a = \"a2\" }}\n");
    let spec = parse(&text, Path::new("d.toml")).unwrap();
    let map: Vec<_> = spec.migrations[0].namespace_map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(map, [("a", "a2"), ("b", "b")]);
}

#[test]
fn malformed_toml_is_reported_at_its_position() {
    assert_problem(
        &format!("{HEAD}[[migration]]\nname = \"shop\nnamespaces = []\n"),
        9,
        13,
        "invalid TOML: invalid basic string",
    );
}

#[test]
fn unknown_keys_suggest_the_nearest_known_key() {
    let text = migration("namespce_map = { shop = \"x\" }\n");
    assert_problem(&text, 11, 1, "unknown key `namespce_map` in [[migration]] \"shop\"");
    let p = problems(&text);
    assert_eq!(p[0].hint.as_deref(), Some("did you mean `namespace_map`?"));
}

#[test]
fn unknown_keys_in_nested_tables_are_found_too() {
    assert_problem(&migration("[migration.dvm]\nparalel = 4\n"), 12, 1, "unknown key `paralel` in [migration.dvm]");
    assert_problem(
        &format!("{HEAD}colour = 1\n[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\n"),
        8,
        1,
        "unknown key `colour`",
    );
}

#[test]
fn wrong_types_name_the_key_and_the_expected_type() {
    assert_problem(
        &migration("[migration.dvm]\nparallel = \"4\"\n"),
        12,
        12,
        "`dvm.parallel` must be an integer, found string",
    );
    assert_problem(&migration("prune = \"yes\"\n"), 11, 9, "`prune` must be true or false");
    assert_problem(
        &format!("{HEAD}[[migration]]\nname = \"m\"\nnamespaces = \"a\"\n"),
        10,
        14,
        "`namespaces` must be an array of strings",
    );
}

#[test]
fn bad_choices_list_the_allowed_words() {
    assert_problem(
        &migration("resources = \"drect\"\n"),
        11,
        13,
        "`resources` must be one of \"direct\", \"velero\", found \"drect\"",
    );
    assert_problem(
        &migration("[migration.dvm]\nendpoint = \"nodeport\"\n"),
        12,
        12,
        "\"route\", \"ingress\", \"loadbalancer\"",
    );
}

#[test]
fn invalid_namespace_names_are_rejected() {
    assert_problem(
        &format!("{HEAD}[[migration]]\nname = \"m\"\nnamespaces = [\"ok\", \"Not_OK\"]\n"),
        10,
        21,
        "\"Not_OK\" is not a valid namespace name",
    );
    assert_problem(
        &migration("namespace_map = { shop = \"-prod\" }\n"),
        11,
        26,
        "\"-prod\" is not a valid namespace name",
    );
    assert_problem(
        &format!("{HEAD}[[migration]]\nname = \"Shop\"\nnamespaces = [\"a\"]\n"),
        9,
        8,
        "\"Shop\" is not a valid migration name",
    );
}

#[test]
fn two_namespaces_mapped_to_one_destination_are_rejected() {
    let text = format!(
        "{HEAD}[[migration]]\nname = \"m\"\nnamespaces = [\"a\", \"b\"]\nnamespace_map = {{ a = \"prod\", b = \"prod\" }}\n"
    );
    assert_problem(&text, 11, 35, "namespaces \"a\" and \"b\" are both mapped to \"prod\"");
    // An unmapped namespace collides with a mapping onto its own name, too.
    let text =
        format!("{HEAD}[[migration]]\nname = \"m\"\nnamespaces = [\"a\", \"b\"]\nnamespace_map = {{ a = \"b\" }}\n");
    assert_problem(&text, 10, 20, "namespaces \"a\" and \"b\" are both mapped to \"b\"");
}

#[test]
fn a_mapping_for_a_namespace_that_is_not_migrated_is_rejected() {
    let text = migration("namespace_map = { shop = \"shop-prod\", cart = \"cart-prod\" }\n");
    assert_problem(&text, 11, 39, "`namespace_map` maps \"cart\", which is not in `namespaces`");
}

#[test]
fn unparsable_durations_and_sizes_are_rejected() {
    assert_problem(
        &migration("[migration.dvm]\ntunnel_timeout = \"soon\"\n"),
        12,
        18,
        "cannot parse duration \"soon\"",
    );
    assert_problem(&migration("[migration.dvm]\nbandwidth_limit = \"fast\"\n"), 12, 19, "cannot parse size \"fast\"");
    assert_problem(&format!("{}[sync]\ninterval = \"0s\"\n", migration("")), 12, 12, "must be longer than zero");
}

#[test]
fn missing_plugin_files_are_named_with_the_resolved_path() {
    let text = migration("[[migration.transform]]\nplugin = \"plugins/add-label.wasm\"\n");
    assert_problem(&text, 12, 10, "plugin file /nonexistent/plugins/add-label.wasm does not exist");
    let text = migration("[[migration.hook]]\nphase = \"pre-cutover\"\nplugin = \"gate.wasm\"\n");
    assert_problem(&text, 13, 10, "plugin file /nonexistent/gate.wasm does not exist");
}

#[test]
fn plugin_files_that_exist_are_resolved_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let text = migration(
        "[[migration.transform]]\nplugin = \"p.wasm\"\nconfig = { key = \"a\", n = 3, list = [true] }\ntimeout = \"250ms\"\nmemory = \"16MiB\"\non_error = \"skip-object\"\n",
    );
    let spec = parse(&text, &dir.path().join("desired.toml")).unwrap();
    let t = &spec.migrations[0].transforms[0];
    assert_eq!(t.source, PluginSource::File(dir.path().join("p.wasm")));
    assert_eq!(t.at.as_deref(), Some(format!("{}:12:10", dir.path().join("desired.toml").display()).as_str()));
    assert_eq!(t.config, serde_json::json!({"key": "a", "n": 3, "list": [true]}));
    assert_eq!(t.limits.timeout, std::time::Duration::from_millis(250));
    assert_eq!(t.limits.memory, 16 * 1024 * 1024);
    assert_eq!(t.on_error, OnError::SkipObject);
    assert!(t.grants.dirs.is_empty() && t.grants.env.is_empty() && !t.grants.clock, "nothing is granted by default");
}

/// Issue 16, point 3: a plugin path is checked before it is read: what it is, its size,
/// its header; the problem is at the `plugin` value and never quotes the file.
#[test]
fn plugin_paths_that_are_not_components_are_named_without_echoing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dir.wasm")).unwrap();
    std::fs::write(dir.path().join("secret"), "root:$6$hash:19000:0:99999:7:::\n").unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let at = |file: &str| {
        let text = migration(&format!("[[migration.transform]]\nplugin = {file:?}\n"));
        match parse(&text, &dir.path().join("desired.toml")) {
            Err(SpecError::Invalid(p)) => {
                assert_eq!(p.problems.len(), 1, "{p}");
                assert_eq!(p.problems[0].location, Location { line: 12, column: 10 }, "{p}");
                p.to_string()
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(at("dir.wasm").contains("is a directory, not a .wasm file"));
    let secret = at("secret");
    assert!(secret.contains("not a WebAssembly component"), "{secret}");
    assert!(!secret.contains("root") && !secret.contains("0x72"), "file bytes echoed: {secret}");
    assert!(at("core.wasm").contains("core WebAssembly module"));
    assert!(at("/dev/null").contains("character device"));
}

const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Issue 16, point 6: an oci:// plugin must carry the manifest digest; a tag alone is an
/// error at its line with the command that prints the pinned reference.
#[test]
fn oci_plugins_need_a_digest_and_pick_up_their_registry_settings() {
    let text = migration("[[migration.transform]]\nplugin = \"oci://127.0.0.1:5001/team/add-label:v1\"\n");
    assert_problem(&text, 12, 10, "is not pinned");
    let p = problems(&text);
    assert!(
        p[0].hint.as_deref().unwrap().contains("mtcd plugin resolve oci://127.0.0.1:5001/team/add-label:v1"),
        "{p:?}"
    );
    assert_problem(
        &migration("[[migration.transform]]\nplugin = \"oci://127.0.0.1:5001/Team@sha256:12\"\n"),
        12,
        10,
        "must be lowercase",
    );
    assert_problem(&migration("[[migration.transform]]\nplugin = \"https://x/p.wasm\"\n"), 12, 10, "oci://");

    // The cluster registry with the same address lends its TLS setting; a [[plugins.registry]]
    // entry wins over it; any other registry is anonymous HTTPS.
    let head = HEAD
        .replace("registry = \"127.0.0.1:5001\"", "registry = { address = \"127.0.0.1:5001\", tls = \"insecure\" }");
    let text = format!(
        "{head}[[plugins.registry]]\naddress = \"plugins.example:443\"\nauth = {{ username_env = \"U\", password_env = \"P\" }}\n\
         [[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\n\
         [[migration.transform]]\nplugin = \"oci://127.0.0.1:5001/team/a:v1@{DIGEST}\"\n\
         [[migration.transform]]\nplugin = \"oci://plugins.example:443/team/b@{DIGEST}\"\n\
         [[migration.hook]]\nphase = \"pre-cutover\"\nplugin = \"oci://ghcr.example/c@{DIGEST}\"\n"
    );
    let spec = parse(&text, Path::new("/nonexistent/desired.toml")).unwrap();
    let m = &spec.migrations[0];
    let oci = |p: &PluginRef| match &p.source {
        PluginSource::Oci(o) => o.clone(),
        other => panic!("{other:?}"),
    };
    let a = oci(&m.transforms[0]);
    assert_eq!(a.reference.to_string(), format!("oci://127.0.0.1:5001/team/a:v1@{DIGEST}"));
    assert_eq!(a.registry.tls, RegistryTls::Insecure);
    let b = oci(&m.transforms[1]);
    assert!(matches!(b.registry.auth, RegistryAuth::BasicEnv { .. }));
    let c = oci(m.hooks[0].plugin().unwrap());
    assert_eq!((c.registry.auth, c.registry.tls), (RegistryAuth::Anonymous, RegistryTls::Verify));
    assert_eq!(m.hooks[0].plugin().unwrap().limits.timeout, std::time::Duration::from_secs(300));
}

#[test]
fn several_errors_are_reported_at_once_in_file_order() {
    let text = migration("resources = \"drect\"\nvolumes = \"maybe\"\n[migration.dvm]\nparallel = 0\n");
    let p = problems(&text);
    let lines: Vec<usize> = p.iter().map(|p| p.location.line).collect();
    assert_eq!(lines, [11, 12, 14], "{p:#?}");
}

#[test]
fn missing_version_clusters_and_migrations_are_reported() {
    let p = problems("[sync]\ninterval = \"1m\"\n");
    let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("does not say its format version")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("missing the required key `clusters`")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("no `[[migration]]`")), "{msgs:?}");
    assert_problem(&HEAD.replace("version = 1", "version = 2"), 1, 11, "unsupported version 2");
}

#[test]
fn image_copy_needs_both_registries() {
    let head = HEAD.replace("registry = \"127.0.0.1:5002\"\n", "");
    let text = format!("{head}[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\nimages = \"direct\"\n");
    let p = problems(&text);
    assert!(p[0].message.contains("[clusters.destination] has no `registry`"), "{p:#?}");
}

#[test]
fn registry_addresses_have_no_scheme_and_auth_is_by_reference() {
    let text = HEAD.replace("registry = \"127.0.0.1:5001\"", "registry = \"https://reg.example.com\"")
        + "[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\n";
    assert_problem(&text, 4, 12, "must be a registry host");
    let text = HEAD.replace(
        "registry = \"127.0.0.1:5001\"\n",
        "[clusters.source.registry]\naddress = \"reg:5000\"\nauth = { password = \"hunter2\" }\n",
    ) + "[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\n";
    let p = problems(&text);
    assert!(p.iter().any(|p| p.message.contains("unknown key `password`")), "{p:#?}");
    let text = HEAD.replace(
        "registry = \"127.0.0.1:5001\"\n",
        "[clusters.source.registry]\naddress = \"reg:5000\"\nauth = { username_env = \"U\", password_env = \"P\" }\ntls = \"insecure\"\n",
    ) + "[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\n";
    let spec = parse(&text, Path::new("d.toml")).unwrap();
    let reg = spec.source.registry.unwrap();
    assert_eq!(reg.auth, RegistryAuth::BasicEnv { username_env: "U".into(), password_env: "P".into() });
    assert_eq!(reg.tls, RegistryTls::Insecure);
}

#[test]
fn duplicate_migration_names_and_shared_destinations_are_rejected() {
    let text = format!(
        "{HEAD}[[migration]]\nname = \"m\"\nnamespaces = [\"a\"]\n[[migration]]\nname = \"m\"\nnamespaces = [\"b\"]\nnamespace_map = {{ b = \"a\" }}\n"
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.message.contains("two migrations are named \"m\"")), "{p:#?}");
}

#[test]
fn contexts_missing_from_the_kubeconfig_are_named_with_those_that_exist() {
    let spec = parse(&migration(""), Path::new("d.toml")).unwrap();
    let err = contexts::check(&spec, Path::new("/k/config"), &["lab-src".into(), "lab-dest".into()]).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let p = &err.problems[0];
    assert_eq!(p.location, Location { line: 6, column: 11 });
    assert_eq!(p.message, "destination context \"lab-dst\" is not in the kubeconfig");
    assert_eq!(p.hint.as_deref(), Some("did you mean \"lab-dest\"? contexts in /k/config: lab-src, lab-dest"));
}

#[test]
fn access_modes_and_kinds_are_checked() {
    assert_problem(
        &migration("access_mode_map = { ReadWriteOnce = \"RWX\" }\n"),
        11,
        37,
        "\"RWX\" is not an access mode",
    );
    assert_problem(&migration("include_kinds = [\"deployment\"]\n"), 11, 18, "\"deployment\" is not a kind");
    assert_problem(&migration("label_selector = \"app=a=b\"\n"), 11, 18, "is not a valid label selector");
}

#[test]
fn dvm_defaults_keep_everything_and_non_root_settings_are_checked() {
    let m = &parse(&migration(""), Path::new("d.toml")).unwrap().migrations[0];
    assert!(m.dvm.preserve_ownership && m.dvm.hard_links && m.dvm.xattrs && m.dvm.acls && m.dvm.exact_times);
    assert!(m.dvm.security.root());
    let m = &parse(
        &migration("[migration.dvm]\nrun_as_user = 1000\nfs_group = 2000\nselinux_type = \"spc_t\"\n"),
        Path::new("d.toml"),
    )
    .unwrap()
    .migrations[0];
    assert!(!m.dvm.security.root() && !m.dvm.preserve_ownership, "non-root does not keep owners");
    assert_eq!(m.dvm.security.fs_group, Some(2000));
    assert_eq!(m.dvm.security.selinux_type.as_deref(), Some("spc_t"));
    assert_problem(
        &migration("[migration.dvm]\nrun_as_user = 1000\npreserve_ownership = true\n"),
        13,
        22,
        "`dvm.preserve_ownership = true` needs root transfer pods",
    );
    assert_problem(
        &migration("[migration.dvm]\nfs_group = 5\n"),
        12,
        12,
        "`dvm.fs_group` is for non-root transfer pods",
    );
    assert_problem(
        &migration("[migration.dvm]\npvc_source = { db = \"frozen\" }\n"),
        12,
        21,
        "`dvm.pvc_source`: \"frozen\" is not a source",
    );
}

#[test]
fn the_cluster_s_own_namespaces_are_refused_unless_allowed() {
    let text = format!("{HEAD}[[migration]]\nname = \"sys\"\nnamespaces = [\"kube-system\", \"shop\"]\n");
    assert_problem(&text, 10, 15, "\"kube-system\" is one of the cluster's own namespaces");
    let text = format!(
        "{HEAD}[[migration]]\nname = \"sys\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"openshift-config\" }}\n"
    );
    assert_problem(&text, 11, 26, "cannot be a destination namespace");
    let text = format!(
        "{HEAD}[[migration]]\nname = \"sys\"\nnamespaces = [\"kube-system\"]\nallow_system_namespaces = true\n"
    );
    assert!(parse(&text, Path::new("/nonexistent/d.toml")).is_ok());
    // `default` is where applications live: allowed.
    let text = format!("{HEAD}[[migration]]\nname = \"d\"\nnamespaces = [\"default\"]\n");
    let spec = parse(&text, Path::new("/nonexistent/d.toml")).unwrap();
    assert_eq!(spec.migrations[0].replace_kinds, ["Job"]);
    assert!(!spec.migrations[0].adopt);
}

#[test]
fn dim_image_selection_and_signature_settings() {
    let text = migration(
        "images = \"direct\"\n[migration.dim]\nsignatures = \"skip\"\ninclude_tags = [\"v[0-9]+\", \"latest\"]\nexclude_tags = [\"v0\"]\nmax_history = 3\nnot_referenced = \"copy\"\n",
    );
    let spec = parse(&text, Path::new("/x/desired.toml")).unwrap();
    let d = &spec.migrations[0].dim;
    assert_eq!(d.signatures, SignatureMode::Skip);
    assert_eq!(d.max_history, 3);
    assert_eq!(d.not_referenced, NotReferenced::Copy);
    assert_eq!(d.include_tags.iter().map(TagPattern::as_str).collect::<Vec<_>>(), ["v[0-9]+", "latest"]);
    assert!(d.tag_selected("v12") && d.tag_selected("latest"));
    assert!(!d.tag_selected("v0"), "exclude wins");
    assert!(!d.tag_selected("v1-rc"), "the whole tag must match");
    // Defaults: signatures copied, every tag, current item only, unreferenced skipped.
    let spec = parse(&migration("images = \"direct\"\n"), Path::new("/x/desired.toml")).unwrap();
    assert_eq!(spec.migrations[0].dim, DimOptions::default());
    assert_eq!(spec.migrations[0].dim.signatures, SignatureMode::Copy);
    assert_eq!(spec.migrations[0].dim.not_referenced, NotReferenced::Skip);
    // `tag_history` is still read, as the earlier name of `max_history`.
    let spec = parse(&migration("[migration.dim]\ntag_history = 5\n"), Path::new("/x/d.toml")).unwrap();
    assert_eq!(spec.migrations[0].dim.max_history, 5);
}

#[test]
fn dim_settings_errors_are_reported_where_they_are_written() {
    assert_problem(
        &migration("[migration.dim]\ninclude_tags = [\"v1\", \"v(2\"]\n"),
        12,
        23,
        "`dim.include_tags`: \"v(2\" is not a valid regular expression",
    );
    let p = problems(&migration("[migration.dim]\nexclude_tags = [\"a)|(b\"]\n"));
    assert!(p[0].message.contains("\"a)|(b\" is not a valid regular expression"), "{p:?}");
    assert!(p[0].hint.as_deref().unwrap_or_default().contains("whole tag"), "{p:?}");
    assert_problem(
        &migration("[migration.dim]\nsignatures = \"yes\"\n"),
        12,
        14,
        "`dim.signatures` must be one of \"copy\", \"skip\"",
    );
    assert_problem(
        &migration("[migration.dim]\nnot_referenced = \"keep\"\n"),
        12,
        18,
        "`dim.not_referenced` must be one of \"skip\", \"copy\"",
    );
    assert_problem(
        &migration("[migration.dim]\nmax_history = 0\n"),
        12,
        15,
        "`dim.max_history` must be between 1 and 1000",
    );
    assert_problem(
        &migration("[migration.dim]\nmax_history = 2\ntag_history = 2\n"),
        13,
        15,
        "`tag_history` and `max_history` are the same setting",
    );
    assert_problem(
        &migration("[migration.dim]\ninclude_tags = \"v1\"\n"),
        12,
        16,
        "`dim.include_tags` must be an array",
    );
    assert_problem(
        &migration("[migration.dim]\nsignature = \"copy\"\n"),
        12,
        1,
        "unknown key `signature` in [migration.dim]",
    );
}

#[test]
fn keep_owned_and_pv_policy_are_read_and_checked_at_their_line() {
    let text = migration("keep_owned = [\"Secret\", \"ConfigMap\"]\npv_policy = \"copy\"\n");
    let m = parse(&text, Path::new("/x/desired.toml")).unwrap().migrations.remove(0);
    assert_eq!(m.keep_owned, ["Secret", "ConfigMap"]);
    assert_eq!(m.pv_policy, Some(PvPolicy::Copy));
    let m = parse(&migration(""), Path::new("/x/desired.toml")).unwrap().migrations.remove(0);
    assert!(m.keep_owned.is_empty());
    assert_eq!(m.pv_policy, None, "no default: a static PV blocks the plan until the file says");
    assert_problem(&migration("pv_policy = \"share\"\n"), 11, 13, "pv_policy");
    assert_problem(&migration("keep_owned = [\"secrets\"]\n"), 11, 15, "not a kind");
}
