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

/// The probe pod that measures a source PVC before the copy.
pub fn probe_name(pvc: &str) -> String {
    let name = format!("mtcd-probe-{pvc}");
    if name.len() <= 63 {
        return name;
    }
    let h = crate::plan::hash::hash(&json!(pvc));
    format!("mtcd-probe-{}-{}", &pvc[..30].trim_end_matches('-'), &h[..8])
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

/// The module a non-root client asks for after its copy: its pre-xfer exec restores the
/// symlinks the daemon stored munged (see [`rsyncd_conf`]).
pub fn restore_module(module: &str) -> String {
    format!("{module}.mtcd-restore")
}

/// rsyncd.conf: one module per PVC; `hosts allow` admits only the local stunnel, by address,
/// so the daemon never asks DNS about its peer (a resolver that cannot answer stalls every
/// connection for its timeouts).
///
/// Symlinks must arrive as they are. A daemon that is not chrooted into the module limits
/// what a client may do by rewriting every symlink it receives: sanitised (an absolute
/// target loses its `/`, a `..` that leaves the module is cut; VolSync #1162) or, with
/// `munge symlinks`, prefixed with `/rsyncd-munged/`. So:
/// - root pods chroot into the module (`use chroot = yes`, CAP_SYS_CHROOT): the daemon
///   serves `/` and stores every link value untouched;
/// - non-root pods cannot chroot: the daemon munges, and the client then asks for the
///   module's `.mtcd-restore` twin, whose pre-xfer exec (`restore-links.sh`) strips the
///   prefix from every link the daemon stored — its exit code is the client's evidence.
pub fn rsyncd_conf(modules: &[(String, String)], root: bool) -> String {
    let mut s = String::from(
        "pid file = /tmp/rsyncd.pid\nnumeric ids = yes\nhosts allow = 127.0.0.1 ::1\nreverse lookup = no\nforward lookup = no\nlog file = /dev/stderr\n",
    );
    s.push_str(if root {
        "use chroot = yes\nmunge symlinks = no\n"
    } else {
        "use chroot = no\nmunge symlinks = yes\n"
    });
    for (module, path) in modules {
        let auth = format!(
            "auth users = {RSYNC_USER}\nsecrets file = /etc/mtcd-secret/rsyncd.secrets\nstrict modes = false\n"
        );
        s.push_str(&format!("\n[{module}]\npath = {path}\nread only = false\n{auth}"));
        if !root {
            s.push_str(&format!(
                "\n[{}]\npath = {path}\nread only = true\n{auth}pre-xfer exec = /bin/bash /etc/mtcd/restore-links.sh\n",
                restore_module(module)
            ));
        }
    }
    s
}

/// The non-root daemon's link restorer (pre-xfer exec of a `.mtcd-restore` module): every
/// symlink stored as `/rsyncd-munged/<value>` becomes `<value>` again, with the link's own
/// mtime, replaced atomically (a new link renamed over the old one). A munging daemon
/// compares a link on disk with the munged form of the source's value, so after every copy
/// *every* link is stored munged (a restored one is written again): stripping one prefix once
/// per copy is exact, even for a value that itself starts with the prefix. Names and values
/// may hold any byte but NUL (newlines included). Its stdout is what the client sees if it
/// fails.
pub const RESTORE_LINKS: &str = r#"set -u
cd "$RSYNC_MODULE_PATH" || { echo "restore-links: cannot enter the volume"; exit 1; }
stamp=$(mktemp) || exit 1
failed=0 restored=0
while IFS= read -r -d '' link; do
  value=$(readlink -- "$link"; printf x) && value=${value%?x}
  dir=${link%/*}
  touch -r "$dir" -- "$stamp" 2>/dev/null
  tmp="$dir/.mtcd-restore.$$"
  if ln -s -- "${value#/rsyncd-munged/}" "$tmp" && touch -h -r "$link" -- "$tmp" && mv -fT -- "$tmp" "$link"; then
    restored=$((restored + 1))
  else
    failed=$((failed + 1)); rm -f -- "$tmp"
  fi
  touch -r "$stamp" -- "$dir" 2>/dev/null
done < <(find . -type l -lname '/rsyncd-munged/*' -print0)
rm -f -- "$stamp"
echo "restore-links: $restored restored, $failed failed" >&2
if [ "$failed" != 0 ]; then echo "restore-links: $failed symlink(s) could not be restored"; exit 1; fi
exit 0
"#;

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

/// rsync flags: correctness first (see docs/dvm.md). Everything a volume holds arrives as it
/// is — links, devices, special files, hard links, ACLs, extended attributes, owners when the
/// pods run as root — or rsync fails. `--devices` stays even where it cannot work (non-root):
/// a device node that cannot be made fails the copy instead of being skipped. Deletion is
/// added by the caller (`--delete-before` for one stream, so space is freed before data
/// arrives).
pub fn rsync_flags(o: &DvmOptions) -> Vec<String> {
    let mut f = base_flags(o);
    f.extend(["--info=progress2", "--stats"].map(String::from));
    f
}

/// [`rsync_flags`] without progress and statistics (the passes around the copy).
fn base_flags(o: &DvmOptions) -> Vec<String> {
    let mut f: Vec<String> = [
        "--recursive",
        "--links",
        "--perms",
        "--times",
        "--devices",
        "--specials",
        "--sparse",
        "--partial",
        "--numeric-ids",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(identity_flags(o));
    if o.compress {
        f.push("--compress".into());
    }
    if let Some(bw) = o.bandwidth_limit {
        f.push(format!("--bwlimit={}", (bw / 1024).max(1)));
    }
    f
}

/// What decides "identical": the flags shared by the copy and the verification pass.
fn identity_flags(o: &DvmOptions) -> Vec<String> {
    let mut f = Vec::new();
    if o.security.root() {
        if o.preserve_ownership {
            f.extend(["--owner", "--group"].map(String::from));
        }
    } else {
        // A non-root receiver skips device nodes silently; `--super` makes it try, and fail.
        f.push("--super".into());
    }
    if o.hard_links {
        f.push("--hard-links".into());
    }
    if o.acls {
        f.push("--acls".into());
    }
    if o.exact_times {
        // Needs rsync >= 3.1.3 on the receiving side (2018).
        f.push("--modify-window=-1".into());
    }
    if o.xattrs {
        // SELinux labels belong to the cluster (the kubelet sets them per pod); copying them
        // would need MAC_ADMIN and give the destination the source's categories.
        f.extend(["--xattrs", "--filter=-x_security.selinux"].map(String::from));
    }
    f
}

/// Pod exit codes of the client script besides rsync's own.
pub mod exit {
    /// The tunnel to the destination did not come up within `tunnel_timeout`.
    pub const TUNNEL: i32 = 111;
    /// The non-root daemon could not restore the symlinks it stored munged.
    pub const RESTORE: i32 = 112;
    /// Measuring the source volume failed (the client pod measures when no probe pod did).
    pub const MEASURE: i32 = 113;
    /// The source's data does not fit the destination PVC: nothing was copied.
    pub const NO_ROOM: i32 = 114;
    /// The verification pass found differences.
    pub const VERIFY: i32 = 120;
}

/// The client container's script: bring the tunnel up, wait for it (bounded), copy, restore
/// links (non-root), verify, and exit with rsync's own exit code, so a failed copy can never
/// look like a success. Every rsync run prints `mtcd-transfer: rsync exit N`; the pod's code
/// is the worst of them (24, files vanished, only when nothing worse happened); the last line
/// of a complete run is `mtcd-transfer: done N` — the evidence mtcd needs besides the code.
pub fn client_script(module: &str, o: &DvmOptions, measure: Option<&Measure>) -> String {
    let flags = rsync_flags(o).join(" ");
    let timeout = o.tunnel_timeout.as_secs().max(1);
    let (measuring, room) = measure_parts(measure);
    // A split volume's hard-link walk runs while the tunnel comes up; the split waits for it.
    let (crossing_walk, crossing_check) = if o.streams_per_pvc > 1 && o.hard_links {
        (
            "( cd /mnt/source && crossing_hard_links ) & crossing=$!\n",
            "if wait $crossing; then\n\
             \x20   echo 'mtcd-transfer: note: hard links between top-level entries: copying this volume in one stream to keep them'\n\
             \x20   split=no\n\
             \x20 fi\n",
        )
    } else {
        ("", "")
    };
    let dest = format!("rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/{module}");
    let root = o.security.root();
    let copy = if root && o.streams_per_pvc == 1 {
        // One rsync for everything, the root's own attributes included.
        format!("step {flags} --delete-before /mnt/source/ {dest}/\n")
    } else {
        // The volume as its top-level entries (names from `find`, so any byte but NUL goes):
        // first a pass at the top level that only deletes (`--existing --ignore-existing`
        // transfer nothing, and with no attribute flags it touches nothing), so space is freed
        // before data arrives; then the entries (`--no-implied-dirs`: not the root as their
        // parent) — in one rsync (`--files-from`), or shared
        // among `n` streams in batches of about a quarter of a stream's share, so a stream
        // that finishes takes the next batch (`--relative` keeps each entry's path). A hard
        // link between two top-level entries would be split between two streams (two files):
        // such a volume goes in one rsync, and that is said. Root pods end with a top-level
        // pass that finds everything in place and sets the root's own attributes; non-root
        // pods leave the root alone — they do not own it, and could set neither its mode nor
        // its times (this is why they need no `--omit-dir-times`: every other directory is
        // theirs).
        let base = base_flags(o).join(" ");
        let top = base.replace("--recursive", "--dirs");
        let n = o.streams_per_pvc;
        let split = if n > 1 {
            format!(
                "split=yes\n\
                 if [ \"$count\" -le 1 ]; then split=no; fi\n\
                 if [ $split = yes ]; then\n\
                 {crossing_check}\
                 fi\n"
            )
        } else {
            "split=no\n".to_string()
        };
        let root_pass = if root { format!("step {top} --delete ./ {dest}/ || finish_codes\n") } else { String::new() };
        format!(
            "cd /mnt/source || finish 1\n\
             find . -mindepth 1 -maxdepth 1 -print0 > /tmp/mtcd-entries\n\
             count=$(tr -cd '\\0' < /tmp/mtcd-entries | wc -c)\n\
             step --dirs --links --devices --specials --numeric-ids --delete --existing --ignore-existing ./ {dest}/ || finish_codes\n\
             {split}\
             if [ $split = yes ]; then\n\
             \x20 xargs -0 -r -P {n} -n $(( count / {b} + 1 )) sh -c 'rsync {flags} --delete --relative --no-implied-dirs \"$@\" {dest}/; rc=$?; echo \"mtcd-transfer: rsync exit $rc\"; echo $rc >> /tmp/mtcd-codes' stream < /tmp/mtcd-entries || echo 125 >> $codes\n\
             else\n\
             \x20 step {flags} --delete-before --no-implied-dirs --from0 --files-from=/tmp/mtcd-entries ./ {dest}/\n\
             fi\n\
             {root_pass}",
            b = 4 * n.max(1)
        )
    };
    let restore = if o.security.root() {
        String::new()
    } else {
        format!(
            "if ! out=$(rsync rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/{}/ 2>&1 >/dev/null); then\n\
             \x20 echo \"mtcd-transfer: restoring the symlinks the daemon stored munged failed: $out\"; finish {}\n\
             fi\n",
            restore_module(module),
            exit::RESTORE
        )
    };
    let verify = if o.verify {
        // The same identity flags, by checksum, changing nothing; every line is a difference.
        // Non-root pods compare the entries (they leave the root's attributes alone), before
        // the links are restored: the munging daemon compares a link as stored munged.
        let check = identity_flags(o).join(" ");
        let what = if root && o.streams_per_pvc == 1 {
            "/mnt/source/".to_string()
        } else {
            "--no-implied-dirs --from0 --files-from=/tmp/mtcd-entries ./".to_string()
        };
        format!(
            "if [ $rc = 0 ]; then\n\
             \x20 echo 'mtcd-transfer: verifying'\n\
             \x20 out=$(rsync --recursive --links --perms --times --devices --specials --numeric-ids {check} --checksum --dry-run --delete --itemize-changes {what} {dest}/); vrc=$?\n\
             \x20 if [ $vrc != 0 ]; then echo \"mtcd-transfer: verify: rsync exit $vrc\"; finish {code}; fi\n\
             \x20 diffs=$(printf '%s' \"$out\" | grep -c . || true)\n\
             \x20 echo \"mtcd-transfer: verify: $diffs differences\"\n\
             \x20 if [ \"$diffs\" != 0 ]; then printf '%s\\n' \"$out\" | head -n 10 | sed 's/^/mtcd-transfer: differs: /'; finish {code}; fi\n\
             fi\n",
            code = exit::VERIFY
        )
    } else {
        String::new()
    };
    format!(
        "codes=/tmp/mtcd-codes; : > $codes\n\
         finish() {{ kill $tunnel 2>/dev/null; exit $1; }}\n\
         step() {{ rsync \"$@\"; rc=$?; echo \"mtcd-transfer: rsync exit $rc\"; echo $rc >> $codes; [ $rc = 0 ] || [ $rc = 24 ]; }}\n\
         worst() {{ awk '$1 != 0 && $1 != 24 && !bad {{ bad = $1 }} $1 == 24 {{ vanished = 24 }} END {{ print bad ? bad : (vanished ? vanished : (NR ? 0 : 1)) }}' $codes; }}\n\
         finish_codes() {{ finish $(worst); }}\n\
         crossing_hard_links() {{\n\
         \x20 i=0\n\
         \x20 for e in ./* ./.[!.]* ./..?*; do\n\
         \x20   [ -e \"$e\" ] || [ -L \"$e\" ] || continue\n\
         \x20   i=$((i + 1))\n\
         \x20   find \"$e\" ! -type d -links +1 -printf \"%i $i\\n\"\n\
         \x20 done | sort -u | awk '{{ if (seen[$1]++) {{ found = 1; exit }} }} END {{ exit !found }}'\n\
         }}\n\
         {measuring}\
         {crossing_walk}\
         stunnel /etc/mtcd/stunnel-client.conf &\n\
         tunnel=$!\n\
         deadline=$(( $(date +%s) + {timeout} ))\n\
         until rsync rsync://{RSYNC_USER}@127.0.0.1:{RSYNC_PORT}/ >/dev/null 2>&1; do\n\
         \x20 if [ $(date +%s) -ge $deadline ]; then echo \"mtcd-transfer: tunnel not up after {timeout}s\"; finish {tunnel}; fi\n\
         \x20 sleep 0.1\n\
         done\n\
         echo 'mtcd-transfer: tunnel up'\n\
         {room}\
         {copy}\
         rc=$(worst)\n\
         if [ $rc != 0 ] && [ $rc != 24 ]; then finish $rc; fi\n\
         {verify}\
         {restore}\
         echo \"mtcd-transfer: done $rc\"\n\
         finish $rc\n",
        tunnel = exit::TUNNEL
    )
}

/// What the client pod checks before it copies, when no probe pod measured the volume first:
/// the source's usage against the destination's capacity, with the same rule as
/// [`crate::plan::volumes::required_bytes`] (3% headroom, whole MiB).
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub own_fs_limit: u64,
    pub capacity: u64,
}

/// The client script's measuring, started before the tunnel and awaited after it.
fn measure_parts(m: Option<&Measure>) -> (String, String) {
    let Some(m) = m else { return (String::new(), String::new()) };
    // The result is printed as soon as it is known (mtcd shows it), and kept for the check.
    let start = format!(
        "( ( {} ) > /tmp/mtcd-usage 2>&1; mrc=$?; cat /tmp/mtcd-usage; exit $mrc ) & measuring=$!\n",
        measure_script(m.own_fs_limit).trim_end().replace('\n', "\n  ")
    );
    let check = format!(
        "wait $measuring; mrc=$?\n\
         set -- $(sed -n 's/^mtcd-usage: //p' /tmp/mtcd-usage)\n\
         if [ $mrc != 0 ] || [ -z \"${{2:-}}\" ]; then echo \"mtcd-transfer: measuring the volume failed (exit $mrc)\"; finish {measure}; fi\n\
         needed=$(( ($2 + ($2 + 99) / 100 * {headroom} + 1048575) / 1048576 * 1048576 ))\n\
         if [ $needed -gt {capacity} ]; then echo \"mtcd-transfer: no room: $needed bytes needed, {capacity} at the destination\"; finish {room}; fi\n",
        measure = exit::MEASURE,
        room = exit::NO_ROOM,
        headroom = crate::plan::volumes::HEADROOM_PERCENT,
        capacity = m.capacity,
    );
    (start, check)
}

/// The transfer pods' security contexts, stated in full on every pod (nothing is left to the
/// cluster's defaults or an admission plugin's choice). Root pods get only the capabilities
/// rsync needs and nothing beyond Pod Security "baseline"; non-root pods are "restricted".
pub mod security {
    use serde_json::{Value, json};

    use crate::spec::TransferSecurity;

    /// What the rsync daemon needs as root: owners (CHOWN, FOWNER), set-id bits on files of
    /// any group (FSETID), devices (MKNOD), file capabilities (SETFCAP), writing any directory
    /// (DAC_OVERRIDE), the daemon's own setgid/setuid calls, and chroot into the module
    /// (SYS_CHROOT). All are in Pod Security baseline's allowed list.
    pub const SERVER_CAPS: &[&str] =
        &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP", "SETGID", "SETUID", "SYS_CHROOT"];
    /// Reading every file whatever its mode (DAC_OVERRIDE rather than DAC_READ_SEARCH, which
    /// baseline does not allow).
    pub const CLIENT_CAPS: &[&str] = &["DAC_OVERRIDE"];

    /// The pod-level context. `fsGroup` only on the destination: on the source the kubelet
    /// would change the group of every file of the volume being read.
    pub fn pod(s: &TransferSecurity, destination: bool) -> Value {
        let root = s.root();
        let mut c = json!({
            "runAsUser": s.run_as_user.unwrap_or(0),
            "runAsNonRoot": !root,
            "seccompProfile": {"type": "RuntimeDefault"},
        });
        if let Some(g) = s.run_as_group.or(root.then_some(0)) {
            c["runAsGroup"] = json!(g);
        }
        if let (Some(g), true) = (s.fs_group, destination) {
            c["fsGroup"] = json!(g);
            // Only the volume's root when it is not already the group's: a recursive chown
            // of a large volume on every run would be what selinux_type avoids for labels.
            c["fsGroupChangePolicy"] = json!("OnRootMismatch");
        }
        if let Some(t) = &s.selinux_type {
            c["seLinuxOptions"] = json!({"type": t});
        }
        c
    }

    /// The rsync container: root with `caps` only, or non-root with none.
    pub fn rsync(s: &TransferSecurity, caps: &[&str]) -> Value {
        let add: Vec<&str> = if s.root() { caps.to_vec() } else { Vec::new() };
        json!({"capabilities": {"drop": ["ALL"], "add": add}, "allowPrivilegeEscalation": false, "privileged": false})
    }

    /// stunnel needs nothing.
    pub fn stunnel() -> Value {
        json!({"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false, "privileged": false})
    }
}

/// Mode of the mounted Secrets: owner-only for root pods; a non-root pod's user does not own
/// them (and an fsGroup on the source would re-group the volume being read), so readable by
/// the pod's own containers — the only ones that mount them.
fn secret_mode(o: &DvmOptions) -> u32 {
    if o.security.root() { 0o400 } else { 0o444 }
}

pub fn server_pod(ns: &str, migration: &str, claims: &[(String, String)], o: &DvmOptions) -> Value {
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": SERVER}}),
        json!({"name": "secret", "secret": {"secretName": format!("{SERVER}-rsync"), "defaultMode": secret_mode(o)}}),
        json!({"name": "tls", "secret": {"secretName": format!("{SERVER}-tls"), "defaultMode": secret_mode(o)}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/etc/mtcd", "readOnly": true}),
        json!({"name": "secret", "mountPath": "/etc/mtcd-secret", "readOnly": true}),
    ];
    for (i, (claim, _module)) in claims.iter().enumerate() {
        volumes.push(json!({"name": format!("data-{i}"), "persistentVolumeClaim": {"claimName": claim}}));
        mounts.push(json!({"name": format!("data-{i}"), "mountPath": format!("/mnt/{claim}")}));
    }
    let mut l = labels(migration);
    l["mtcd.io/transfer-server"] = json!(migration);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": SERVER, "namespace": ns, "labels": l},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2,
            "securityContext": security::pod(&o.security, true),
            "volumes": volumes,
            "containers": [
                {"name": "rsync", "image": o.transfer_image,
                 // rsyncd run as root switches to `nobody` unless told otherwise; the daemon
                 // writes as whoever the pod runs as. A non-root daemon is told nothing: it
                 // would try setgroups() and refuse every connection.
                 "command": ["sh", "-c", format!("{{ if [ \"$(id -u)\" = 0 ]; then printf 'uid = 0\\ngid = %s\\n' \"$(id -g)\"; fi; cat /etc/mtcd/rsyncd.conf; }} > /tmp/rsyncd.conf && exec rsync --daemon --no-detach --port={RSYNC_PORT} --config=/tmp/rsyncd.conf")],
                 "volumeMounts": mounts, "securityContext": security::rsync(&o.security, security::SERVER_CAPS)},
                {"name": "stunnel", "image": o.transfer_image, "command": ["stunnel", "/etc/mtcd/stunnel.conf"],
                 "ports": [{"name": "tunnel", "containerPort": TUNNEL_PORT}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/mtcd", "readOnly": true}, {"name": "tls", "mountPath": "/etc/mtcd-tls", "readOnly": true}],
                 "securityContext": security::stunnel()},
            ],
        },
    })
}

/// Where the client pod runs and what it checks first.
pub struct ClientSetup<'a> {
    /// The node the pod must run on (see `placement`).
    pub node: Option<&'a str>,
    /// Measure the source and check the destination's room before copying (no probe pod did).
    pub measure: Option<&'a Measure>,
}

/// `setup.node` is pinned the way DaemonSet pods are, by a required node affinity on the
/// node's name, so the scheduler still checks that the pod fits there.
pub fn client_pod(
    ns: &str,
    migration: &str,
    name: &str,
    claim: &str,
    module: &str,
    o: &DvmOptions,
    setup: ClientSetup,
) -> Value {
    let ClientSetup { node, measure } = setup;
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels(migration), "annotations": {"mtcd.io/pvc": claim}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "securityContext": security::pod(&o.security, false),
            "volumes": [
                {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}},
                {"name": "config", "configMap": {"name": format!("{SERVER}-client")}},
                {"name": "tls", "secret": {"secretName": format!("{SERVER}-client-tls"), "defaultMode": secret_mode(o)}},
            ],
            "containers": [{
                "name": "rsync", "image": o.transfer_image,
                "command": ["bash", "-c", client_script(module, o, measure)],
                "env": [{"name": "RSYNC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{SERVER}-client-tls"), "key": "rsync-password"}}}],
                "volumeMounts": [
                    {"name": "source", "mountPath": "/mnt/source", "readOnly": true},
                    {"name": "config", "mountPath": "/etc/mtcd", "readOnly": true},
                    {"name": "tls", "mountPath": "/etc/mtcd-tls", "readOnly": true},
                ],
                "securityContext": security::rsync(&o.security, security::CLIENT_CAPS),
            }],
        },
    });
    if let Some(node) = node {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}});
    }
    pod
}

/// Prints `mtcd-usage: <df|du> <bytes> <inodes>` for `/mnt/source`: `df` when the mount's
/// file system is at most `own_fs_limit` bytes (the volume's own), `du` when it is larger (a
/// volume sharing a file system, e.g. hostPath) — its two walks at once: the measurement is
/// on the way to the copy.
pub fn measure_script(own_fs_limit: u64) -> String {
    format!(
        "set -- $(df -B1 --output=size,used,iused /mnt/source | tail -n 1)\n\
         if [ -n \"${{1:-}}\" ] && [ \"$1\" -le {own_fs_limit} ]; then echo \"mtcd-usage: df $2 $3\"; exit 0; fi\n\
         du -sx --inodes /mnt/source > /tmp/mtcd-inodes & inodes=$!\n\
         b=$(du -sx -B1 /mnt/source | cut -f1) && wait $inodes && i=$(cut -f1 /tmp/mtcd-inodes) && echo \"mtcd-usage: du $b $i\"\n"
    )
}

/// A pod that measures the source volume (mounted read-only, where the client pod would run)
/// with [`measure_script`], before anything else of the PVC's transfer is decided.
pub fn probe_pod(
    ns: &str,
    migration: &str,
    name: &str,
    claim: &str,
    o: &DvmOptions,
    own_fs_limit: u64,
    node: Option<&str>,
) -> Value {
    let script = measure_script(own_fs_limit);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels(migration), "annotations": {"mtcd.io/pvc": claim}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": security::pod(&o.security, false),
            "volumes": [{"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}],
            "containers": [{
                "name": "probe", "image": o.transfer_image,
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "source", "mountPath": "/mnt/source", "readOnly": true}],
                "securityContext": security::rsync(&o.security, security::CLIENT_CAPS),
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

    /// A migration's DVM options as the file leaves them (every default).
    fn defaults() -> DvmOptions {
        crate::spec::parse(
            "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"m\"\nnamespaces = [\"n\"]\n",
            std::path::Path::new("d.toml"),
        )
        .unwrap()
        .migrations
        .remove(0)
        .dvm
    }

    #[test]
    fn one_stream_is_one_rsync_and_more_share_the_top_level_entries() {
        let mut o = defaults();
        let one = client_script("data", &o, None);
        assert_eq!(one.matches("step --recursive").count(), 1);
        assert!(one.contains("--delete-before /mnt/source/"), "{one}");
        assert!(!one.contains("xargs"));
        o.streams_per_pvc = 4;
        let four = client_script("data", &o, None);
        assert!(
            four.contains("step --dirs --links")
                && four.contains("--delete --existing --ignore-existing ./ rsync://mtcd@127.0.0.1:8873/data/"),
            "top-level deletions first:\n{four}"
        );
        assert!(four.contains("xargs -0 -r -P 4 -n $(( count / 16 + 1 )) sh -c 'rsync --recursive"), "{four}");
        assert!(
            four.contains("--delete --relative --no-implied-dirs \"$@\" rsync://mtcd@127.0.0.1:8873/data/;"),
            "{four}"
        );
        assert!(
            four.contains("( cd /mnt/source && crossing_hard_links ) & crossing=$!")
                && four.contains("if wait $crossing; then"),
            "hard links across entries fall back to one stream: {four}"
        );
    }

    /// The client pod's room check (shell) and the probe's (`check_capacity`) are one rule
    /// written twice: they agree at and around every boundary.
    #[test]
    fn the_client_pods_room_check_is_the_probes_rule() {
        use crate::plan::volumes::{CapacityCheck, Usage, UsageMethod, check_capacity, required_bytes};
        let dir = std::env::temp_dir().join(format!("mtcd-room-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("usage");
        for bytes in [0u64, 1, 99, 100, 101, 1 << 20, 16_781_312, 10_000_000_000, 1 << 40] {
            let usage = Usage { bytes, inodes: 5, method: UsageMethod::Du };
            let need = required_bytes(&usage);
            for capacity in [need.saturating_sub(1), need, need + 1] {
                let (_, room) = measure_parts(Some(&Measure { own_fs_limit: 0, capacity }));
                std::fs::write(&file, format!("mtcd-usage: du {bytes} 5\n")).unwrap();
                let script = format!(
                    "finish() {{ exit $1; }}\ntrue & measuring=$!\n{}exit 0\n",
                    room.replace("/tmp/mtcd-usage", file.to_str().unwrap())
                );
                let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
                let no_room = out.status.code() == Some(exit::NO_ROOM);
                let too_small = matches!(check_capacity(&usage, capacity, false), CapacityCheck::TooSmall { .. });
                assert_eq!(
                    no_room,
                    too_small,
                    "{bytes} bytes into {capacity}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every variant of the client script is valid bash.
    #[test]
    fn client_scripts_parse() {
        let mut o = defaults();
        for verify in [false, true] {
            for (streams, uid) in [(1, None), (4, None), (1, Some(1000)), (4, Some(1000))] {
                o.verify = verify;
                o.streams_per_pvc = streams;
                o.security.run_as_user = uid;
                let s = client_script("data", &o, None);
                let out = std::process::Command::new("bash").args(["-n", "-c", &s]).output().unwrap();
                assert!(out.status.success(), "{}\n{s}", String::from_utf8_lossy(&out.stderr));
                let s = client_script("data", &o, Some(&Measure { own_fs_limit: 1 << 30, capacity: 1 << 30 }));
                let out = std::process::Command::new("bash").args(["-n", "-c", &s]).output().unwrap();
                assert!(out.status.success(), "{}\n{s}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(s.contains("data.mtcd-restore"), uid.is_some(), "links restored by non-root pods only");
            }
        }
    }
}
