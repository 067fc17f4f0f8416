//! `?watch=true`: replay from the history, then follow live events, one JSON line per event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::error::ApiError;
use super::rest::{Query, State};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType};
use super::types::ResourceType;

/// How events are written: JSON lines, or length-delimited protobuf frames for clients
/// that prefer protobuf (built-in kinds only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    Protobuf,
}

impl Framing {
    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Json => "application/json",
            Framing::Protobuf => super::protobuf::WATCH_MEDIA_TYPE,
        }
    }

    fn event(self, kind: &str, object: &Value) -> Bytes {
        match self {
            Framing::Json => {
                let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
                s.push(b'\n');
                Bytes::from(s)
            }
            Framing::Protobuf => Bytes::from(super::protobuf::watch_frame(kind, object)),
        }
    }
}

/// Starts a watch; events are written to the returned channel until the client goes away,
/// the timeout passes, or the watch falls behind (then an ERROR 410 ends it, as on a real server).
pub fn start(
    state: Arc<State>,
    ty: Arc<ResourceType>,
    ns: Option<String>,
    q: &Query,
    view: super::View,
    framing: Framing,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let line = move |kind: &str, object: &Value| framing.event(kind, object);
    let view = {
        let state = state.clone();
        let ty = ty.clone();
        let printer = matches!(view, super::View::Table).then(|| super::printer(&state, &ty));
        move |o: &Value| match (view, &printer) {
            (super::View::Metadata, _) => super::partial(o),
            // `kubectl get -w`: each event carries a one-row Table.
            (super::View::Table, Some(p)) => p.table(o),
            _ => state.render(&ty, o),
        }
    };
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), &ty.kind)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let gr = ty.gr();
    let matches = {
        let labels = labels.clone();
        let fields = fields.clone();
        move |o: &Value| labels.matches(o) && fields.matches(o)
    };
    // Snapshot + subscribe under one lock so no event falls between them.
    let (initial, replay, mut sub, start_rv) = {
        let store = state.lock();
        let sub = store.subscribe();
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            let objs: Vec<Value> =
                store.range(&gr, ns.as_deref(), None).filter(|(_, o)| matches(o)).map(|(_, o)| view(o)).collect();
            (objs, Vec::new(), sub, store.rv)
        } else {
            let rv: u64 =
                rv_param.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion: {rv_param}")))?;
            match store.events_since(rv) {
                Some(evts) => (Vec::new(), evts, sub, store.rv),
                None => {
                    let status =
                        ApiError::Gone(format!("too old resource version: {rv} ({})", store.compacted)).to_status();
                    let _ = tx.try_send(line("ERROR", &status));
                    return Ok(rx);
                }
            }
        }
    };
    let api_version = ty.api_version();
    let kind = ty.kind.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        for o in &initial {
            if tx.send(line("ADDED", o)).await.is_err() {
                return;
            }
        }
        let bookmark = |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": meta}))
        };
        if send_initial && bookmarks && tx.send(bookmark(start_rv, true)).await.is_err() {
            return;
        }
        let mut last_rv = start_rv;
        let project = |ev: &Event| -> Option<Bytes> {
            if ev.gr != gr || ns.as_deref().is_some_and(|n| n != ev.ns) {
                return None;
            }
            let now_m = ev.kind != EventType::Deleted && matches(&ev.object);
            let was_m = ev.old.as_deref().is_some_and(&matches);
            let kind = match ev.kind {
                EventType::Deleted => (was_m || matches(&ev.object)).then_some("DELETED"),
                EventType::Added => now_m.then_some("ADDED"),
                EventType::Modified => match (was_m, now_m) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                },
            }?;
            Some(line(kind, &view(&ev.object)))
        };
        for ev in &replay {
            last_rv = ev.rv;
            if let Some(b) = project(ev)
                && tx.send(b).await.is_err()
            {
                return;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    let rv = state.lock().rv;
                    if tx.send(bookmark(rv.max(last_rv), false)).await.is_err() { return; }
                }
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(b) = project(&ev)
                            && tx.send(b).await.is_err() { return; }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let status = ApiError::Gone("the watch fell behind; relist".into()).to_status();
                        let _ = tx.send(line("ERROR", &status)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(rx)
}
