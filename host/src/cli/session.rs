//! Everything a cluster command needs before it can plan: the validated desired state, the
//! kubeconfig, and a live client per side. Problems are found in that order so the cheapest
//! ones are reported first and nothing is contacted for a broken file.

use std::path::Path;

use super::Global;
use crate::cluster;
use crate::engine::Engine;
use crate::progress::Events;
use crate::spec;

pub struct Session {
    pub engine: Engine,
}

impl Session {
    pub async fn open(global: &Global, file: &Path, migrations: &[String], events: Events) -> anyhow::Result<Session> {
        let mut spec = spec::load(file)?;
        spec.select(migrations)?;
        let kubeconfig_path = cluster::kubeconfig_path(global.kubeconfig.as_deref());
        // `context = "in-cluster"` on both sides (a namespace clone inside the cluster the pod
        // runs in) needs no kubeconfig at all.
        let kubeconfig = if spec::contexts::needs_kubeconfig(&spec) {
            let kubeconfig = cluster::read_kubeconfig(&kubeconfig_path)?;
            spec::contexts::check(&spec, &kubeconfig_path, &cluster::context_names(&kubeconfig))?;
            Some(kubeconfig)
        } else {
            None
        };
        let (source, destination) = tokio::join!(
            cluster::connect_context(kubeconfig.as_ref(), &kubeconfig_path, &spec.source.context),
            cluster::connect_context(kubeconfig.as_ref(), &kubeconfig_path, &spec.destination.context),
        );
        let (source, destination) = match (source, destination) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), Ok(_)) => return Err(anyhow::Error::new(e).context("cannot reach the source cluster")),
            (Ok(_), Err(e)) => return Err(anyhow::Error::new(e).context("cannot reach the destination cluster")),
            (Err(s), Err(d)) => anyhow::bail!("cannot reach either cluster:\n  source: {s}\n  destination: {d}"),
        };
        Ok(Session { engine: Engine::new(spec, source, destination, events)? })
    }
}
