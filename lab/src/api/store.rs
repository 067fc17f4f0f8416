//! The in-memory object store: one map per resource, ordered by (namespace, name) so a
//! namespace is a range scan, a global resourceVersion counter, and a bounded event history
//! that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::types::Gr;

/// How many past events a watch can resume from before it gets 410 Gone.
const HISTORY: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub gr: Gr,
    pub ns: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before the change, so a selector watch can tell "stopped matching".
    pub old: Option<Arc<Value>>,
}

pub type Key = (String, String);

pub struct Store {
    pub rv: u64,
    objects: HashMap<Gr, BTreeMap<Key, Arc<Value>>>,
    ns_count: HashMap<String, usize>,
    history: VecDeque<Arc<Event>>,
    /// Highest resourceVersion no longer in `history`.
    pub compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
    /// Allocated Service cluster IPs (host-order u32) → owning service `ns/name`.
    pub cluster_ips: HashMap<u32, String>,
    /// Allocated node ports → owning service `ns/name`.
    pub node_ports: HashMap<u16, String>,
    /// How many stored objects name each uid in ownerReferences, so deleting an object with
    /// no dependents costs no scan.
    owner_refs: HashMap<String, usize>,
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"].as_array().into_iter().flatten().filter_map(|r| r["uid"].as_str())
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Self {
            rv: 1,
            objects: HashMap::new(),
            ns_count: HashMap::new(),
            history: VecDeque::new(),
            compacted: 1,
            tx,
            cluster_ips: HashMap::new(),
            node_ports: HashMap::new(),
            owner_refs: HashMap::new(),
        }
    }

    pub fn get(&self, gr: &Gr, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(gr)?.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Objects of a resource, in one namespace or (ns = None) all, from `after` (exclusive).
    pub fn range<'a>(
        &'a self,
        gr: &Gr,
        ns: Option<&'a str>,
        after: Option<&Key>,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a> {
        let Some(map) = self.objects.get(gr) else {
            return Box::new(std::iter::empty());
        };
        use std::ops::Bound::*;
        let start = match (after, ns) {
            (Some(k), _) => Excluded(k.clone()),
            (None, Some(ns)) => Included((ns.to_string(), String::new())),
            (None, None) => Unbounded,
        };
        let it = map.range((start, Unbounded));
        match ns {
            Some(ns) => Box::new(it.take_while(move |((n, _), _)| n == ns)),
            None => Box::new(it),
        }
    }

    pub fn namespace_is_empty(&self, ns: &str) -> bool {
        self.ns_count.get(ns).copied().unwrap_or(0) == 0
    }

    /// Every (resource, name) in a namespace, for namespace deletion.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<(Gr, String)> {
        let mut out = Vec::new();
        for (gr, map) in &self.objects {
            for ((n, name), _) in map.range((ns.to_string(), String::new())..) {
                if n != ns {
                    break;
                }
                out.push((gr.clone(), name.clone()));
            }
        }
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Events after `rv`, or None when they were compacted away (410 Gone).
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// Whether any stored object has an ownerReference to `uid`.
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.owner_refs.get(uid).is_some_and(|c| *c > 0)
    }

    fn index_owners(&mut self, old: Option<&Value>, new: Option<&Value>) {
        if let Some(old) = old {
            for u in owner_uids(old) {
                if let Some(c) = self.owner_refs.get_mut(u) {
                    *c -= 1;
                    if *c == 0 {
                        self.owner_refs.remove(u);
                    }
                }
            }
        }
        if let Some(new) = new {
            for u in owner_uids(new) {
                *self.owner_refs.entry(u.to_string()).or_default() += 1;
            }
        }
    }

    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` (whose metadata.resourceVersion the caller already set to `rv`).
    pub fn put(&mut self, gr: &Gr, ns: &str, name: &str, obj: Value, rv: u64) -> Arc<Value> {
        let obj = Arc::new(obj);
        let key = (ns.to_string(), name.to_string());
        let old = self.objects.entry(gr.clone()).or_default().insert(key, obj.clone());
        self.index_owners(old.as_deref(), Some(&obj));
        if old.is_none() && !ns.is_empty() {
            *self.ns_count.entry(ns.to_string()).or_default() += 1;
        }
        let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.emit(Event { rv, gr: gr.clone(), ns: ns.to_string(), kind, object: obj.clone(), old });
        obj
    }

    /// Removes an object; the DELETED event carries `obj` (with the deletion's resourceVersion).
    pub fn remove(&mut self, gr: &Gr, ns: &str, name: &str, obj: Value, rv: u64) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(gr)?.remove(&(ns.to_string(), name.to_string()))?;
        self.index_owners(Some(&old), None);
        if !ns.is_empty()
            && let Some(c) = self.ns_count.get_mut(ns)
        {
            *c -= 1;
        }
        let obj = Arc::new(obj);
        self.emit(Event {
            rv,
            gr: gr.clone(),
            ns: ns.to_string(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: Some(old),
        });
        Some(obj)
    }

    fn emit(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        let _ = self.tx.send(ev);
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_replays_and_expires() {
        let mut s = Store::new();
        let gr: Gr = (String::new(), "configmaps".into());
        let first = s.next_rv();
        s.put(&gr, "default", "a", json!({"metadata": {"name": "a"}}), first);
        let rv2 = s.next_rv();
        s.put(&gr, "default", "a", json!({"metadata": {"name": "a", "labels": {"x": "y"}}}), rv2);
        let evts = s.events_since(first).unwrap();
        assert_eq!(evts.len(), 1);
        assert_eq!(evts[0].kind, EventType::Modified);
        for _ in 0..HISTORY {
            let rv = s.next_rv();
            s.put(&gr, "default", "b", json!({}), rv);
        }
        assert!(s.events_since(first).is_none(), "compacted history answers 410 Gone");
        assert!(s.events_since(s.rv).unwrap().is_empty());
    }

    #[test]
    fn namespace_ranges_do_not_leak_into_neighbours() {
        let mut s = Store::new();
        let gr: Gr = (String::new(), "configmaps".into());
        for (ns, name) in [("a", "1"), ("ab", "2"), ("b", "3")] {
            let rv = s.next_rv();
            s.put(&gr, ns, name, json!({}), rv);
        }
        let names: Vec<String> = s.range(&gr, Some("a"), None).map(|((_, n), _)| n.clone()).collect();
        assert_eq!(names, vec!["1"]);
        assert_eq!(s.range(&gr, None, None).count(), 3);
        assert_eq!(s.keys_in_namespace("ab").len(), 1);
    }
}
