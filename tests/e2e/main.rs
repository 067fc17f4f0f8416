//! End-to-end tests: the real `mtcd` and `mtcd-lab` binaries. One test binary (each extra one
//! would link kube again); one module per area.

mod cli;
mod cutover;
mod demo;
mod deps;
mod dim;
mod dim_artifacts;
mod dim_selection;
mod dvm;
mod dvm_failures;
mod dvm_nonroot;
mod dvm_preflight;
mod dvm_snapshot;
mod dvm_tree;
mod hooks;
mod incluster;
mod input;
mod lab_api;
mod lab_cluster;
mod lab_exec;
mod lab_kubectl;
mod lab_node;
mod lab_rbac;
mod lab_snapshots;
mod lifecycle;
mod plugin_cli;
mod plugin_oci;
mod resources;
mod safety;
mod velero;
