//! `./install`: preflight, then lay out, prepare the host, and start.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bundle::Bundle;
use crate::cluster;
use crate::cni_host;
use crate::copy_bundle;
use crate::k3s_settings::{self, Checked, K3sCommand};
use crate::lifecycle;
use crate::mounts;
use crate::paths::Paths;
use crate::preflight;
use crate::state::{LauncherUse, State};
use crate::userenv;
use bundle_format::paths as in_bundle;

pub struct InstallOptions {
    pub bundle_dir: Option<PathBuf>,
    pub prefix: PathBuf,
    pub data_dir: PathBuf,
    pub control_plane_only: bool,
    pub no_start: bool,
    pub launcher: LauncherUse,
    /// `--server` with `--token` or `--token-file`: install an agent node.
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub node_name: Option<String>,
    /// The flags after `--`.
    pub k3s_flags: Vec<String>,
    /// The installer's environment: K3S_*, INSTALL_K3S_* and proxies are read from it.
    pub env: BTreeMap<String, String>,
    /// Over an existing install: also a downgrade (upgrade.rs).
    pub force: bool,
}

pub struct Join {
    pub server: String,
    pub token: String,
}

/// What the user asked k3s to be, from our options and k3s's own variables, as k3s's
/// install.sh reads them.
struct K3sRequest {
    command: K3sCommand,
    join: Option<Join>,
    node_name: String,
    /// INSTALL_K3S_EXEC's flags, then those after `--`.
    flags: Vec<String>,
    /// What is recorded for the daemons (k3s_settings::recorded_env, less what is consumed).
    env: BTreeMap<String, String>,
}

fn read_token_file(path: &std::path::Path, what: &str) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read the join token", path.display()))?;
    Ok(token.trim().to_string())
}

/// `--server`/`K3S_URL`, the token from `--token`, `--token-file`, `K3S_TOKEN` or
/// `K3S_TOKEN_FILE`, `--node-name`/`K3S_NODE_NAME`, and INSTALL_K3S_EXEC's command and flags.
fn k3s_request(options: &InstallOptions) -> Result<K3sRequest> {
    let env = &options.env;
    let (exec_command, mut flags) =
        k3s_settings::split_install_exec(env.get("INSTALL_K3S_EXEC").map_or("", String::as_str));
    flags.extend(options.k3s_flags.iter().cloned());
    let server = options
        .server
        .clone()
        .or_else(|| env.get("K3S_URL").cloned());
    let command = match (exec_command, &server) {
        (Some(K3sCommand::Agent), None) => bail!(
            "INSTALL_K3S_EXEC says `agent`, but there is no server to join: give --server URL \
             (or K3S_URL) with --token-file FILE (or K3S_TOKEN_FILE / K3S_TOKEN)"
        ),
        (Some(K3sCommand::Server), Some(_)) => bail!(
            "INSTALL_K3S_EXEC says `server` and a server URL is given (K3S_URL or --server): \
             joining a server to another server (HA) is not supported by this installer; unset \
             K3S_URL for a server of its own, or drop `server` to join as an agent"
        ),
        (_, Some(_)) => K3sCommand::Agent,
        (_, None) => K3sCommand::Server,
    };
    let join = match &server {
        None => None,
        Some(server) => {
            let token = if let Some(token) = &options.token {
                token.trim().to_string()
            } else if let Some(file) = &options.token_file {
                read_token_file(file, "--token-file")?
            } else if let Some(token) = env.get("K3S_TOKEN") {
                token.trim().to_string()
            } else if let Some(file) = env.get("K3S_TOKEN_FILE") {
                read_token_file(std::path::Path::new(file), "K3S_TOKEN_FILE")?
            } else if options.server.is_some() {
                bail!("--server needs the join token: --token-file FILE (or --token TOKEN)")
            } else {
                // install.sh's own words.
                bail!(
                    "Defaulted k3s exec command to 'agent' because K3S_URL is defined, but \
                     K3S_TOKEN or K3S_TOKEN_FILE is not defined: give the server's join token \
                     (its DATA_DIR/k3s/server/node-token) as K3S_TOKEN_FILE=FILE or \
                     --token-file FILE, or unset K3S_URL to install a server"
                )
            };
            Some(Join {
                server: server.clone(),
                token,
            })
        }
    };
    let node_name = options
        .node_name
        .clone()
        .or_else(|| env.get("K3S_NODE_NAME").cloned())
        .unwrap_or_else(crate::state::default_node_name);
    // Turned into our own options above, so not passed to k3s as they are. A server's
    // K3S_TOKEN is its cluster secret and stays.
    let mut recorded = k3s_settings::recorded_env(env.clone().into_iter());
    for consumed in k3s_settings::CONSUMED_ENV {
        if consumed != "K3S_TOKEN" || command == K3sCommand::Agent {
            recorded.remove(consumed);
        }
    }
    Ok(K3sRequest {
        command,
        join,
        node_name,
        flags,
        env: recorded,
    })
}

/// Refuses a join that cannot work before anything is written: a URL k3s would not take, an
/// empty token, a server this sandbox cannot reach.
fn check_join(join: &Join) -> Result<()> {
    let Some(rest) = join.server.strip_prefix("https://") else {
        bail!(
            "--server {}: must be the server's https URL, e.g. https://10.0.0.2:6443 (the \
             server's install prints it)",
            join.server
        );
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    if join.token.trim().is_empty() {
        bail!("--token is empty: use the token in the server's DATA_DIR/k3s/server/node-token");
    }
    let targets: Vec<std::net::SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("--server {}: cannot resolve {address}", join.server))?
        .collect();
    let mut last_error = None;
    for target in &targets {
        match TcpStream::connect_timeout(target, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
    }
    bail!(
        "cannot reach the server at {address} ({}): this sandbox must reach the server's port \
         6443; check the address the server's install printed and that both sandboxes are on \
         one network",
        last_error.map_or("no address".to_string(), |e| e.to_string())
    )
}

/// k3s takes a node name that is a DNS subdomain (RFC 1123): refuse others here, not after the
/// daemons started.
fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !ok {
        bail!(
            "--node-name {name:?}: a node name must be lower-case letters, digits, '-' and '.' \
             (a DNS subdomain), e.g. sandbox-2"
        );
    }
    Ok(())
}

/// Host paths the daemons create outside our dirs; if new at install, uninstall removes what is
/// left of them once empty (k3s's /etc/rancher/node/password is removed first). The inner ones
/// count on their own: where /etc/rancher or /run/containerd was there before (another k3s, an
/// earlier install), what ours made inside it still goes.
const DAEMON_HOST_PATHS: [&str; 8] = [
    "/etc/rancher",
    "/etc/rancher/node",
    "/run/containerd",
    "/run/containerd/s",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/var/lib/cni/results",
];

pub fn install(options: &InstallOptions) -> Result<()> {
    let paths = Paths::new(&options.prefix, &options.data_dir);

    // Over an existing install: the same version is left as it is (and started), another one
    // is an upgrade (upgrade.rs).
    if let Some(state) = State::load(&paths.data_dir)? {
        return crate::upgrade::over_existing(
            state,
            &crate::upgrade::Request {
                bundle_dir: options.bundle_dir.clone(),
                force: options.force,
                no_start: options.no_start,
                prefix: Some(options.prefix.clone()),
            },
        );
    }

    let request = k3s_request(options)?;
    let node_name = request.node_name.clone();
    check_node_name(&node_name)?;
    if let Some(join) = &request.join {
        check_join(join)?;
    }
    let no_start = options.no_start
        || options
            .env
            .get("INSTALL_K3S_SKIP_START")
            .is_some_and(|v| v == "true");
    // A bad registries.yaml is refused before anything is written (start reads it again);
    // a control-plane-only server runs no containerd and never reads it.
    if !options.control_plane_only {
        crate::registries::load(std::path::Path::new(crate::registries::REGISTRIES_FILE))?;
    }
    let bundle = Bundle::locate(options.bundle_dir.as_deref())?;
    let k3s = bundle.path(in_bundle::K3S);
    if !k3s.is_file() && !request.flags.is_empty() {
        bail!("k3s flags were given, but this bundle has no k3s (see bundle-manifest.json)");
    }
    println!(
        "k3s-gvisor {} ({}) from {}",
        bundle.manifest.version,
        bundle.manifest.arch,
        bundle.dir.display()
    );
    // Both before anything is written, side by side (both only read; in gVisor the hashing
    // of every bundle file and the two `k3s --help` take ~0.5 s each): preflight, and the k3s
    // settings check, so that a flag, config file or variable k3s would refuse or that would
    // undo what the installer sets stops the install here. Preflight's verdict comes first: a
    // damaged bundle is reported as such, not by what its k3s printed.
    let (plan, settings) = std::thread::scope(|scope| {
        let settings = scope.spawn(|| {
            k3s.is_file()
                .then(|| Checked::new(&k3s, request.command, &request.flags, &request.env))
                .transpose()
        });
        let plan = preflight::check(&bundle, &paths, !no_start, !options.control_plane_only);
        (
            plan,
            settings.join().expect("the k3s settings check panicked"),
        )
    });
    let plan = plan?;
    let settings = settings?;
    if let Some(settings) = &settings {
        report_k3s_settings(settings);
    }
    println!("preflight passed");
    if plan.workarounds.is_empty() {
        println!("no sandbox workarounds needed on this host");
    }
    for line in &plan.workarounds {
        println!("workaround: {line}");
    }
    // Decided once, here: which parts of k3s this host can run (no agent: no kube-proxy).
    let has_k3s = bundle.path(in_bundle::K3S).is_file();
    if request.join.is_some() && !has_k3s {
        bail!("--server needs k3s, and this bundle has none (see bundle-manifest.json)");
    }
    // Probed on a control-plane-only server too: it decides for the agents that join it, and
    // they run in sandboxes like this one (a server elsewhere must decide for its agents).
    let kube_proxy_off = match &settings {
        // The user's --disable-kube-proxy: svcproxy serves Services in its place (on a server;
        // an agent follows its server).
        Some(settings)
            if settings.is_on("disable-kube-proxy") && request.command == K3sCommand::Server =>
        {
            Some("turned off by the user (--disable-kube-proxy)".to_string())
        }
        Some(_) => cluster::kube_proxy_blocker(),
        None => None,
    };
    let service_proxy = cluster::ServiceProxy::decide(
        options.control_plane_only,
        kube_proxy_off.as_deref(),
        bundle.path(in_bundle::SVCPROXY).is_file(),
    );
    if let (Some(reason), Some(_)) = (&kube_proxy_off, &request.join) {
        // k3s hands the server's --disable-kube-proxy to its agents; this agent cannot say.
        println!(
            "note: kube-proxy cannot run here ({reason}); agents run it only if the server does: \
             a server installed by this bundle in a sandbox turns it off for every node, a \
             server elsewhere must run with --disable-kube-proxy"
        );
    }
    let addons_off = if has_k3s && request.join.is_none() {
        let install = cluster::Install {
            control_plane_only: options.control_plane_only,
            no_service_proxy: matches!(service_proxy, cluster::ServiceProxy::Nothing { .. }),
            kubelet_stats_blocker: cluster::kubelet_stats_blocker(),
        };
        cluster::addons_off(&bundle.manifest, &install)
    } else {
        Vec::new()
    };
    // On an agent the server decides (the note above), so there is nothing to turn off here.
    if has_k3s && request.join.is_none() {
        report_turned_off(kube_proxy_off.as_deref(), &service_proxy, &addons_off);
        if let Some(settings) = &settings {
            let helm = crate::helm::HelmController::decide(settings, Some(&bundle.manifest));
            println!("k3s: helm-controller {}", helm.describe());
        }
    }
    if bundle.sandbox_image().is_none() {
        println!(
            "warning: this bundle ships no pod sandbox (pause) image: containerd will try to pull \
             registry.k8s.io/pause:3.10 for every pod, which fails without network access"
        );
    }

    let mut state = State {
        bundle_name: bundle.manifest.name.clone(),
        bundle_version: bundle.manifest.version.clone(),
        prefix: paths.prefix.clone(),
        data_dir: paths.data_dir.clone(),
        control_plane_only: options.control_plane_only,
        server: request.join.as_ref().map(|j| j.server.clone()),
        node_name: Some(node_name.clone()),
        snapshotter: plan.snapshotter,
        created_dirs: Vec::new(),
        created_files: Vec::new(),
        mounts: Vec::new(),
        absent_before: DAEMON_HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect(),
        netns_before: crate::mounts::pod_netns_names(),
        workarounds: plan.workarounds.clone(),
        read_only_procsys: plan.facts.read_only_procsys.clone(),
        kube_proxy_off,
        addons_off,
        added_addresses: Vec::new(),
        links_before: cni_host::link_names(),
        lo_before_up: None,
        launcher: options.launcher,
        k3s_flags: request.flags.clone(),
        env: request.env.clone(),
        tool_links: Vec::new(),
        previous_prefix: None,
    };
    // The data dir comes first: it holds the state file that records everything after it.
    // Explicit modes, whatever the directories had (preflight refused others' directories):
    // the data dir holds the state file and tokens, the prefix only what the bundle ships.
    state.create_dir_all_recorded(&paths.data_dir)?;
    crate::files::set_mode(&paths.data_dir, crate::files::DATA_DIR_MODE)?;
    state.create_dir_all_recorded(&paths.prefix)?;
    crate::files::set_mode(&paths.prefix, crate::files::PREFIX_MODE)?;
    if let Some(join) = &request.join {
        write_token(&paths.agent_token(), &join.token)?;
        println!(
            "agent node {node_name}: joins {} (token in {}, mode 0600)",
            join.server,
            paths.agent_token().display()
        );
    }

    let tools = userenv::ToolLinks::from_env(&options.env);
    let result = prepare_and_start(
        &bundle, &paths, &plan, &mut state, &tools, no_start, settings,
    );
    if result.is_err() {
        eprintln!(
            "install did not finish; what it did is recorded in {}. Fix the problem and run \
             `{} start`, or undo everything with `{} uninstall --data-dir {}`",
            paths.state_file().display(),
            paths.bin("installer").display(),
            paths.bin("installer").display(),
            paths.data_dir.display()
        );
    }
    result
}

fn write_token(path: &std::path::Path, token: &str) -> Result<()> {
    crate::files::write_replacing(path, format!("{}\n", token.trim()).as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What the user gave k3s, as install takes it (status shows the same).
fn report_k3s_settings(settings: &Checked) {
    for line in k3s_settings::describe(&settings.settings) {
        println!("k3s: {line}");
    }
}

/// One line per part of k3s this host cannot run, each with its reason, and who serves Services.
fn report_turned_off(
    kube_proxy_off: Option<&str>,
    service_proxy: &cluster::ServiceProxy,
    addons_off: &[cluster::TurnedOff],
) {
    if let Some(reason) = kube_proxy_off {
        println!("k3s: kube-proxy off (--disable-kube-proxy, on every node): {reason}");
    }
    println!("k3s: service proxy: {}", service_proxy.describe());
    for addon in addons_off {
        println!(
            "k3s: add-on {} off (--disable): {}",
            addon.name, addon.reason
        );
    }
}

fn prepare_and_start(
    bundle: &Bundle,
    paths: &Paths,
    plan: &preflight::Plan,
    state: &mut State,
    tools: &userenv::ToolLinks,
    no_start: bool,
    // Checked above with the bundle's k3s, the same binary the prefix now has.
    settings: Option<Checked>,
) -> Result<()> {
    copy_bundle::lay_out(bundle, paths, plan)?;
    println!("installed files under {}", paths.prefix.display());
    tools.write(state)?;
    if !plan.facts.has_dev_kmsg {
        mounts::provide_dev_kmsg(state)?;
        println!("/dev/kmsg: bind-mounted /dev/null");
    }
    if plan.facts.needs_cgroup_mounts() {
        let outcome = mounts::mount_cgroups(state)?;
        println!("cgroup v1 mounted: {}", outcome.mounted.join(","));
        for (controller, error) in outcome.refused {
            println!(
                "cgroup v1 {controller}: refused by the kernel ({error}); continuing without it"
            );
        }
    }
    crate::procsys_overlay::apply(state);
    if no_start {
        println!(
            "--no-start: not starting; run `{} start` when ready",
            paths.bin("installer").display()
        );
        return Ok(());
    }
    lifecycle::start_after_install(state, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(env: &[(&str, &str)]) -> InstallOptions {
        InstallOptions {
            bundle_dir: None,
            prefix: "/p".into(),
            data_dir: "/d".into(),
            control_plane_only: false,
            no_start: false,
            launcher: LauncherUse::Auto,
            server: None,
            token: None,
            token_file: None,
            node_name: None,
            k3s_flags: vec!["--debug".into()],
            force: false,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn k3s_variables_choose_server_or_agent_as_install_sh_does() {
        let server = k3s_request(&options(&[
            ("K3S_TOKEN", "cluster-secret"),
            ("K3S_NODE_NAME", "box-1"),
            ("INSTALL_K3S_EXEC", "server --node-label a=b"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(server.command, K3sCommand::Server);
        assert_eq!(server.node_name, "box-1");
        assert_eq!(server.flags, ["--node-label", "a=b", "--debug"]);
        // A server's K3S_TOKEN is its cluster secret: passed on. K3S_NODE_NAME became ours.
        assert_eq!(server.env.keys().collect::<Vec<_>>(), ["K3S_TOKEN"]);

        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("node-token");
        std::fs::write(&token_file, "K10abc::server:def\n").unwrap();
        let url = ("K3S_URL", "https://10.0.0.2:6443");
        let file = token_file.to_str().unwrap();
        let agent = k3s_request(&options(&[url, ("K3S_TOKEN_FILE", file)])).unwrap();
        assert_eq!(agent.command, K3sCommand::Agent);
        let join = agent.join.unwrap();
        assert_eq!(
            (join.server.as_str(), join.token.as_str()),
            (url.1, "K10abc::server:def")
        );
        assert!(agent.env.is_empty(), "{:?}", agent.env);

        let agent = k3s_request(&options(&[url, ("K3S_TOKEN", "t")])).unwrap();
        assert!(
            agent.env.is_empty(),
            "an agent's token is written to agent-token, not passed"
        );

        let error = |env: &[(&str, &str)]| k3s_request(&options(env)).err().unwrap().to_string();
        assert!(error(&[url]).starts_with("Defaulted k3s exec command to 'agent'"));
        assert!(error(&[("INSTALL_K3S_EXEC", "agent")]).contains("no server to join"));
        assert!(error(&[url, ("K3S_TOKEN", "t"), ("INSTALL_K3S_EXEC", "server")]).contains("(HA)"));
        assert!(error(&[url, ("K3S_TOKEN_FILE", "/no/such/file")])
            .contains("K3S_TOKEN_FILE /no/such/file"));
    }

    #[test]
    fn node_names_must_be_dns_subdomains() {
        for good in ["server", "sandbox-2", "a.b-c.d", "n1"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Server", "a_b", "-a", "a-", "a..b"] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_join_needs_an_https_url_a_token_and_a_reachable_server() {
        let join = |server: &str, token: &str| Join {
            server: server.into(),
            token: token.into(),
        };
        let error = check_join(&join("10.0.0.2:6443", "t"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("https URL"), "{error}");
        let error = check_join(&join("https://127.0.0.1:1", " "))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--token is empty"), "{error}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check_join(&join(&format!("https://127.0.0.1:{port}"), "t")).is_ok());
        drop(listener);
        let error = check_join(&join(&format!("https://127.0.0.1:{port}"), "t"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot reach the server"), "{error}");
    }
}
