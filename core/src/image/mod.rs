//! Images by reference: parsing references, finding the images of a registry in objects,
//! and rewriting references when images move. Pure: the copy itself is the host's.

pub mod copies;
pub mod discover;
pub mod reference;
pub mod rewrite;

pub use copies::{ImageCopy, internal_hosts, plan_copies};
pub use discover::{Found, SkipReason, SkippedImage, discover, select};
pub use reference::{ImageRef, ReferenceError};
pub use rewrite::rewrite_object;
