//! The node agent's kubelet API: the endpoint an API server dials for `pods/exec`.
//!
//! It listens on `127.0.0.1:<free port>` and registers that address in its Node's status
//! (`addresses` InternalIP/Hostname, `daemonEndpoints.kubeletEndpoint.Port`) with a Ready
//! condition, as a kubelet registers itself. Callers are authenticated and authorized through
//! the API, as a kubelet with webhook authentication and authorization does: a TokenReview
//! of the bearer token, then a SubjectAccessReview of `nodes/proxy` on this node. Plain HTTP
//! on loopback (a real kubelet serves HTTPS; nothing outside this machine can reach it).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::Node;
use super::exec::{self, PROTOCOLS};
use crate::api::exec::ExecOptions;

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())).boxed_unsync())
        .expect("response")
}

/// Listens, registers the endpoint in the Node's status, serves until `shutdown`.
pub(crate) async fn start(node: Arc<Node>, node_name: String, shutdown: CancellationToken) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let nodes: Api<K8sNode> = Api::all(node.client.clone());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let st = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "v1.33.0-mtcd-lab", "operatingSystem": "linux", "architecture": "amd64",
            "containerRuntimeVersion": "mtcd-lab://1", "kernelVersion": "", "osImage": "mtcd lab", "kubeProxyVersion": "",
            "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes.patch_status(&node_name, &PatchParams::default(), &Patch::Merge(&st)).await?;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            let node = node.clone();
            let node_name = node_name.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let svc = hyper::service::service_fn(move |req| {
                    let (node, node_name) = (node.clone(), node_name.clone());
                    async move { Ok::<_, Infallible>(handle(node, &node_name, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(port)
}

/// Webhook authentication and authorization: may the bearer `proxy` this node?
async fn authorized(node: &Node, node_name: &str, req: &Request<Incoming>) -> Result<(), Response<Body>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| status(401, "Unauthorized", "Unauthorized"))?;
    let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).expect("static");
    let reviewed = Api::<TokenReview>::all(node.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| status(500, "InternalError", &format!("authenticating the caller: {e}")))?;
    let st = reviewed.status.unwrap_or_default();
    let user = st.user.unwrap_or_default();
    if st.authenticated != Some(true) {
        return Err(status(401, "Unauthorized", "Unauthorized"));
    }
    let verb = if req.method() == http::Method::GET { "get" } else { "create" };
    let sar: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": user.username, "groups": user.groups, "uid": user.uid,
        "resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": "proxy", "name": node_name}}}))
    .expect("static");
    let decided = Api::<SubjectAccessReview>::all(node.client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .map_err(|e| status(500, "InternalError", &format!("authorizing the caller: {e}")))?;
    if !decided.status.is_some_and(|s| s.allowed) {
        let who = user.username.unwrap_or_default();
        return Err(status(
            403,
            "Forbidden",
            &format!("Forbidden (user={who}, verb={verb}, resource=nodes, subresource=proxy)"),
        ));
    }
    Ok(())
}

async fn handle(node: Arc<Node>, node_name: &str, req: Request<Incoming>) -> Response<Body> {
    if let Err(resp) = authorized(&node, node_name, &req).await {
        return resp;
    }
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /exec/{namespace}/{pod}/{uid}/{container}, as the kubelet serves it.
    let ["exec", ns, pod, uid, container] = parts.as_slice() else {
        return status(404, "NotFound", "the server could not find the requested resource");
    };
    let target = {
        let running = node.containers.lock().unwrap_or_else(|e| e.into_inner());
        running.get(&(uid.to_string(), container.to_string())).filter(|c| c.namespace == *ns && c.pod == *pod).cloned()
    };
    let Some(target) = target else {
        return status(404, "NotFound", &format!("container not found ({container:?})"));
    };
    let opts = ExecOptions::parse(req.uri().query().unwrap_or_default());
    let key = req.headers().get("sec-websocket-key").and_then(|k| k.to_str().ok()).map(str::to_string);
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    // The client's order decides, among the protocols this node speaks.
    let Some(protocol) = offered.iter().find(|p| PROTOCOLS.contains(&p.as_str())).cloned() else {
        return status(
            400,
            "BadRequest",
            &format!("requested protocol(s) are not supported: {offered:?}; supports {PROTOCOLS:?}"),
        );
    };
    let Some(key) = key else {
        return status(400, "BadRequest", "missing Sec-WebSocket-Key: this endpoint serves WebSocket upgrades");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let v5 = protocol == "v5.channel.k8s.io";
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
        let ws = WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
        exec::session(node, ws, v5, target, opts).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Full::new(Bytes::new()).boxed_unsync())
        .expect("response")
}
