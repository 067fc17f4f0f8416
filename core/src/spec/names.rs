//! Kubernetes name and selector syntax, checked before anything reaches a cluster.

use super::reader::{Report, Value};

/// RFC 1123 label: what namespaces and migration names must be.
pub fn check_label_str(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 63 {
        return Err(format!("it is {} characters long; the limit is 63", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("only lowercase letters, digits and '-' are allowed (RFC 1123 label)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: what PVC, storage class and most object names must be, and what a
/// DNS domain under which hosts are generated must be. Dot-separated labels, lowercase
/// letters, digits and '-', at most 253 characters.
pub fn check_subdomain_str(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("it is {} characters long; the limit is 253", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("{c:?} is not allowed: only lowercase letters, digits, '-' and '.' (RFC 1123 subdomain)"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("it has an empty part between dots".into());
        }
        if label.len() > 63 {
            return Err(format!("the part {label:?} is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("each part between dots must start and end with a letter or digit".into());
        }
    }
    Ok(())
}

/// An image reference as a pod's `image` takes it: `[host[:port]/]path[:tag][@digest]`,
/// lowercase repository, no whitespace.
pub fn check_image_str(s: &str) -> Result<(), String> {
    if s.trim() != s {
        return Err("it has leading or trailing whitespace".into());
    }
    crate::image::ImageRef::parse(s).map(|_| ()).map_err(|e| e.reason.to_string())
}

/// A value as quoted in a message: long values (a pasted file) are cut.
pub(crate) fn short(s: &str) -> std::borrow::Cow<'_, str> {
    super::error::truncate(s, 100)
}

/// An image reference at `v`, reported with the reason and an example.
pub(crate) fn check_image(r: &mut Report<'_>, v: &Value<'_>, s: String, name: &str) -> Option<String> {
    match check_image_str(&s) {
        Ok(()) => Some(s),
        Err(e) => {
            r.error(
                &v.span(),
                format!("`{name}` {:?} is not an image reference: {e}", short(&s)),
                Some("write images as [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. \"quay.io/konveyor/rsync-transfer:latest\"".into()),
            );
            None
        }
    }
}

pub(crate) fn check_label(r: &mut Report<'_>, v: &Value<'_>, s: &str, what: &str) -> Option<String> {
    match check_label_str(s) {
        Ok(()) => Some(s.to_string()),
        Err(e) => {
            r.error(&v.span(), format!("{s:?} is not a valid {what}: {e}"), None);
            None
        }
    }
}

/// Equality- and set-based label selectors, as `kubectl -l` accepts them.
pub fn check_selector(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("it is empty".into());
    }
    for term in split_terms(s) {
        let term = term.trim();
        let key_ok = |k: &str| {
            let k = k.trim();
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        if let Some(k) = term.strip_prefix('!') {
            if !key_ok(k) {
                return Err(format!("bad key in {term:?}"));
            }
        } else if let Some((k, v)) =
            term.split_once("!=").or_else(|| term.split_once("==")).or_else(|| term.split_once('='))
        {
            if !key_ok(k) || v.contains(['=', '!', '(', ')']) {
                return Err(format!("bad term {term:?}"));
            }
        } else if let Some(i) = term.find(" in (").or_else(|| term.find(" notin (")) {
            if !key_ok(&term[..i]) || !term.ends_with(')') {
                return Err(format!("bad term {term:?}"));
            }
        } else if !key_ok(term) {
            return Err(format!("bad term {term:?}"));
        }
    }
    Ok(())
}

/// Splits on commas outside parentheses (`a in (x,y),b=c`).
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The cluster's own namespaces: `kube-*` (kube-system, kube-public, kube-node-lease, …),
/// `openshift` and `openshift-*`. `default` is not one of them: applications live there.
pub fn is_system_namespace(name: &str) -> bool {
    name.starts_with("kube-") || name == "openshift" || name.starts_with("openshift-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label_str("shop-prod").is_ok());
        assert!(check_label_str("Shop").is_err());
        assert!(check_label_str("-shop").is_err());
        assert!(check_label_str(&"a".repeat(64)).is_err());
        assert!(check_label_str("shop_prod").is_err());
    }

    #[test]
    fn subdomains_and_images() {
        assert!(check_subdomain_str("apps.example.com").is_ok());
        assert!(check_subdomain_str("data-v2").is_ok());
        for bad in ["", "a/b", "Data", "a..b", "-a.b", "a.b-", &"a".repeat(254)] {
            assert!(check_subdomain_str(bad).is_err(), "{bad}");
        }
        for ok in [
            "quay.io/konveyor/rsync-transfer:latest",
            "busybox",
            "127.0.0.1:5000/a/b@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image_str(ok).is_ok(), "{ok}");
        }
        for bad in ["", " busybox", "quay.io/Konveyor/x", "a b", "x:", "quay.io/x:t@sha256:zz"] {
            assert!(check_image_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        for ok in ["app=shop", "app==shop,tier!=cache", "env in (a,b),!legacy", "app"] {
            assert!(check_selector(ok).is_ok(), "{ok}");
        }
        for bad in ["", "app=shop=x", "a b", "env in (a"] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
    }
}
