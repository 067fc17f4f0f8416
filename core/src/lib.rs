//! mtcd's pure core: what a migration is (`spec`), what mtcd does to an object on its way
//! (`transform`), which images live in a registry mtcd copies (`image`), and the plan that
//! compares what should be with what is (`plan`). Nothing here talks to a cluster, a
//! registry or a plugin runtime, so all of it is tested in milliseconds; the `mtcd` crate
//! observes the clusters, runs the plugins and executes the plan.

pub mod image;
pub mod labels;
pub mod plan;
pub mod snapshot;
pub mod spec;
pub mod transform;
