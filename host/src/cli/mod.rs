//! The `mtcd` command line. Not built yet: the foundation issue fills it in.

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    eprintln!("mtcd: not built yet");
    1
}
