//! One rustls crypto provider for the whole process.
//!
//! kube, reqwest and oci-client are all built on rustls without a bundled provider, so that
//! only `ring` is compiled (aws-lc would add minutes to every clean build). rustls then needs
//! the provider installed once per process, before the first TLS client is built.

/// Installs `ring` as the process-wide rustls provider. Safe to call any number of times.
pub fn init() {
    // A second install returns Err with the provider already there; that is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
