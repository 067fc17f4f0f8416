//! A real OCI registry per cluster: Debian's `docker-registry` (distribution 2.x) with
//! filesystem storage under the lab directory and deletes enabled, on loopback only.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// util-linux `setpriv`, for a parent-death signal without unsafe `pre_exec`.
const SETPRIV: &str = "/usr/bin/setpriv";

/// Errors starting a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Writing the configuration or creating the storage directory failed.
    #[error("preparing registry directory {dir}")]
    Prepare {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    /// The registry binary could not be started.
    #[error("cannot start {REGISTRY_BIN} (apt-get install docker-registry)")]
    Spawn(#[source] std::io::Error),
    /// The registry exited or did not answer `/v2/` in time.
    #[error("registry on {address} did not answer /v2/ within 10 s: {detail}")]
    NotReady { address: String, detail: String },
}

/// A started registry.
#[derive(Clone, Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`, plain HTTP.
    pub address: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Does `GET /v2/` answer with HTTP 200 on `address`?
pub fn answers_v2(address: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200")
}

/// Start a registry storing under `dir` (config in `dir/config.yml`, blobs in `dir/data`)
/// and wait until it answers. The child is killed when dropped.
///
/// The port is free when picked but the registry binds it a moment later: another lab
/// starting at the same time (parallel tests) can take it in between, so a registry that
/// exits with "address already in use" is started again on another port.
pub async fn start(dir: &Path) -> anyhow::Result<(Registry, tokio::process::Child)> {
    let mut attempt = 1;
    loop {
        match start_once(dir).await {
            Err(e)
                if attempt < 5
                    && matches!(e.downcast_ref::<RegistryError>(),
                        Some(RegistryError::NotReady { detail, .. }) if detail.contains("address already in use")) =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn start_once(dir: &Path) -> anyhow::Result<(Registry, tokio::process::Child)> {
    let prep = |source| RegistryError::Prepare { dir: dir.display().to_string(), source };
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(prep)?;
    let port = free_port().map_err(prep)?;
    let address = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {address}\n",
        data.display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).map_err(prep)?;
    let log = std::fs::File::create(dir.join("registry.log")).map_err(prep)?;
    let log2 = log.try_clone().map_err(prep)?;
    // setpriv's parent-death signal stops the registry even if the lab is SIGKILLed
    // (`mtcd-lab down` only finds pod processes, by network namespace).
    let mut cmd = if Path::new(SETPRIV).exists() {
        let mut c = tokio::process::Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--", REGISTRY_BIN]);
        c
    } else {
        tokio::process::Command::new(REGISTRY_BIN)
    };
    let mut child = cmd
        .arg("serve")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(RegistryError::Spawn)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            let detail = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Err(RegistryError::NotReady { address, detail: format!("exited with {status}: {detail}") }.into());
        }
        let a = address.clone();
        if tokio::task::spawn_blocking(move || answers_v2(&a)).await.unwrap_or(false) {
            return Ok((Registry { address }, child));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(RegistryError::NotReady { address, detail: "timed out".into() }.into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
