//! End-to-end tests: the real `mtcd` and `mtcd-lab` binaries. One test binary (each extra one
//! would link kube again); one module per area.

mod cli;
mod dim;
mod dvm;
mod lab_api;
mod lab_node;
mod lifecycle;
mod plugin_cli;
mod plugin_oci;
mod resources;
mod velero;
