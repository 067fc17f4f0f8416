//! The mtcd lab: two simulated Kubernetes clusters on one machine.
//!
//! Each cluster is a strict simulated API server (`api`), a node agent that runs transfer
//! pods as real processes in their own network and mount namespaces (`node`, `netns`),
//! controllers that talk to the API like any controller would (`controllers`), a router for
//! Routes/Ingresses/LoadBalancers, and a real registry (`registry`). The engine never knows
//! it runs against the lab. See docs/lab.md.

pub mod api;
pub mod controllers;
pub mod lab;
pub mod netns;
pub mod node;
pub mod pki;
pub mod registry;
pub mod router;
pub mod scc;
pub mod seed;
pub mod services;
