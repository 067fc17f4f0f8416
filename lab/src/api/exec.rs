//! `pods/exec`: the API server's half. As kube-apiserver does, it authorizes the request,
//! checks the pod and container, finds the pod's node, and proxies the connection upgrade to
//! the kubelet's `/exec/{namespace}/{pod}/{uid}/{container}` endpoint — here the lab node
//! agent, which registers its address in the Node's `status.addresses` (InternalIP) and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, as a kubelet does. The API server
//! authenticates to it with its own kubelet-client token; the node agent checks that token
//! with a TokenReview and `nodes/proxy` with a SubjectAccessReview.
//!
//! The client speaks WebSocket with subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io`
//! (kube-rs, kubectl ≥ 1.30); the handshake, the channel framing and the exit Status on
//! channel 3 are the node agent's ([`crate::node`]), the API server passes bytes through once
//! the upgrade succeeded. SPDY (older kubectl) is not spoken.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::UserInfo;
use super::error::ApiError;
use super::rbac::{self, Attributes};
use super::rest::State;
use super::{Body, error_response};

/// Exec options from the query (`command` repeats, in order).
#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub container: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

impl ExecOptions {
    /// Parses the raw query as the server's PodExecOptions conversion does.
    pub fn parse(raw_query: &str) -> Self {
        let mut o = ExecOptions::default();
        for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "container" => o.container = v.into_owned(),
                "stdin" | "input" => o.stdin = truthy(&v),
                "stdout" | "output" => o.stdout = truthy(&v),
                "stderr" | "error" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        o
    }

    /// The kubelet's query (`input`, `output`, `error`, `tty`, `command`...).
    pub fn kubelet_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (k, on) in [("input", self.stdin), ("output", self.stdout), ("error", self.stderr), ("tty", self.tty)] {
            if on {
                q.append_pair(k, "1");
            }
        }
        q.finish()
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let h = |n: header::HeaderName| {
        req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase()
    };
    req.version() == http::Version::HTTP_11
        && h(header::UPGRADE) == "websocket"
        && h(header::CONNECTION).split(',').any(|t| t.trim() == "upgrade")
}

/// The container to exec into and the node address, or the 400/404 the real server answers
/// (`streamLocation` and the checks before the kubelet is dialled).
fn locate(state: &State, ns: &str, name: &str, opts: &mut ExecOptions) -> Result<(Value, String), ApiError> {
    let pods = state.resource("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let pod = state.get(&pods, ns, name)?;
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let (containers, inits) = (names("containers"), names("initContainers"));
    if opts.container.is_empty() {
        match containers.as_slice() {
            [one] => opts.container = one.clone(),
            [] => return Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}"))),
            many => {
                let mut msg =
                    format!("a container name must be specified for pod {name}, choose one of: [{}]", many.join(" "));
                if !inits.is_empty() {
                    msg += &format!(" or one of the init containers: [{}]", inits.join(" "));
                }
                return Err(ApiError::BadRequest(msg));
            }
        }
    } else if !containers.contains(&opts.container) && !inits.contains(&opts.container) {
        return Err(ApiError::BadRequest(format!("container {} is not valid for pod {name}", opts.container)));
    }
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::BadRequest(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let running = ["containerStatuses", "initContainerStatuses"].iter().any(|k| {
        pod["status"][*k]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == opts.container.as_str() && s["state"]["running"].is_object())
    });
    if phase != "Running" || !running {
        return Err(ApiError::BadRequest(format!(
            "unable to upgrade connection: container not found ({:?})",
            opts.container
        )));
    }
    let nodes = state.resource("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let n = state.get(&nodes, "", &node)?;
    let ip = n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str());
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().filter(|p| *p > 0);
    match (ip, port) {
        (Some(ip), Some(port)) => Ok((pod, format!("{ip}:{port}"))),
        _ => Err(ApiError::Internal(format!("node {node:?} has no kubelet endpoint (no preferred addresses found)"))),
    }
}

/// The response head of the node agent and whatever bytes followed it.
struct Head {
    code: u16,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "node agent closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head too large"));
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let code = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(502);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Ok(Head { code, headers, rest: buf[end + 4..].to_vec() })
}

/// Serves `pods/<name>/exec` (GET or POST). Returns the 101 and keeps proxying in a task.
pub async fn serve(state: Arc<State>, user: &UserInfo, req: Request<Incoming>, ns: &str, name: &str) -> Response<Body> {
    // kube-apiserver ≥ 1.35 (AuthorizePodWebsocketUpgradeCreatePermission): a WebSocket
    // upgrade arrives as GET, authorized as `get`; `create` on pods/exec is required as well.
    if req.method() == Method::GET {
        let a = Attributes {
            verb: "create".into(),
            resource_request: true,
            version: "v1".into(),
            resource: "pods".into(),
            subresource: "exec".into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        if let rbac::Decision::NoOpinion(reason) = state.authorize(user, &a) {
            return error_response(&rbac::forbidden(user, &a, &reason));
        }
    }
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return error_response(&ApiError::MethodNotAllowed);
    }
    let mut opts = ExecOptions::parse(req.uri().query().unwrap_or_default());
    if opts.command.is_empty() {
        return error_response(&ApiError::BadRequest("you must specify at least 1 command".into()));
    }
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return error_response(&ApiError::BadRequest("you must specify at least 1 of stdin, stdout, stderr".into()));
    }
    if !is_websocket(&req) {
        return error_response(&ApiError::BadRequest(
            "Upgrade request required: the lab serves pods/exec over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) on HTTP/1.1"
                .into(),
        ));
    }
    let (pod, addr) = match locate(&state, ns, name, &mut opts) {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let mut conn = match TcpStream::connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            return error_response(&ApiError::Internal(format!("error dialing backend: dial tcp {addr}: {e}")));
        }
    };
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let upstream = format!(
        "GET /exec/{ns}/{name}/{uid}/{}?{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: {}\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        opts.container,
        opts.kubelet_query(),
        state.kubelet_token,
        header("sec-websocket-version"),
        header("sec-websocket-key"),
        header("sec-websocket-protocol"),
    );
    if let Err(e) = conn.write_all(upstream.as_bytes()).await {
        return error_response(&ApiError::Internal(format!("error sending request to the node: {e}")));
    }
    let head = match read_head(&mut conn).await {
        Ok(h) => h,
        Err(e) => return error_response(&ApiError::Internal(format!("error reading the node's response: {e}"))),
    };
    if head.code != 101 {
        // The node agent answers errors with a Status; anything else is the proxy's problem.
        let mut body = head.rest;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut body)).await;
        let code = StatusCode::from_u16(head.code).unwrap_or(StatusCode::BAD_GATEWAY);
        return Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)).boxed_unsync())
            .expect("response");
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in &head.headers {
        if matches!(
            k.to_ascii_lowercase().as_str(),
            "upgrade" | "connection" | "sec-websocket-accept" | "sec-websocket-protocol"
        ) {
            resp = resp.header(k.as_str(), v.as_str());
        }
    }
    let early = head.rest;
    let (ns, name) = (ns.to_string(), name.to_string());
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "exec upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut conn).await;
    });
    resp.body(Full::new(Bytes::new()).boxed_unsync()).expect("response")
}
