//! The lab's node half: network namespaces, the registry launcher, and (once the lab runs)
//! a real rsync + stunnel transfer between pods of the two clusters through a Route.

use std::time::Duration;

use mtcd_lab::netns::{LabNetwork, cleanup_prefix, list_prefix, netns_pids, netns_path, pod_ip};

fn test_prefix(tag: &str) -> String {
    format!("mtcd{tag}{:06x}-", rand_suffix())
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
}

#[test]
fn cleanup_kills_pod_processes_and_removes_every_namespace() {
    let prefix = test_prefix("n");
    let net = LabNetwork::create(&prefix).expect("create lab network");
    let a = net.add_pod("src", "11111111-aaaa", pod_ip("src", 20).unwrap()).unwrap();
    let b = net.add_pod("dst", "22222222-bbbb", pod_ip("dst", 20).unwrap()).unwrap();
    assert_eq!(list_prefix(&prefix).len(), 3);
    // A long-running process inside a pod namespace, as a container would be.
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &a.name, "sleep", "300"])
        .spawn()
        .expect("start a process in the pod namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while netns_pids(&netns_path(&a.name)).is_empty() {
        assert!(std::time::Instant::now() < deadline, "process never entered the namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The two pods reach each other over the bridge.
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &b.name, "bash", "-c", &format!("exec 3<>/dev/tcp/{}/9 && echo open || true", a.ip)])
        .output()
        .unwrap();
    // Nothing listens on port 9: "connection refused" proves the packet got there (no timeout).
    assert!(String::from_utf8_lossy(&ping.stderr).contains("refused"), "{ping:?}");

    cleanup_prefix(&prefix).expect("cleanup");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the pod process was not killed");
    assert!(list_prefix(&prefix).is_empty(), "namespaces left: {:?}", list_prefix(&prefix));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&prefix), "mounts left behind");
    // Idempotent, and fine when nothing exists.
    cleanup_prefix(&prefix).expect("second cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_starts_answers_v2_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (reg, mut child) = mtcd_lab::registry::start(dir.path()).await.expect("start registry");
    let took = started.elapsed();
    assert!(reg.address.starts_with("127.0.0.1:"), "{}", reg.address);
    let addr = reg.address.clone();
    assert!(tokio::task::spawn_blocking(move || mtcd_lab::registry::answers_v2(&addr)).await.unwrap());
    eprintln!("registry ready in {took:?}");
    child.kill().await.unwrap();
    let addr = reg.address.clone();
    assert!(!tokio::task::spawn_blocking(move || mtcd_lab::registry::answers_v2(&addr)).await.unwrap());
}
