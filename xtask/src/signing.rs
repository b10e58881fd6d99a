//! Who signs and attests a release, what, and how a user checks it (issue 29).
//!
//! The release workflow (ci/release.yml, job `sign`) signs every file listed in the release's
//! SHA256SUMS (the tarballs and the SBOM) with a keyless cosign signature, one Sigstore bundle
//! `<file>.sigstore.json` each, and attests the same files' build provenance with GitHub's
//! artifact attestations (SLSA v1 provenance). Both are keyless: the signing certificate is
//! issued by Sigstore's Fulcio to the workflow's OIDC identity, which is the release workflow
//! at the tag, so that identity is what a user pins when verifying.
//!
//! Here: that identity and the commands that check it (one place, used by the release notes,
//! the signing plan `cargo xtask release --dry-run` writes, README.md and `cargo xtask verify`),
//! and the checks that need no network. What needs the network (or Sigstore's trusted root):
//! the signature itself, the certificate chain and the transparency-log entry (`cosign
//! verify-blob`), and the provenance (`gh attestation verify`); `check_beside` says so.

use crate::digest::sha256_file;
use crate::package::Format;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use bundle_format::Sums;
use serde_json::{json, Value};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// Where GitHub runs the release workflow from (ci/ is copied there to enable it); the signing
/// certificate names this path.
pub const RELEASE_WORKFLOW: &str = ".github/workflows/release.yml";
/// The OIDC issuer of GitHub Actions' tokens: the `--certificate-oidc-issuer` to require.
pub const OIDC_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The release's checksum file: the list of signed and attested files.
pub const CHECKSUMS: &str = bundle_format::SUMS_FILE;
/// Suffix of a file's cosign signature (a Sigstore bundle: signature, certificate, log entry).
pub const SIGNATURE_SUFFIX: &str = ".sigstore.json";
/// Stands in for the repository when neither --repository nor GITHUB_REPOSITORY names it.
const UNKNOWN_REPOSITORY: &str = "OWNER/k3s-gvisor";

/// The identity a release is signed as: the release workflow of `repository` at `tag`.
#[derive(Debug, Clone, PartialEq)]
pub struct Signer {
    /// `owner/name` on GitHub.
    pub repository: String,
    /// The git tag (the bundle's version).
    pub tag: String,
    /// False when the repository was not given and `repository` is a placeholder.
    pub repository_known: bool,
}

impl Signer {
    /// `repository` from --repository, else GITHUB_REPOSITORY (set in every workflow run),
    /// else a placeholder the plan marks as such.
    pub fn new(repository: Option<String>, tag: &str) -> Signer {
        let given = repository
            .or_else(|| std::env::var("GITHUB_REPOSITORY").ok())
            .filter(|r| !r.trim().is_empty());
        Signer {
            repository_known: given.is_some(),
            repository: given.unwrap_or_else(|| UNKNOWN_REPOSITORY.into()),
            tag: tag.into(),
        }
    }

    /// The signing certificate's subject (SAN URI) for a run of the release workflow on the tag.
    pub fn certificate_identity(&self) -> String {
        format!(
            "https://github.com/{}/{RELEASE_WORKFLOW}@refs/tags/{}",
            self.repository, self.tag
        )
    }

    /// The commands that verify `file`'s signature and provenance, run where the file is.
    pub fn verify_commands(&self, file: &str) -> Vec<String> {
        vec![
            format!(
                "cosign verify-blob --bundle '{file}{SIGNATURE_SUFFIX}' \
                 --certificate-identity '{}' --certificate-oidc-issuer '{OIDC_ISSUER}' '{file}'",
                self.certificate_identity()
            ),
            format!(
                "gh attestation verify '{file}' --repo '{}' --signer-workflow '{}/{RELEASE_WORKFLOW}' \
                 --source-ref 'refs/tags/{}'",
                self.repository, self.repository, self.tag
            ),
        ]
    }
}

/// `signing-plan.json`: what the release workflow will sign and attest, as whom, and how each
/// is verified. `subjects` are (file name, sha256), the lines of SHA256SUMS.
pub fn plan(signer: &Signer, subjects: &[(String, String)]) -> Value {
    let files: Vec<Value> = subjects
        .iter()
        .map(|(name, sha256)| {
            json!({
                "file": name,
                "sha256": sha256,
                "signature": format!("{name}{SIGNATURE_SUFFIX}"),
                "verify": signer.verify_commands(name),
            })
        })
        .collect();
    let mut plan = json!({
        "subjects_from": CHECKSUMS,
        "subjects": files,
        "signature": {
            "by": "cosign sign-blob --yes --bundle <file>.sigstore.json <file> (keyless: a \
                   Fulcio certificate for the workflow's OIDC token, logged in Rekor), job `sign` \
                   of ci/release.yml",
        },
        "attestation": {
            "by": "actions/attest-build-provenance with subject-checksums: SHA256SUMS, job \
                   `sign` of ci/release.yml; stored with the repository's attestations",
            "predicate_type": "https://slsa.dev/provenance/v1",
        },
        "identity": {
            "repository": signer.repository,
            "workflow": RELEASE_WORKFLOW,
            "source_ref": format!("refs/tags/{}", signer.tag),
            "certificate_identity": signer.certificate_identity(),
            "certificate_oidc_issuer": OIDC_ISSUER,
        },
        "dry_run": "nothing was signed or attested: both need the workflow's OIDC token \
                    (GitHub Actions with id-token: write) and the network",
    });
    if !signer.repository_known {
        plan["identity"]["note"] = json!(format!(
            "{UNKNOWN_REPOSITORY} stands in for the repository: pass --repository OWNER/NAME \
             (the workflow passes $GITHUB_REPOSITORY)"
        ));
    }
    plan
}

/// Write `<dir>/SHA256SUMS` over `files` (in `dir`), in `sha256sum` format; returns its lines.
pub fn write_checksums(dir: &Path, files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut lines = Vec::new();
    let mut sums = Sums::new();
    for f in files {
        let name = f
            .file_name()
            .context("a release asset has no file name")?
            .to_string_lossy()
            .to_string();
        let sha256 = sha256_file(f)?;
        sums.push(&sha256, &name)?;
        lines.push((name, sha256));
    }
    crate::fsutil::write_atomic(&dir.join(CHECKSUMS), sums.write().as_bytes())?;
    Ok(lines)
}

/// What `check_beside` found about one release file: a fact checked, or what was not.
#[derive(Debug, PartialEq)]
pub enum Finding {
    Checked(String),
    NotChecked(String),
}

/// The offline checks of the release files lying beside a verified `tarball`: SHA256SUMS, the
/// SBOM's hash of the tarball, and that each signature bundle is for this very file (its
/// message digest). A file that contradicts another is an error; a file that is absent, and
/// whatever needs the network, is reported as not checked with the command that checks it.
pub fn check_beside(tarball: &Path, signer: &Signer) -> Result<Vec<Finding>> {
    let dir = tarball.parent().unwrap_or(Path::new("."));
    let name = tarball
        .file_name()
        .context("the tarball path has no file name")?
        .to_string_lossy()
        .to_string();
    let format = Format::of(tarball).unwrap_or(Format::TarGz);
    let stem = name
        .strip_suffix(&format!(".{}", format.extension()))
        .unwrap_or(&name)
        .to_string();
    let sbom_name = format!("{stem}.cdx.json");
    // The SBOM describes the .tar.gz; a .tar.zst is held to it through the tar both compress.
    let gz_name = format!("{stem}.{}", Format::TarGz.extension());
    let described_tarball = dir.join(&gz_name);
    let mut found = Vec::new();

    let sums = dir.join(CHECKSUMS);
    match std::fs::read_to_string(&sums) {
        Ok(text) => {
            let mut listed_tarball = false;
            let listed =
                Sums::parse(&text).with_context(|| format!("{}: not readable", sums.display()))?;
            for entry in listed.entries() {
                let (hash, file) = (entry.sha256.as_str(), entry.path.as_str());
                if file.contains('/') {
                    bail!("{}: `{file}` is not a file beside it", sums.display());
                }
                let path = dir.join(file);
                if !path.is_file() {
                    found.push(Finding::NotChecked(format!(
                        "{file}: listed in {CHECKSUMS} but not here"
                    )));
                    continue;
                }
                let actual = sha256_file(&path)?;
                if actual != hash {
                    bail!(
                        "{file}: sha256 is {actual}, but {} says {hash}: the download is \
                         corrupt or was altered",
                        sums.display()
                    );
                }
                listed_tarball |= file == name;
                found.push(Finding::Checked(format!(
                    "{file}: sha256 as {CHECKSUMS} says"
                )));
            }
            if !listed_tarball {
                bail!(
                    "{}: does not list {name}; it belongs to another release",
                    sums.display()
                );
            }
        }
        Err(_) => found.push(Finding::NotChecked(format!(
            "{CHECKSUMS}: not beside the tarball (the release's list of signed files)"
        ))),
    }

    let sbom_path = dir.join(&sbom_name);
    match std::fs::read(&sbom_path) {
        Ok(bytes) => {
            let sbom: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{sbom_name}: not JSON"))?;
            let described = sbom["metadata"]["component"]["hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["alg"] == "SHA-256")
                .and_then(|h| h["content"].as_str())
                .map(str::to_string);
            let described_sha256 = if described_tarball.is_file() {
                sha256_file(&described_tarball)?
            } else {
                String::new()
            };
            if described.as_deref() != Some(described_sha256.as_str()) {
                bail!(
                    "{sbom_name}: describes a tarball with sha256 {}, not {gz_name} ({})",
                    described.as_deref().unwrap_or("(none)"),
                    if described_sha256.is_empty() {
                        "not here"
                    } else {
                        &described_sha256
                    }
                );
            }
            if format == Format::TarGz {
                found.push(Finding::Checked(format!(
                    "{sbom_name}: describes this tarball (its sha256)"
                )));
            } else {
                if tar_sha256(tarball)? != tar_sha256(&described_tarball)? {
                    bail!("{name} and {gz_name} hold different tars: they are not one release");
                }
                found.push(Finding::Checked(format!(
                    "{sbom_name}: describes {gz_name} (its sha256), which holds the same tar as \
                     {name}"
                )));
            }
        }
        Err(_) => found.push(Finding::NotChecked(format!(
            "{sbom_name}: the SBOM is not beside the tarball"
        ))),
    }

    for file in [name.as_str(), sbom_name.as_str()] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let bundle = dir.join(format!("{file}{SIGNATURE_SUFFIX}"));
        match std::fs::read(&bundle) {
            Ok(bytes) => {
                let digest =
                    signed_digest(&bytes).with_context(|| format!("{file}{SIGNATURE_SUFFIX}"))?;
                let actual = sha256_file(&path)?;
                if digest != actual {
                    bail!(
                        "{file}{SIGNATURE_SUFFIX}: signs sha256 {digest}, but {file} has \
                         {actual}: the signature is for another file"
                    );
                }
                found.push(Finding::Checked(format!(
                    "{file}{SIGNATURE_SUFFIX}: a Sigstore bundle for this file's sha256"
                )));
            }
            Err(_) => found.push(Finding::NotChecked(format!(
                "{file}{SIGNATURE_SUFFIX}: no signature beside {file}"
            ))),
        }
        let [cosign, gh] =
            <[String; 2]>::try_from(signer.verify_commands(file)).expect("two verify commands");
        found.push(Finding::NotChecked(format!(
            "{file}: the signature, its certificate (identity {}) and its transparency-log \
             entry need Sigstore's trusted root: `{cosign}`",
            signer.certificate_identity()
        )));
        found.push(Finding::NotChecked(format!(
            "{file}: the build provenance is GitHub's attestation: `{gh}`"
        )));
    }
    if !signer.repository_known {
        found.push(Finding::NotChecked(format!(
            "the commands name {UNKNOWN_REPOSITORY}: put the repository the release came from \
             there (or set GITHUB_REPOSITORY)"
        )));
    }
    Ok(found)
}

/// The sha256 (hex) of a tarball's uncompressed tar stream.
fn tar_sha256(tarball: &Path) -> Result<String> {
    let format = Format::of(tarball)
        .with_context(|| format!("{}: neither .tar.gz nor .tar.zst", tarball.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut format.decoder(tarball)?, &mut hasher)
        .with_context(|| format!("cannot decompress {}", tarball.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The sha256 (hex) a Sigstore bundle's message signature is over.
fn signed_digest(bundle: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(bundle).context("not JSON")?;
    let media = v["mediaType"].as_str().unwrap_or_default();
    if !media.starts_with("application/vnd.dev.sigstore.bundle") {
        bail!("not a Sigstore bundle (mediaType `{media}`)");
    }
    let digest = &v["messageSignature"]["messageDigest"];
    if digest["algorithm"] != "SHA2_256" {
        bail!(
            "the signature is over a {} digest, not SHA2_256",
            digest["algorithm"]
        );
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest["digest"].as_str().unwrap_or_default())
        .context("messageSignature.messageDigest.digest is not base64")?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(Some("acme/k3s-gvisor".into()), "v1.0.0-gvisor.1")
    }

    #[test]
    fn the_identity_is_the_release_workflow_at_the_tag() {
        let s = signer();
        assert_eq!(
            s.certificate_identity(),
            "https://github.com/acme/k3s-gvisor/.github/workflows/release.yml@refs/tags/v1.0.0-gvisor.1"
        );
        let [cosign, gh] = <[String; 2]>::try_from(s.verify_commands("a.tar.gz")).unwrap();
        assert!(cosign.starts_with("cosign verify-blob --bundle 'a.tar.gz.sigstore.json' "));
        assert!(cosign.contains(&format!("--certificate-oidc-issuer '{OIDC_ISSUER}'")));
        assert!(gh.contains(
            "--signer-workflow 'acme/k3s-gvisor/.github/workflows/release.yml' --source-ref 'refs/tags/v1.0.0-gvisor.1'"
        ));
        let plan = plan(&s, &[("a.tar.gz".into(), "ab".repeat(32))]);
        assert_eq!(plan["subjects"][0]["signature"], "a.tar.gz.sigstore.json");
        assert!(plan["identity"].get("note").is_none());
        let unknown = Signer {
            repository: UNKNOWN_REPOSITORY.into(),
            tag: "v1".into(),
            repository_known: false,
        };
        assert!(super::plan(&unknown, &[])["identity"]["note"]
            .as_str()
            .unwrap()
            .contains("--repository"));
    }

    /// A Sigstore bundle of the shape cosign writes (v0.3, message signature), for `bytes`.
    fn bundle_for(bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes));
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"certificate": {"rawBytes": "AA=="}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": digest},
                "signature": "AA==",
            },
        })
        .to_string()
    }

    #[test]
    fn offline_checks_catch_a_file_that_contradicts_another_and_name_what_they_cannot_check() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let tarball = d.join("b-v1-linux-amd64.tar.gz");
        std::fs::write(&tarball, b"tarball").unwrap();
        let sbom = d.join("b-v1-linux-amd64.cdx.json");
        let sbom_text = json!({"metadata": {"component": {"hashes": [
            {"alg": "SHA-256", "content": sha256_file(&tarball).unwrap()}
        ]}}})
        .to_string();
        std::fs::write(&sbom, &sbom_text).unwrap();

        // Only the tarball and the SBOM: both "not checked" kinds, nothing failed.
        let found = check_beside(&tarball, &signer()).unwrap();
        assert!(found.contains(&Finding::Checked(
            "b-v1-linux-amd64.cdx.json: describes this tarball (its sha256)".into()
        )));
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::NotChecked(s) if s.contains("SHA256SUMS: not beside"))));
        assert!(found.iter().any(|f| matches!(f, Finding::NotChecked(s) if s.contains("no signature beside b-v1-linux-amd64.tar.gz"))));
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::NotChecked(s) if s.contains("cosign verify-blob"))));
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::NotChecked(s) if s.contains("gh attestation verify"))));

        // The full set: SHA256SUMS and both signatures agree.
        write_checksums(d, &[tarball.clone(), sbom.clone()]).unwrap();
        std::fs::write(
            d.join("b-v1-linux-amd64.tar.gz.sigstore.json"),
            bundle_for(b"tarball"),
        )
        .unwrap();
        std::fs::write(
            d.join("b-v1-linux-amd64.cdx.json.sigstore.json"),
            bundle_for(sbom_text.as_bytes()),
        )
        .unwrap();
        let found = check_beside(&tarball, &signer()).unwrap();
        for expect in [
            "b-v1-linux-amd64.tar.gz: sha256 as SHA256SUMS says",
            "b-v1-linux-amd64.cdx.json: sha256 as SHA256SUMS says",
            "b-v1-linux-amd64.tar.gz.sigstore.json: a Sigstore bundle for this file's sha256",
            "b-v1-linux-amd64.cdx.json.sigstore.json: a Sigstore bundle for this file's sha256",
        ] {
            assert!(
                found.contains(&Finding::Checked(expect.into())),
                "{expect}: {found:?}"
            );
        }

        // A signature of another file.
        std::fs::write(
            d.join("b-v1-linux-amd64.tar.gz.sigstore.json"),
            bundle_for(b"another tarball"),
        )
        .unwrap();
        let err = format!("{:#}", check_beside(&tarball, &signer()).unwrap_err());
        assert!(err.contains("the signature is for another file"), "{err}");
        std::fs::write(
            d.join("b-v1-linux-amd64.tar.gz.sigstore.json"),
            bundle_for(b"tarball"),
        )
        .unwrap();

        // An SBOM of another tarball (SHA256SUMS rewritten so that it is not what fails).
        let other = json!({"metadata": {"component": {"hashes": [
            {"alg": "SHA-256", "content": "0".repeat(64)}
        ]}}})
        .to_string();
        std::fs::write(&sbom, other).unwrap();
        write_checksums(d, &[tarball.clone(), sbom.clone()]).unwrap();
        let err = format!("{:#}", check_beside(&tarball, &signer()).unwrap_err());
        assert!(err.contains("describes a tarball with sha256 000"), "{err}");

        // A SHA256SUMS line that does not match.
        std::fs::write(&sbom, &sbom_text).unwrap();
        let err = format!("{:#}", check_beside(&tarball, &signer()).unwrap_err());
        assert!(
            err.contains("b-v1-linux-amd64.cdx.json: sha256 is") && err.contains("altered"),
            "{err}"
        );
    }
}
