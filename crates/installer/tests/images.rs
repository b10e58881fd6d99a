//! Images the user brings, against real registries this test starts (Debian's
//! `docker-registry`), on this host (in a private network namespace) and inside the current
//! gVisor: k3s's registries.yaml turned into containerd's hosts.toml and credentials, proved by
//! CRI pulls (`crictl pull`, what the kubelet asks for):
//! - a plain-HTTP registry as the mirror of a name that resolves nowhere;
//! - TLS with a CA the test made (openssl): pulls verify against it, and fail without it;
//! - basic auth (htpasswd, bcrypt): pulls succeed with the configured credentials and are
//!   refused where none are configured;
//! - a docker.io mirror: `docker.io/library/NAME` that exists only in the local registry;
//! - a pull through an HTTP proxy (tests/e2e/http-proxy.py) from a registry whose name only
//!   the proxy resolves, with NO_PROXY keeping the other registries direct.
//!
//! And archives: the airgap dir DATA_DIR/images imported at start (zstd and gzip), a broken
//! archive there named and skipped, an unchanged archive not imported again at the next start,
//! `images import` of a docker-archive and an OCI archive, `images list`.
//!
//! Writes /etc/rancher/k3s/registries.yaml and an archive in /var/lib/rancher/k3s/agent/images
//! (k3s's fixed paths; the sandbox's root is this host's) and puts back what was there, holding
//! the machine lock like every k3s scenario.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    add_launcher_and_cni, add_pause_image, crictl, current_runsc, in_gvisor, oci, repo_root,
    require_root, run, FakeBundle,
};

const REGISTRIES_YAML: &str = "/etc/rancher/k3s/registries.yaml";
const K3S_AIRGAP_ARCHIVE: &str = "/var/lib/rancher/k3s/agent/images/k3s-gvisor-test.tar";
const USER: &str = "k3s-gvisor";
const PASSWORD: &str = "test-password-1";

/// A bundle with the pipeline's containerd (no k3s: CRI pulls need only containerd).
fn assemble(parent: &Path) -> FakeBundle {
    FakeBundle::assemble_with_runtime(parent, |dir| {
        add_launcher_and_cni(dir);
        vec![add_pause_image(dir)]
    })
}

/// A file on the host's root (k3s's fixed paths: registries.yaml, the airgap images dir) for the
/// test's life; what was there before (file or nothing, and the directories) comes back on
/// drop, panic or not.
struct HostFile {
    path: PathBuf,
    previous: Option<Vec<u8>>,
    created: Vec<PathBuf>,
}

impl HostFile {
    fn write(path: &str, bytes: &[u8]) -> HostFile {
        let path = PathBuf::from(path);
        let previous = fs::read(&path).ok();
        let mut created = Vec::new();
        let mut dir = path.parent().unwrap().to_path_buf();
        while !dir.exists() {
            created.push(dir.clone());
            dir.pop();
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        HostFile {
            path,
            previous,
            created,
        }
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        match &self.previous {
            Some(bytes) => fs::write(&self.path, bytes).unwrap(),
            None => {
                let _ = fs::remove_file(&self.path);
            }
        }
        for dir in &self.created {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn sh(work: &Path, script: &str) {
    let (output, stdout, stderr) = run(Command::new("/bin/sh")
        .args(["-ec", script])
        .current_dir(work));
    assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
}

/// The CA, the registry's certificate (for 10.77.0.1 and .2), the htpasswd file, the
/// registries' configs and the image archives, made on the host before the sandbox starts.
fn prepare(work: &Path) {
    sh(
        work,
        "mkdir certs && cd certs
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=k3s-gvisor-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout registry.key -out registry.csr -subj /CN=registry 2>/dev/null
printf 'subjectAltName=IP:10.77.0.1,IP:10.77.0.2\\n' > san
openssl x509 -req -in registry.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out registry.crt -days 2 -extfile san 2>/dev/null",
    );
    let (output, htpasswd, stderr) = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
    assert!(
        output.status.success(),
        "htpasswd -B failed (apache2-utils; scripts/install-deps.sh installs it): {stderr}"
    );
    fs::write(work.join("htpasswd"), htpasswd).unwrap();
    for (n, tls, auth) in [(1, false, false), (2, true, false), (3, true, true)] {
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {w}/registry{n}\nhttp:\n  addr: 0.0.0.0:500{n}\n",
            w = work.display()
        );
        if tls {
            config += &format!(
                "  tls:\n    certificate: {w}/certs/registry.crt\n    key: {w}/certs/registry.key\n",
                w = work.display()
            );
        }
        if auth {
            config += &format!(
                "auth:\n  htpasswd:\n    realm: k3s-gvisor-test\n    path: {}/htpasswd\n",
                work.display()
            );
        }
        fs::write(work.join(format!("registry{n}.yml")), config).unwrap();
    }
    oci::write_busybox_image(
        &work.join("busybox.oci.tar"),
        "docker.io/library/busybox:push",
        &["/bin/sh"],
    );
    oci::write_busybox_image(
        &work.join("airgap.tar"),
        "docker.io/library/k3sgv-airgap:1",
        &["/bin/sh"],
    );
    oci::write_busybox_image(
        &work.join("airgap-gz.tar"),
        "docker.io/library/k3sgv-airgap-gz:1",
        &["/bin/sh"],
    );
    oci::write_busybox_image(
        &work.join("k3s-airgap.tar"),
        "docker.io/library/k3sgv-k3s-airgap:1",
        &["/bin/sh"],
    );
    sh(
        work,
        "zstd -q --rm airgap.tar && gzip airgap-gz.tar
skopeo --insecure-policy copy --quiet oci-archive:busybox.oci.tar docker-archive:docker.tar:docker.io/library/k3sgv-docker-archive:1
skopeo --insecure-policy copy --quiet oci-archive:busybox.oci.tar oci-archive:oci.tar:docker.io/library/k3sgv-oci:1
zstd -q --rm oci.tar
printf 'not an image archive\\n' > broken.tar",
    );
}

fn registries_yaml(work: &Path) -> String {
    let ca = work.join("certs/ca.crt");
    format!(
        r#"# written by crates/installer/tests/images.rs
mirrors:
  # a plain-HTTP registry as the mirror of a name that resolves nowhere
  plain.invalid:
    endpoint:
      - "http://10.77.0.1:5001"
  # docker.io from the local TLS + auth registry only
  docker.io:
    endpoint:
      - "https://10.77.0.1:5003"
  # reachable only through the proxy, which alone resolves the name
  "proxied.invalid:5001":
    endpoint:
      - "http://proxied.invalid:5001"
configs:
  "10.77.0.1:5002":
    tls:
      ca_file: {ca}
  "10.77.0.1:5003":
    auth:
      username: {USER}
      password: {PASSWORD}
    tls:
      ca_file: {ca}
  # the same registry under another address: the CA but no credentials
  "10.77.0.2:5003":
    tls:
      ca_file: {ca}
"#,
        ca = ca.display()
    )
}

fn scenario(bundle: &FakeBundle, work: &Path) -> String {
    format!(
        r#"
set -u
I={install}; P={work}/prefix; D={work}/data; W={work}
export CRICTL_CONFIG=/dev/null
C="{crictl} --runtime-endpoint unix://$D/run/containerd.sock --image-endpoint unix://$D/run/containerd.sock --timeout 60s"
ip link set lo up 2>/dev/null
ip addr add 10.77.0.1/32 dev lo && ip addr add 10.77.0.2/32 dev lo || echo "cannot add test addresses to lo"
PIDS=""
for n in 1 2 3; do docker-registry serve $W/registry$n.yml > $W/registry$n.log 2>&1 & PIDS="$PIDS $!"; done
python3 {proxy} --listen 127.0.0.1:3128 --map proxied.invalid=127.0.0.1 --log $W/proxy.log > $W/proxy.out 2>&1 & PIDS="$PIDS $!"
push() {{
  for try in 1 2 3 4 5 6 7 8 9 10; do
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false "$@" && return 0
    sleep 1
  done
  return 1
}}
push oci-archive:$W/busybox.oci.tar docker://10.77.0.1:5001/test/busybox:plain; echo "push-plain-rc=$?"
push oci-archive:$W/busybox.oci.tar docker://10.77.0.1:5002/test/busybox:tls; echo "push-tls-rc=$?"
push --dest-creds {user}:{password} oci-archive:$W/busybox.oci.tar docker://10.77.0.1:5003/test/busybox:auth; echo "push-auth-rc=$?"
push --dest-creds {user}:{password} oci-archive:$W/busybox.oci.tar docker://10.77.0.1:5003/library/k3sgv-mirror-only:1; echo "push-mirror-rc=$?"

# The proxy as users set it (k3s's install.sh records these for the daemons); NO_PROXY keeps
# the test's own registries direct.
export HTTP_PROXY=http://127.0.0.1:3128 HTTPS_PROXY=http://127.0.0.1:3128 NO_PROXY=10.77.0.0/16
echo "== install"; $I --prefix $P --data-dir $D --no-start; echo "install-rc=$?"
mkdir -p $D/images/more
cp $W/airgap.tar.zst $D/images/; cp $W/airgap-gz.tar.gz $D/images/more/; cp $W/broken.tar $D/images/
echo "== start"; $P/bin/installer start --data-dir $D; echo "start-rc=$?"
ls -R $P/etc/containerd/certs.d
pull() {{
  if $C pull "$1" > $W/pull.out 2>&1; then echo "pull-ok $1"
  else echo "pull-failed $1: $(tr '\n' ' ' < $W/pull.out | tail -c 400)"; fi
}}
pull plain.invalid/test/busybox:plain
pull 10.77.0.1:5002/test/busybox:tls
pull 10.77.0.2:5002/test/busybox:tls
pull 10.77.0.1:5003/test/busybox:auth
pull 10.77.0.2:5003/test/busybox:auth
pull docker.io/library/k3sgv-mirror-only:1
pull proxied.invalid:5001/test/busybox:plain
echo "proxy-log=[$(tr '\n' ';' < $W/proxy.log 2>/dev/null)]"
echo "== images import"; $P/bin/installer images import --data-dir $D $W/docker.tar $W/oci.tar.zst; echo "images-import-rc=$?"
$P/bin/installer images import --data-dir $D $W/broken.tar; echo "images-import-broken-rc=$?"
echo "== images list"; $P/bin/installer images list --data-dir $D; echo "images-list-rc=$?"
echo "== crictl images"; $C images
echo "== restart"; $P/bin/installer stop --data-dir $D >/dev/null; $P/bin/installer start --data-dir $D; echo "restart-rc=$?"
echo "== uninstall"; $P/bin/installer uninstall --data-dir $D > /dev/null; echo "uninstall-rc=$?"
kill $PIDS 2>/dev/null
if [ -n "${{SHOW_LOGS:-}}" ]; then cat $D/logs/containerd.log $W/registry*.log; fi
ip addr del 10.77.0.1/32 dev lo; ip addr del 10.77.0.2/32 dev lo
"#,
        install = bundle.install_script().display(),
        work = work.display(),
        crictl = crictl().display(),
        proxy = repo_root().join("tests/e2e/http-proxy.py").display(),
        user = USER,
        password = PASSWORD,
    )
}

fn check(output: &str, work: &Path) {
    let d = work.join("data");
    let d = d.display();
    let must = [
        "push-plain-rc=0".to_string(),
        "push-tls-rc=0".into(),
        "push-auth-rc=0".into(),
        "push-mirror-rc=0".into(),
        "install-rc=0".into(),
        "start-rc=0".into(),
        format!("registries: {REGISTRIES_YAML} applied (6 registries"),
        format!("images: imported {d}/images/airgap.tar.zst: docker.io/library/k3sgv-airgap:1"),
        format!("images: imported {d}/images/more/airgap-gz.tar.gz: docker.io/library/k3sgv-airgap-gz:1"),
        format!("images: skipped broken archive {d}/images/broken.tar"),
        format!("images: imported {K3S_AIRGAP_ARCHIVE}: docker.io/library/k3sgv-k3s-airgap:1"),
        "pull-ok plain.invalid/test/busybox:plain".into(),
        "pull-ok 10.77.0.1:5002/test/busybox:tls".into(),
        "pull-failed 10.77.0.2:5002/test/busybox:tls".into(),
        "pull-ok 10.77.0.1:5003/test/busybox:auth".into(),
        "pull-failed 10.77.0.2:5003/test/busybox:auth".into(),
        "pull-ok docker.io/library/k3sgv-mirror-only:1".into(),
        "pull-ok proxied.invalid:5001/test/busybox:plain".into(),
        "http://proxied.invalid:5001/v2/test/busybox/manifests/plain".into(),
        "imported ".to_string() + &work.join("docker.tar").display().to_string()
            + ": docker.io/library/k3sgv-docker-archive:1",
        "images-import-rc=0".into(),
        "images-import-broken-rc=1".into(),
        "docker.io/library/k3sgv-oci:1".into(),
        "images-list-rc=0".into(),
        format!("images: {d}/images/airgap.tar.zst unchanged since its import"),
        "restart-rc=0".into(),
        "uninstall-rc=0".into(),
    ];
    let missing: Vec<&String> = must
        .iter()
        .filter(|m| !output.contains(m.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing {missing:#?} in:\n{output}");
    // Without the CA: an unknown authority; without credentials: refused.
    let line = |prefix: &str| {
        output
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    let no_ca = line("pull-failed 10.77.0.2:5002");
    assert!(
        no_ca.contains("x509") || no_ca.contains("certificate"),
        "{no_ca}"
    );
    let no_auth = line("pull-failed 10.77.0.2:5003");
    // containerd's words when the registry asks for basic auth and it has none for the host.
    assert!(no_auth.contains("no basic auth credentials"), "{no_auth}");
    // The direct registries never went through the proxy.
    let proxy_log = line("proxy-log=");
    assert!(!proxy_log.contains("10.77.0."), "{proxy_log}");
}

fn run_case(runsc: Option<&Path>) {
    if !require_root() {
        return;
    }
    let _machine = testkit::lock_machine().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let work = temp.path().to_path_buf();
    if std::env::var_os("K3S_GVISOR_KEEP_WORK").is_some() {
        println!("work dir kept: {}", temp.keep().display());
    }
    let bundle = assemble(&work);
    prepare(&work);
    let _yaml = HostFile::write(REGISTRIES_YAML, registries_yaml(&work).as_bytes());
    // k3s's own airgap dir, read beside DATA_DIR/images.
    let _airgap = HostFile::write(
        K3S_AIRGAP_ARCHIVE,
        &fs::read(work.join("k3s-airgap.tar")).unwrap(),
    );
    let script = scenario(&bundle, &work);
    fs::write(work.join("scenario.sh"), &script).unwrap();
    let output = match runsc {
        Some(runsc) => in_gvisor(runsc, &script).1,
        None => {
            let (_, stdout, stderr) =
                run(Command::new("unshare").args(["--net", "--", "/bin/sh", "-c", &script]));
            format!("{stdout}\n--- stderr ---\n{stderr}")
        }
    };
    println!("{output}");
    check(&output, &work);
}

#[test]
fn registries_and_archives_on_this_host() {
    run_case(None);
}

#[test]
fn registries_and_archives_inside_current_gvisor() {
    run_case(Some(&current_runsc()));
}
