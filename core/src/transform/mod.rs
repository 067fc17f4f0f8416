//! From a live source object to the object the destination should hold: built-in cleanup
//! rules, then the user's WebAssembly transforms, then namespace mapping and workload holding.
//! Everything here is pure (no I/O), so the whole plan is computed before the first write.

pub mod hold;
pub mod mapping;
pub mod object;
pub mod rules;
