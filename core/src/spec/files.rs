//! Bounded reads: every file mtcd reads (the desired file, a kubeconfig and the files it
//! names, a CA bundle, a docker config, seed YAML) goes through [`read_bounded`]. The file
//! must be a regular file (a directory, FIFO, device or socket is named as such and never
//! opened in a way that blocks) of at most a per-kind limit, checked before any byte is read
//! and again while reading (a file that grows after the check is still cut off).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// A desired-state file: 40,000 namespaces with a `namespace_map` are 1.4 MiB.
pub const MAX_DESIRED_FILE: u64 = 16 * MIB;
/// A kubeconfig: hundreds of contexts with embedded certificates fit in a few MiB.
pub const MAX_KUBECONFIG: u64 = 16 * MIB;
/// A PEM bundle of CA certificates (the system bundle is about 200 KiB), or a client
/// certificate or key named by a kubeconfig.
pub const MAX_CA_BUNDLE: u64 = 4 * MIB;
/// A docker `config.json`.
pub const MAX_DOCKER_CONFIG: u64 = 4 * MIB;
/// A token file named by a kubeconfig.
pub const MAX_TOKEN_FILE: u64 = MIB;
/// Multi-document YAML given to `mtcd-lab seed`.
pub const MAX_SEED_YAML: u64 = 64 * MIB;

/// Why a file was not read.
#[derive(Debug)]
pub struct FileError {
    /// What the file is for: "desired-state file", "kubeconfig", "CA bundle"...
    pub what: &'static str,
    pub path: PathBuf,
    /// The size limit for this kind of file, named in every message: the rule is "a
    /// regular file of at most this size".
    pub limit: u64,
    pub problem: FileProblem,
}

/// What was wrong with a file.
#[derive(Debug)]
pub enum FileProblem {
    /// Nothing is at the path.
    NotFound,
    /// The path is a directory, FIFO, device or socket ("a FIFO (named pipe)").
    NotAFile(&'static str),
    /// The file is (or grew) larger than the limit for its kind.
    TooLarge { size: u64, limit: u64 },
    /// The file is not UTF-8 text (for text formats).
    NotText,
    /// The operating system refused (permissions, I/O).
    Io(std::io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, path) = (self.what, self.path.display());
        match &self.problem {
            FileProblem::NotFound => write!(f, "cannot read {what} {path}: it does not exist"),
            FileProblem::NotAFile(kind) => write!(
                f,
                "cannot read {what} {path}: it is {kind}, not a regular file ({} {what} must be a regular file of at most {})",
                article(what),
                mib(self.limit)
            ),
            FileProblem::TooLarge { size, limit } => write!(
                f,
                "cannot read {what} {path}: it is {} ({size} bytes), over the {} limit for {} {what}",
                mib(*size),
                mib(*limit),
                article(what)
            ),
            FileProblem::NotText => write!(f, "cannot read {what} {path}: it is not UTF-8 text"),
            FileProblem::Io(e) => write!(f, "cannot read {what} {path}: {e}"),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            FileProblem::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn article(what: &str) -> &'static str {
    if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

fn mib(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// What a path is when it is not a regular file ("a directory", "a FIFO (named pipe)", ...).
#[cfg(unix)]
pub fn file_kind_problem(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

#[cfg(not(unix))]
pub fn file_kind_problem(meta: &std::fs::Metadata) -> Option<&'static str> {
    if meta.is_file() {
        None
    } else if meta.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file")
    }
}

/// Checks that `path` is a regular file of at most `limit` bytes without opening it (for a
/// path handed to code that reads it itself). Follows symlinks.
pub fn check_bounded(path: &Path, limit: u64, what: &'static str) -> Result<std::fs::Metadata, FileError> {
    let err = |problem| FileError { what, path: path.to_path_buf(), limit, problem };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err(FileProblem::NotFound),
        _ => err(FileProblem::Io(e)),
    })?;
    check_meta(&meta, limit).map_err(err)?;
    Ok(meta)
}

fn check_meta(meta: &std::fs::Metadata, limit: u64) -> Result<(), FileProblem> {
    if let Some(kind) = file_kind_problem(meta) {
        return Err(FileProblem::NotAFile(kind));
    }
    if meta.len() > limit {
        return Err(FileProblem::TooLarge { size: meta.len(), limit });
    }
    Ok(())
}

/// Opens a file for reading without blocking on a FIFO (O_NONBLOCK: a FIFO swapped in after
/// a check still cannot hang the open or the read).
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Reads a whole regular file of at most `limit` bytes. `what` names the file in messages
/// ("desired-state file", "kubeconfig", "CA bundle").
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let err = |problem| FileError { what, path: path.to_path_buf(), limit, problem };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => err(FileProblem::NotFound),
        _ => err(FileProblem::Io(e)),
    };
    // The path first (a FIFO or device is never opened), then the open handle (the path may
    // have changed in between).
    check_bounded(path, limit, what)?;
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_meta(&meta, limit).map_err(err)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(err(FileProblem::TooLarge { size: bytes.len() as u64, limit }));
    }
    Ok(bytes)
}

/// [`read_bounded`] for text formats (TOML, YAML, JSON, PEM).
pub fn read_bounded_string(path: &Path, limit: u64, what: &'static str) -> Result<String, FileError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|_| FileError {
        what,
        path: path.to_path_buf(),
        limit,
        problem: FileProblem::NotText,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_under_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "version = 1\n").unwrap();
        assert_eq!(read_bounded_string(&p, 100, "desired-state file").unwrap(), "version = 1\n");
    }

    #[test]
    fn too_large_files_name_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'a'; 2 * MIB as usize]).unwrap();
        let e = read_bounded(&p, MIB, "CA bundle").unwrap_err().to_string();
        assert!(e.contains("2 MiB (2097152 bytes), over the 1 MiB limit for a CA bundle"), "{e}");
    }

    #[test]
    fn devices_directories_and_fifos_are_named_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(Path::new("/dev/zero"), MIB, "kubeconfig").unwrap_err().to_string();
        assert!(
            e.contains("/dev/zero: it is a character device, not a regular file (a kubeconfig must be a regular file of at most 1 MiB)"),
            "{e}"
        );
        let e = read_bounded(dir.path(), MIB, "kubeconfig").unwrap_err().to_string();
        assert!(e.contains("it is a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = read_bounded(&fifo, MIB, "kubeconfig").unwrap_err().to_string();
        assert!(e.contains("it is a FIFO (named pipe)"), "{e}");
        let e = read_bounded(&dir.path().join("nope"), MIB, "kubeconfig").unwrap_err().to_string();
        assert!(e.ends_with("nope: it does not exist"), "{e}");
    }
}
