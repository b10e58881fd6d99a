//! Helm (issue 24, part 3; was tests/e2e/helm.sh), for scenario.sh in full mode with k3s
//! running:
//!   helmchart-installs  a chart packed here (`helm package`, the bundle's bin/helm) goes in as a
//!                       HelmChart with chartContent: k3s's helm-controller installs it with the
//!                       bundle's job image (pods Running, the ConfigMap has the value), a new
//!                       valuesContent upgrades it, deleting the HelmChart uninstalls it; BLOCKED
//!                       with status's reason where helm-controller is not on;
//!   helm-cli            `helm install NAME ./chart` from a fresh shell (the install's helm link
//!                       and kubeconfig), `helm list` shows it deployed, `helm upgrade`,
//!                       `helm uninstall`.
//! The chart (written to RUN/e2e-web): a Deployment of the bundle's busybox serving its
//! ConfigMap with httpd, the ConfigMap's greeting from the values.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e_steps::{Status, Step};

use crate::bundle::image_ref;
use crate::settings::{clean_env, clean_shell, last_lines, output_of, status_and_output};
use crate::{tail, Run};

/// The HelmChart's release and its namespace; the CLI's release and its namespace.
const CHART: &str = "e2e-web";
const CHART_NS: &str = "e2e-helm";
const CLI: &str = "e2e-cli";
const CLI_NS: &str = "e2e-helm-cli";

pub fn run(run: &Run) -> Result<()> {
    println!("== helm");
    let busybox = image_ref(&run.bundle, "busybox")?;
    let chart = run.run.join(CHART);
    write_chart(&chart, &busybox)?;
    helmchart_installs(run, &chart);
    helm_cli(run, &chart);
    Ok(())
}

/// The chart's templates: a ConfigMap with the greeting, a Deployment of httpd serving it.
const WEB_YAML: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: '{{ .Release.Name }}-greeting'}
data:
  index.html: '{{ .Values.greeting }}'
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: '{{ .Release.Name }}'}
spec:
  replicas: 1
  selector: {matchLabels: {app: '{{ .Release.Name }}'}}
  template:
    metadata: {labels: {app: '{{ .Release.Name }}'}}
    spec:
      containers:
      - name: httpd
        image: '{{ .Values.image }}'
        imagePullPolicy: Never
        command: [httpd, -f, -p, \"8080\", -h, /www]
        volumeMounts: [{name: www, mountPath: /www}]
      volumes:
      - name: www
        configMap: {name: '{{ .Release.Name }}-greeting'}
";

fn write_chart(dir: &Path, image: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("templates"))
        .with_context(|| format!("mkdir {}", dir.display()))?;
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {CHART}\nversion: 0.1.0\n"),
    )?;
    std::fs::write(
        dir.join("values.yaml"),
        format!("greeting: hello\nimage: {image}\n"),
    )?;
    std::fs::write(dir.join("templates/web.yaml"), WEB_YAML)?;
    Ok(())
}

/// Polls (every 2 s, up to `limit`) until ConfigMap RELEASE-greeting in NS says `want`:
/// Ok(it), or Err(what it said last).
fn greeting_until(
    run: &Run,
    ns: &str,
    release: &str,
    limit: Duration,
    want: &str,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let g = run
            .kubectl(&[
                "-n",
                ns,
                "get",
                "configmap",
                &format!("{release}-greeting"),
                "-o",
                "jsonpath={.data.index\\.html}",
            ])
            .unwrap_or_default();
        if g == want {
            return Ok(g);
        }
        if start.elapsed() >= limit {
            return Err(g);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// What went wrong with HelmChart NAME, for the log.
fn helmchart_debug(run: &Run, name: &str) {
    let label = format!("helmcharts.helm.cattle.io/chart={name}");
    let ks = |args: &[&str]| run.kubectl_text_in("kube-system", args);
    println!(
        "{}",
        tail(&ks(&["get", "helmchart", name, "-o", "yaml"]), 20)
    );
    println!("{}", ks(&["get", "jobs,pods", "-l", &label, "-o", "wide"]));
    println!("{}", tail(&ks(&["describe", "pods", "-l", &label]), 20));
    println!("{}", ks(&["logs", "-l", &label, "--tail=30"]));
}

/// Standard base64 with padding, on one line (`base64 -w 0`), for chartContent.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The HelmChart of the packed chart, with greeting GREETING.
fn helmchart(chart_content: &str, greeting: &str) -> String {
    format!(
        "apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {{name: {CHART}, namespace: kube-system}}
spec:
  chartContent: {chart_content}
  targetNamespace: {CHART_NS}
  createNamespace: true
  valuesContent: |-
    greeting: {greeting}
"
    )
}

/// helmchart-installs' BLOCKED detail, or None when helm-controller is on (`status --json`'s
/// `helm_controller`, the line install printed: `on: HelmChart jobs run ...`).
fn helm_controller_blocked(status: &serde_json::Value) -> Option<String> {
    match status["helm_controller"].as_str() {
        Some(line) if line.starts_with("on:") => None,
        Some(line) => Some(format!("install: helm-controller {line}")),
        None => Some("install: helm-controller not reported".to_string()),
    }
}

fn helmchart_installs(run: &Run, chart: &Path) {
    let status = run
        .status()
        .map_or(serde_json::Value::Null, |(json, _)| json);
    if let Some(why) = helm_controller_blocked(&status) {
        run.step(Step::HelmchartInstalls, Status::Blocked, why);
        return;
    }
    let packed = Command::new(run.prefix.join("bin/helm"))
        .arg("package")
        .arg(chart)
        .arg("-d")
        .arg(&run.run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !packed {
        run.step(
            Step::HelmchartInstalls,
            Status::Fail,
            format!("helm package {} failed", chart.display()),
        );
        return;
    }
    let tgz = run.run.join(format!("{CHART}-0.1.0.tgz"));
    let content = std::fs::read(&tgz).map_or_else(
        |e| {
            eprintln!("cannot read {}: {e}", tgz.display());
            String::new()
        },
        |b| base64(&b),
    );
    let apply = |greeting: &str| {
        if let Err(e) = run.kubectl_apply(&helmchart(&content, greeting)) {
            eprintln!("{e:#}");
        }
    };
    let t0 = run.now();
    apply("from-helmchart");
    // helm-controller creates the job once it has claimed the HelmChart.
    let job = format!("helm-install-{CHART}");
    for _ in 0..30 {
        if run
            .kubectl(&["-n", "kube-system", "get", "job", &job])
            .is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let ran = run
        .kubectl(&[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=complete",
            &format!("job/{job}"),
            "--timeout=180s",
        ])
        .is_ok()
        && run
            .kubectl(&[
                "-n",
                CHART_NS,
                "wait",
                "--for=condition=Available",
                &format!("deployment/{CHART}"),
                "--timeout=120s",
            ])
            .is_ok();
    let greeting = match ran {
        true => greeting_until(
            run,
            CHART_NS,
            CHART,
            Duration::from_secs(10),
            "from-helmchart",
        ),
        false => Err(String::new()),
    };
    if let Err(greeting) = greeting {
        run.step(
            Step::HelmchartInstalls,
            Status::Fail,
            format!(
                "install: job, Deployment or ConfigMap not as expected (greeting [{greeting}])"
            ),
        );
        helmchart_debug(run, CHART);
        return;
    }
    // From the HelmChart's apply to its Deployment Available (the Job's run, then the chart's
    // pod).
    let install_s = run.now() - t0;
    let job_image = run
        .kubectl(&[
            "-n",
            "kube-system",
            "get",
            "job",
            &job,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap_or_else(|e| {
            eprintln!("{e:#}");
            String::new()
        });
    // A new valuesContent: helm-controller runs the job again, which upgrades the release.
    apply("upgraded-by-helmchart");
    if let Err(g) = greeting_until(
        run,
        CHART_NS,
        CHART,
        Duration::from_secs(180),
        "upgraded-by-helmchart",
    ) {
        run.step(
            Step::HelmchartInstalls,
            Status::Fail,
            format!("upgrade: the ConfigMap says [{g}], not upgraded-by-helmchart"),
        );
        helmchart_debug(run, CHART);
        return;
    }
    let release_secrets = format!("owner=helm,name={CHART}");
    let revisions = run
        .kubectl(&[
            "-n",
            CHART_NS,
            "get",
            "secrets",
            "-l",
            &release_secrets,
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.version}{\" \"}{end}",
        ])
        .unwrap_or_else(|e| {
            eprintln!("{e:#}");
            String::new()
        });
    // Deleting the HelmChart: its delete job uninstalls the release, then the HelmChart goes.
    let _ = run.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "helmchart",
        CHART,
        "--wait",
        "--timeout=180s",
    ]);
    // What of the release is left: each name kubectl prints, whether or not it also failed on
    // the ones that are gone.
    let stdout = |args: &[&str]| {
        run.kubectl_output(args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut left = stdout(&[
        "-n",
        CHART_NS,
        "get",
        &format!("deployment/{CHART}"),
        &format!("configmap/{CHART}-greeting"),
        "-o",
        "name",
    ]);
    left.push_str(&stdout(&[
        "-n",
        CHART_NS,
        "get",
        "secrets",
        "-l",
        &release_secrets,
        "-o",
        "name",
    ]));
    let chart_still_there = run
        .kubectl(&["-n", "kube-system", "get", "helmchart", CHART])
        .is_ok();
    if chart_still_there || left.contains('/') {
        run.step(
            Step::HelmchartInstalls,
            Status::Fail,
            format!("delete: left [{}]", last_lines(&left, usize::MAX)),
        );
        helmchart_debug(run, CHART);
        return;
    }
    run.step(
        Step::HelmchartInstalls,
        Status::Ok,
        format!(
            "job image {job_image}: installed (applied to Deployment Available in {install_s:.1}s), \
             upgraded (release revisions {}), uninstalled",
            revisions.trim_end()
        ),
    );
}

/// `helm ARGS` from a fresh shell (`env -i`, the PATH a new shell has): whether it succeeded,
/// and its output (`2>&1`, trailing newlines dropped as `$(...)` does).
fn helm(args: &[&str]) -> (bool, String) {
    let (ok, text) = status_and_output(clean_env().arg("helm").args(args));
    (ok, text.trim_end_matches('\n').to_string())
}

/// `helm list` shows release NAME deployed: a line `NAME<space>...<space>deployed<space>`
/// (helm.sh's `grep -q '^NAME[[:space:]].*[[:space:]]deployed[[:space:]]'`).
fn listed_deployed(list: &str, name: &str) -> bool {
    list.lines().any(|line| {
        let Some(rest) = line.strip_prefix(name) else {
            return false;
        };
        let mut chars = rest.chars();
        if !chars.next().is_some_and(char::is_whitespace) {
            return false;
        }
        let rest = chars.as_str();
        rest.match_indices("deployed").any(|(i, _)| {
            rest[..i].ends_with(char::is_whitespace)
                && rest[i + "deployed".len()..].starts_with(char::is_whitespace)
        })
    })
}

fn helm_cli(run: &Run, chart: &Path) {
    let chart = chart.to_string_lossy();
    let (installed, out) = helm(&[
        "install",
        CLI,
        &chart,
        "--namespace",
        CLI_NS,
        "--create-namespace",
        "--set",
        "greeting=cli-1",
    ]);
    let mut list = String::new();
    let listed = installed && {
        let (ok, text) = helm(&["list", "--namespace", CLI_NS]);
        list = text;
        ok && listed_deployed(&list, CLI)
    };
    let available = listed
        && run
            .kubectl(&[
                "-n",
                CLI_NS,
                "wait",
                "--for=condition=Available",
                &format!("deployment/{CLI}"),
                "--timeout=120s",
            ])
            .map_err(|e| eprintln!("{e:#}"))
            .is_ok();
    if !available {
        run.step(
            Step::HelmCli,
            Status::Fail,
            format!("install/list: {}", last_lines(&format!("{out} {list}"), 3)),
        );
        return;
    }
    let (upgraded, out) = helm(&[
        "upgrade",
        CLI,
        &chart,
        "--namespace",
        CLI_NS,
        "--set",
        "greeting=cli-2",
    ]);
    let greeting = match upgraded {
        true => greeting_until(run, CLI_NS, CLI, Duration::from_secs(30), "cli-2"),
        false => Err(String::new()),
    };
    if let Err(g) = greeting {
        run.step(
            Step::HelmCli,
            Status::Fail,
            format!("upgrade: greeting [{g}] {}", last_lines(&out, 2)),
        );
        return;
    }
    let (uninstalled, out) = helm(&["uninstall", CLI, "--namespace", CLI_NS, "--wait"]);
    let gone = uninstalled
        && helm(&["list", "--namespace", CLI_NS, "--short"])
            .1
            .is_empty()
        && run
            .kubectl(&["-n", CLI_NS, "get", "deployment", CLI])
            .is_err();
    if !gone {
        run.step(
            Step::HelmCli,
            Status::Fail,
            format!("uninstall: {}", last_lines(&out, 2)),
        );
        return;
    }
    let which = output_of(clean_shell().arg("command -v helm"));
    run.step(
        Step::HelmCli,
        Status::Ok,
        format!(
            "{}: install, list (deployed), upgrade (greeting cli-2), uninstall",
            which.trim_end()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648s() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x3e]), "//4APg==");
    }

    #[test]
    fn helmchart_runs_only_where_helm_controller_is_on() {
        let on = serde_json::json!({"helm_controller":
            "on: HelmChart jobs run the bundle's k3s-gvisor/klipper-helm:1 (--helm-job-image)"});
        assert_eq!(helm_controller_blocked(&on), None);
        let off = serde_json::json!({"helm_controller":
            "off: turned off by the user (--disable-helm-controller)"});
        assert_eq!(
            helm_controller_blocked(&off).as_deref(),
            Some(
                "install: helm-controller off: turned off by the user (--disable-helm-controller)"
            )
        );
        assert_eq!(
            helm_controller_blocked(&serde_json::Value::Null).as_deref(),
            Some("install: helm-controller not reported")
        );
    }

    #[test]
    fn helm_list_must_show_the_release_deployed() {
        let list = "NAME   \tNAMESPACE   \tREVISION\tUPDATED\tSTATUS  \tCHART        \tAPP VERSION\n\
                    e2e-cli\te2e-helm-cli\t1       \t2026-12-06 15:10:45\tdeployed\te2e-web-0.1.0\t\n";
        assert!(listed_deployed(list, "e2e-cli"));
        let failed = list.replace("\tdeployed\t", "\tfailed\t");
        assert!(!listed_deployed(&failed, "e2e-cli"));
        assert!(!listed_deployed(list, "e2e-cl"));
        assert!(!listed_deployed("e2e-cli\tdeployed", "e2e-cli"));
    }

    #[test]
    fn the_chart_and_the_helmchart_say_what_the_steps_check() {
        let dir = tempfile::tempdir().unwrap();
        write_chart(dir.path(), "busybox:1").unwrap();
        let values = std::fs::read_to_string(dir.path().join("values.yaml")).unwrap();
        assert_eq!(values, "greeting: hello\nimage: busybox:1\n");
        let web = std::fs::read_to_string(dir.path().join("templates/web.yaml")).unwrap();
        assert!(web.contains("metadata: {name: '{{ .Release.Name }}-greeting'}"));
        assert!(web.contains("command: [httpd, -f, -p, \"8080\", -h, /www]"));
        let chart = helmchart("Zm9v", "from-helmchart");
        assert!(chart.contains("metadata: {name: e2e-web, namespace: kube-system}"));
        assert!(chart.contains("  chartContent: Zm9v\n  targetNamespace: e2e-helm\n"));
        assert!(chart.ends_with("  valuesContent: |-\n    greeting: from-helmchart\n"));
    }
}
