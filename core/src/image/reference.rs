//! Image references (`host[:port]/path[:tag][@sha256:…]`), parsed once into a typed value.
//!
//! The grammar follows the distribution reference rules: the first path component is a
//! registry host only when it looks like one (has a `.` or `:`, or is `localhost`);
//! otherwise the image lives on Docker Hub. Hub images are never internal, so the Hub
//! normalisation only matters for telling them apart.

use std::fmt;

/// A reference that did not parse; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

/// One image: where it lives and which content is meant.
///
/// Both `tag` and `digest` may be set: an ImageStream tag whose current item is a digest.
/// The digest then says what to copy and the tag what to call it on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// `host[:port]`, lower-cased.
    pub registry: String,
    /// Repository path inside the registry (`ns/app`).
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Docker Hub's canonical host; images without a registry component live there.
pub const DOCKER_HUB: &str = "docker.io";

impl ImageRef {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError { reference: text.to_string(), reason };
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return Err(err("empty"));
        }
        if text_trim.chars().any(char::is_whitespace) {
            return Err(err("contains whitespace"));
        }
        let (rest, digest) = match text_trim.split_once('@') {
            Some((rest, digest)) => {
                let (algo, hex) = digest.split_once(':').ok_or_else(|| err("digest must be algorithm:hex"))?;
                if algo.is_empty()
                    || hex.len() < 32
                    || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                {
                    return Err(err("digest must be algorithm:hex (lower-case hex)"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text_trim, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if tag.is_empty()
                    || tag.len() > 128
                    || !tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    return Err(err("tag must be 1-128 of [A-Za-z0-9_.-]"));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_ascii_lowercase(), path.to_string())
            }
            _ if !name.contains('/') => (DOCKER_HUB.to_string(), format!("library/{name}")),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
            })
        {
            return Err(err("repository must be lower-case path components"));
        }
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// What to ask a registry for: the digest when known (content-addressed), else the tag,
    /// else `latest` (the implicit tag).
    pub fn reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same reference on another registry and repository.
    pub fn moved(&self, registry: &str, repository: String) -> ImageRef {
        ImageRef {
            registry: registry.to_ascii_lowercase(),
            repository,
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Maps the namespace component of a repository (`src-ns/app` → `dst-ns/app`); a
/// repository whose first component is not a mapped namespace is kept as it is.
pub fn map_repository(repository: &str, namespace_map: &indexmap::IndexMap<String, String>) -> String {
    match repository.split_once('/') {
        Some((ns, rest)) => match namespace_map.get(ns) {
            Some(to) => format!("{to}/{rest}"),
            None => repository.to_string(),
        },
        None => repository.to_string(),
    }
}

/// Registry hosts compare without case and without a default port spelled out.
pub fn same_host(a: &str, b: &str) -> bool {
    fn norm(h: &str) -> String {
        let h = h.trim().trim_end_matches('/').to_ascii_lowercase();
        let h = h.strip_prefix("https://").or_else(|| h.strip_prefix("http://")).unwrap_or(&h).to_string();
        h.strip_suffix(":443").map(str::to_string).unwrap_or(h)
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let r = ImageRef::parse(&format!("Reg.example:5000/ns/app:v1@{D}")).unwrap();
        assert_eq!(r.registry, "reg.example:5000");
        assert_eq!(r.repository, "ns/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("reg.example:5000/ns/app:v1@{D}"));
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/ns/app").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), "latest");
    }

    #[test]
    fn hub_images_are_normalised() {
        assert_eq!(ImageRef::parse("nginx").unwrap().to_string(), "docker.io/library/nginx");
        let r = ImageRef::parse("bitnami/redis:7").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), (DOCKER_HUB, "bitnami/redis"));
        let r = ImageRef::parse("localhost/app:1").unwrap();
        assert_eq!(r.registry, "localhost");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "a b", "reg.io/NS/app", "reg.io/ns/app:", "reg.io/ns/app@sha256:xyz", "reg.io//app"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn maps_namespace_component_only() {
        let map: indexmap::IndexMap<String, String> = [("shop".to_string(), "shop-new".to_string())].into();
        assert_eq!(map_repository("shop/web", &map), "shop-new/web");
        assert_eq!(map_repository("shop/a/b", &map), "shop-new/a/b");
        assert_eq!(map_repository("other/web", &map), "other/web");
        assert_eq!(map_repository("shopping/web", &map), "shopping/web");
    }

    #[test]
    fn hosts_compare_loosely() {
        assert!(same_host("Reg.IO", "reg.io"));
        assert!(same_host("reg.io:443", "https://reg.io/"));
        assert!(!same_host("reg.io:5000", "reg.io"));
    }
}
