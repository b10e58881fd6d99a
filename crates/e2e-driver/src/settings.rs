//! What a k3s user brings for k3s (issue 23: flags, INSTALL_K3S_EXEC, config files, K3S_*
//! variables, the tools in a fresh shell), for scenario.sh in full mode; tests/e2e/k3s-settings.sh
//! only calls these phases.
//!
//! The e2e shares the host's root filesystem: what `prepare` writes outside RUN (k3s's config
//! files under /etc/rancher/k3s, each starting with the e2e's mark) `cleanup` removes again,
//! before the host check.
//!
//! Steps: k3s-flags, tls-san, kubeconfig-mode, tools-fresh-shell, status-k3s-settings,
//! daemon-env, refused-flag, bad-config-refused (`steps`); env-kept-across-start,
//! daemon-env-after-start (`after-restart`); tools-removed (`cleanup`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use e2e_steps::{Step, E2E_FILE_MARK};

use crate::procs;
use crate::{first_chars, last_line, Run};

#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum Phase {
    /// Before install: k3s's config file and a drop-in; RUN/settings.env sets the variables a
    /// k3s user sets (and one that must not reach the daemons) and K3S_FLAGS, the flags after
    /// `--`; RUN/settings-unset.env unsets them again after install.
    Prepare,
    /// Once the cluster runs: every source of settings reached k3s, status reports them, and
    /// bad ones are refused before anything is written.
    Steps,
    /// Before `start` from a clean shell: undo what only k3s's recorded K3S_KUBECONFIG_MODE
    /// redoes.
    BeforeRestart,
    /// After that start: the recorded variables reached k3s again, nothing else did.
    AfterRestart,
    /// After uninstall: the tool wrappers are gone; remove the config files and the dirs
    /// `prepare` made.
    Cleanup,
}

const ETC: &str = "/etc/rancher/k3s";
/// K3S_TOKEN: a server's cluster secret, recorded, passed at every start, masked in status.
const TOKEN: &str = "e2e-cluster-secret";
/// A variable of the installer's shell that must not reach any daemon.
const NOT_FOR_DAEMONS: &str = "E2E_NOT_FOR_DAEMONS";
/// The port of the proxy for image pulls (k3s's CONTAINERD_HTTPS_PROXY), which images.rs
/// starts.
pub(crate) const PROXY_PORT: u16 = 3128;
/// A clean environment, as a new shell in a sandbox has it (scenario.sh's CLEAN_ENV).
const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The node labels, one from each source k3s reads.
const LABELS: [&str; 4] = ["e2e-flag", "e2e-exec", "e2e-config", "e2e-dropin"];
const FLAGS_IN_STATUS: &str =
    "--node-label=e2e-exec=yes --node-label=e2e-flag=yes --tls-san=e2e.example";
/// Where `prepare` records the directories it made (removed by `cleanup`).
const MADE: &str = "settings-made";

pub fn run(run: &Run, phase: Phase) -> Result<()> {
    match phase {
        Phase::Prepare => prepare(run),
        Phase::Steps => {
            steps(run);
            Ok(())
        }
        Phase::BeforeRestart => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(run.kubeconfig(), std::fs::Permissions::from_mode(0o600))
                .context("chmod 600 kubeconfig.yaml")
        }
        Phase::AfterRestart => {
            let mode = procs::mode(&run.kubeconfig());
            run.verdict(
                Step::EnvKeptAcrossStart,
                match mode {
                    Some(0o644) => {
                        Ok("kubeconfig mode 644 again after start from a clean shell".to_string())
                    }
                    other => Err(format!("kubeconfig mode {}", procs::mode_text(other))),
                },
            );
            daemon_env(run, Step::DaemonEnvAfterStart);
            Ok(())
        }
        Phase::Cleanup => {
            cleanup(run);
            Ok(())
        }
    }
}

/// The settings.env `prepare` writes for the shell to source.
fn settings_env() -> String {
    format!(
        "INSTALL_K3S_EXEC='--node-label e2e-exec=yes'\n\
         K3S_KUBECONFIG_MODE=644\n\
         K3S_TOKEN={TOKEN}\n\
         {NOT_FOR_DAEMONS}=leaked\n\
         CONTAINERD_HTTPS_PROXY=http://127.0.0.1:{PROXY_PORT}\n\
         export INSTALL_K3S_EXEC K3S_KUBECONFIG_MODE K3S_TOKEN {NOT_FOR_DAEMONS} CONTAINERD_HTTPS_PROXY\n\
         K3S_FLAGS='-- --node-label e2e-flag=yes --tls-san e2e.example'\n"
    )
}

fn prepare(run: &Run) -> Result<()> {
    let mut made = String::new();
    for dir in ["/etc/rancher", ETC, &format!("{ETC}/config.yaml.d")] {
        if !Path::new(dir).exists() {
            std::fs::create_dir(dir).with_context(|| format!("mkdir {dir}"))?;
            // Newest first: cleanup removes them in this order.
            made.insert_str(0, &format!("{dir}\n"));
        }
    }
    std::fs::write(run.run.join(MADE), made)?;
    std::fs::write(
        format!("{ETC}/config.yaml"),
        format!("{E2E_FILE_MARK}\nnode-label:\n  - e2e-config=yes\n"),
    )?;
    std::fs::write(
        format!("{ETC}/config.yaml.d/50-e2e.yaml"),
        format!("{E2E_FILE_MARK}\nnode-label+:\n  - e2e-dropin=yes\n"),
    )?;
    std::fs::write(run.run.join("settings.env"), settings_env())?;
    std::fs::write(
        run.run.join("settings-unset.env"),
        format!(
            "unset INSTALL_K3S_EXEC K3S_KUBECONFIG_MODE K3S_TOKEN {NOT_FOR_DAEMONS} CONTAINERD_HTTPS_PROXY\n"
        ),
    )?;
    Ok(())
}

fn steps(run: &Run) {
    // Every source of node labels reached k3s: `--`, INSTALL_K3S_EXEC, config.yaml, config.yaml.d.
    run.verdict(
        Step::K3sFlags,
        run.kubectl(&["get", "nodes", "-o", "json"])
            .map_err(|e| format!("{e:#}"))
            .and_then(|json| {
                let nodes: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| e.to_string())?;
                labels_verdict(&nodes["items"][0]["metadata"]["labels"])
            }),
    );
    let san = api_certificate_san();
    run.verdict(
        Step::TlsSan,
        match san.contains("DNS:e2e.example") {
            true => Ok("the API's certificate names e2e.example".into()),
            false => Err(format!("SAN: {san}")),
        },
    );

    // K3S_KUBECONFIG_MODE=644: readable by a normal user, through the wrapper, from a fresh shell.
    let mode = procs::mode(&run.kubeconfig());
    let nobody = output_of(
        Command::new("env")
            .args([
                "-i",
                "HOME=/tmp",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "setpriv",
            ])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["kubectl", "get", "nodes", "-o", "name"]),
    );
    run.verdict(
        Step::KubeconfigMode,
        match mode == Some(0o644) && nobody.lines().any(|l| l.starts_with("node/")) {
            true => Ok(format!("mode 644; user nobody: {}", nobody.trim())),
            false => Err(format!(
                "mode {}; nobody: {}",
                procs::mode_text(mode),
                last_line(&nobody)
            )),
        },
    );

    let fresh = output_of(clean_shell().arg(
        "for t in kubectl crictl ctr; do printf \"%s \" \"$(command -v $t)\"; done; \
         kubectl get nodes -o name && crictl ps -q >/dev/null && ctr images ls -q >/dev/null",
    ));
    run.verdict(
        Step::ToolsFreshShell,
        match fresh.lines().any(|l| {
            l.starts_with("/usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr node/")
        }) {
            true => Ok(fresh.trim().to_string()),
            false => Err(last_lines(&fresh, 2)),
        },
    );

    let state_mode = procs::mode(&run.data_dir.join("state.json"));
    run.verdict(
        Step::StatusK3sSettings,
        run.status()
            .map_err(|e| format!("{e:#}"))
            .and_then(|(json, text)| status_verdict(&json, &text, state_mode)),
    );

    daemon_env(run, Step::DaemonEnv);

    // Refused before anything is written: a flag the installer sets, a config key k3s lacks.
    let p2 = run.run.join("p2");
    let d2 = run.run.join("d2");
    let nothing_written = |p2: &Path, d2: &Path| !p2.exists() && !d2.exists();
    let second = |extra: &[&str]| {
        let mut args = vec![
            "--prefix".to_string(),
            p2.display().to_string(),
            "--data-dir".to_string(),
            d2.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run.install(&args)
            .unwrap_or_else(|e| (-1, format!("{e:#}")))
    };
    let (rc, out) = second(&["--", "--data-dir", "/srv/k3s"]);
    run.verdict(
        Step::RefusedFlag,
        match rc != 0
            && out.contains("--data-dir is set by the installer")
            && out.contains("./install --data-dir")
            && nothing_written(&p2, &d2)
        {
            true => Ok(first_chars(last_line(&out), 160)),
            false => Err(format!("rc={rc} {}", last_line(&out))),
        },
    );
    let bad = PathBuf::from(format!("{ETC}/config.yaml.d/60-bad.yaml"));
    let written = std::fs::write(
        &bad,
        format!("{E2E_FILE_MARK}\ntls-san: [x]\nnode-lable: oops\n"),
    );
    let (rc, out) = second(&[]);
    let _ = std::fs::remove_file(&bad);
    let want = format!("{}:3: k3s server has no flag --node-lable", bad.display());
    run.verdict(
        Step::BadConfigRefused,
        match written.is_ok() && rc != 0 && out.contains(&want) && !p2.exists() {
            true => Ok(first_chars(last_line(&out), 160)),
            false => Err(format!("rc={rc} {}", last_line(&out))),
        },
    );
}

/// k3s's environment is exactly the recorded one: K3S_KUBECONFIG_MODE in, the installer
/// shell's other variables out.
fn daemon_env(run: &Run, step: Step) {
    let status = run.status().map(|(json, _)| json).unwrap_or_default();
    let pid = procs::daemon_pid(&status, &run.prefix, "k3s");
    let env = pid.map(procs::environ).unwrap_or_default();
    run.verdict(step, env_verdict(pid, &env));
}

/// The daemon-env steps' verdict on k3s's pid and environment.
fn env_verdict(pid: Option<i32>, env: &[String]) -> Result<String, String> {
    let mut names: Vec<&str> = env
        .iter()
        .map(|v| v.split_once('=').map_or(v.as_str(), |(n, _)| n))
        .collect();
    names.sort_unstable();
    let mut listed = String::new();
    for name in &names {
        let _ = write!(listed, "{name} ");
    }
    let pass = pid.is_some()
        && env.iter().any(|v| v == "K3S_KUBECONFIG_MODE=644")
        && !names
            .iter()
            .any(|n| *n == NOT_FOR_DAEMONS || *n == "INSTALL_K3S_EXEC");
    let pid = pid.map_or("none".to_string(), |p| p.to_string());
    match pass {
        true => Ok(format!("k3s (pid {pid}) has: {listed}")),
        false => Err(format!("k3s (pid {pid}) has: {listed}")),
    }
}

/// The k3s-flags verdict on the node's labels (`metadata.labels`).
fn labels_verdict(labels: &serde_json::Value) -> Result<String, String> {
    let missing: Vec<&str> = LABELS
        .into_iter()
        .filter(|l| labels[*l].as_str() != Some("yes"))
        .collect();
    match missing.is_empty() {
        true => Ok("node labels from --, INSTALL_K3S_EXEC, config.yaml, config.yaml.d".into()),
        false => Err(format!("missing: {}", missing.join(" "))),
    }
}

/// The status-k3s-settings verdict on `status --json` (and its text: no secret anywhere in
/// it) and state.json's mode: the flags, each config file with its keys, the variables with
/// the token masked.
fn status_verdict(
    status: &serde_json::Value,
    text: &str,
    state_mode: Option<u32>,
) -> Result<String, String> {
    let settings = &status["k3s_settings"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let flags = strings(&settings["flags"]).join(" ");
    let env = strings(&settings["env"]);
    let file_keys = |path: &str| -> Option<Vec<String>> {
        settings["config_files"]
            .as_array()?
            .iter()
            .find(|f| f["path"].as_str() == Some(path))
            .map(|f| strings(&f["keys"]))
    };
    let node_label = Some(vec!["node-label".to_string()]);
    let pass = flags.contains(FLAGS_IN_STATUS)
        && file_keys(&format!("{ETC}/config.yaml")) == node_label
        && file_keys(&format!("{ETC}/config.yaml.d/50-e2e.yaml")) == node_label
        && env.iter().any(|v| v == "K3S_KUBECONFIG_MODE=644")
        && env.iter().any(|v| v == "K3S_TOKEN=********")
        && !text.contains(TOKEN)
        && !text.contains(NOT_FOR_DAEMONS)
        && state_mode == Some(0o600);
    match pass {
        true => Ok("flags, config files, variables (token masked), state.json 600".into()),
        false => Err(format!(
            "state.json {}; k3s_settings {settings}{}",
            procs::mode_text(state_mode),
            status["k3s_settings_error"]
                .as_str()
                .map_or(String::new(), |e| format!("; error: {e}"))
        )),
    }
}

/// The subjectAltName of the certificate the API serves for e2e.example, spaces and newlines
/// removed ("" when openssl cannot say).
fn api_certificate_san() -> String {
    let cert = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            "127.0.0.1:6443",
            "-servername",
            "e2e.example",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(cert) = cert else {
        return String::new();
    };
    let child = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return String::new();
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(&cert.stdout);
    }
    child
        .wait_with_output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .chars()
                .filter(|c| *c != ' ' && *c != '\n')
                .collect()
        })
        .unwrap_or_default()
}

/// A clean environment, as a new shell in a sandbox has it (scenario.sh's CLEAN_ENV): `env -i
/// HOME=/root PATH=...`, the program to run still to be added.
pub(crate) fn clean_env() -> Command {
    let mut cmd = Command::new("env");
    cmd.args(["-i", "HOME=/root", &format!("PATH={CLEAN_PATH}")]);
    cmd
}

/// `sh -c` in a clean environment, as a new shell in a sandbox has it.
pub(crate) fn clean_shell() -> Command {
    let mut cmd = clean_env();
    cmd.args(["sh", "-c"]);
    cmd
}

/// A command's stdout and stderr (`2>&1`), or why it could not run.
pub(crate) fn output_of(cmd: &mut Command) -> String {
    status_and_output(cmd).1
}

/// A command run `2>&1`: whether it exited 0, and its stdout then its stderr (or why it could
/// not run).
pub(crate) fn status_and_output(cmd: &mut Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(e) => (false, format!("cannot run {:?}: {e}", cmd.get_program())),
    }
}

/// The last `n` lines joined by spaces (`tail -n N | tr '\n' ' '`).
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let mut joined = String::new();
    for line in &lines[lines.len().saturating_sub(n)..] {
        let _ = write!(joined, "{line} ");
    }
    joined
}

/// The tool wrappers the install wrote under /usr/local/bin that are still there.
fn wrappers_left(dir: &Path) -> Vec<PathBuf> {
    ["kubectl", "crictl", "ctr"]
        .iter()
        .map(|t| dir.join(t))
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|text| text.contains("k3s-gvisor tool wrapper"))
        })
        .collect()
}

fn cleanup(run: &Run) {
    let left: Vec<String> = wrappers_left(Path::new("/usr/local/bin"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    run.verdict(
        Step::ToolsRemoved,
        match left.is_empty() {
            true => Ok(String::new()),
            false => Err(format!("left: {} ", left.join(" "))),
        },
    );
    let _ = std::fs::remove_file(format!("{ETC}/config.yaml"));
    let _ = std::fs::remove_file(format!("{ETC}/config.yaml.d/50-e2e.yaml"));
    let made = std::fs::read_to_string(run.run.join(MADE)).unwrap_or_default();
    for dir in made.lines() {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_label_source_must_reach_the_node() {
        let all = json!({"e2e-flag": "yes", "e2e-exec": "yes", "e2e-config": "yes",
            "e2e-dropin": "yes", "kubernetes.io/os": "linux"});
        assert!(labels_verdict(&all).is_ok());
        let some = json!({"e2e-flag": "yes", "e2e-config": "no"});
        assert_eq!(
            labels_verdict(&some),
            Err("missing: e2e-exec e2e-config e2e-dropin".into())
        );
        assert!(labels_verdict(&serde_json::Value::Null).is_err());
    }

    fn good_status() -> serde_json::Value {
        json!({"k3s_settings": {
            "flags": ["--node-label=e2e-exec=yes", "--node-label=e2e-flag=yes",
                      "--tls-san=e2e.example"],
            "config_files": [
                {"path": "/etc/rancher/k3s/config.yaml", "keys": ["node-label"]},
                {"path": "/etc/rancher/k3s/config.yaml.d/50-e2e.yaml", "keys": ["node-label"]}],
            "env": ["CONTAINERD_HTTPS_PROXY=http://127.0.0.1:3128", "K3S_KUBECONFIG_MODE=644",
                    "K3S_TOKEN=********"]}})
    }

    #[test]
    fn status_must_report_the_settings_with_the_token_masked() {
        let status = good_status();
        let text = status.to_string();
        assert_eq!(
            status_verdict(&status, &text, Some(0o600)),
            Ok("flags, config files, variables (token masked), state.json 600".into())
        );
        assert!(status_verdict(&status, &text, Some(0o644))
            .unwrap_err()
            .starts_with("state.json 644; "));
        let leaked = text.replace("K3S_TOKEN=********", "K3S_TOKEN=e2e-cluster-secret");
        let leaked_json: serde_json::Value = serde_json::from_str(&leaked).unwrap();
        assert!(status_verdict(&leaked_json, &leaked, Some(0o600)).is_err());
        let mut other_keys = good_status();
        other_keys["k3s_settings"]["config_files"][0]["keys"] = json!(["node-label", "tls-san"]);
        assert!(status_verdict(&other_keys, &text, Some(0o600)).is_err());
        let error = json!({"k3s_settings": null, "k3s_settings_error": "bad flag"});
        assert!(status_verdict(&error, "", Some(0o600))
            .unwrap_err()
            .ends_with("; error: bad flag"));
    }

    #[test]
    fn k3s_gets_the_recorded_variables_and_nothing_of_the_installers_shell() {
        let env = |vars: &[&str]| -> Vec<String> { vars.iter().map(|v| v.to_string()).collect() };
        assert_eq!(
            env_verdict(
                Some(7),
                &env(&["PATH=/x", "K3S_KUBECONFIG_MODE=644", "HOME=/"])
            ),
            Ok("k3s (pid 7) has: HOME K3S_KUBECONFIG_MODE PATH ".into())
        );
        assert!(env_verdict(Some(7), &env(&["K3S_KUBECONFIG_MODE=600"])).is_err());
        assert!(env_verdict(
            Some(7),
            &env(&["K3S_KUBECONFIG_MODE=644", "E2E_NOT_FOR_DAEMONS=leaked"])
        )
        .is_err());
        assert_eq!(env_verdict(None, &[]), Err("k3s (pid none) has: ".into()));
    }

    #[test]
    fn settings_env_sets_what_install_reads_and_the_flags() {
        let env = settings_env();
        for line in [
            "INSTALL_K3S_EXEC='--node-label e2e-exec=yes'",
            "K3S_KUBECONFIG_MODE=644",
            "K3S_TOKEN=e2e-cluster-secret",
            "CONTAINERD_HTTPS_PROXY=http://127.0.0.1:3128",
            "K3S_FLAGS='-- --node-label e2e-flag=yes --tls-san e2e.example'",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
        }
        let sh = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{env}\necho \"$INSTALL_K3S_EXEC|$K3S_FLAGS\""))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sh.stdout).trim(),
            "--node-label e2e-exec=yes|-- --node-label e2e-flag=yes --tls-san e2e.example"
        );
    }

    #[test]
    fn only_the_installs_wrappers_count_as_left() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubectl"),
            "#!/bin/sh\n# k3s-gvisor tool wrapper\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ctr"), "#!/bin/sh\nexec real-ctr\n").unwrap();
        assert_eq!(wrappers_left(dir.path()), [dir.path().join("kubectl")]);
        assert_eq!(last_lines("a\nb\nc\n", 2), "b c ");
    }
}
