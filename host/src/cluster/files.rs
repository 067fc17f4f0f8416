//! The kubeconfig and the files it names (CA bundle, client certificate and key, token
//! file), read within bounds (`spec::files`): kube's own readers would open a FIFO and wait,
//! or read `/dev/zero` until memory runs out.

use std::path::Path;

use kube::config::Kubeconfig;

use super::ClusterError;
use crate::spec::files::{MAX_CA_BUNDLE, MAX_KUBECONFIG, MAX_TOKEN_FILE};

/// Reads a kubeconfig file: a regular file of at most [`MAX_KUBECONFIG`] bytes, read here
/// and parsed from the bytes (a UTF-8 or UTF-16 byte-order mark is understood, as kube's
/// reader does). Relative file references resolve against its folder, as kubectl does.
pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, ClusterError> {
    let bytes = crate::spec::read_bounded(path, MAX_KUBECONFIG, "kubeconfig")
        .map_err(|source| ClusterError::File { context: None, source })?;
    let text = decode(bytes).ok_or_else(|| ClusterError::File {
        context: None,
        source: crate::spec::FileError {
            what: "kubeconfig",
            path: path.to_path_buf(),
            limit: MAX_KUBECONFIG,
            problem: crate::spec::FileProblem::NotText,
        },
    })?;
    let mut kubeconfig = Kubeconfig::from_yaml(&text)
        .map_err(|source| ClusterError::Kubeconfig { path: path.display().to_string(), source })?;
    // A bare file name's folder is the working directory (kubectl makes the path absolute).
    let absolute_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(dir) = absolute_path.parent() {
        let absolute = |file: &mut Option<String>| {
            if let Some(f) = file.as_deref()
                && Path::new(f).is_relative()
                && let Some(abs) = dir.join(f).to_str()
            {
                *file = Some(abs.to_string());
            }
        };
        for c in kubeconfig.clusters.iter_mut().filter_map(|n| n.cluster.as_mut()) {
            absolute(&mut c.certificate_authority);
        }
        for a in kubeconfig.auth_infos.iter_mut().filter_map(|n| n.auth_info.as_mut()) {
            absolute(&mut a.client_certificate);
            absolute(&mut a.client_key);
            absolute(&mut a.token_file);
            // As client-go: an exec command is a path only when it contains a separator.
            if let Some(exec) = a.exec.as_mut()
                && exec.command.as_deref().is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
            {
                absolute(&mut exec.command);
            }
        }
    }
    Ok(kubeconfig)
}

/// UTF-8 (a byte-order mark dropped) or UTF-16LE with its byte-order mark.
fn decode(bytes: Vec<u8>) -> Option<String> {
    match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => {
            let units: Vec<u16> = rest.chunks(2).map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
            String::from_utf16(&units).ok()
        }
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).ok(),
        _ => String::from_utf8(bytes).ok(),
    }
}

/// Reads the files the context's cluster and user name (CA bundle, client certificate and
/// key) within bounds and puts their contents inline, so kube never opens them itself; a
/// token file (re-read by kube when it rotates) is checked, not inlined.
pub(super) fn inline_context_files(kubeconfig: &mut Kubeconfig, context: &str) -> Result<(), ClusterError> {
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let err = |source| ClusterError::File { context: Some(context.to_string()), source };
    let Some(ctx) = kubeconfig.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.clone()) else {
        return Ok(());
    };
    for named in kubeconfig.clusters.iter_mut().filter(|n| n.name == ctx.cluster) {
        if let Some(c) = named.cluster.as_mut()
            && c.certificate_authority_data.is_none()
            && let Some(file) = c.certificate_authority.take()
        {
            let pem = crate::spec::read_bounded(Path::new(&file), MAX_CA_BUNDLE, "certificate-authority file")
                .map_err(err)?;
            c.certificate_authority_data = Some(b64(pem));
        }
    }
    let Some(user) = ctx.user.as_deref() else { return Ok(()) };
    for named in kubeconfig.auth_infos.iter_mut().filter(|n| n.name == user) {
        let Some(a) = named.auth_info.as_mut() else { continue };
        if a.client_certificate_data.is_none()
            && let Some(file) = a.client_certificate.take()
        {
            let pem =
                crate::spec::read_bounded(Path::new(&file), MAX_CA_BUNDLE, "client-certificate file").map_err(err)?;
            a.client_certificate_data = Some(b64(pem));
        }
        if a.client_key_data.is_none()
            && let Some(file) = a.client_key.take()
        {
            let pem = crate::spec::read_bounded(Path::new(&file), MAX_CA_BUNDLE, "client-key file").map_err(err)?;
            a.client_key_data = Some(b64(pem).into());
        }
        if a.token.is_none()
            && let Some(file) = a.token_file.as_deref()
        {
            crate::spec::files::check_bounded(Path::new(file), MAX_TOKEN_FILE, "token file").map_err(err)?;
        }
    }
    Ok(())
}
