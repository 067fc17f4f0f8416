//! The desired-state file: raw TOML → validated, typed [`model::Spec`].
//!
//! Everything else in mtcd consumes only the validated model; the raw structs and their
//! spans stay inside this module (parse, don't validate).

pub mod model;

pub use model::*;
