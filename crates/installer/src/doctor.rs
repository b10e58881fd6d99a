//! `doctor`: the sandbox's shape (shape.rs), every known gVisor blocker, whether this host has
//! it, and whether it is handled. Works with or without an install; exits non-zero when a
//! present blocker is not handled (a shape below what the e2e proved enough only warns).

use anyhow::{bail, Result};
use std::path::Path;

use crate::blockers;
use crate::bundle::Manifest;
use crate::cluster::{self, ServiceProxy};
use crate::probe::HostFacts;
use crate::shape::Shape;
use crate::state::State;

/// A row doctor prints that is not a host blocker: a decision about k3s's parts.
struct Finding {
    name: &'static str,
    present: bool,
    handled_by: Option<String>,
}

/// `procsys_candidates`: the /proc/sys files the bundle ships defaults for. `installed`: the
/// install's state, if installed (its decisions are shown rather than probed again).
/// `has_svcproxy`: the bundle (or the install's prefix) has bin/svcproxy. `data_dir`: where the
/// free disk is measured.
pub fn doctor(
    data_dir: &Path,
    manifest: Option<&Manifest>,
    procsys_candidates: &[String],
    installed: Option<&State>,
    has_svcproxy: bool,
) -> Result<()> {
    let facts = HostFacts::probe(procsys_candidates);
    println!(
        "host: kernel {}, root filesystem {}, {}",
        facts.kernel_release,
        facts.root_fs_type,
        if facts.looks_like_gvisor() {
            "looks like gVisor"
        } else {
            "not gVisor"
        }
    );
    let shape = Shape::probe(&facts.root_fs_type, facts.looks_like_gvisor(), data_dir);
    for line in shape.describe() {
        println!("{line}");
    }
    for warning in shape.warnings() {
        println!("warning: {warning}");
    }
    let blockers = blockers::table(&blockers::Inputs {
        facts: &facts,
        manifest,
        installed,
        snapshotter: None,
        mount_probes: true,
    });
    // (name, present, handled by, what to do otherwise)
    let mut rows: Vec<(&str, bool, Option<String>, String)> = blockers
        .iter()
        .map(|b| {
            (
                b.name,
                b.present,
                b.handled_by(),
                format!("{} [{}]", b.advice, b.id),
            )
        })
        .collect();
    let (k3s, service_proxy) = k3s_findings(manifest, installed, has_svcproxy);
    rows.extend(
        k3s.iter()
            .map(|f| (f.name, f.present, f.handled_by.clone(), String::new())),
    );
    let mut unhandled = Vec::new();
    for (name, present, handled_by, advice) in rows {
        let verdict = match (present, handled_by) {
            (false, _) => "absent".to_string(),
            (true, Some(how)) => format!("present, handled by {how}"),
            (true, None) => {
                unhandled.push(name);
                format!("present, NOT handled: {advice}")
            }
        };
        println!("{name:<44} {verdict}");
    }
    println!("{:<44} {}", "service proxy", service_proxy.describe());
    if !unhandled.is_empty() {
        bail!(
            "{} blocker(s) not handled: {}",
            unhandled.len(),
            unhandled.join(", ")
        );
    }
    Ok(())
}

/// kube-proxy, the service proxy and the add-ons: the decisions an install recorded, or (before
/// install) what an install here would decide.
fn k3s_findings(
    manifest: Option<&Manifest>,
    installed: Option<&State>,
    has_svcproxy: bool,
) -> (Vec<Finding>, ServiceProxy) {
    let (kube_proxy_off, service_proxy, addons_off) = match installed {
        Some(state) => (
            state.kube_proxy_off.clone(),
            ServiceProxy::decide(
                state.control_plane_only,
                state.kube_proxy_off.as_deref(),
                has_svcproxy,
            ),
            state.addons_off.clone(),
        ),
        None => {
            let kube_proxy_off = cluster::kube_proxy_blocker();
            let service_proxy =
                ServiceProxy::decide(false, kube_proxy_off.as_deref(), has_svcproxy);
            let install = cluster::Install {
                control_plane_only: false,
                no_service_proxy: matches!(service_proxy, ServiceProxy::Nothing { .. }),
                kubelet_stats_blocker: cluster::kubelet_stats_blocker(),
            };
            let addons_off = manifest
                .map(|m| cluster::addons_off(m, &install))
                .unwrap_or_default();
            (kube_proxy_off, service_proxy, addons_off)
        }
    };
    let findings = vec![
        Finding {
            name: "kube-proxy cannot write iptables rules",
            handled_by: kube_proxy_off.as_ref().map(|reason| {
                if service_proxy.is_svcproxy() {
                    format!("svcproxy in place of kube-proxy (k3s --disable-kube-proxy): {reason}")
                } else {
                    format!("k3s --disable-kube-proxy (ClusterIP Services do not route): {reason}")
                }
            }),
            present: kube_proxy_off.is_some(),
        },
        Finding {
            name: "k3s add-ons that cannot run here",
            present: !addons_off.is_empty(),
            handled_by: Some(format!(
                "k3s --disable: {}",
                addons_off
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        },
    ];
    (findings, service_proxy)
}
