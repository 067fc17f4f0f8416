//! `pods/log`: serves the files the node agent writes under
//! `<state dir>/pod-logs/<namespace>_<pod>_<uid>/<container>.log`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::rest::{Query, State};

fn containers(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn init_containers(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Where a pod container's log lives.
pub fn log_path(state_dir: &std::path::Path, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
    state_dir.join("pod-logs").join(format!("{ns}_{pod}_{uid}")).join(format!("{container}.log"))
}

fn tail(data: &[u8], n: usize) -> &[u8] {
    let mut count = 0;
    let end = if data.ends_with(b"\n") { data.len() - 1 } else { data.len() };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// Opens a pod's log; with `follow`, streams until the pod is terminal or deleted.
pub async fn serve(state: Arc<State>, ns: &str, pod_name: &str, q: &Query) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let ty = state.resource("", "v1", "pods").expect("pods type");
    let pod = state.get(&ty, ns, pod_name)?;
    let all = containers(&pod);
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !all.contains(c) && !init_containers(&pod).contains(c) {
                return Err(ApiError::BadRequest(format!("container {c} is not valid for pod {pod_name}")));
            }
            c.clone()
        }
        None if all.len() == 1 => all[0].clone(),
        None => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            )));
        }
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let path = log_path(&state.state_dir, ns, pod_name, &uid, &container);
    let follow = q.get("follow").is_some_and(|f| f == "true");
    let tail_lines: Option<usize> = q.get("tailLines").and_then(|t| t.parse().ok());
    let limit_bytes: Option<usize> = q.get("limitBytes").and_then(|t| t.parse().ok());
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let mut file = tokio::fs::File::open(&path).await.ok();
    if file.is_none() && (phase == "Pending" || phase.is_empty()) {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
        )));
    }
    // A started container whose log the node agent has not created yet reads as empty.
    let mut data = Vec::new();
    if let Some(f) = file.as_mut() {
        f.read_to_end(&mut data)
            .await
            .map_err(|e| ApiError::Internal(format!("reading log {}: {e}", path.display())))?;
    }
    let mut offset = data.len() as u64;
    let mut first: Vec<u8> = match tail_lines {
        Some(n) => tail(&data, n).to_vec(),
        None => data,
    };
    if let Some(l) = limit_bytes {
        first.truncate(l);
    }
    let (tx, rx) = mpsc::channel(64);
    let pods_gr = ty.gr();
    let ns = ns.to_string();
    let pod_name = pod_name.to_string();
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        loop {
            // Ends when the pod (or this container) has terminated and the file is drained.
            let terminal = {
                let store = state.lock();
                match store.get(&pods_gr, &ns, &pod_name) {
                    Some(p) => {
                        p["metadata"]["uid"] != uid.as_str()
                            || matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                            || p["status"]["containerStatuses"].as_array().is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["name"] == container.as_str() && !c["state"]["terminated"].is_null())
                            })
                    }
                    None => true,
                }
            };
            if file.is_none() {
                file = tokio::fs::File::open(&path).await.ok();
            }
            let mut chunk = Vec::new();
            if let Some(f) = file.as_mut()
                && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            {
                let _ = f.read_to_end(&mut chunk).await;
            }
            offset += chunk.len() as u64;
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if terminal {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_lines() {
        assert_eq!(super::tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(super::tail(b"a\nb", 5), b"a\nb");
    }
}
