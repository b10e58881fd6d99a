//! The `registry` source: pull an image by pinned digest through the OCI distribution API.
//!
//! oci-client speaks the protocol (including Docker Hub's anonymous bearer-token dance); this
//! module decides what to fetch and checks everything: the pinned manifest or index must hash to
//! the pinned digest, an index is resolved to the wanted platform, and every blob must match the
//! digest and size its descriptor gives. Verified blobs live in the content-addressed cache
//! (`blob_store`), so a second run needs no network, and `--offline` works once the cache is
//! filled. Nothing unverified ever enters the cache.

use super::archive::{write_oci_archive, Blob, BlobContent, TopManifest};
use super::blob_store::BlobStore;
use super::{ImageContext, ImageOrigin, ImageSpec, RegistrySource};
use anyhow::{anyhow, bail, Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{ImageIndex, ImageManifest};
use std::path::PathBuf;
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A pulled, verified image: its manifest in memory, its other blobs in the cache.
pub struct PulledImage {
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub manifest_digest: String,
    /// Config and layers: (digest, size, cached file).
    pub blobs: Vec<(String, u64, PathBuf)>,
    pub origin: ImageOrigin,
}

impl PulledImage {
    pub fn write_archive(&self, dest: &std::path::Path, reference: &str, mtime: u64) -> Result<()> {
        let mut blobs = vec![Blob {
            digest: self.manifest_digest.clone(),
            size: self.manifest.len() as u64,
            content: BlobContent::Memory(self.manifest.clone()),
        }];
        blobs.extend(self.blobs.iter().map(|(digest, size, path)| Blob {
            digest: digest.clone(),
            size: *size,
            content: BlobContent::File(path.clone()),
        }));
        let top = TopManifest {
            media_type: self.manifest_media_type.clone(),
            digest: self.manifest_digest.clone(),
            size: self.manifest.len() as u64,
        };
        write_oci_archive(dest, &top, reference, &blobs, mtime)
    }
}

pub fn pull(spec: &ImageSpec, source: &RegistrySource, ctx: &ImageContext) -> Result<PulledImage> {
    super::digest::sha256_hex(&source.digest).context("the pinned `digest` is malformed")?;
    let repository = match &source.repository {
        Some(repository) => repository.clone(),
        None => super::split_tag(&spec.reference)
            .map(|(repository, _)| repository.to_string())
            .with_context(|| format!("cannot take a repository from {:?}", spec.reference))?,
    };
    let platform = source.platform_for(ctx.arch);
    let (want_os, want_arch) = platform.split_once('/').with_context(|| {
        format!("platform {platform:?} must be written os/arch, e.g. linux/amd64")
    })?;
    let mut fetcher = Fetcher {
        store: BlobStore::new(&ctx.cache_dir),
        repository: repository.clone(),
        offline: ctx.offline,
        remote: None,
    };

    let top = fetcher.manifest(&source.digest, None)?;
    let (manifest_digest, manifest, media_type) = if is_index(&top) {
        let index: ImageIndex = serde_json::from_slice(&top)
            .with_context(|| format!("{} is not a valid image index", source.digest))?;
        let chosen =
            index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == want_os && p.architecture().to_string() == want_arch
                    })
                })
                .ok_or_else(|| {
                    let offered: Vec<String> = index
                        .manifests()
                        .iter()
                        .filter_map(|m| m.platform().as_ref())
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                        .collect();
                    anyhow!(
                    "the index {} in {repository} has no {want_os}/{want_arch} image (it offers: \
                     {}); pin the digest of an image that has one",
                    source.digest,
                    if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                )
                })?;
        let digest = chosen.digest().to_string();
        let bytes = fetcher.manifest(&digest, Some(chosen.size()))?;
        (digest, bytes, chosen.media_type().to_string())
    } else {
        let media_type = media_type_of(&top).unwrap_or_else(|| OCI_MANIFEST.to_string());
        (source.digest.clone(), top, media_type)
    };

    let parsed: ImageManifest = serde_json::from_slice(&manifest)
        .with_context(|| format!("{manifest_digest} is not a valid image manifest"))?;
    let mut blobs = Vec::new();
    for descriptor in std::iter::once(parsed.config()).chain(parsed.layers()) {
        if descriptor.urls().as_ref().is_some_and(|u| !u.is_empty()) {
            bail!(
                "{manifest_digest} has a foreign layer {} (fetched from other URLs), which this \
                 stage does not support",
                descriptor.digest()
            );
        }
        let digest = descriptor.digest().to_string();
        let path = fetcher.blob(&digest, descriptor.size())?;
        blobs.push((digest, descriptor.size(), path));
    }
    // A digest pinning one manifest (not an index) chose no platform: its config must be for
    // the one wanted, or an arm64 bundle would ship an amd64 image that fails at its first exec.
    let config = std::fs::read(&blobs[0].2)?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .with_context(|| format!("{manifest_digest}: its config is not JSON"))?;
    let found = (
        config["os"].as_str().unwrap_or_default(),
        config["architecture"].as_str().unwrap_or_default(),
    );
    if found != (want_os, want_arch) {
        bail!(
            "{manifest_digest} in {repository} is an image for {}/{}, not {platform}: pin the \
             digest of a {platform} image or of an index that has one",
            found.0,
            found.1
        );
    }
    Ok(PulledImage {
        manifest,
        manifest_media_type: media_type,
        manifest_digest,
        blobs,
        origin: ImageOrigin::Registry {
            repository,
            pinned_digest: source.digest.clone(),
            platform,
        },
    })
}

fn media_type_of(manifest: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    value.get("mediaType")?.as_str().map(str::to_string)
}

fn is_index(manifest: &[u8]) -> bool {
    match media_type_of(manifest).as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
        Some(_) => false,
        // An OCI index may omit mediaType; it is the only kind with "manifests".
        None => serde_json::from_slice::<serde_json::Value>(manifest)
            .is_ok_and(|v| v.get("manifests").is_some()),
    }
}

/// Takes blobs from the cache, or from the registry into the cache.
struct Fetcher {
    store: BlobStore,
    repository: String,
    offline: bool,
    /// Connected on first need, so a fully cached image makes no network call at all.
    remote: Option<Remote>,
}

struct Remote {
    runtime: tokio::runtime::Runtime,
    client: Client,
    registry: String,
}

impl Fetcher {
    fn reference(&self, digest: &str) -> Result<Reference> {
        format!("{}@{digest}", self.repository)
            .parse::<Reference>()
            .with_context(|| format!("{:?} is not a valid repository", self.repository))
    }

    fn remote(&mut self, digest: &str) -> Result<&Remote> {
        if self.offline {
            bail!(
                "{digest} from {} is not in the cache ({}) and --offline forbids downloading it; \
                 run once without --offline to fill the cache",
                self.repository,
                self.store.path(digest)?.display()
            );
        }
        if self.remote.is_none() {
            let reference = self.reference(digest)?;
            self.remote = Some(Remote::connect(&reference)?);
        }
        Ok(self.remote.as_ref().unwrap())
    }

    /// A manifest or index: its bytes, checked against `digest` (and `size` when known).
    fn manifest(&mut self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        if self.store.contains(digest)? {
            return self.store.read_verified(digest, size);
        }
        let reference = self.reference(digest)?;
        let repository = self.repository.clone();
        let remote = self.remote(digest)?;
        let (bytes, _) = remote
            .runtime
            .block_on(remote.client.pull_manifest_raw(
                &reference,
                &RegistryAuth::Anonymous,
                &ACCEPTED_MANIFESTS,
            ))
            .map_err(|e| explain(e, &remote.registry, &repository, digest, "manifest"))?;
        let mut writer = self.store.writer(digest, size)?;
        std::io::Write::write_all(&mut writer, &bytes)?;
        writer
            .commit()
            .with_context(|| format!("manifest {digest} from {repository} was rejected"))?;
        Ok(bytes)
    }

    /// A config or layer blob: the path of its verified copy in the cache.
    fn blob(&mut self, digest: &str, size: u64) -> Result<PathBuf> {
        let path = self.store.path(digest)?;
        if path.is_file() {
            // Verified again when the archive is written.
            return Ok(path);
        }
        let reference = self.reference(digest)?;
        let repository = self.repository.clone();
        let mut writer = self.store.writer(digest, Some(size))?;
        let remote = self.remote(digest)?;
        remote
            .runtime
            .block_on(remote.client.pull_blob(&reference, digest, &mut writer))
            .map_err(|e| explain(e, &remote.registry, &repository, digest, "blob"))?;
        writer
            .commit()
            .with_context(|| format!("blob {digest} from {repository} was rejected"))
    }
}

impl Remote {
    fn connect(reference: &Reference) -> Result<Remote> {
        let registry = reference.registry().to_string();
        let config = ClientConfig {
            protocol: protocol_for(&registry),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let client = Client::new(config);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime for registry downloads")?;
        // Ask for the (anonymous) token up front: an unreachable registry or a refused token
        // shows up here with a clear message rather than inside the first download.
        runtime
            .block_on(client.auth(reference, &RegistryAuth::Anonymous, RegistryOperation::Pull))
            .map_err(|e| {
                explain(
                    e,
                    &registry,
                    reference.repository(),
                    "",
                    "anonymous pull token",
                )
            })?;
        Ok(Remote {
            runtime,
            client,
            registry,
        })
    }
}

/// Plain http only for registries on this machine (tests, local mirrors); https everywhere else.
fn protocol_for(registry: &str) -> ClientProtocol {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    };
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    }
}

/// Turn oci-client's errors into messages that say what went wrong and what to do.
fn explain(
    err: OciDistributionError,
    registry: &str,
    repository: &str,
    digest: &str,
    what: &str,
) -> anyhow::Error {
    let subject = format!("{what} {digest} of {repository}");
    let hint = match &err {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => format!(
            "cannot reach the registry {registry}: check the network or the repository name, or \
             use --offline with a filled cache"
        ),
        OciDistributionError::DigestError(_) => format!(
            "the registry {registry} served content for {subject} that does not match its \
             digest (corrupted or tampered); nothing was cached"
        ),
        OciDistributionError::ImageManifestNotFoundError(_) => format!(
            "the registry {registry} has no {subject}: check the pinned digest and repository"
        ),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            format!(
                "the registry {registry} has no {subject}: check the pinned digest and repository"
            )
        }
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => {
            format!("the registry {registry} refused anonymous access to {repository}")
        }
        _ => format!("fetching {subject} from {registry} failed"),
    };
    anyhow::Error::new(err).context(hint)
}
