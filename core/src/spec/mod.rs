//! The desired-state file: raw TOML → validated, typed [`model::Spec`].
//!
//! Everything else in mtcd consumes only the validated model; spans and raw TOML stay inside
//! this module (parse, don't validate). Checks that need the kubeconfig (contexts) live in
//! [`contexts`], because they run after the file itself is known to be good.

pub mod contexts;
pub mod error;
pub mod files;
pub mod model;
mod names;
pub mod oci;
mod parse;
mod reader;
mod select;

pub use error::{Location, MAX_OUTSIDE_TEXT, MAX_PROBLEMS, Problem, Problems, SpecError, truncate};
pub use files::{FileError, FileProblem, read_bounded, read_bounded_string};
pub use model::*;
pub use names::{check_label_str, check_selector};
pub use oci::{MAX_COMPONENT_SIZE, OciReference, check_component_file};
pub use parse::{DEFAULT_TRANSFER_IMAGE, load, parse};
pub use reader::parse_size;
pub use select::UnknownMigration;

#[cfg(test)]
mod tests;
