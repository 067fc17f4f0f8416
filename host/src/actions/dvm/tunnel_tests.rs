//! The tunnel exactly as transfer pods run it — mtcd's own rsyncd.conf, stunnel configs and
//! generated certificates — with the host's real rsync and stunnel, on loopback. Proves that
//! data crosses with the right certificates and that a certificate from another transfer's CA
//! is refused in both directions.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::{self, TunnelCerts};
use super::objects;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_tls(dir: &Path, ca: &str, cert: &str, key: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

/// Runs one copy through a fresh tunnel; returns whether rsync succeeded.
fn copy_through(tmp: &Path, server: &TunnelCerts, client: &TunnelCerts) -> bool {
    let (rsync_port, tunnel_port, local_port) = (free_port(), free_port(), free_port());
    let conf = |s: String| {
        s.replace("/etc/mtcd-tls/", &format!("{}/", tmp.join("tls-server").display()))
            .replace("/etc/mtcd-secret/", &format!("{}/", tmp.display()))
            .replace(&format!("accept = {}", objects::TUNNEL_PORT), &format!("accept = 127.0.0.1:{tunnel_port}"))
            .replace(&format!("127.0.0.1:{}", objects::RSYNC_PORT), &format!("127.0.0.1:{rsync_port}"))
    };
    write_tls(&tmp.join("tls-server"), &server.ca, &server.server_cert, &server.server_key);
    write_tls(&tmp.join("tls-client"), &client.ca, &client.client_cert, &client.client_key);
    std::fs::create_dir_all(tmp.join("dst")).unwrap();
    std::fs::write(tmp.join("rsyncd.secrets"), "mtcd:s3cret\n").unwrap();
    // The server pod prepends the pod's own uid/gid the same way (objects::server_pod).
    let identity = format!("uid = {}\ngid = {}\n", nix_id("-u"), nix_id("-g"));
    let rsyncd = identity
        + &objects::rsyncd_conf(&[("data".into(), tmp.join("dst").display().to_string())], true)
            .replace("pid file = /tmp/rsyncd.pid", &format!("pid file = {}", tmp.join("rsyncd.pid").display()));
    std::fs::write(tmp.join("rsyncd.conf"), conf(rsyncd)).unwrap();
    std::fs::write(tmp.join("server.conf"), conf(objects::stunnel_server_conf())).unwrap();
    let client_conf = objects::stunnel_client_conf("localhost", tunnel_port)
        .replace("/etc/mtcd-tls/", &format!("{}/", tmp.join("tls-client").display()))
        .replace(&format!("accept = 127.0.0.1:{}", objects::RSYNC_PORT), &format!("accept = 127.0.0.1:{local_port}"));
    std::fs::write(tmp.join("client.conf"), client_conf).unwrap();
    let spawn = |cmd: &mut Command| cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _procs = Kill(vec![
        spawn(Command::new("rsync").args([
            "--daemon",
            "--no-detach",
            &format!("--port={rsync_port}"),
            &format!("--config={}", tmp.join("rsyncd.conf").display()),
        ])),
        spawn(Command::new("stunnel").arg(tmp.join("server.conf"))),
        spawn(Command::new("stunnel").arg(tmp.join("client.conf"))),
    ]);
    wait_port(rsync_port);
    wait_port(tunnel_port);
    wait_port(local_port);
    std::fs::create_dir_all(tmp.join("src")).unwrap();
    std::fs::write(tmp.join("src/hello.txt"), "across the tunnel\n").unwrap();
    let status = Command::new("rsync")
        .args([
            "-rlt",
            &format!("{}/", tmp.join("src").display()),
            &format!("rsync://mtcd@127.0.0.1:{local_port}/data/"),
        ])
        .env("RSYNC_PASSWORD", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    status.success() && std::fs::read_to_string(tmp.join("dst/hello.txt")).is_ok_and(|s| s == "across the tunnel\n")
}

fn nix_id(flag: &str) -> String {
    String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout).unwrap().trim().to_string()
}

fn tools_present() -> bool {
    ["rsync", "stunnel"]
        .iter()
        .all(|t| Command::new(t).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
}

#[test]
fn the_tunnel_carries_data_with_the_transfers_own_certificates() {
    assert!(tools_present(), "rsync and stunnel must be installed (scripts/setup.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let c = certs::generate("t").unwrap();
    assert!(copy_through(tmp.path(), &c, &c));
}

#[test]
fn a_client_certificate_from_another_transfer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = certs::generate("a").unwrap();
    let mut other = certs::generate("b").unwrap();
    // The client trusts the right CA but presents a certificate the server's CA never signed.
    other.ca = server.ca.clone();
    assert!(!copy_through(tmp.path(), &server, &other));
    assert!(!tmp.path().join("dst/hello.txt").exists(), "no data crossed");
}

#[test]
fn a_server_certificate_from_another_transfer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = certs::generate("a").unwrap();
    let mut impostor = certs::generate("b").unwrap();
    // The impostor server trusts our client, but its own certificate is from another CA.
    impostor.ca = mine.ca.clone();
    assert!(!copy_through(tmp.path(), &impostor, &mine));
    assert!(!tmp.path().join("dst/hello.txt").exists(), "no data crossed");
}

#[test]
fn a_server_presenting_the_client_certificate_of_the_same_transfer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = certs::generate("a").unwrap();
    // Signed by the right CA, but it is the client's certificate (clientAuth only).
    let mut impostor = mine.clone();
    impostor.server_cert = mine.client_cert.clone();
    impostor.server_key = mine.client_key.clone();
    assert!(!copy_through(tmp.path(), &impostor, &mine));
    assert!(!tmp.path().join("dst/hello.txt").exists(), "no data crossed");
}
