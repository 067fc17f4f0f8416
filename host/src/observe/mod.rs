//! Snapshots of both clusters through discovery and paged lists; the only reads the plan
//! needs. Types a user may not list (403) or that vanish (404) are warnings, not failures,
//! as in Crane's export.
