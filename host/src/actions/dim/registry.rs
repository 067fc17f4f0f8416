//! A distribution-API client: the transport, authentication and retry policy the copy
//! engine builds on.
//!
//! reqwest is used directly rather than oci-client because the copy needs a streaming
//! monolithic PUT fed by another registry's GET, byte-exact manifests and its own
//! concurrency; oci-client either buffers whole blobs or splits a stream into one PATCH per
//! frame (shared/reference/dataplane.md §2).
//!
//! Authentication is learned from the registry: the first request goes out anonymously (or
//! with the scheme learned earlier), a 401 names the scheme in `WWW-Authenticate`, and
//! bearer tokens are fetched from the realm once per scope set and cached. Credentials
//! never reach logs: [`Credentials`] has a redacting `Debug`, and errors carry only the
//! registry, repository and reference.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::Deserialize;

use super::DimError;
use super::copy::RawManifest;
use crate::spec::{Registry, RegistryAuth, RegistryTls};

/// What the client presents when a registry asks.
#[derive(Clone)]
pub(crate) enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token used as is (docker config `registrytoken`).
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The scheme a registry asked for in its last 401.
#[derive(Debug, Clone, PartialEq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Scope set → `Authorization` value.
    tokens: HashMap<String, String>,
}

/// How many times a request that failed with a connection error or 5xx is sent again.
const DEFAULT_RETRIES: u32 = 3;

/// How long a learned fact that can change (a blob seen missing, a tag listing, whether the
/// referrers API is served) is trusted: long enough to carry from `plan` to the `apply` that
/// follows it in the same process, short against `apply --watch` cycles.
const FACTS_TTL: Duration = Duration::from_secs(60);
/// Content-addressed manifests kept (they never change): beyond this, the cache starts over.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

/// What a client learned about its registry, so the copy that follows a plan does not ask
/// again: manifests by digest (immutable), blobs a repository lacked, `sha256-*` tag
/// listings, and whether the referrers API is served.
#[derive(Default)]
pub(crate) struct Facts {
    manifests: Mutex<ManifestCache>,
    absent: Mutex<HashMap<RepoDigest, Instant>>,
    tags: Mutex<HashMap<String, (Instant, TagListing)>>,
    referrers_api: Mutex<Option<(bool, Instant)>>,
}

/// A repository and a digest in it.
type RepoDigest = (String, String);

/// A repository's tag listing, filled by the first caller that needs it; `None` when the
/// registry would not list them.
pub(crate) type TagListing = Arc<tokio::sync::OnceCell<Option<Arc<HashSet<String>>>>>;

/// Manifests by repository and digest, with their total size.
#[derive(Default)]
struct ManifestCache {
    bytes: usize,
    by_digest: HashMap<RepoDigest, RawManifest>,
}

impl Facts {
    pub(crate) fn manifest(&self, repo: &str, digest: &str) -> Option<RawManifest> {
        self.manifests.lock().unwrap().by_digest.get(&(repo.to_string(), digest.to_string())).cloned()
    }

    pub(crate) fn keep_manifest(&self, repo: &str, m: &RawManifest) {
        let mut cache = self.manifests.lock().unwrap();
        if cache.bytes + m.bytes.len() > MANIFEST_CACHE_BYTES {
            *cache = ManifestCache::default();
        }
        if cache.by_digest.insert((repo.to_string(), m.digest.clone()), m.clone()).is_none() {
            cache.bytes += m.bytes.len();
        }
    }

    /// `repo` lacked `digest` a moment ago (so the copy can go straight to the upload).
    pub(crate) fn absent(&self, repo: &str, digest: &str) -> bool {
        let key = (repo.to_string(), digest.to_string());
        let mut absent = self.absent.lock().unwrap();
        match absent.get(&key) {
            Some(at) if at.elapsed() < FACTS_TTL => true,
            Some(_) => {
                absent.remove(&key);
                false
            }
            None => false,
        }
    }

    pub(crate) fn set_absent(&self, repo: &str, digest: &str, absent: bool) {
        let key = (repo.to_string(), digest.to_string());
        let mut map = self.absent.lock().unwrap();
        if absent {
            map.insert(key, Instant::now());
        } else {
            map.remove(&key);
        }
    }

    /// The (shared, lazily filled) tag listing of `repo`, fresh for [`FACTS_TTL`].
    pub(crate) fn tags(&self, repo: &str) -> TagListing {
        let mut tags = self.tags.lock().unwrap();
        let entry = tags.entry(repo.to_string()).or_insert_with(|| (Instant::now(), Default::default()));
        if entry.0.elapsed() >= FACTS_TTL {
            *entry = (Instant::now(), Default::default());
        }
        entry.1.clone()
    }

    /// Whether the registry serves the referrers API, if known.
    pub(crate) fn referrers_api(&self) -> Option<bool> {
        match *self.referrers_api.lock().unwrap() {
            Some((yes, at)) if at.elapsed() < FACTS_TTL => Some(yes),
            _ => None,
        }
    }

    pub(crate) fn set_referrers_api(&self, yes: bool) {
        *self.referrers_api.lock().unwrap() = Some((yes, Instant::now()));
    }
}

/// One registry endpoint with its credentials and TLS settings. Cheap to share by
/// reference: the connection pool and token cache are inside.
pub struct RegistryClient {
    /// `host[:port]` as configured; what errors name.
    address: String,
    /// `http://host[:port]` or `https://host[:port]`.
    base: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    /// Serialises token fetches so blobs starting together share one token request.
    token_fetch: tokio::sync::Mutex<()>,
    retries: u32,
    backoff: Duration,
    facts: Facts,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient").field("base", &self.base).field("creds", &self.creds).finish_non_exhaustive()
    }
}

/// A request's access needs, in the token-scope vocabulary.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    Pull,
    Push,
}

impl RegistryClient {
    /// Builds a client for a registry of the desired state. `token` is the kubeconfig user's
    /// bearer token, required when the registry's auth is `KubeconfigToken` (OpenShift's
    /// registry accepts it as the password of basic auth and of its token endpoint).
    pub fn new(reg: &Registry, token: Option<String>) -> Result<Self, DimError> {
        crate::tls::init();
        let address = reg.address.trim().trim_end_matches('/').to_string();
        let config = |reason: String| DimError::Config { registry: address.clone(), reason };
        let creds = match &reg.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::KubeconfigToken => Some(Credentials::Basic {
                // OpenShift ignores the user name when the password is a token.
                username: "mtcd".to_string(),
                password: token
                    .ok_or_else(|| config("auth is the kubeconfig token but the context has no bearer token".into()))?,
            }),
            RegistryAuth::BasicEnv { username_env, password_env } => {
                let get = |name: &str| {
                    std::env::var(name)
                        .map_err(|_| config(format!("environment variable {name} (registry credentials) is not set")))
                };
                Some(Credentials::Basic { username: get(username_env)?, password: get(password_env)? })
            }
            RegistryAuth::DockerConfig(path) => Some(docker_config_credentials(path, &address).map_err(config)?),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("mtcd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // A registry that stops sending mid-blob must not hang the migration.
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            // Over TLS, registries usually speak HTTP/2 (ALPN): every request of a run then
            // shares one connection, and an adaptive window keeps a blob stream from being
            // held to the 64 KiB default window on links with latency.
            .http2_adaptive_window(true)
            .tcp_nodelay(true);
        let scheme = match &reg.tls {
            RegistryTls::Insecure => "http",
            RegistryTls::Verify => "https",
            RegistryTls::CaBundle(path) => {
                let pem = crate::spec::read_bounded(path, crate::spec::files::MAX_CA_BUNDLE, "CA bundle")
                    .map_err(|e| config(e.to_string()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| config(format!("CA bundle {} is not PEM certificates: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(config(format!("CA bundle {} holds no certificate", path.display())));
                }
                builder = builder.tls_certs_merge(certs);
                "https"
            }
        };
        if scheme == "https" {
            // Never downgrade: a redirect to plain HTTP from a TLS registry is refused.
            builder = builder.https_only(true);
        }
        let http = builder.build().map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;
        Ok(RegistryClient {
            base: format!("{scheme}://{address}"),
            address,
            http,
            creds,
            auth: Mutex::new(AuthState::default()),
            token_fetch: tokio::sync::Mutex::new(()),
            retries: DEFAULT_RETRIES,
            backoff: Duration::from_millis(200),
            facts: Facts::default(),
        })
    }

    /// Changes the retry policy (attempts after the first, first backoff; doubled each time).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The configured `host[:port]`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves an upload `Location` (absolute or relative to the registry).
    pub(crate) fn resolve(&self, location: &str) -> Result<url::Url, url::ParseError> {
        url::Url::parse(&self.base)?.join(location)
    }

    pub(crate) fn facts(&self) -> &Facts {
        &self.facts
    }

    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.backoff * 2u32.saturating_pow(attempt.min(6))
    }

    /// Sends a request without a streaming body, authenticating on 401 and retrying
    /// connection errors and 5xx/429 with backoff. Statuses are left to the caller, which
    /// knows what a 404 means for its operation.
    pub(crate) async fn send(
        &self,
        scopes: &[(&str, Access)],
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, reqwest::Error> {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let auth = self.authorization(scopes).await;
            let mut req = build(&self.http);
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    if !self.learn(&resp, scopes, auth.as_deref()).await {
                        return Ok(resp);
                    }
                }
                Ok(resp) if is_retryable_status(resp.status()) && attempt < self.retries => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < self.retries && !e.is_builder() => {
                    tracing::debug!(registry = %self.address, error = %e, attempt, "retrying request");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a request whose body can be sent once (a stream): no retry here; the caller
    /// restarts the whole transfer. A 401 drops the cached token so the restart re-auths.
    pub(crate) async fn send_once(
        &self,
        scopes: &[(&str, Access)],
        req: RequestBuilder,
    ) -> Result<Response, reqwest::Error> {
        let auth = self.authorization(scopes).await;
        let req = match &auth {
            Some(a) => req.header(header::AUTHORIZATION, a),
            None => req,
        };
        let resp = req.send().await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.auth.lock().unwrap().tokens.remove(&scope_key(scopes));
        }
        Ok(resp)
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The `Authorization` value for these scopes, fetching a bearer token when the
    /// registry is known to want one. `None`: go anonymous (first contact, or no creds).
    async fn authorization(&self, scopes: &[(&str, Access)]) -> Option<String> {
        let key = scope_key(scopes);
        let challenge = {
            let st = self.auth.lock().unwrap();
            if let Some(t) = st.tokens.get(&key) {
                return Some(t.clone());
            }
            st.challenge.clone()
        };
        match challenge? {
            Challenge::Basic => self.basic_header(),
            Challenge::Bearer { realm, service } => {
                let _one_at_a_time = self.token_fetch.lock().await;
                if let Some(t) = self.auth.lock().unwrap().tokens.get(&key) {
                    return Some(t.clone());
                }
                let value = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                self.auth.lock().unwrap().tokens.insert(key, value.clone());
                Some(value)
            }
        }
    }

    fn basic_header(&self) -> Option<String> {
        match self.creds.as_ref()? {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }

    /// Reads the challenge of a 401 and prepares credentials for the next attempt. Returns
    /// false when another attempt cannot succeed (no credentials, or they were just refused).
    async fn learn(&self, resp: &Response, scopes: &[(&str, Access)], sent: Option<&str>) -> bool {
        let Some(challenge) =
            resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge)
        else {
            return false;
        };
        let key = scope_key(scopes);
        let mut st = self.auth.lock().unwrap();
        let changed = st.challenge.as_ref() != Some(&challenge);
        st.challenge = Some(challenge.clone());
        st.tokens.remove(&key);
        match challenge {
            // Basic credentials already sent and refused: asking again changes nothing.
            Challenge::Basic => self.creds.is_some() && (changed || sent.is_none()),
            // A fresh token may succeed where an expired one failed; `send` re-auths once.
            Challenge::Bearer { .. } => true,
        }
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: &[(&str, Access)]) -> Option<String> {
        if let Some(Credentials::Bearer(t)) = &self.creds {
            return Some(format!("Bearer {t}"));
        }
        let mut url = url::Url::parse(realm).ok()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for (repo, access) in scopes {
                let actions = match access {
                    Access::Pull => "pull",
                    Access::Push => "pull,push",
                };
                q.append_pair("scope", &format!("repository:{repo}:{actions}"));
            }
        }
        let mut req = self.http.get(url);
        if let Some(Credentials::Basic { username, password }) = &self.creds {
            req = req.basic_auth(username, Some(password));
        }
        let resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::debug!(registry = %self.address, status = %r.status(), "token endpoint refused");
                return None;
            }
            Err(e) => {
                tracing::debug!(registry = %self.address, error = %e, "token endpoint unreachable");
                return None;
            }
        };
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = resp.json().await.ok()?;
        body.token.or(body.access_token).map(|t| format!("Bearer {t}"))
    }

    /// A HEAD or GET on `/v2/<repo>/<kind>/<reference>` with the given `Accept` header.
    pub(crate) async fn get(
        &self,
        method: Method,
        repo: &str,
        access: Access,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, reqwest::Error> {
        let url = self.url(&format!("/v2/{repo}/{path}"));
        self.send(&[(repo, access)], |c| {
            let r = c.request(method.clone(), &url);
            match accept {
                Some(a) => r.header(header::ACCEPT, a),
                None => r,
            }
        })
        .await
    }
}

fn scope_key(scopes: &[(&str, Access)]) -> String {
    scopes.iter().map(|(r, a)| format!("{r}:{a:?}")).collect::<Vec<_>>().join(" ")
}

pub(crate) fn is_retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(k.trim().to_ascii_lowercase(), v.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer { realm: map.remove("realm")?, service: map.remove("service") }),
        _ => None,
    }
}

/// Reads the entry for `address` from a docker `config.json` (`auths` only: credential
/// helpers run programs, which a migration tool should not do implicitly).
pub(crate) fn docker_config_credentials(path: &std::path::Path, address: &str) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        registrytoken: Option<String>,
    }
    let text = crate::spec::read_bounded_string(path, crate::spec::files::MAX_DOCKER_CONFIG, "docker config")
        .map_err(|e| e.to_string())?;
    let file: File =
        serde_json::from_str(&text).map_err(|e| format!("docker config {} is not valid JSON: {e}", path.display()))?;
    let entry = file
        .auths
        .iter()
        .find(|(k, _)| {
            let host =
                k.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or_default();
            super::reference::same_host(host, address)
        })
        .map(|(_, e)| e)
        .ok_or_else(|| format!("docker config {} has no `auths` entry for {address}", path.display()))?;
    if let Some(t) = &entry.registrytoken {
        return Ok(Credentials::Bearer(t.clone()));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic { username: u.clone(), password: p.clone() });
    }
    let auth = entry
        .auth
        .as_ref()
        .ok_or_else(|| format!("docker config {}: entry for {address} has no credentials", path.display()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("docker config {}: `auth` for {address} is not base64", path.display()))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| format!("docker config {}: `auth` for {address} is not user:password", path.display()))?;
    Ok(Credentials::Basic { username: u.to_string(), password: p.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token?x=1",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token?x=1".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None, "bearer without realm is unusable");
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn docker_config_entry_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            format!(r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{auth}"}}, "other.io": {{"registrytoken": "tok"}}}}}}"#),
        )
        .unwrap();
        match docker_config_credentials(&path, "reg.example:5000").unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("alice", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(docker_config_credentials(&path, "other.io"), Ok(Credentials::Bearer(_))));
        let err = docker_config_credentials(&path, "missing.io").unwrap_err();
        assert!(err.contains("missing.io"), "{err}");
    }

    #[test]
    fn credentials_are_redacted_in_debug() {
        let c = Credentials::Basic { username: "alice".into(), password: "s3cret".into() };
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{:?}", Credentials::Bearer("tok123".into())).contains("tok123"));
    }

    #[test]
    fn kubeconfig_token_required_and_env_named() {
        let reg =
            |auth| Registry { address: "reg.example".into(), internal_address: None, auth, tls: RegistryTls::Insecure };
        let err = RegistryClient::new(&reg(RegistryAuth::KubeconfigToken), None).unwrap_err();
        assert!(err.to_string().contains("reg.example"), "{err}");
        assert!(RegistryClient::new(&reg(RegistryAuth::KubeconfigToken), Some("t".into())).is_ok());
        let err = RegistryClient::new(
            &reg(RegistryAuth::BasicEnv {
                username_env: "MTCD_TEST_UNSET_USER_XYZ".into(),
                password_env: "MTCD_TEST_UNSET_PASS_XYZ".into(),
            }),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("MTCD_TEST_UNSET_USER_XYZ"), "{err}");
    }
}
