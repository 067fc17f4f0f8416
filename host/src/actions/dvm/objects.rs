//! The Kubernetes objects of one transfer, built as plain JSON so they read like the YAML a
//! user would write. Everything carries mtcd's labels (never the source-hash annotation, so
//! the resource plan never prunes a running transfer) and is removed when the transfer ends.

use serde_json::{Value, json};

use crate::spec::{DvmOptions, EndpointKind};

pub const COMPONENT: &str = "mtcd.io/component";
pub const COMPONENT_VALUE: &str = "transfer";
pub const SERVER: &str = "mtcd-transfer";
pub const RSYNC_PORT: u16 = 8873;
pub const TUNNEL_PORT: u16 = 8443;
pub const RSYNC_USER: &str = "mtcd";

pub fn labels(migration: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "mtcd",
        "mtcd.io/migration": migration,
        COMPONENT: COMPONENT_VALUE,
    })
}

pub fn selector(migration: &str) -> String {
    format!("mtcd.io/migration={migration},{COMPONENT}={COMPONENT_VALUE}")
}

/// A DNS-1123 name for a per-PVC object: readable when short, hashed when long.
pub fn client_name(pvc: &str) -> String {
    let name = format!("mtcd-transfer-{pvc}");
    if name.len() <= 63 {
        return name;
    }
    let h = crate::plan::hash::hash(&json!(pvc));
    format!("mtcd-transfer-{}-{}", &pvc[..30].trim_end_matches('-'), &h[..8])
}

pub fn service(ns: &str, migration: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVER, "namespace": ns, "labels": labels(migration)},
        "spec": {"selector": {"mtcd.io/transfer-server": migration}, "ports": [{"name": "tunnel", "port": 443, "targetPort": TUNNEL_PORT}]},
    })
}

pub fn load_balancer(ns: &str, migration: &str) -> Value {
    let mut s = service(ns, migration);
    s["spec"]["type"] = json!("LoadBalancer");
    s
}

pub fn route(ns: &str, migration: &str, host: Option<&str>) -> Value {
    let mut r = json!({
        "apiVersion": "route.openshift.io/v1", "kind": "Route",
        "metadata": {"name": SERVER, "namespace": ns, "labels": labels(migration)},
        "spec": {"to": {"kind": "Service", "name": SERVER}, "port": {"targetPort": "tunnel"}, "tls": {"termination": "passthrough"}},
    });
    if let Some(h) = host {
        r["spec"]["host"] = json!(h);
    }
    r
}

pub fn ingress(ns: &str, migration: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": SERVER, "namespace": ns, "labels": labels(migration), "annotations": {
            "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}},
        "spec": {"tls": [{"hosts": [host]}], "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": SERVER, "port": {"number": 443}}}}]}}]},
    })
}

pub fn generated_host(ns: &str, subdomain: Option<&str>) -> Option<String> {
    subdomain.map(|d| format!("{SERVER}-{ns}.{d}"))
}

/// rsyncd.conf: one module per PVC. `use chroot = no` needs `munge symlinks = no`, or
/// rsync rewrites every symlink it receives; `hosts allow` admits only the local stunnel, by
/// address, so the daemon never asks DNS about its peer (a resolver that cannot answer
/// stalls every connection for its timeouts).
pub fn rsyncd_conf(modules: &[(String, String)], preserve_ownership: bool) -> String {
    let mut s = String::from(
        "pid file = /tmp/rsyncd.pid\nuse chroot = no\nmunge symlinks = no\nnumeric ids = yes\nhosts allow = 127.0.0.1 ::1\nreverse lookup = no\nforward lookup = no\nlog file = /dev/stderr\n",
    );
    let _ = preserve_ownership; // the pod's user decides; see server_pod
    for (module, path) in modules {
        s.push_str(&format!(
            "\n[{module}]\npath = {path}\nread only = false\nauth users = {RSYNC_USER}\nsecrets file = /etc/mtcd-secret/rsyncd.secrets\nstrict modes = false\n"
        ));
    }
    s
}

pub fn stunnel_server_conf() -> String {
    format!(
        "foreground = yes\npid =\nsslVersionMin = TLSv1.2\ndebug = 4\n\n[rsync]\naccept = {TUNNEL_PORT}\nconnect = 127.0.0.1:{RSYNC_PORT}\ncert = /etc/mtcd-tls/tls.crt\nkey = /etc/mtcd-tls/tls.key\nCAfile = /etc/mtcd-tls/ca.crt\nverifyChain = yes\nrequireCert = yes\n"
    )
}

/// `sni` is the endpoint's host (the router routes by it). The server is trusted by the
/// transfer's own CA, which signs nothing but this transfer's two certificates; their
/// extended key usages keep the client's certificate from passing as the server's.
pub fn stunnel_client_conf(host: &str, port: u16) -> String {
    format!(
        "foreground = yes\npid =\nsslVersionMin = TLSv1.2\ndebug = 4\n\n[rsync]\nclient = yes\naccept = 127.0.0.1:{RSYNC_PORT}\nconnect = {host}:{port}\nsni = {host}\ncert = /etc/mtcd-tls/tls.crt\nkey = /etc/mtcd-tls/tls.key\nCAfile = /etc/mtcd-tls/ca.crt\nverifyChain = yes\n"
    )
}

/// rsync flags: correctness first (see docs/dvm.md). `--delete` makes a re-sync mirror the
/// source; `--partial` keeps half-sent files so a retry resumes them.
pub fn rsync_flags(o: &DvmOptions) -> Vec<String> {
    let mut f: Vec<String> = [
        "--recursive",
        "--links",
        "--perms",
        "--times",
        "--specials",
        "--sparse",
        "--delete",
        "--partial",
        "--numeric-ids",
        "--info=progress2",
        "--stats",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if o.preserve_ownership {
        f.extend(["--owner", "--group", "--devices"].map(String::from));
    }
    if o.hard_links {
        f.push("--hard-links".into());
    }
    if o.compress {
        f.push("--compress".into());
    }
    if let Some(bw) = o.bandwidth_limit {
        f.push(format!("--bwlimit={}", (bw / 1024).max(1)));
    }
    f
}

/// The client container's script: bring the tunnel up, wait for it (bounded), copy, verify,
/// and exit with rsync's own exit code, so a failed copy can never look like a success.
pub fn client_script(module: &str, o: &DvmOptions) -> String {
    let flags = rsync_flags(o).join(" ");
    let timeout = o.tunnel_timeout.as_secs().max(1);
    let verify = if o.verify {
        format!(
            "diffs=$(rsync --recursive --links --perms --times --checksum --dry-run --delete --itemize-changes --numeric-ids /mnt/source/ rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/{module}/ | grep -c . || true)\n\
             echo \"mtcd-transfer: verify: $diffs differences\"\n\
             if [ \"$diffs\" != 0 ]; then kill $tunnel; exit 120; fi\n"
        )
    } else {
        String::new()
    };
    let dest = format!("rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/{module}");
    let copy = if o.streams_per_pvc > 1 {
        // Every top-level entry, file or directory, goes to one of `n` rsync streams, in
        // batches of about a quarter of a stream's share, so a stream that finishes takes the
        // next batch (one huge directory does not hold up the rest). First a top-level pass
        // that only deletes (`--existing --ignore-existing` transfer nothing), so space is
        // freed before data arrives; last a top-level pass that finds everything in place and
        // only sets the root's own attributes. `--relative` from the volume root (not one
        // destination per entry) keeps the daemon from sanitizing symlinks like
        // `../other/file` that leave an entry but stay inside the volume. xargs exits 123
        // when any stream failed.
        let top = flags.replace("--recursive", "--dirs");
        let n = o.streams_per_pvc;
        format!(
            "cd /mnt/source && \\\n\
             rsync {top} --existing --ignore-existing ./ {dest}/ && \\\n\
             count=$(find . -mindepth 1 -maxdepth 1 | wc -l) && \\\n\
             find . -mindepth 1 -maxdepth 1 -print0 | xargs -0 -r -P {n} -n $(( count / {b} + 1 )) sh -c 'exec rsync {flags} --relative \"$@\" {dest}/' stream && \\\n\
             rsync {top} ./ {dest}/\n",
            b = 4 * n
        )
    } else {
        format!("rsync {flags} /mnt/source/ {dest}/\n")
    };
    format!(
        "stunnel /etc/mtcd/stunnel-client.conf &\n\
         tunnel=$!\n\
         deadline=$(( $(date +%s) + {timeout} ))\n\
         until rsync rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/ >/dev/null 2>&1; do\n\
           if [ $(date +%s) -ge $deadline ]; then echo \"mtcd-transfer: tunnel not up after {timeout}s\"; kill $tunnel; exit 111; fi\n\
           sleep 0.1\n\
         done\n\
         echo 'mtcd-transfer: tunnel up'\n\
         {copy}         rc=$?\n\
         echo \"mtcd-transfer: rsync exit $rc\"\n\
         if [ $rc != 0 ]; then kill $tunnel; exit $rc; fi\n\
         {verify}\
         kill $tunnel\n\
         exit 0\n"
    )
}

pub fn server_pod(
    ns: &str,
    migration: &str,
    image: &str,
    claims: &[(String, String)],
    preserve_ownership: bool,
) -> Value {
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": SERVER}}),
        json!({"name": "secret", "secret": {"secretName": format!("{SERVER}-rsync"), "defaultMode": 0o400}}),
        json!({"name": "tls", "secret": {"secretName": format!("{SERVER}-tls"), "defaultMode": 0o400}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/etc/mtcd", "readOnly": true}),
        json!({"name": "secret", "mountPath": "/etc/mtcd-secret", "readOnly": true}),
    ];
    for (i, (claim, _module)) in claims.iter().enumerate() {
        volumes.push(json!({"name": format!("data-{i}"), "persistentVolumeClaim": {"claimName": claim}}));
        mounts.push(json!({"name": format!("data-{i}"), "mountPath": format!("/mnt/{claim}")}));
    }
    let security = if preserve_ownership {
        json!({"capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE", "SETGID", "SETUID", "MKNOD"]}, "runAsUser": 0})
    } else {
        json!({"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false})
    };
    let mut l = labels(migration);
    l["mtcd.io/transfer-server"] = json!(migration);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": SERVER, "namespace": ns, "labels": l},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "volumes": volumes,
            "containers": [
                {"name": "rsync", "image": image,
                 // rsyncd run as root switches to `nobody` unless told otherwise; the daemon
                 // writes as whoever the pod runs as (root only when ownership is preserved).
                 "command": ["sh", "-c", format!("printf 'uid = %s\\ngid = %s\\n' \"$(id -u)\" \"$(id -g)\" > /tmp/rsyncd.conf && cat /etc/mtcd/rsyncd.conf >> /tmp/rsyncd.conf && exec rsync --daemon --no-detach --port={RSYNC_PORT} --config=/tmp/rsyncd.conf")],
                 "volumeMounts": mounts, "securityContext": security},
                {"name": "stunnel", "image": image, "command": ["stunnel", "/etc/mtcd/stunnel.conf"],
                 "ports": [{"name": "tunnel", "containerPort": TUNNEL_PORT}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/mtcd", "readOnly": true}, {"name": "tls", "mountPath": "/etc/mtcd-tls", "readOnly": true}],
                 "securityContext": {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false}},
            ],
        },
    })
}

/// `node`: the node the client pod must run on (see `placement`), pinned the way DaemonSet
/// pods are, by a required node affinity on the node's name, so the scheduler still checks
/// that the pod fits there.
pub fn client_pod(
    ns: &str,
    migration: &str,
    name: &str,
    claim: &str,
    module: &str,
    o: &DvmOptions,
    node: Option<&str>,
) -> Value {
    let security = if o.preserve_ownership {
        json!({"capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}, "runAsUser": 0})
    } else {
        json!({"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false})
    };
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels(migration), "annotations": {"mtcd.io/pvc": claim}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "volumes": [
                {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}},
                {"name": "config", "configMap": {"name": format!("{SERVER}-client")}},
                {"name": "tls", "secret": {"secretName": format!("{SERVER}-client-tls"), "defaultMode": 0o400}},
            ],
            "containers": [{
                "name": "rsync", "image": o.transfer_image,
                "command": ["sh", "-c", client_script(module, o)],
                "env": [{"name": "RSYNC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{SERVER}-client-tls"), "key": "rsync-password"}}}],
                "volumeMounts": [
                    {"name": "source", "mountPath": "/mnt/source", "readOnly": true},
                    {"name": "config", "mountPath": "/etc/mtcd", "readOnly": true},
                    {"name": "tls", "mountPath": "/etc/mtcd-tls", "readOnly": true},
                ],
                "securityContext": security,
            }],
        },
    });
    if let Some(node) = node {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}});
    }
    pod
}

pub fn endpoint_kind_name(e: EndpointKind) -> &'static str {
    match e {
        EndpointKind::Route => "route",
        EndpointKind::Ingress => "ingress",
        EndpointKind::LoadBalancer => "loadbalancer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_is_one_rsync_and_more_share_the_top_level_entries() {
        let mut o = crate::spec::parse(
            "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"m\"\nnamespaces = [\"n\"]\n",
            std::path::Path::new("d.toml"),
        )
        .unwrap()
        .migrations
        .remove(0)
        .dvm;
        let one = client_script("data", &o);
        assert_eq!(one.matches("rsync --recursive").count(), 1);
        assert!(!one.contains("xargs"));
        o.streams_per_pvc = 4;
        let four = client_script("data", &o);
        assert!(
            four.contains("rsync --dirs --links")
                && four.contains("--existing --ignore-existing ./ rsync://mtcd@127.0.0.1:8873/data/"),
            "top-level deletions first:\n{four}"
        );
        assert!(four.contains("xargs -0 -r -P 4 -n $(( count / 16 + 1 )) sh -c 'exec rsync --recursive"), "{four}");
        assert!(four.contains("--relative \"$@\" rsync://mtcd@127.0.0.1:8873/data/' stream"), "{four}");
    }
}
