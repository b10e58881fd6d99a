//! Images a k3s user brings (was tests/e2e/images.sh), for scenario.sh in full mode with k3s
//! running, after the pod and Services steps. Inside the sandbox there is no network but lo, so
//! the registry is the test's own: Debian's docker-registry with TLS (a CA made here with
//! openssl) and basic auth (htpasswd -B), on 127.0.0.1, holding the bundle's busybox under a
//! name only it has.
//!   airgap-import      an archive dropped in DATA_DIR/images (k3s's airgap images dir, ours
//!                      beside /var/lib/rancher/k3s/agent/images) is imported by `start`, a
//!                      broken one beside it is named and skipped; a pod runs the image;
//!   registries-mirror  /etc/rancher/k3s/registries.yaml makes the registry a docker.io mirror
//!                      with auth and ca_file; after `stop` and `start` (k3s reads it at start,
//!                      so does the installer) a pod with docker.io/library/<that name> is
//!                      Running, pulled through the mirror;
//!   proxy-pull         the same registry as registry.invalid:5443, a name that resolves only
//!                      inside tests/e2e/http-proxy.py (`--http-proxy`): a pod of that image is
//!                      Running, so the pull went through the proxy that CONTAINERD_HTTPS_PROXY
//!                      (k3s's variable for image pulls only, recorded at install: settings.rs
//!                      PROXY_PORT) names, and the proxy's log shows the CONNECT;
//!   images-import      `./install images import FILE` of a docker-archive, then a pod runs it.
//! The archives are made with skopeo and zstd, as the shell did. `start` is asked through its
//! own printed lines: they are what is tested (`status --json` does not record imports or the
//! registries file). Anything written outside RUN (registries.yaml) is put back before the
//! scenario's uninstall, so host-files-restored still holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use e2e_steps::{Status, Step, E2E_FILE_MARK};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{bundle, first_chars, last_line, Run};

const PORT: u16 = 5443;
const USER: &str = "k3s-gvisor";
const PASSWORD: &str = "e2e-password-1";
const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
const AIRGAP_REF: &str = "docker.io/library/k3sgv-airgap:1";
/// The bundle's busybox as the registry alone has it: docker.io has no such image, so a pull of
/// it can only succeed through the mirror (or the proxy).
const MIRROR_ONLY_REF: &str = "docker.io/library/k3sgv-mirror-only:1";
const IMPORTED_REF: &str = "docker.io/library/k3sgv-imported:1";
/// The pods this module makes; deleted at its end.
const PODS: [&str; 4] = ["e2e-airgap", "e2e-mirror", "e2e-imported", "e2e-proxied"];

pub fn run(run: &Run, http_proxy: &Path) -> Result<()> {
    println!("== images: airgap dir, registries.yaml, images import");
    let busybox_file = run.bundle.join(
        bundle::manifest(&run.bundle)?
            .images
            .into_iter()
            .find(|i| i.name == "busybox")
            .map(|i| i.file)
            .context("the bundle has no image busybox")?,
    );
    let oci_busybox = format!("oci-archive:{}", busybox_file.display());

    // An airgap archive (zstd) and a broken one, dropped where start looks.
    let images_dir = run.data_dir.join("images");
    let airgap_tar = run.run.join("airgap.tar");
    let airgap_zst = images_dir.join("k3sgv-airgap.tar.zst");
    let broken = images_dir.join("broken.tar");
    let _ = std::fs::create_dir_all(&images_dir);
    let made = skopeo_copy(
        &[],
        &oci_busybox,
        &format!("oci-archive:{}:{AIRGAP_REF}", airgap_tar.display()),
    ) && succeeds(
        Command::new("zstd")
            .args(["-q", "-f"])
            .arg(&airgap_tar)
            .arg("-o")
            .arg(&airgap_zst),
    ) && std::fs::write(&broken, "not an image archive\n").is_ok();
    if !made {
        println!("cannot make the airgap archives");
    }

    // The registry, with the bundle's busybox under a name docker.io does not have.
    let registry_dir = run.run.join("registry");
    let registry = start_registry(&registry_dir)
        .map_err(|e| println!("cannot set up the registry (openssl, htpasswd): {e:#}"))
        .ok();
    let push_err = run.run.join("push.err");
    let mut pushed = false;
    for _ in 0..20 {
        let creds = format!("{USER}:{PASSWORD}");
        let to = format!("docker://127.0.0.1:{PORT}/library/k3sgv-mirror-only:1");
        let mut cmd = skopeo();
        cmd.args(["--dest-tls-verify=false", "--dest-creds", &creds])
            .args([&oci_busybox, &to]);
        if let Ok(err) = File::create(&push_err) {
            cmd.stderr(err);
        }
        if succeeds(&mut cmd) {
            pushed = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if !pushed {
        println!("push failed:");
        for file in [push_err, registry_dir.join("registry.log")] {
            print!("{}", std::fs::read_to_string(file).unwrap_or_default());
        }
    }

    // k3s's registries.yaml, on the host's shared root: what was there comes back afterwards.
    let saved = run.run.join("registries.yaml.saved");
    let saved = (Path::new(REGISTRIES).exists()
        && succeeds(Command::new("cp").arg("-p").arg(REGISTRIES).arg(&saved)))
    .then_some(saved);
    let _ = std::fs::create_dir_all("/etc/rancher/k3s");
    if let Err(e) = std::fs::write(REGISTRIES, registries_yaml(&registry_dir.join("ca.crt"))) {
        println!("cannot write {REGISTRIES}: {e}");
    }
    // The proxy containerd was given at install; only it knows registry.invalid.
    let proxy_log = run.run.join("proxy.log");
    let proxy = spawn_logged(
        Command::new("python3")
            .arg(http_proxy)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", crate::settings::PROXY_PORT),
                "--map",
                "registry.invalid=127.0.0.1",
                "--log",
            ])
            .arg(&proxy_log),
        &run.run.join("proxy.out"),
    )
    .map_err(|e| println!("cannot start {}: {e:#}", http_proxy.display()))
    .ok();

    println!("== images: stop, start");
    let d = run.data_dir.display().to_string();
    let _ = Command::new(run.bundle.join("install"))
        .args(["stop", "--data-dir", &d])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    let start_out = run.run.join("images-start.out");
    let rc = spawn_logged(
        Command::new(run.bundle.join("install")).args(["start", "--data-dir", &d]),
        &start_out,
    )
    .and_then(|mut child| Ok(child.wait()?))
    .map_or(127, |s| s.code().unwrap_or(-1));
    let out = std::fs::read_to_string(&start_out).unwrap_or_default();
    print!("{out}");

    if rc == 0
        && start_imported_airgap(&out, &run.data_dir)
        && pod_running(run, "e2e-airgap", AIRGAP_REF, "Never")
    {
        run.step(
            Step::AirgapImport,
            Status::Ok,
            "k3sgv-airgap.tar.zst imported at start, broken.tar named and skipped, pod Running",
        );
    } else {
        run.step(
            Step::AirgapImport,
            Status::Fail,
            format!(
                "start rc={rc}; {}",
                first_chars(&lines_starting(&out, "images:"), 300)
            ),
        );
        describe_tail(run, "e2e-airgap");
    }

    if rc == 0
        && out.contains(&format!("registries: {REGISTRIES} applied"))
        && pod_running(run, "e2e-mirror", MIRROR_ONLY_REF, "IfNotPresent")
    {
        run.step(
            Step::RegistriesMirror,
            Status::Ok,
            format!("{MIRROR_ONLY_REF} pulled from the TLS + auth mirror, pod Running"),
        );
    } else {
        run.step(
            Step::RegistriesMirror,
            Status::Fail,
            format!(
                "pushed={} start rc={rc}; {}",
                if pushed { "yes" } else { "no" },
                lines_starting(&out, "registries")
            ),
        );
        describe_tail(run, "e2e-mirror");
        let log =
            std::fs::read_to_string(run.data_dir.join("logs/containerd.log")).unwrap_or_default();
        println!("{}", crate::tail(&log, 5));
    }

    let proxied = format!("registry.invalid:{PORT}/library/k3sgv-mirror-only:1");
    let proxied_ok = rc == 0 && pod_running(run, "e2e-proxied", &proxied, "IfNotPresent");
    let log = std::fs::read_to_string(&proxy_log).unwrap_or_default();
    match connects(&log, &format!("registry.invalid:{PORT}")) {
        Some(n) if proxied_ok => run.step(
            Step::ProxyPull,
            Status::Ok,
            format!(
                "registry.invalid:{PORT} pulled through CONTAINERD_HTTPS_PROXY ({n} CONNECT(s) \
                 in its log)"
            ),
        ),
        _ => {
            run.step(
                Step::ProxyPull,
                Status::Fail,
                format!(
                    "start rc={rc}; proxy log: {}",
                    crate::tail(&log, 2).replace('\n', " ")
                ),
            );
            describe_tail(run, "e2e-proxied");
        }
    }

    // images import of a docker-archive, then a pod from it.
    let imported_tar = run.run.join("imported.tar");
    if !skopeo_copy(
        &[],
        &oci_busybox,
        &format!("docker-archive:{}:{IMPORTED_REF}", imported_tar.display()),
    ) {
        println!("cannot make the docker-archive");
    }
    let tar = imported_tar.display().to_string();
    let (rc, out) = run
        .install(&["images", "import", "--data-dir", &d, &tar])
        .unwrap_or_else(|e| (127, format!("{e:#}")));
    println!("{}", out.trim_end());
    let list = run
        .install(&["images", "list", "--data-dir", &d])
        .map_or_else(|e| format!("{e:#}"), |(_, list)| list);
    println!("{}", list.trim_end());
    if rc == 0
        && out.contains(IMPORTED_REF)
        && listed(&list, IMPORTED_REF)
        && pod_running(run, "e2e-imported", IMPORTED_REF, "Never")
    {
        run.step(
            Step::ImagesImport,
            Status::Ok,
            "docker-archive imported, listed, pod Running",
        );
    } else {
        run.step(
            Step::ImagesImport,
            Status::Fail,
            format!("rc={rc} {}", last_line(&out)),
        );
        describe_tail(run, "e2e-imported");
    }

    // Leave the host's root and the cluster as they were: registries.yaml, the registry, the pods.
    match &saved {
        Some(saved) => {
            let _ = Command::new("cp")
                .arg("-p")
                .arg(saved)
                .arg(REGISTRIES)
                .status();
        }
        None => {
            let _ = std::fs::remove_file(REGISTRIES);
        }
    }
    for child in [registry, proxy].into_iter().flatten() {
        stop(child);
    }
    let mut delete = vec!["delete", "pod"];
    delete.extend(PODS);
    delete.extend(["--wait", "--timeout=60s"]);
    let _ = run.kubectl(&delete);
    let _ = std::fs::remove_file(&broken);
    Ok(())
}

/// `skopeo --insecure-policy copy --quiet` (the shell's `$S`): the bundle's archive is copied
/// as is, no signature policy applies to the test's own images.
fn skopeo() -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet"]);
    cmd
}

fn skopeo_copy(options: &[&str], from: &str, to: &str) -> bool {
    succeeds(skopeo().args(options).args([from, to]))
}

/// Runs `cmd` (stdin closed, its output through to the driver's); true on exit 0.
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Starts `cmd` with its stdout and stderr into `log` (`> log 2>&1 &`).
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))
}

/// SIGTERM, as the shell's `kill`, then reaps it.
fn stop(mut child: Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let _ = child.wait();
}

/// The registry: a certificate for 127.0.0.1 (and registry.invalid) from a CA made here, a
/// bcrypt htpasswd, docker-registry serving DIR/config.yml; its output in DIR/registry.log.
fn start_registry(dir: &Path) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    let f = |name: &str| dir.join(name);
    let openssl = |args: &[&str], paths: &[(&str, PathBuf)]| -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args).stderr(Stdio::null());
        for (flag, path) in paths {
            cmd.arg(flag).arg(path);
        }
        anyhow::ensure!(succeeds(&mut cmd), "openssl {} failed", args.join(" "));
        Ok(())
    };
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ],
        &[
            ("-keyout", f("ca.key")),
            ("-out", f("ca.crt")),
            ("-subj", "/CN=k3s-gvisor-e2e-ca".into()),
        ],
    )?;
    openssl(
        &["req", "-newkey", "rsa:2048", "-nodes"],
        &[
            ("-keyout", f("registry.key")),
            ("-out", f("registry.csr")),
            ("-subj", "/CN=127.0.0.1".into()),
        ],
    )?;
    std::fs::write(
        f("san"),
        "subjectAltName=IP:127.0.0.1,DNS:registry.invalid\n",
    )?;
    openssl(
        &["x509", "-req", "-CAcreateserial", "-days", "2"],
        &[
            ("-in", f("registry.csr")),
            ("-CA", f("ca.crt")),
            ("-CAkey", f("ca.key")),
            ("-out", f("registry.crt")),
            ("-extfile", f("san")),
        ],
    )?;
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .stdin(Stdio::null())
        .output()
        .context("cannot run htpasswd")?;
    anyhow::ensure!(htpasswd.status.success(), "htpasswd failed");
    std::fs::write(f("htpasswd"), htpasswd.stdout)?;
    std::fs::write(f("config.yml"), registry_config(dir))?;
    spawn_logged(
        Command::new("docker-registry")
            .arg("serve")
            .arg(f("config.yml")),
        &f("registry.log"),
    )
}

/// docker-registry's config: TLS and htpasswd auth on 127.0.0.1:PORT, storage under DIR.
fn registry_config(dir: &Path) -> String {
    let r = dir.display();
    format!(
        "version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {r}/data}}}}
http:
  addr: 127.0.0.1:{PORT}
  tls: {{certificate: {r}/registry.crt, key: {r}/registry.key}}
auth:
  htpasswd: {{realm: k3s-gvisor-e2e, path: {r}/htpasswd}}
"
    )
}

/// k3s's registries.yaml: the registry as docker.io's mirror, and its credentials and CA for
/// both names it is reached by (127.0.0.1 directly, registry.invalid through the proxy).
fn registries_yaml(ca: &Path) -> String {
    let ca = ca.display();
    format!(
        "{E2E_FILE_MARK}
mirrors:
  docker.io:
    endpoint:
      - \"https://127.0.0.1:{PORT}\"
configs:
  \"127.0.0.1:{PORT}\":
    auth:
      username: {USER}
      password: {PASSWORD}
    tls:
      ca_file: {ca}
  \"registry.invalid:{PORT}\":
    auth:
      username: {USER}
      password: {PASSWORD}
    tls:
      ca_file: {ca}
"
    )
}

/// start's output says it imported the airgap archive and named and skipped the broken one.
fn start_imported_airgap(out: &str, data_dir: &Path) -> bool {
    let dir = data_dir.join("images");
    out.contains(&format!(
        "images: imported {}: {AIRGAP_REF}",
        dir.join("k3sgv-airgap.tar.zst").display()
    )) && out.contains(&format!(
        "images: skipped broken archive {}",
        dir.join("broken.tar").display()
    ))
}

/// `images list` has a line for REFERENCE (the reference, then its columns).
fn listed(list: &str, reference: &str) -> bool {
    list.lines()
        .any(|l| l.starts_with(&format!("{reference} ")))
}

/// The number of lines of the proxy's log that are a CONNECT, when one is to HOST:PORT.
fn connects(log: &str, to: &str) -> Option<usize> {
    log.contains(&format!("CONNECT {to}"))
        .then(|| log.lines().filter(|l| l.contains("CONNECT")).count())
}

/// The lines of `text` that start with `prefix`, each followed by a space (`grep '^P' | tr '\n' ' '`).
fn lines_starting(text: &str, prefix: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| format!("{l} "))
        .collect()
}

/// Runs a pod NAME of IMAGE (pull policy POLICY) and waits up to 120 s until it is Running.
fn pod_running(run: &Run, name: &str, image: &str, policy: &str) -> bool {
    let result = run
        .kubectl(&[
            "run",
            name,
            &format!("--image={image}"),
            &format!("--image-pull-policy={policy}"),
            "--command",
            "--",
            "sleep",
            "3600",
        ])
        .and_then(|_| {
            run.kubectl(&[
                "wait",
                "--for=jsonpath={.status.phase}=Running",
                &format!("pod/{name}"),
                "--timeout=120s",
            ])
        });
    if let Err(e) = &result {
        println!("{e:#}");
    }
    result.is_ok()
}

/// The last lines of `kubectl describe pod NAME`: its events, why it does not run.
fn describe_tail(run: &Run, name: &str) {
    if let Ok(text) = run.kubectl(&["describe", "pod", name]) {
        println!("{}", crate::tail(&text, 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_must_name_both_archives_under_the_data_dir() {
        let d = Path::new("/r/d");
        let out = "images: imported /r/d/images/k3sgv-airgap.tar.zst: \
                   docker.io/library/k3sgv-airgap:1\n\
                   images: skipped broken archive /r/d/images/broken.tar: not a tar\n";
        assert!(start_imported_airgap(out, d));
        assert!(!start_imported_airgap(out, Path::new("/other")));
        let unnamed = "images: imported /r/d/images/k3sgv-airgap.tar.zst: no named image\n\
                       images: skipped broken archive /r/d/images/broken.tar: x\n";
        assert!(!start_imported_airgap(unnamed, d));
        assert_eq!(
            lines_starting(out, "images:"),
            "images: imported /r/d/images/k3sgv-airgap.tar.zst: docker.io/library/k3sgv-airgap:1 \
             images: skipped broken archive /r/d/images/broken.tar: not a tar "
        );
    }

    #[test]
    fn the_image_must_be_listed_by_its_full_reference() {
        let list = "docker.io/library/k3sgv-imported:1 sha256:ab 4.2 MB\npause:3 x\n";
        assert!(listed(list, IMPORTED_REF));
        assert!(!listed(
            "docker.io/library/k3sgv-imported:10 x\n",
            IMPORTED_REF
        ));
        assert!(!listed(
            "x docker.io/library/k3sgv-imported:1 y\n",
            IMPORTED_REF
        ));
    }

    #[test]
    fn a_pull_counts_as_proxied_only_with_a_connect_to_the_registry() {
        let log = "CONNECT registry.invalid:5443\nGET http://x/\nCONNECT registry.invalid:5443\n";
        assert_eq!(connects(log, "registry.invalid:5443"), Some(2));
        assert_eq!(
            connects("CONNECT 127.0.0.1:5443\n", "registry.invalid:5443"),
            None
        );
        assert_eq!(connects("", "registry.invalid:5443"), None);
    }

    #[test]
    fn registries_yaml_is_marked_and_names_the_mirror_with_auth_and_ca() {
        let yaml = registries_yaml(Path::new("/r/registry/ca.crt"));
        assert!(yaml.starts_with(&format!("{E2E_FILE_MARK}\n")), "{yaml}");
        assert!(yaml.contains("  docker.io:\n    endpoint:\n      - \"https://127.0.0.1:5443\"\n"));
        assert_eq!(yaml.matches("ca_file: /r/registry/ca.crt\n").count(), 2);
        assert_eq!(yaml.matches("password: e2e-password-1\n").count(), 2);
        assert!(yaml.contains("  \"registry.invalid:5443\":\n"));
        let config = registry_config(Path::new("/r/registry"));
        assert!(config.contains("addr: 127.0.0.1:5443\n"));
        assert!(config.contains("path: /r/registry/htpasswd}"));
        assert_eq!(crate::tail("a\nb\nc\n", 2), "b\nc");
    }
}
