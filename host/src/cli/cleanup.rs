//! `mtcd cleanup`: remove every transfer object mtcd created for the file's migrations, on
//! both clusters, found by label — so it works after mtcd was killed mid-transfer.

use super::{Exit, Output, Session};
use crate::actions::dvm;

pub async fn run(session: &Session) -> anyhow::Result<Exit> {
    let mut total = 0;
    for m in &session.spec.migrations {
        for ns in &m.namespaces {
            total += dvm::cleanup_namespace(&session.source, ns, &m.name).await?;
        }
        for ns in m.namespace_map.values() {
            total += dvm::cleanup_namespace(&session.destination, ns, &m.name).await?;
        }
    }
    match session.output {
        Output::Json => println!("{}", serde_json::json!({"removed": total})),
        Output::Human => println!("Removed {total} transfer object(s)."),
    }
    Ok(Exit::Success)
}
