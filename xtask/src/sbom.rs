//! The bundle's software bill of materials: a CycloneDX 1.5 JSON document generated from
//! bundle-manifest.json, the same record the installer and `cargo xtask verify` read.
//!
//! Every file the manifest vouches for becomes one component with its sha256. An upstream
//! binary that we patched is described the way CycloneDX describes modified software: the
//! shipped binary is the component, the upstream module or archive it was built from is its
//! `pedigree.ancestors` entry (with the package URL and download location), and every patch is a
//! `pedigree.patches` entry. CycloneDX's patch object has no hash field, so each patch file's
//! sha256 is also recorded as a `k3s-gvisor:patch` property of the component.
//!
//! The document is deterministic: its timestamp is the bundle's source date and its serial
//! number is derived from the tarball's sha256, so the same bundle always gives the same bytes.

use bundle_format::{ComponentRecord, ImageRecord, Manifest, Transport};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const SPEC_VERSION: &str = "1.5";
/// Prefix of our own property names (CycloneDX asks for a namespace on custom properties).
const PROP: &str = "k3s-gvisor";

/// A patch as the SBOM and the release notes describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchInfo {
    /// Repository-relative path, e.g. `patches/runc/0001-....patch`.
    pub file: String,
    pub sha256: String,
    /// The `Subject:` of the git format-patch file, without the `[PATCH n/m]` prefix.
    pub subject: String,
}

/// What the SBOM needs beyond the manifest.
pub struct SbomInputs<'a> {
    pub manifest: &'a Manifest,
    /// File name of the tarball the SBOM describes.
    pub tarball_name: &'a str,
    pub tarball_sha256: &'a str,
    /// Per component name, its patches with subjects (see `release::resolve_patches`).
    pub patches: &'a BTreeMap<String, Vec<PatchInfo>>,
}

/// The CycloneDX 1.5 document for one bundle tarball.
pub fn cyclonedx(inputs: &SbomInputs) -> Value {
    let m = inputs.manifest;
    let mut components = Vec::new();
    for c in &m.components {
        let patches = inputs
            .patches
            .get(&c.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for output in &c.outputs {
            components.push(binary_component(c, &output.path, &output.sha256, patches));
        }
    }
    for image in &m.images {
        components.push(image_component(image));
    }
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    let mut bundle_properties = vec![
        property("file", inputs.tarball_name),
        property("arch", m.arch.as_str()),
        property("source-date-epoch", &m.source_date_epoch.to_string()),
    ];
    // What the bundle was meant to hold but does not: a reader of the SBOM should not have to
    // infer it from an absence.
    for o in &m.omitted {
        bundle_properties.push(property(
            "omitted",
            &format!("{}: {}", o.name, one_line(&o.reason)),
        ));
    }
    // What this architecture's bundles cannot hold (arm64: the launcher), said the same way.
    for o in &m.not_on_this_arch {
        bundle_properties.push(property(
            "not-on-this-arch",
            &format!("{}: {}", o.name, one_line(&o.reason)),
        ));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(inputs.tarball_sha256),
        "version": 1,
        "metadata": {
            "timestamp": crate::build::rfc3339_utc(m.source_date_epoch),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "k3s-gvisor xtask",
                    "version": env!("CARGO_PKG_VERSION"),
                    "description": "cargo xtask release: generated from bundle-manifest.json",
                }],
            },
            "component": {
                "type": "application",
                "bom-ref": "bundle",
                "name": m.name,
                "version": m.version,
                "description": format!("{}: the bundle tarball for linux/{}", inputs.tarball_name, m.arch),
                "hashes": [sha256(inputs.tarball_sha256)],
                "properties": bundle_properties,
            },
        },
        "components": components,
        "dependencies": [{ "ref": "bundle", "dependsOn": refs }],
    })
}

/// One shipped binary (bundle path `path`) of component `c`.
fn binary_component(c: &ComponentRecord, path: &str, hash: &str, patches: &[PatchInfo]) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut properties = vec![
        property("bundle-path", path),
        property("component", &c.name),
        property("source-transport", c.source.transport.as_str()),
        property("source-location", &c.source.location),
        property("source-content", &c.source.content),
    ];
    for (name, value) in [
        ("source-commit", &c.source.commit),
        ("source-tree", &c.source.tree),
    ] {
        if let Some(value) = value {
            properties.push(property(name, value));
        }
    }
    // Only the flags that built this binary (the manifest prefixes each line with its name).
    for flags in c
        .build_flags
        .iter()
        .filter(|f| f.starts_with(&format!("{name}: ")) || c.outputs.len() == 1)
    {
        properties.push(property("build-flags", flags));
    }
    for p in patches {
        properties.push(property(
            "patch",
            &format!("{} sha256:{}", p.file, p.sha256),
        ));
    }
    let mut component = json!({
        "type": "application",
        "bom-ref": path,
        "name": name,
        "version": c.version,
        "hashes": [sha256(hash)],
        "properties": properties,
    });
    if c.source.transport != Transport::Workspace {
        component["description"] = json!(format!(
            "{name} from {} {}, {} patch(es) applied",
            c.name,
            c.version,
            patches.len()
        ));
        let mut pedigree = json!({ "ancestors": [upstream(c)] });
        if !patches.is_empty() {
            pedigree["patches"] = patches.iter().map(patch).collect();
        }
        component["pedigree"] = pedigree;
    } else {
        component["description"] = json!(format!(
            "{name}: built from this repository ({})",
            c.source.location
        ));
    }
    component
}

/// The upstream source a component was built from, as a pedigree ancestor.
fn upstream(c: &ComponentRecord) -> Value {
    let s = &c.source;
    if s.transport == Transport::GoProxy {
        // location is `module@version`.
        let module = s
            .location
            .rsplit_once('@')
            .map_or(s.location.as_str(), |(m, _)| m);
        return json!({
            "type": "library",
            "name": module,
            "version": c.version,
            "purl": format!("pkg:golang/{module}@{}", c.version),
            "externalReferences": [{
                "type": "distribution",
                "url": go_proxy_zip_url(module, &c.version),
                "comment": format!("Go module zip, verified against {}", s.content),
            }],
        });
    }
    let mut references = vec![json!({
        "type": "distribution",
        "url": s.location,
        "comment": format!("served by {}; its files hash to {}", s.transport, s.content),
    })];
    if let Some(repository) = &s.repository {
        references.push(json!({ "type": "vcs", "url": repository }));
    }
    let mut ancestor = json!({
        "type": "library",
        "name": c.name,
        "version": c.version,
        "externalReferences": references,
    });
    if let (Some(repository), Some(commit)) = (&s.repository, &s.commit) {
        if let Some(path) = repository.strip_prefix("https://github.com/") {
            ancestor["purl"] = json!(format!("pkg:github/{path}@{commit}"));
        }
    }
    ancestor
}

fn patch(p: &PatchInfo) -> Value {
    let file_name = p.file.rsplit('/').next().unwrap_or(&p.file);
    json!({
        "type": "unofficial",
        "diff": { "url": p.file },
        "resolves": [{ "type": "defect", "name": file_name, "description": p.subject }],
    })
}

fn image_component(i: &ImageRecord) -> Value {
    let mut properties = vec![
        property("bundle-path", &i.file),
        property("image-ref", &i.reference),
        property("image-source", &i.source.to_string()),
    ];
    if i.sandbox {
        properties.push(property("sandbox-image", "true"));
    }
    json!({
        "type": "container",
        "bom-ref": i.file,
        "name": i.name,
        "version": i.digest,
        "purl": format!("pkg:oci/{}@{}", i.name, i.digest.replace(':', "%3A")),
        "hashes": [sha256(&i.sha256)],
        "properties": properties,
    })
}

/// `text` with every run of white space (newlines included) made one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sha256(hex: &str) -> Value {
    json!({ "alg": "SHA-256", "content": hex })
}

fn property(name: &str, value: &str) -> Value {
    json!({ "name": format!("{PROP}:{name}"), "value": value })
}

/// `https://proxy.golang.org/<escaped module>/@v/<version>.zip`; the proxy protocol escapes
/// every upper-case letter as `!` + its lower case.
pub fn go_proxy_zip_url(module: &str, version: &str) -> String {
    let escape = |s: &str| {
        s.chars().fold(String::new(), |mut out, ch| {
            if ch.is_ascii_uppercase() {
                out.push('!');
                out.push(ch.to_ascii_lowercase());
            } else {
                out.push(ch);
            }
            out
        })
    };
    format!(
        "https://proxy.golang.org/{}/@v/{}.zip",
        escape(module),
        escape(version)
    )
}

/// A version-5-shaped UUID URN taken from the tarball's sha256: the same tarball always gets
/// the same serial number, and another tarball gets another one.
pub fn serial_number(tarball_sha256: &str) -> String {
    let mut hex: Vec<char> = tarball_sha256.chars().take(32).collect();
    hex.resize(32, '0');
    hex[12] = '5'; // version nibble
    let variant = hex[16].to_digit(16).unwrap_or(0);
    hex[16] = std::char::from_digit(8 | (variant & 3), 16).unwrap(); // RFC 4122 variant
    let s: String = hex.into_iter().collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_rfc4122_shaped_and_follow_the_tarball() {
        let a = serial_number(&"f".repeat(64));
        assert_eq!(a, "urn:uuid:ffffffff-ffff-5fff-bfff-ffffffffffff");
        let b = serial_number(&"0".repeat(64));
        assert_eq!(b, "urn:uuid:00000000-0000-5000-8000-000000000000");
        assert_ne!(a, b);
    }

    #[test]
    fn go_proxy_urls_escape_upper_case() {
        assert_eq!(
            go_proxy_zip_url("github.com/BurntSushi/toml", "v1.0.0"),
            "https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.0.0.zip"
        );
    }
}
