//! Direct Image Migration of a signed image through the lab (issue 19): cosign's signature
//! and attestation (tag scheme), an OCI 1.1 referrer (an SBOM, listed through the tag-schema
//! fallback: the lab's docker-registry 2.8 has no referrers API) and a referrer of that
//! artifact (a signature of the SBOM) arrive with the same digests as on the source; the
//! apply streams per-image progress events.

use mtcd_tests::Lab;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn registry(lab: &Lab, cluster: &str) -> String {
    lab.info["clusters"][cluster]["registry"].as_str().expect("lab registry").to_string()
}

pub(crate) fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Raw distribution calls against a lab registry (plain HTTP).
pub(crate) struct Reg {
    pub addr: String,
    http: reqwest::Client,
}

impl Reg {
    pub fn new(addr: &str) -> Reg {
        Reg { addr: addr.to_string(), http: reqwest::Client::new() }
    }

    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha(data);
        let r = self.http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", self.addr) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self.http.put(format!("{loc}{sep}digest={digest}")).body(data.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), 201, "blob {digest}");
        digest
    }

    pub async fn manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let r = self
            .http
            .put(format!("http://{}/v2/{repo}/manifests/{reference}", self.addr))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 201, "manifest {repo}:{reference}: {}", r.text().await.unwrap());
        sha(body)
    }

    /// (status, body) of a manifest.
    pub async fn get(&self, repo: &str, reference: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("http://{}/v2/{repo}/manifests/{reference}", self.addr))
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    pub async fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let r = self.http.head(format!("http://{}/v2/{repo}/blobs/{digest}", self.addr)).send().await.unwrap();
        r.status() == 200
    }
}

/// cosign's layout: `sha256-<hex>.<suffix>` holding one layer (simple signing or a DSSE
/// envelope) with the signature annotation.
async fn cosign(reg: &Reg, repo: &str, subject: &str, suffix: &str) -> (String, Vec<u8>) {
    let (payload, media_type) = if suffix == "sig" {
        let p = json!({"critical": {"identity": {"docker-reference": format!("{}/{repo}", reg.addr)},
            "image": {"docker-manifest-digest": subject}, "type": "cosign container image signature"}, "optional": null});
        (serde_json::to_vec(&p).unwrap(), "application/vnd.dev.cosign.simplesigning.v1+json")
    } else {
        let statement = json!({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": repo, "digest": {"sha256": subject.trim_start_matches("sha256:")}}], "predicate": {}});
        let env = json!({"payloadType": "application/vnd.in-toto+json",
            "payload": base64(&serde_json::to_vec(&statement).unwrap()), "signatures": []});
        (serde_json::to_vec(&env).unwrap(), "application/vnd.dsse.envelope.v1+json")
    };
    let layer = reg.blob(repo, &payload).await;
    let config = serde_json::to_vec(&json!({"architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]}}))
    .unwrap();
    let config_digest = reg.blob(repo, &config).await;
    let signature = base64(Sha256::digest(&payload).as_slice());
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": media_type, "size": payload.len(), "digest": layer,
            "annotations": {"dev.cosignproject.cosign/signature": signature}}]}))
    .unwrap();
    let tag = format!("{}.{suffix}", subject.replacen(':', "-", 1));
    (reg.manifest(repo, &tag, OCI_MANIFEST, &manifest).await, manifest)
}

fn image_events(stdout: &str, image: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "image" && e["image"].as_str().is_some_and(|i| i.starts_with(image)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_image_arrives_with_its_signature_attestation_and_referrers() {
    let lab = Lab::up();
    let (src, dst) = (registry(&lab, "src"), registry(&lab, "dst"));
    let seeded = lab
        .seed_yaml(
            "lab-src",
            "apiVersion: lab.mtcd.io/v1\nkind: Image\nrepository: shop/web\ntag: v1\nlayers: [{size: 2000000, seed: 11}, {size: 300000, seed: 12}]\n",
        )
        .await
        .unwrap();
    let image = seeded.images[0].rsplit_once('@').unwrap().1.to_string();
    let s = Reg::new(&src);
    let image_size = {
        let (status, body) = s.get("shop/web", &image).await;
        assert_eq!(status, 200);
        body.len()
    };
    let (sig, sig_bytes) = cosign(&s, "shop/web", &image, "sig").await;
    let (att, att_bytes) = cosign(&s, "shop/web", &image, "att").await;
    // An OCI 1.1 SBOM referrer, by digest, listed for the image under the fallback tag.
    let empty = s.blob("shop/web", b"{}").await;
    let sbom_doc = br#"{"spdxVersion":"SPDX-2.3","name":"web"}"#;
    let sbom_layer = s.blob("shop/web", sbom_doc).await;
    let sbom = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom_layer, "size": sbom_doc.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": image_size}}),
    )
    .unwrap();
    let sbom_digest = s.manifest("shop/web", &sha(&sbom), OCI_MANIFEST, &sbom).await;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": "application/spdx+json"}]}))
    .unwrap();
    let fallback = image.replacen(':', "-", 1);
    s.manifest("shop/web", &fallback, OCI_INDEX, &index).await;
    // A referrer of that OCI 1.1 artifact: a signature whose subject is the SBOM (notation's
    // layout), listed under the SBOM's own fallback tag.
    let sig_doc = br#"{"payload":"sbom-signature"}"#;
    let sig_layer = s.blob("shop/web", sig_doc).await;
    let sbom_sig = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.cncf.notary.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": sig_layer, "size": sig_doc.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len()}}),
    )
    .unwrap();
    let sbom_sig_digest = s.manifest("shop/web", &sha(&sbom_sig), OCI_MANIFEST, &sbom_sig).await;
    let sbom_index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sbom_sig_digest, "size": sbom_sig.len(),
         "artifactType": "application/vnd.cncf.notary.signature"}]}))
    .unwrap();
    let sbom_fallback = sbom_digest.replacen(':', "-", 1);
    s.manifest("shop/web", &sbom_fallback, OCI_INDEX, &sbom_index).await;

    lab.seed_yaml(
        "lab-src",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: \"{src}/shop/web:v1\"}}]}}\n"
        ),
    )
    .await
    .unwrap();
    let file = lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\nregistry = {{ address = \"{src}\", tls = \"insecure\" }}\n[clusters.destination]\ncontext = \"lab-dst\"\nregistry = {{ address = \"{dst}\", tls = \"insecure\" }}\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nimages = \"direct\"\nvolumes = \"skip\"\n"
        ),
    );
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("4 of 4 signatures/attestations/referrers to copy"), "{}", plan.stdout);

    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let report = &summary["migrations"][0]["images"][0];
    assert_eq!((report["ok"].clone(), report["artifacts_copied"].clone()), (json!(true), json!(4)), "{report}");
    // Live progress through the engine's event stream: started, then done, per image.
    let events = image_events(&run.stdout, &format!("{dst}/shop-prod/web"));
    let phases: Vec<&str> = events.iter().filter_map(|e| e["phase"].as_str()).collect();
    assert_eq!(phases.first(), Some(&"started"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"done"), "{phases:?}");
    assert!(events[0]["bytes_total"].as_u64().unwrap() > 2_000_000, "{}", events[0]);

    // Same digests on the destination: image, signature, attestation, SBOM and its listing.
    let d = Reg::new(&dst);
    let (status, body) = d.get("shop-prod/web", "v1").await;
    assert_eq!((status, sha(&body)), (200, image.clone()), "image digest");
    for (suffix, digest, bytes) in [("sig", &sig, &sig_bytes), ("att", &att, &att_bytes)] {
        let (status, body) = d.get("shop-prod/web", &format!("{fallback}.{suffix}")).await;
        assert_eq!(status, 200, "{suffix} tag copied");
        assert_eq!((&sha(&body), &body), (digest, bytes), "{suffix}: same bytes, same digest");
        let m: Value = serde_json::from_slice(&body).unwrap();
        assert!(d.has_blob("shop-prod/web", m["layers"][0]["digest"].as_str().unwrap()).await, "{suffix} payload");
    }
    let (status, body) = d.get("shop-prod/web", &sbom_digest).await;
    assert_eq!((status, body), (200, sbom.clone()), "referrer by digest");
    assert!(d.has_blob("shop-prod/web", &sbom_layer).await);
    let (status, body) = d.get("shop-prod/web", &fallback).await;
    assert_eq!((status, body), (200, index.clone()), "referrers listed under the fallback tag, same index");
    // The referrer of the SBOM (an OCI 1.1 artifact) arrived too, with its listing.
    let (status, body) = d.get("shop-prod/web", &sbom_sig_digest).await;
    assert_eq!((status, body), (200, sbom_sig.clone()), "referrer of the SBOM, by digest");
    assert!(d.has_blob("shop-prod/web", &sig_layer).await);
    let (status, body) = d.get("shop-prod/web", &sbom_fallback).await;
    assert_eq!((status, body), (200, sbom_index.clone()), "the SBOM's referrers listed, same index");

    // A re-run has nothing to do.
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(plan.stdout.contains("already present, 4 signatures/attestations/referrers present"), "{}", plan.stdout);
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let report = &summary["migrations"][0]["images"][0];
    assert_eq!(
        (report["up_to_date"].clone(), report["artifacts_present"].clone()),
        (json!(true), json!(4)),
        "{report}"
    );
}
