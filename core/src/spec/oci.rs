//! Plugin component references: `oci://` artifact references and the checks a local
//! `.wasm` passes before anything reads it whole.

use std::fmt;

/// The largest component mtcd reads (file or OCI layer). wasmCloud caps components at
/// 50 MiB; a Rust transform is 0.1–2 MiB, so 20 MiB leaves room and stops a wrong path
/// (a disk image, a log) from being read into memory.
pub const MAX_COMPONENT_SIZE: u64 = 20 * 1024 * 1024;

/// `\0asm`, then the component-model version 0x0d and layer 1. A core module has version 1,
/// layer 0 in the same four bytes.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Why the first bytes of a file are not a WebAssembly component, in words that never
/// quote the bytes (the path might name a secret).
pub fn component_header_problem(head: &[u8]) -> Option<&'static str> {
    if head.len() >= 8 && head[..8] == COMPONENT_HEADER {
        None
    } else if head.len() >= 8 && head[..8] == CORE_MODULE_HEADER {
        Some(
            "is a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)",
        )
    } else if head.len() >= 4 && head[..4] == COMPONENT_HEADER[..4] {
        Some("is WebAssembly of an unsupported version or layer, not a component of the component model")
    } else {
        Some("is not a WebAssembly component (it does not start with the wasm header)")
    }
}

pub use super::files::file_kind_problem;

/// Checks a local component before anything reads it whole: it exists, is a regular file
/// (following symlinks), is at most [`MAX_COMPONENT_SIZE`], and starts with the component
/// header. Only the first 8 bytes are read; the message never contains file bytes.
pub fn check_component_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("plugin file {} does not exist", path.display()));
        }
        Err(e) => return Err(format!("plugin file {}: {e}", path.display())),
    };
    if let Some(kind) = file_kind_problem(&meta) {
        return Err(format!("plugin {} is {kind}, not a .wasm file", path.display()));
    }
    if meta.len() > MAX_COMPONENT_SIZE {
        return Err(format!(
            "plugin file {} is {} bytes, more than the {} MiB a component may have",
            path.display(),
            meta.len(),
            MAX_COMPONENT_SIZE / (1024 * 1024)
        ));
    }
    let mut head = Vec::with_capacity(8);
    super::files::open_nonblocking(path)
        .and_then(|f| f.take(8).read_to_end(&mut head))
        .map_err(|e| format!("plugin file {}: {e}", path.display()))?;
    match component_header_problem(&head) {
        Some(problem) => Err(format!("plugin file {} {problem}", path.display())),
        None => Ok(()),
    }
}

/// `oci://REGISTRY/REPOSITORY[:TAG]@sha256:HEX`: a plugin artifact pinned by the digest
/// of its manifest. The tag is informational (what `mtcd plugin resolve` read); the digest
/// is what is pulled and verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host[:port]`.
    pub registry: String,
    /// `team/plugin`, lowercase.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`; `None` only for references given to `push`/`resolve`.
    pub digest: Option<String>,
}

impl OciReference {
    /// Parses `oci://…`. The digest is optional here; desired files require it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| format!("{text:?} is not an oci:// reference (expected oci://REGISTRY/REPOSITORY:TAG)"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no repository (expected oci://REGISTRY/REPOSITORY:TAG)"))?;
        if registry.is_empty() || registry.contains(|c: char| !(c.is_ascii_alphanumeric() || ".-:[]".contains(c))) {
            return Err(format!("{text:?}: {registry:?} is not a registry host[:port]"));
        }
        // A tag follows the last `:` of the last path segment (a `:` before a `/` is a port).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if repository.is_empty() || !repository.split('/').all(component_ok) {
            return Err(format!(
                "{text:?}: repository {repository:?} must be lowercase letters, digits and . _ - separated by /"
            ));
        }
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(format!("{text:?}: tag {tag:?} is not a valid OCI tag"));
            }
        }
        if let Some(d) = digest
            && !is_sha256_digest(d)
        {
            return Err(format!("{text:?}: digest {d:?} must be sha256: followed by 64 lowercase hex digits"));
        }
        Ok(OciReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The same reference pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> OciReference {
        OciReference { digest: Some(digest.to_string()), ..self.clone() }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_port_tag_and_digest() {
        let r = OciReference::parse(&format!("oci://127.0.0.1:5000/team/add-label:v1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/add-label");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("oci://127.0.0.1:5000/team/add-label:v1@{D}"));
        let r = OciReference::parse("oci://registry.example/p").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
        for bad in ["registry/p", "oci://registry", "oci://reg/Upper", "oci://reg/p@sha256:12", "oci://reg/p:bad tag"] {
            assert!(OciReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_are_told_apart_without_quoting_bytes() {
        assert_eq!(component_header_problem(&COMPONENT_HEADER), None);
        assert!(component_header_problem(&CORE_MODULE_HEADER).unwrap().contains("core WebAssembly module"));
        let shadow = b"root:$6$abc";
        let problem = component_header_problem(shadow).unwrap();
        assert!(!problem.contains("root") && !problem.contains("0x72"), "{problem}");
        assert!(component_header_problem(b"").is_some());
    }

    #[test]
    fn component_files_are_checked_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_component_file(dir.path()).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret").unwrap();
        let err = check_component_file(&secret).unwrap_err();
        assert!(err.contains("not a WebAssembly component") && !err.contains("root"), "{err}");
        let big = dir.path().join("big.wasm");
        std::fs::File::create(&big).unwrap().set_len(MAX_COMPONENT_SIZE + 1).unwrap();
        assert!(check_component_file(&big).unwrap_err().contains("more than the 20 MiB"));
        let ok = dir.path().join("ok.wasm");
        std::fs::write(&ok, COMPONENT_HEADER).unwrap();
        check_component_file(&ok).unwrap();
        assert!(check_component_file(&dir.path().join("nope.wasm")).unwrap_err().contains("does not exist"));
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_named_as_such() {
        let err = check_component_file(std::path::Path::new("/dev/null")).unwrap_err();
        assert!(err.contains("character device"), "{err}");
    }
}
