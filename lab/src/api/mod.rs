//! The simulated Kubernetes API server: HTTPS with bearer tokens, discovery, and generic REST
//! over an in-memory store. Strict on purpose: a lenient fake hides migration bugs.

pub mod aggregator;
pub mod auth;
pub mod error;
pub mod exec;
pub mod fields;
pub mod logs;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod protobuf;
pub mod rbac;
pub mod rest;
pub mod reviews;
pub mod schedule;
pub mod selector;
pub mod store;
pub mod types;
pub mod validate;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use rest::{Query, State};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Errors starting an API server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be bound.
    #[error("binding the API server of cluster {cluster} on {addr}: {source}")]
    Bind {
        cluster: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The service CIDR is not an IPv4 CIDR.
    #[error("cluster {cluster}: service CIDR {cidr:?} is not an IPv4 CIDR such as 10.96.0.0/16")]
    Cidr { cluster: String, cidr: String },
}

/// What one API server needs.
pub struct ApiConfig {
    pub cluster: String,
    pub profile: String,
    pub service_cidr: String,
    /// Pod logs are read from `state_dir/pod-logs`.
    pub state_dir: PathBuf,
    /// The kubeconfig users' bearer tokens.
    pub tokens: Vec<auth::StaticToken>,
    /// The lab CA in PEM (service-account token Secrets carry it).
    pub ca_pem: String,
    /// Domain of generated Route hosts (`apps.src.lab.mtcd.io`).
    pub apps_domain: String,
    pub tls: Arc<rustls::ServerConfig>,
    /// Usually `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
}

/// A running API server.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl ApiServer {
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// Binds and serves until `shutdown` is cancelled.
pub async fn start(cfg: ApiConfig, shutdown: CancellationToken) -> Result<ApiServer, ServeError> {
    let cidr = validate::Cidr::parse(&cfg.service_cidr)
        .ok_or_else(|| ServeError::Cidr { cluster: cfg.cluster.clone(), cidr: cfg.service_cidr.clone() })?;
    let listener = TcpListener::bind(cfg.bind).await.map_err(|source| ServeError::Bind {
        cluster: cfg.cluster.clone(),
        addr: cfg.bind,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        cluster: cfg.cluster.clone(),
        addr: cfg.bind,
        source,
    })?;
    let state = Arc::new(State::new(
        &cfg.cluster,
        &cfg.profile,
        cidr,
        cfg.state_dir.clone(),
        cfg.tokens.clone(),
        cfg.ca_pem.clone(),
        cfg.apps_domain.clone(),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg.tls.clone());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let st = st.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let io = hyper_util::rt::TokioIo::new(tls);
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    // Each request runs to its end, as in a Go server whose handler does not
                    // stop when the client hangs up: a write the client gave up on still lands.
                    async move {
                        Ok::<_, Infallible>(
                            tokio::spawn(handle(st, req))
                                .await
                                .unwrap_or_else(|e| error_response(&ApiError::Internal(e.to_string()))),
                        )
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                // With upgrades: pods/exec switches the connection to WebSocket.
                let conn = builder.serve_connection_with_upgrades(io, svc);
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(ApiServer { addr, state })
}

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("response")
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(code, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code(), &e.to_status())
}

fn stream_response(content_type: &str, rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("response")
}

fn query(req: &Request<Incoming>) -> Query {
    req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mtcd-lab", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"})
}

/// The field manager of a non-apply write: `fieldManager`, else the User-Agent's program name.
fn manager(req_ua: Option<&str>, q: &Query) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    req_ua.and_then(|ua| ua.split('/').next()).filter(|s| !s.is_empty()).unwrap_or("unknown").to_string()
}

/// The ConfigMap that slows writes down: `data.<plural>: "<ms>"` delays every create,
/// update and patch of that resource by that long, as a slow admission webhook (a policy
/// engine, an image verifier) does on a real cluster. Tests use it to make the moment a
/// write lands later than the moment its client asked.
pub const ADMISSION_DELAY: (&str, &str) = ("kube-system", "mtcd-lab-admission-delay");

fn admission_delay(state: &State, plural: &str) -> Option<std::time::Duration> {
    let (ns, name) = ADMISSION_DELAY;
    let cm = state.lock().get(&(String::new(), "configmaps".into()), ns, name)?;
    let ms: u64 = cm["data"][plural].as_str()?.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let q = query(&req);
    // Authentication, then authorization, before anything is routed: a user who may not
    // see a path gets 403 whether or not it exists, as from a real server.
    let anonymous_path = matches!(p.as_slice(), ["version"] | ["healthz" | "readyz" | "livez"]);
    let user = match req.headers().get(header::AUTHORIZATION).map(|h| h.to_str().ok()) {
        None if anonymous_path => auth::UserInfo::anonymous(),
        None => return error_response(&ApiError::Unauthorized),
        Some(h) => match h.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) {
            Some(t) if !t.is_empty() => match state.authenticate(t, auth::API_AUDIENCE) {
                Some(u) => u,
                None => return error_response(&ApiError::Unauthorized),
            },
            _ => return error_response(&ApiError::Unauthorized),
        },
    };
    let attrs = rbac::Attributes::from_request(req.method(), &path, &q);
    if let rbac::Decision::NoOpinion(reason) = state.authorize(&user, &attrs) {
        tracing::debug!(cluster = %state.cluster, user = %user.name, verb = %attrs.verb, %path, "forbidden");
        return error_response(&rbac::forbidden(&user, &attrs, &reason));
    }
    match p.as_slice() {
        ["version"] => return json_response(200, &version()),
        ["healthz" | "readyz" | "livez"] => return full(200, "text/plain", b"ok".to_vec()),
        _ => {}
    }
    let table = req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("as=Table"));
    let metadata_only = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let get = req.method() == Method::GET;
    match p.as_slice() {
        ["openapi", "v2"] if get => return openapi_v2(&state, &req),
        ["openapi", "v3"] if get => return json_response(200, &openapi::v3_index(&state)),
        ["openapi", "v3", rest @ ..] if get => {
            return match openapi::v3_rendered(&state, &rest.join("/")) {
                Some(doc) => {
                    let etag = format!("\"{}\"", doc.hash);
                    let mut r = full(200, "application/json", doc.body.clone());
                    if let Ok(h) = http::HeaderValue::from_str(&etag) {
                        r.headers_mut().insert(header::ETAG, h);
                    }
                    r.headers_mut().insert(header::VARY, http::HeaderValue::from_static("Accept"));
                    r
                }
                None => full(404, "text/plain; charset=utf-8", b"404 page not found\n".to_vec()),
            };
        }
        ["api"] if get => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}),
            );
        }
        ["apis"] if get => return json_response(200, &state.group_list()),
        ["api", "v1"] if get => {
            return json_response(200, &state.types.read().unwrap_or_else(|e| e.into_inner()).resource_list("", "v1"));
        }
        ["apis", g] if get => {
            let local = {
                let t = state.types.read().unwrap_or_else(|e| e.into_inner());
                t.group(g)["versions"].as_array().is_some_and(|v| !v.is_empty()).then(|| t.group(g))
            };
            let local = local.filter(|_| {
                state.group_list()["groups"].as_array().is_some_and(|gs| gs.iter().any(|x| x["name"] == *g))
            });
            return match local.or_else(|| state.remote_group(g)) {
                Some(group) => json_response(200, &group),
                None => error_response(&ApiError::NoRoute),
            };
        }
        _ => {}
    }
    // An aggregated group version: unavailable → 503 for discovery and every request, as
    // kube-aggregator answers; unregistered → not served.
    if let ["apis", g, v, ..] = p.as_slice() {
        match state.serving(g, v) {
            aggregator::Serving::Unavailable => {
                return Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("X-Content-Type-Options", "nosniff")
                    .body(Full::new(Bytes::from_static(aggregator::UNAVAILABLE_BODY.as_bytes())).boxed_unsync())
                    .expect("response");
            }
            aggregator::Serving::Unregistered => return error_response(&ApiError::NoRoute),
            aggregator::Serving::Local | aggregator::Serving::Available => {}
        }
    }
    match p.as_slice() {
        ["apis", g, v] if get => {
            let t = state.types.read().unwrap_or_else(|e| e.into_inner());
            if t.has_group_version(g, v) {
                return json_response(200, &t.resource_list(g, v));
            }
            return error_response(&ApiError::NoRoute);
        }
        _ => {}
    }
    let (group, version, rest) = match p.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return error_response(&ApiError::NoRoute),
    };
    // [ns-part] plural [name [sub]]
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(*ns), *plural, tail.first().copied(), tail.get(1).copied())
        }
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        _ => return error_response(&ApiError::NoRoute),
    };
    if rest.len() > 5 || (ns.is_some() && rest.len() > 5) {
        return error_response(&ApiError::NoRoute);
    }
    let Some(ty) = state.resource(group, version, plural) else {
        return error_response(&ApiError::NoRoute);
    };
    if ns.is_some() && !ty.namespaced {
        return error_response(&ApiError::NoRoute);
    }
    if ty.namespaced && ns.is_none() && name.is_some() {
        return error_response(&ApiError::NoRoute);
    }
    let sub = match sub {
        None => None,
        Some("status") if ty.has_status => Some("status"),
        Some("log") if ty.group.is_empty() && ty.plural == "pods" => Some("log"),
        Some("scale") if ty.scalable() => Some("scale"),
        Some("token") if ty.group.is_empty() && ty.plural == "serviceaccounts" => Some("token"),
        Some("exec") if ty.group.is_empty() && ty.plural == "pods" => Some("exec"),
        Some("finalize") if ty.group.is_empty() && ty.plural == "namespaces" => Some("status"),
        Some(_) => return error_response(&ApiError::NoRoute),
    };
    if let (Some("exec"), Some(n)) = (sub, name) {
        return exec::serve(state.clone(), &user, req, ns.unwrap_or(""), n).await;
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    let ua = req.headers().get(header::USER_AGENT).and_then(|h| h.to_str().ok()).map(str::to_string);
    let mgr = manager(ua.as_deref(), &q);
    let method = req.method().clone();
    let ct =
        req.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("application/json").to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(&ApiError::BadRequest(format!("reading body: {e}"))),
    };
    let nsk = ns.unwrap_or("");
    // Built-in kinds also take protobuf; custom resources and the kinds the lab adds
    // (OpenShift, Velero) take JSON and YAML only, as on a real server.
    let with_protobuf = protobuf::message_for(&ty.api_version(), &ty.kind).is_some();
    let parse_body = |body: &Bytes| decode_body(&ct, body, with_protobuf);
    let framing = if with_protobuf && !table && !metadata_only && protobuf::accepts(&accept) {
        watch::Framing::Protobuf
    } else {
        watch::Framing::Json
    };
    let ok = |r: Result<Value, ApiError>| r.map(|v| (200u16, v));
    // RBAC's escalation check needs the object as the write would leave it: preview the
    // write with dryRun=All, check, then do it.
    if ty.group == "rbac.authorization.k8s.io"
        && !user.is_master()
        && matches!(method, Method::POST | Method::PUT | Method::PATCH)
        && sub.is_none()
    {
        let mut dq = q.clone();
        dq.insert("dryRun".into(), "All".into());
        let preview = match (&method, name) {
            (&Method::POST, None) => parse_body(&body).and_then(|o| state.create(&ty, ns, o, &dq, &mgr)),
            (&Method::PUT, Some(n)) => parse_body(&body).and_then(|o| state.update(&ty, nsk, n, o, &dq, false, &mgr)),
            (&Method::PATCH, Some(n)) => state.patch(&ty, nsk, n, &ct, &body, &dq, false, &mgr),
            _ => Err(ApiError::MethodNotAllowed),
        };
        if let Ok(obj) = preview
            && let Err(e) = rbac::check_escalation(&state.lock(), &user, &ty.plural, &obj)
        {
            return error_response(&e);
        }
    }
    if matches!(method, Method::POST | Method::PUT | Method::PATCH)
        && let Some(delay) = admission_delay(&state, &ty.plural)
    {
        // Before the write, like a webhook call; a client that gives up meanwhile does not
        // stop it (a real server, past its webhooks, writes what it admitted).
        tracing::info!(cluster = %state.cluster, method = %method, %path, ms = delay.as_millis() as u64, "admission delay: holding a write");
        tokio::time::sleep(delay).await;
    }
    rest::take_warnings();
    let result: Result<(u16, Value), ApiError> = match (method, name, sub) {
        (m, n, None) if ty.aggregated => {
            aggregator::serve(&ty, &m, n, q.get("watch").is_some_and(|w| w == "true" || w == "1")).map(|v| (200, v))
        }
        (_, _, _) if ty.aggregated => Err(ApiError::NoRoute),
        (Method::POST, None, None) if ty.create_only => {
            parse_body(&body).and_then(|b| reviews::create(&state, &user, &ty, ns, &b)).map(|v| (201, v))
        }
        (_, _, _) if ty.create_only => Err(ApiError::MethodNotAllowed),
        (Method::POST, Some(n), Some("token")) => {
            parse_body(&body).and_then(|b| reviews::token_request(&state, nsk, n, &b)).map(|v| (201, v))
        }
        (Method::GET, None, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return match watch::start(
                    state.clone(),
                    ty.clone(),
                    ns.map(str::to_string),
                    &q,
                    if table {
                        View::Table
                    } else if metadata_only {
                        View::Metadata
                    } else {
                        View::Object
                    },
                    framing,
                ) {
                    Ok(rx) => stream_response(framing.content_type(), rx),
                    Err(e) => error_response(&e),
                };
            }
            ok(state.list(&ty, ns, &q))
        }
        (Method::GET, Some(n), None | Some("status")) => ok(state.get(&ty, nsk, n)),
        (Method::GET, Some(n), Some("scale")) => ok(state.get(&ty, nsk, n).map(|o| to_scale(&o))),
        (Method::PUT, Some(n), Some("scale")) => match decode_body(&ct, &body, true) {
            Ok(scale) => ok(scale_write(
                &state,
                &ty,
                nsk,
                n,
                "application/json",
                &serde_json::to_vec(&scale).unwrap_or_default(),
                &q,
                &mgr,
            )),
            Err(e) => Err(e),
        },
        (Method::PATCH, Some(n), Some("scale")) => ok(scale_write(&state, &ty, nsk, n, &ct, &body, &q, &mgr)),
        (Method::GET, Some(n), Some("log")) => {
            return match logs::serve(state.clone(), nsk, n, &q).await {
                Ok(rx) => stream_response("text/plain", rx),
                Err(e) => error_response(&e),
            };
        }
        // Namespaced objects are created under their namespace's path only.
        (Method::POST, None, None) if ty.namespaced && ns.is_none() => Err(ApiError::MethodNotAllowed),
        (Method::POST, None, None) => match parse_body(&body) {
            Ok(obj) => state.create(&ty, ns.filter(|_| ty.namespaced), obj, &q, &mgr).map(|o| {
                if ty.group.is_empty()
                    && ty.plural == "secrets"
                    && o["type"] == "kubernetes.io/service-account-token"
                    && q.get("dryRun").is_none_or(|d| d != "All")
                {
                    // The token controller fills the Secret in shortly after, not in the response.
                    let (st, ns, name) = (state.clone(), nsk.to_string(), n_of(&o));
                    tokio::spawn(async move { st.populate_token_secret(&ns, &name) });
                }
                (201, o)
            }),
            Err(e) => Err(e),
        },
        (Method::PUT, Some(n), s @ (None | Some("status"))) => match parse_body(&body) {
            Ok(obj) => ok(state.update(&ty, nsk, n, obj, &q, s.is_some(), &mgr)),
            Err(e) => Err(e),
        },
        (Method::PATCH, Some(n), s @ (None | Some("status"))) => {
            ok(state.patch(&ty, nsk, n, &ct, &body, &q, s.is_some(), &mgr))
        }
        (Method::DELETE, Some(n), None) => {
            match if body.is_empty() { Ok(Value::Null) } else { decode_body(&ct, &body, true) } {
                Ok(opts) => ok(state.delete(&ty, nsk, n, &q, &opts)),
                Err(e) => Err(e),
            }
        }
        (Method::DELETE, None, None) if ty.namespaced && ns.is_none() => Err(ApiError::MethodNotAllowed),
        (Method::DELETE, None, None) => ok(state.delete_collection(&ty, ns, &q)),
        _ => Err(ApiError::MethodNotAllowed),
    };
    // Method, path and outcome only: bodies may hold Secret data.
    match &result {
        Ok((code, _)) => tracing::debug!(cluster = %state.cluster, %path, code, "request"),
        Err(e) => {
            tracing::debug!(cluster = %state.cluster, %path, code = e.code(), reason = e.reason(), "request failed")
        }
    }
    let warnings = rest::take_warnings();
    let mut response = match result {
        Ok((code, v)) if table && code == 200 && v["kind"] != "Status" => {
            json_response(code, &printer(&state, &ty).table(&v))
        }
        Ok((code, v)) if metadata_only => negotiated(&accept, code, &to_partial(&v)),
        Ok((code, v)) => negotiated(&accept, code, &v),
        Err(e) => negotiated(&accept, e.code(), &e.to_status()),
    };
    // `Warning: 299 - "unknown field \"spec.x\""`, one header per warning, as kube-apiserver sends them.
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", h);
        }
    }
    response
}

/// `/openapi/v2` in JSON, or in the protobuf form kubectl asks for
/// (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`); 406 for anything else.
fn openapi_v2(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let accept = req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("application/json");
    for media in accept.split(',').map(|m| m.split(';').next().unwrap_or_default().trim()) {
        match media {
            "application/json" | "*/*" | "application/*" | "" => {
                return full(200, "application/json", openapi::v2_rendered(state, false).body.clone());
            }
            openapi::V2_PROTOBUF => {
                return full(200, openapi::V2_PROTOBUF_CONTENT_TYPE, openapi::v2_rendered(state, true).body.clone());
            }
            _ => {}
        }
    }
    full(
        406,
        "text/plain; charset=utf-8",
        format!("406: Not Acceptable: unsupported media type {accept:?}").into_bytes(),
    )
}

/// A request body in JSON, YAML or (for built-in kinds) protobuf, as JSON.
fn decode_body(content_type: &str, body: &[u8], with_protobuf: bool) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    match ct {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding body: {e}")))
        }
        "application/yaml" => {
            serde_yaml::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding body: {e}")))
        }
        protobuf::MEDIA_TYPE if with_protobuf => protobuf::decode(body),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            media_types(with_protobuf)
        ))),
    }
}

fn media_types(with_protobuf: bool) -> &'static str {
    if with_protobuf {
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    } else {
        "application/json, application/yaml"
    }
}

/// The response in the first media type of the client's Accept header that can carry it:
/// protobuf for the built-in kinds, else JSON; 406 when the client takes neither.
fn negotiated(accept: &str, code: u16, v: &Value) -> Response<Body> {
    if protobuf::accepts(accept)
        && let Some(bytes) = protobuf::encode(v)
    {
        return full(code, protobuf::MEDIA_TYPE, bytes);
    }
    if accept.is_empty() || takes_json(accept) {
        return json_response(code, v);
    }
    let e = ApiError::NotAcceptable(format!(
        "only the following media types are accepted: {}",
        media_types(protobuf::encode(v).is_some())
    ));
    match protobuf::encode(&e.to_status()).filter(|_| protobuf::accepts(accept)) {
        Some(bytes) => full(406, protobuf::MEDIA_TYPE, bytes),
        None => json_response(406, &e.to_status()),
    }
}

fn takes_json(accept: &str) -> bool {
    accept.split(',').any(|part| {
        matches!(
            part.split(';').next().unwrap_or_default().trim(),
            "application/json" | "*/*" | "application/*" | "application/yaml"
        )
    })
}

fn n_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// How objects are rendered for a client (from its Accept header).
#[derive(Debug, Clone, Copy)]
pub enum View {
    Object,
    Metadata,
    Table,
}

/// `PartialObjectMetadata(List)`: what metadata-only clients (kube-rs `list_metadata`,
/// `metadata_watcher`) ask for.
pub(crate) fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
}

fn to_partial(v: &Value) -> Value {
    match v["items"].as_array() {
        Some(items) => json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": v["metadata"], "items": items.iter().map(partial).collect::<Vec<_>>()}),
        None if v["kind"] == "Status" => v.clone(),
        None => partial(v),
    }
}

/// The `autoscaling/v1 Scale` view of a scalable object.
fn to_scale(o: &Value) -> Value {
    let m = &o["metadata"];
    let selector = match o["spec"]["selector"]["matchLabels"].as_object().or(o["spec"]["selector"].as_object()) {
        Some(labels) => {
            labels.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(",")
        }
        None => String::new(),
    };
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector}})
}

/// PUT or PATCH on `/scale`: only spec.replicas reaches the object.
#[allow(clippy::too_many_arguments)]
fn scale_write(
    state: &State,
    ty: &types::ResourceType,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    q: &Query,
    mgr: &str,
) -> Result<Value, ApiError> {
    let current = to_scale(&state.get(ty, ns, name)?);
    let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(format!("error decoding scale: {e}"));
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    let scale: Value = match ct {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            let mut s = current.clone();
            json_patch::patch(&mut s, &p).map_err(|e| bad(&e))?;
            s
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            let mut s = current.clone();
            json_patch::merge(&mut s, &p);
            s
        }
        _ => serde_json::from_slice(body).map_err(|e| bad(&e))?,
    };
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::invalid("Scale", "autoscaling", name, "spec.replicas", "Required value".into()))?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            "spec.replicas",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(rv) =
        scale["metadata"]["resourceVersion"].as_str().filter(|rv| *rv != current["metadata"]["resourceVersion"])
    {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let body = serde_json::to_vec(&patch).unwrap_or_default();
    state.patch(ty, ns, name, "application/merge-patch+json", &body, q, false, mgr).map(|o| to_scale(&o))
}

/// The Table printer of a resource type (a custom resource's from its CRD).
pub(crate) fn printer(state: &State, ty: &types::ResourceType) -> printers::Printer {
    let crd = ty.crd.as_ref().and_then(|name| {
        let crds = state.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
        state.get(&crds, "", name).ok()
    });
    printers::Printer::for_type(ty, crd.as_ref())
}
