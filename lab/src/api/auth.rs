//! Authentication: who a bearer token is, the way kube-apiserver's token authenticators answer
//! it. Static tokens (the kubeconfig users and the API server's own kubelet client) and
//! service-account tokens: legacy ones stored in `kubernetes.io/service-account-token`
//! Secrets and bound ones from `serviceaccounts/<name>/token` (TokenRequest).
//!
//! Service-account tokens are JWTs, as on a real cluster, so tools that decode them find the
//! usual claims; they are signed with HMAC-SHA256 under a per-cluster random key (a real
//! cluster signs with RS256), which is enough for the server to refuse a token from the other
//! cluster or an edited one.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The audience tokens are issued for unless a TokenRequest names others; a token whose
/// audiences do not include it does not authenticate to the API server.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// `iss` of bound tokens.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `iss` of legacy (Secret-based) tokens, as the tokens controller writes it.
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The groups every authenticated user has.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group the privileged-group authorizer allows everything.
pub const MASTERS: &str = "system:masters";

/// An authenticated (or anonymous) user, as RBAC subjects and access reviews see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self { name: name.into(), uid: String::new(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    /// `system:anonymous`, for the few paths served without credentials.
    pub fn anonymous() -> Self {
        Self::new("system:anonymous", &["system:unauthenticated"])
    }

    /// The user a service account's tokens authenticate as.
    pub fn service_account(ns: &str, name: &str, uid: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{ns}:{name}"),
            uid: uid.into(),
            groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), AUTHENTICATED.into()],
        }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The `user` object of TokenReview / SelfSubjectReview status.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        v
    }
}

/// A token the API server knows up front (written to the kubeconfig, or held in memory).
#[derive(Debug, Clone)]
pub struct StaticToken {
    pub token: String,
    pub user: UserInfo,
}

/// The claims a service-account token carries, checked against the store by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaClaims {
    /// From a `kubernetes.io/service-account-token` Secret: valid while that Secret holds it.
    Legacy { ns: String, sa: String, sa_uid: String, secret: String },
    /// From TokenRequest: valid until `exp` for its audiences.
    Bound { ns: String, sa: String, sa_uid: String, exp: i64, audiences: Vec<String> },
}

/// Static tokens plus the key service-account tokens are signed with.
pub struct Authenticator {
    static_tokens: HashMap<String, UserInfo>,
    key: [u8; 32],
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// HMAC-SHA256 (RFC 2104) over sha2, the one MAC the lab needs.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

/// Equal without an early exit, so a token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn new(tokens: Vec<StaticToken>) -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { static_tokens: tokens.into_iter().map(|t| (t.token, t.user)).collect(), key }
    }

    /// The user of a static token.
    pub fn static_user(&self, token: &str) -> Option<UserInfo> {
        self.static_tokens.iter().find(|(t, _)| same(t.as_bytes(), token.as_bytes())).map(|(_, u)| u.clone())
    }

    fn sign(&self, claims: &Value) -> String {
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = b64(&serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let sig = b64(&hmac_sha256(&self.key, signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    /// The token the tokens controller writes into a service-account-token Secret.
    pub fn legacy_token(&self, ns: &str, sa: &str, sa_uid: &str, secret: &str) -> String {
        self.sign(&json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": ns,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": sa,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        }))
    }

    /// A TokenRequest token valid for `seconds` from `now` (unix seconds).
    pub fn bound_token(
        &self,
        ns: &str,
        sa: &str,
        sa_uid: &str,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> String {
        self.sign(&json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}},
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        }))
    }

    /// The claims of a service-account token this server signed, or `None`.
    pub fn verify(&self, token: &str) -> Option<SaClaims> {
        let mut parts = token.split('.');
        let (header, body, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let want = b64(&hmac_sha256(&self.key, format!("{header}.{body}").as_bytes()));
        if !same(want.as_bytes(), sig.as_bytes()) {
            return None;
        }
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let s = |v: &Value| v.as_str().map(str::to_string);
        if claims["iss"] == LEGACY_ISSUER {
            return Some(SaClaims::Legacy {
                ns: s(&claims["kubernetes.io/serviceaccount/namespace"])?,
                sa: s(&claims["kubernetes.io/serviceaccount/service-account.name"])?,
                sa_uid: s(&claims["kubernetes.io/serviceaccount/service-account.uid"])?,
                secret: s(&claims["kubernetes.io/serviceaccount/secret.name"])?,
            });
        }
        let k = &claims["kubernetes.io"];
        Some(SaClaims::Bound {
            ns: s(&k["namespace"])?,
            sa: s(&k["serviceaccount"]["name"])?,
            sa_uid: s(&k["serviceaccount"]["uid"])?,
            exp: claims["exp"].as_i64()?,
            audiences: claims["aud"].as_array()?.iter().filter_map(s).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn tokens_verify_only_with_the_key_that_signed_them() {
        let a = Authenticator::new(vec![]);
        let b = Authenticator::new(vec![]);
        let t = a.legacy_token("ns", "sa", "u1", "sa-token");
        assert_eq!(
            a.verify(&t),
            Some(SaClaims::Legacy { ns: "ns".into(), sa: "sa".into(), sa_uid: "u1".into(), secret: "sa-token".into() })
        );
        assert_eq!(b.verify(&t), None, "the other cluster's key");
        let mut edited = t.clone();
        edited.insert(t.find('.').unwrap() + 3, 'x');
        assert_eq!(a.verify(&edited), None);
        let bound = a.bound_token("ns", "sa", "u1", &[API_AUDIENCE.into()], 100, 600);
        assert!(matches!(a.verify(&bound), Some(SaClaims::Bound { exp: 700, .. })));
    }
}
