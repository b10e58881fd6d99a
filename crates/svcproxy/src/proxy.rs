//! The proxy's life: connect, wait for the first lists, sync on every change and every
//! `--resync` seconds, clean up on SIGTERM/SIGINT.

use crate::addresses::ClusterIps;
use crate::cli::{Args, LoadBalancerStatus};
use crate::limits::{self, TcpCounts, TcpLimits, UdpLimits};
use crate::listeners::Listeners;
use crate::loadbalancer::StatusWriter;
use crate::reconcile::Reconciler;
use crate::status::Status;
use crate::watch::Cluster;
use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// Changes that arrive together (a rollout touches many EndpointSlices) are applied in one
/// sync: after a wake-up the proxy waits this long for more.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub async fn run(args: Args) -> Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("using kubeconfig {}", args.kubeconfig.display()))?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("creating the Kubernetes client")?;
    let writes_status = args.load_balancer_status == LoadBalancerStatus::Auto;
    let mut lb_status = StatusWriter::new(client.clone(), writes_status);

    // Fail now, with the reason, if ClusterIPs cannot be placed at all.
    let cluster_ips = if args.load_balancer_status_only {
        None
    } else {
        let cluster_ips = ClusterIps::new(&args.bridge, args.service_cidr, args.node_ip)?;
        cluster_ips.ensure_bridge()?;
        Some(cluster_ips)
    };

    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;

    let changed = Arc::new(Notify::new());
    // Nodes (their addresses are the ingress) are watched unless the status is never written:
    // whether these credentials may write it is only known once the API answers, and an
    // agent's (system:node-proxier) may list and watch Nodes anyway.
    let cluster = Cluster::watch(client, changed.clone(), writes_status);
    if args.load_balancer_status_only {
        tracing::info!(
            "svcproxy {} watching Services, EndpointSlices and Nodes at {server}: LoadBalancer status only (kube-proxy serves Services here)",
            env!("CARGO_PKG_VERSION"),
        );
    } else {
        tracing::info!(
            "svcproxy {} watching Services and EndpointSlices at {server}; ClusterIPs of {} go on {}",
            env!("CARGO_PKG_VERSION"),
            args.service_cidr,
            args.bridge
        );
    }
    tokio::select! {
        _ = cluster.ready() => {}
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    }

    let mut reconciler = Reconciler::new(
        args.service_cidr,
        args.nodeport_addresses.clone(),
        cluster_ips,
        Listeners::new(udp_limits(&args), TcpCounts::new(tcp_limits(&args))),
        args.status_file.clone(),
        Status::new(&args.bridge, &args.service_cidr.to_string()),
    );
    let resync = Duration::from_secs(args.resync);
    let mut first = true;
    loop {
        let services = cluster.services.state();
        let slices = cluster.slices.state();
        let plan = reconciler.sync(&services, &slices);
        lb_status
            .sync(&plan, &services, &cluster.nodes(), &slices)
            .await;
        reconciler.write_status(&plan, lb_status.role());
        if first {
            tracing::info!(
                "serving {} Services (first sync done)",
                cluster.services.len()
            );
            first = false;
        }
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(resync) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!(
        "stopping: closing sockets and removing ClusterIPs from {}",
        args.bridge
    );
    reconciler.shutdown();
    Ok(())
}

fn udp_limits(args: &Args) -> UdpLimits {
    UdpLimits {
        idle: Duration::from_secs(args.udp_idle_timeout),
        max_flows: args.max_udp_flows as usize,
        max_flows_per_source: args.max_udp_flows_per_source as usize,
    }
}

/// The TCP caps: the total from the flag or the open-file limit (main raised the soft limit to
/// the hard one), the per-source cap at most half of it.
fn tcp_limits(args: &Args) -> TcpLimits {
    let max_connections = match args.max_tcp_connections {
        Some(n) => n as usize,
        None => limits::tcp_connections_for_open_files(crate::open_file_limit()),
    };
    let max_per_source = (args.max_tcp_connections_per_source as usize)
        .min(max_connections / 2)
        .max(1);
    tracing::debug!("TCP caps: {max_connections} connections, {max_per_source} per client address");
    TcpLimits {
        idle: Duration::from_secs(args.tcp_idle_timeout),
        max_connections,
        max_per_source,
    }
}
