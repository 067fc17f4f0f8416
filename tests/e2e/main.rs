//! End-to-end tests: the real `mtcd` and `mtcd-lab` binaries. One test binary (each extra one
//! would link kube again); one module per area.

mod cli;
mod cutover;
mod demo;
mod deps;
mod dim;
mod dvm;
mod hooks;
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
