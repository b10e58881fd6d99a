//! What a k3s user brings for k3s itself, the k3s way: flags after `--` and in
//! `INSTALL_K3S_EXEC`, `K3S_*` variables, and k3s's own config files
//! (`/etc/rancher/k3s/config.yaml` and `config.yaml.d/*.yaml`, or `--config`/`K3S_CONFIG_FILE`).
//!
//! k3s reads its config files and `K3S_*` variables itself; the installer passes the flags on and
//! the variables into k3s's environment at every start. What it adds is checking, before anything
//! is written or started:
//! - every flag and config key must be one `k3s server` / `k3s agent` knows. The list comes from
//!   the bundle's own k3s (`k3s server --help`), so it cannot drift from the binary that runs;
//! - flags the installer owns (its data dir, its containerd, its CNI, the node IP it chooses, the
//!   join it makes) are refused, naming the option of ours to use instead, wherever they appear:
//!   on the command line, in a config file (with its line), or as their `K3S_*` variable;
//! - a few values our parts must follow are read back out (`--service-cidr` for svcproxy,
//!   `--disable-kube-proxy`) so that no combination gives a cluster that looks up but does not
//!   route.
//!
//! Precedence is k3s's (pkg/configfilearg): config-file values are inserted as flags right after
//! the command, so flags given on the command line win over them and both win over `K3S_*`
//! variables; list flags (`--node-label`, `--disable`, ...) add up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// k3s's default config file (its `--config` default).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/rancher/k3s/config.yaml";

/// `server` or `agent`: the k3s command an install runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K3sCommand {
    Server,
    Agent,
}

impl K3sCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            K3sCommand::Server => "server",
            K3sCommand::Agent => "agent",
        }
    }
}

/// One flag as `k3s <command> --help` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSpec {
    /// Names without dashes, the long one first (`config`, `c`).
    pub names: Vec<String>,
    /// `--name VALUE` rather than a boolean `--name`.
    pub takes_value: bool,
    /// The variables k3s reads it from (`K3S_CONFIG_FILE`).
    pub env: Vec<String>,
}

impl FlagSpec {
    pub fn name(&self) -> &str {
        &self.names[0]
    }
}

/// The flags one k3s command accepts, read from its `--help`.
#[derive(Debug, Clone)]
pub struct KnownFlags {
    pub command: K3sCommand,
    pub flags: Vec<FlagSpec>,
}

impl KnownFlags {
    /// Runs `K3S command --help`.
    pub fn query(k3s: &Path, command: K3sCommand) -> Result<KnownFlags> {
        let output = Command::new(k3s)
            .args([command.as_str(), "--help"])
            // Nothing of the caller's environment (a K3S_* variable would change nothing in the
            // help, but keeps it honest), except HOME: `k3s server --help` with no HOME at all
            // dies of SIGSEGV in cgo (measured, k3s v1.34.1 as built here).
            .env_clear()
            .env("HOME", "/")
            // k3s reads its config files even for --help (and a bad one makes it fail): the
            // list of flags must not depend on them.
            .env("K3S_CONFIG_FILE", "/nonexistent/k3s-gvisor/config.yaml")
            .output()
            .with_context(|| format!("cannot run {} {} --help", k3s.display(), command.as_str()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let known = KnownFlags::from_help(command, &text);
        if !output.status.success() || known.flags.len() < 10 {
            bail!(
                "{} {} --help listed {} flags (exit {}): cannot check k3s flags against it",
                k3s.display(),
                command.as_str(),
                known.flags.len(),
                output.status
            );
        }
        Ok(known)
    }

    /// Parses urfave/cli's help: `   --name VALUE, -n VALUE   (group) usage [$K3S_NAME]`.
    pub fn from_help(command: K3sCommand, help: &str) -> KnownFlags {
        let mut flags = Vec::new();
        for line in help.lines() {
            let line = line.trim_start();
            if !line.starts_with("--") {
                continue;
            }
            // The names end where the usage starts: a tab or a run of spaces.
            let end = line
                .find('\t')
                .or_else(|| line.find("  "))
                .unwrap_or(line.len());
            let (names_part, usage) = line.split_at(end);
            let mut spec = FlagSpec {
                names: Vec::new(),
                takes_value: false,
                env: Vec::new(),
            };
            for part in names_part.split(", ") {
                let mut words = part.split_whitespace();
                let Some(name) = words.next() else { continue };
                spec.names.push(name.trim_start_matches('-').to_string());
                spec.takes_value |= words.next().is_some();
            }
            if let Some(start) = usage.rfind("[$") {
                spec.env = usage[start + 1..]
                    .trim_end()
                    .trim_end_matches(']')
                    .split(", ")
                    .map(|v| v.trim_start_matches('$').to_string())
                    .collect();
            }
            if !spec.names.is_empty() {
                flags.push(spec);
            }
        }
        KnownFlags { command, flags }
    }

    pub fn find(&self, name: &str) -> Option<&FlagSpec> {
        self.flags
            .iter()
            .find(|f| f.names.iter().any(|n| n == name))
    }
}

/// A flag the installer sets itself: a user's value would break what the installer built.
struct Owned {
    flag: &'static str,
    /// Only for this command (None: both).
    command: Option<K3sCommand>,
    instead: &'static str,
}

const OWNED: &[Owned] = &[
    Owned {
        flag: "data-dir",
        command: None,
        instead: "use ./install --data-dir DIR: k3s keeps its data in DIR/k3s, beside containerd's",
    },
    Owned {
        flag: "container-runtime-endpoint",
        command: None,
        instead: "the bundle's containerd, patched for gVisor, is the runtime; the installer \
                  points k3s at it",
    },
    Owned {
        flag: "docker",
        command: None,
        instead: "the bundle's containerd, patched for gVisor, is the runtime",
    },
    Owned {
        flag: "flannel-backend",
        command: None,
        instead: "pods are wired by the bundle's CNI plugin (gvisor-cni) with host-gw routes \
                  between nodes; there is no flannel",
    },
    Owned {
        flag: "disable-agent",
        command: None,
        instead: "use ./install --control-plane-only",
    },
    Owned {
        flag: "node-ip",
        command: None,
        instead: "k3s takes the address of the default route's interface, and where the sandbox \
                  has none the installer chooses one (docs/installer.md, \"The node IP\")",
    },
    Owned {
        flag: "node-name",
        command: None,
        instead: "use ./install --node-name NAME (before --), or K3S_NODE_NAME",
    },
    Owned {
        flag: "write-kubeconfig",
        command: None,
        instead: "the installer writes it to DATA_DIR/kubeconfig.yaml and k3s links \
                  /etc/rancher/k3s/k3s.yaml to it; --write-kubeconfig-mode is yours to set",
    },
    Owned {
        flag: "private-registry",
        command: None,
        instead: "the installer reads /etc/rancher/k3s/registries.yaml at every start and hands \
                  it to the bundle's containerd",
    },
    Owned {
        flag: "snapshotter",
        command: None,
        instead: "the installer chooses containerd's snapshotter from the sandbox (native where \
                  overlayfs cannot sit on the data dir's filesystem)",
    },
    Owned {
        flag: "server",
        command: Some(K3sCommand::Server),
        instead: "joining another server as a server (HA) is not supported by this installer; \
                  to join as an agent use ./install --server URL --token-file FILE",
    },
    Owned {
        flag: "server",
        command: Some(K3sCommand::Agent),
        instead: "use ./install --server URL (before --), or K3S_URL",
    },
    Owned {
        flag: "token",
        command: Some(K3sCommand::Agent),
        instead: "use ./install --token-file FILE (before --), or K3S_TOKEN / K3S_TOKEN_FILE",
    },
    Owned {
        flag: "token-file",
        command: Some(K3sCommand::Agent),
        instead: "use ./install --token-file FILE (before --), or K3S_TOKEN_FILE",
    },
];

fn owned(command: K3sCommand, flag: &str) -> Option<&'static Owned> {
    OWNED
        .iter()
        .find(|o| o.flag == flag && o.command.is_none_or(|c| c == command))
}

/// `K3S_*` variables the installer itself turns into its own options (so they are not refused
/// as owned, and not passed to k3s as they are).
pub const CONSUMED_ENV: [&str; 4] = ["K3S_URL", "K3S_TOKEN_FILE", "K3S_NODE_NAME", "K3S_TOKEN"];

/// Where a flag came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    ConfigFile { file: PathBuf, line: usize },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::CommandLine => write!(f, "the k3s flags (after -- or in INSTALL_K3S_EXEC)"),
            Origin::ConfigFile { file, line } => write!(f, "{}:{line}", file.display()),
        }
    }
}

/// One flag with its value (None for a boolean given bare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenFlag {
    pub name: String,
    pub value: Option<String>,
    pub origin: Origin,
}

/// Splits k3s command-line flags (`--a=1`, `--a 1`, `-a 1`, `--b`) into flags, checking each
/// is known to the command and not the installer's.
pub fn parse_flags(known: &KnownFlags, args: &[String]) -> Result<Vec<GivenFlag>> {
    let mut given = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(stripped) = arg.strip_prefix('-') else {
            bail!(
                "k3s flag {arg:?}: not a flag; k3s {} takes flags only here (e.g. \
                 --node-label=a=b)",
                known.command.as_str()
            );
        };
        let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
        let (name, inline) = match stripped.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (stripped, None),
        };
        let spec = check_flag(known, name, &Origin::CommandLine)?;
        let value = match (inline, spec.takes_value) {
            (Some(value), _) => Some(value),
            (None, true) => Some(rest.next().cloned().with_context(|| {
                format!("k3s flag --{name} needs a value (--{name}=VALUE or --{name} VALUE)")
            })?),
            (None, false) => None,
        };
        given.push(GivenFlag {
            name: spec.name().to_string(),
            value,
            origin: Origin::CommandLine,
        });
    }
    Ok(given)
}

/// The flag `name` of `known`, or an error when k3s does not know it or the installer owns it.
fn check_flag<'a>(known: &'a KnownFlags, name: &str, origin: &Origin) -> Result<&'a FlagSpec> {
    let command = known.command.as_str();
    let Some(spec) = known.find(name) else {
        bail!(
            "{origin}: k3s {command} has no flag --{name} (`k3s {command} --help` lists what it \
             takes)"
        );
    };
    if let Some(o) = owned(known.command, spec.name()) {
        bail!(
            "{origin}: --{} is set by the installer and cannot be given to k3s {command}: {}",
            spec.name(),
            o.instead
        );
    }
    Ok(spec)
}

/// Refuses values of list flags the installer sets a part of.
fn check_value(flag: &GivenFlag) -> Result<()> {
    let value = flag.value.as_deref().unwrap_or("");
    if flag.name == "kubelet-arg" && value.trim_start_matches('-').starts_with("root-dir") {
        bail!(
            "{}: --kubelet-arg=root-dir is set by the installer (DATA_DIR/kubelet)",
            flag.origin
        );
    }
    if matches!(flag.name.as_str(), "cluster-cidr" | "service-cidr") && value.contains(':') {
        bail!(
            "{}: --{}={value}: the bundle's CNI plugin and svcproxy are IPv4-only; give IPv4 \
             ranges only",
            flag.origin,
            flag.name
        );
    }
    Ok(())
}

/// INSTALL_K3S_EXEC, as k3s's install.sh reads it: an optional `server`/`agent` command, then
/// flags, split on whitespace.
pub fn split_install_exec(exec: &str) -> (Option<K3sCommand>, Vec<String>) {
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    let command = match words.first().map(String::as_str) {
        Some("server") => Some(K3sCommand::Server),
        Some("agent") => Some(K3sCommand::Agent),
        _ => None,
    };
    if command.is_some() {
        words.remove(0);
    }
    (command, words)
}

/// The config files k3s will read: `--config` (last on the command line), else K3S_CONFIG_FILE,
/// else the default; then its `.d/*.yaml` drop-ins in name order. Only existing files.
pub fn config_files(args: &[GivenFlag], env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let main = args
        .iter()
        .rev()
        .find(|f| f.name == "config")
        .and_then(|f| f.value.clone())
        .or_else(|| env.get("K3S_CONFIG_FILE").cloned())
        .unwrap_or_else(|| DEFAULT_CONFIG_FILE.to_string());
    let main = PathBuf::from(main);
    let mut files: Vec<PathBuf> = main.is_file().then(|| main.clone()).into_iter().collect();
    let dropin_dir = PathBuf::from(format!("{}.d", main.display()));
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(&dropin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                })
        })
        .collect();
    dropins.sort();
    files.extend(dropins);
    files
}

/// Reads one k3s config file as flags. `agent`: for a server, the agent's flags, whose keys
/// `k3s server` skips with a warning (a config shared by servers and agents), as we do.
pub fn read_config_file(
    file: &Path,
    known: &KnownFlags,
    agent: Option<&KnownFlags>,
) -> Result<Vec<GivenFlag>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mapping: serde_yaml_ng::Mapping = match serde_yaml_ng::from_str(&text) {
        Ok(serde_yaml_ng::Value::Mapping(m)) => m,
        Ok(serde_yaml_ng::Value::Null) => return Ok(Vec::new()),
        Ok(_) => bail!(
            "{}: a k3s config file is a mapping of flag names to values (e.g. `node-label: \
             [a=b]`)",
            file.display()
        ),
        Err(error) => {
            let at = error
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            bail!("{}{at}: not valid YAML: {error}", file.display());
        }
    };
    let mut given = Vec::new();
    for (key, value) in mapping {
        let key = scalar(&key)
            .with_context(|| format!("{}: a key is not a flag name: {key:?}", file.display()))?;
        let name = key.trim_end_matches('+');
        let origin = Origin::ConfigFile {
            file: file.to_path_buf(),
            line: line_of_key(&text, &key),
        };
        if known.find(name).is_none() && agent.is_some_and(|a| a.find(name).is_some()) {
            println!("note: {origin}: --{name} is a flag of k3s agent only; k3s server skips it");
            continue;
        }
        let spec = check_flag(known, name, &origin)?;
        let values = match &value {
            serde_yaml_ng::Value::Sequence(items) => items
                .iter()
                .map(|v| scalar(v).map(Some))
                .collect::<Option<Vec<_>>>(),
            other => scalar(other).map(|v| vec![Some(v)]),
        }
        .with_context(|| {
            format!(
                "{origin}: --{name}: the value must be a string, number, boolean or a list of them"
            )
        })?;
        for value in values {
            given.push(GivenFlag {
                name: spec.name().to_string(),
                value,
                origin: origin.clone(),
            });
        }
    }
    Ok(given)
}

fn scalar(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The 1-based line where `key:` starts a line of `text` (0 when not found as such).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            let line = line.trim_start_matches(['"', '\'']);
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

/// Everything a user gives k3s, checked: the flags to pass (in order) and the config files'
/// flags (which k3s reads itself).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub flags: Vec<GivenFlag>,
    pub config: Vec<GivenFlag>,
    pub config_files: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
}

impl Settings {
    /// Checks `args` (the flags to pass), the config files they or `env` name, and `env` (what
    /// k3s will get) against `known`.
    pub fn check(
        known: &KnownFlags,
        agent: Option<&KnownFlags>,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<Settings> {
        let flags = parse_flags(known, args)?;
        let config_files = config_files(&flags, env);
        let mut config = Vec::new();
        for file in &config_files {
            config.extend(read_config_file(file, known, agent)?);
        }
        for flag in flags.iter().chain(&config) {
            check_value(flag)?;
        }
        check_env(known, env)?;
        Ok(Settings {
            flags,
            config,
            config_files,
            env: env.clone(),
        })
    }

    /// The value k3s will use for flag `name`: the last on the command line, else the last in
    /// the config files, else its variable.
    pub fn value(&self, known: &KnownFlags, name: &str) -> Option<String> {
        let last = |flags: &[GivenFlag]| {
            flags
                .iter()
                .rev()
                .find(|f| f.name == name)
                .map(|f| f.value.clone().unwrap_or_else(|| "true".to_string()))
        };
        last(&self.flags)
            .or_else(|| last(&self.config))
            .or_else(|| {
                known
                    .find(name)?
                    .env
                    .iter()
                    .find_map(|var| self.env.get(var).cloned())
            })
    }

    /// Whether boolean flag `name` is on.
    pub fn is_on(&self, known: &KnownFlags, name: &str) -> bool {
        self.value(known, name)
            .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"))
    }
}

/// An install's k3s settings, checked against the k3s that will run them.
#[derive(Debug, Clone)]
pub struct Checked {
    pub known: KnownFlags,
    pub settings: Settings,
}

impl Checked {
    /// Checks `flags` and `env` for `k3s command` (the bundle's k3s at install, the prefix's at
    /// start), with the config files as they are now: k3s reads them at every start, so they are
    /// checked at every start, before anything starts.
    pub fn new(
        k3s: &Path,
        command: K3sCommand,
        flags: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<Checked> {
        let known = KnownFlags::query(k3s, command)?;
        // `k3s server` skips (with a warning) config keys it lacks, so a config shared with
        // agents works; `k3s agent` has no such list (pkg/configfilearg's ValidFlags names
        // server and etcd-snapshot only) and dies on a server-only key.
        let agent = match command {
            K3sCommand::Server => Some(KnownFlags::query(k3s, K3sCommand::Agent)?),
            K3sCommand::Agent => None,
        };
        let settings = Settings::check(&known, agent.as_ref(), flags, env)?;
        Ok(Checked { known, settings })
    }

    /// The value k3s will use for flag `name`, if the user set one anywhere.
    pub fn value(&self, name: &str) -> Option<String> {
        self.settings.value(&self.known, name)
    }

    pub fn is_on(&self, name: &str) -> bool {
        self.settings.is_on(&self.known, name)
    }
}

#[cfg(test)]
impl Checked {
    /// Settings as a check would leave them, for tests: `k3s server`'s flags read from `help`
    /// (its `--help` lines), `flags` given on the command line, `config` as config-file keys
    /// (values as given), `env` recorded.
    pub fn for_test(
        help: &str,
        flags: &[(&str, &str)],
        config: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Checked {
        let given = |list: &[(&str, &str)]| -> Vec<GivenFlag> {
            list.iter()
                .map(|(name, value)| GivenFlag {
                    name: name.to_string(),
                    value: Some(value.to_string()),
                    origin: Origin::CommandLine,
                })
                .collect()
        };
        Checked {
            known: KnownFlags::from_help(K3sCommand::Server, help),
            settings: Settings {
                flags: given(flags),
                config: given(config),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Settings::default()
            },
        }
    }
}

/// What the user brought for k3s, as `status` shows it (`--json` too): the flags (token values
/// masked), each config file with the keys it sets, and the recorded variables (secrets masked,
/// `NAME=VALUE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub flags: Vec<String>,
    pub config_files: Vec<ConfigFileKeys>,
    pub env: Vec<String>,
}

/// One k3s config file and the keys it sets, in file order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigFileKeys {
    pub path: PathBuf,
    pub keys: Vec<String>,
}

/// The [`Summary`] of what the user gave k3s in `settings`.
pub fn summary(settings: &Settings) -> Summary {
    let flags = settings
        .flags
        .iter()
        .map(|f| match f.name.contains("token") {
            true => format!("--{}=********", f.name),
            false => f.to_arg(),
        })
        .collect();
    let config_files = settings
        .config_files
        .iter()
        .map(|file| {
            let mut keys: Vec<String> = Vec::new();
            for flag in &settings.config {
                let in_file =
                    matches!(&flag.origin, Origin::ConfigFile { file: f, .. } if f == file);
                if in_file && !keys.contains(&flag.name) {
                    keys.push(flag.name.clone());
                }
            }
            ConfigFileKeys {
                path: file.clone(),
                keys,
            }
        })
        .collect();
    let env = settings.env.iter().map(|(k, v)| masked(k, v)).collect();
    Summary {
        flags,
        config_files,
        env,
    }
}

/// What the user gave k3s, one line each for install and `status` (each after `k3s `).
pub fn describe(settings: &Settings) -> Vec<String> {
    describe_summary(&summary(settings))
}

/// A [`Summary`] as [`describe`]'s lines.
pub fn describe_summary(summary: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    if !summary.flags.is_empty() {
        lines.push(format!("flags: {}", summary.flags.join(" ")));
    }
    for file in &summary.config_files {
        lines.push(format!(
            "config file: {} ({})",
            file.path.display(),
            if file.keys.is_empty() {
                "empty".to_string()
            } else {
                file.keys.join(", ")
            }
        ));
    }
    if !summary.env.is_empty() {
        lines.push(format!("environment: {}", summary.env.join(" ")));
    }
    lines
}

impl GivenFlag {
    /// `--name=value`, or `--name` for a bare boolean.
    pub fn to_arg(&self) -> String {
        match &self.value {
            Some(value) => format!("--{}={value}", self.name),
            None => format!("--{}", self.name),
        }
    }
}

/// Refuses a `K3S_*` variable that would set a flag the installer owns.
fn check_env(known: &KnownFlags, env: &BTreeMap<String, String>) -> Result<()> {
    for var in env.keys().filter(|v| !CONSUMED_ENV.contains(&v.as_str())) {
        let Some(spec) = known.flags.iter().find(|f| f.env.contains(var)) else {
            continue;
        };
        if let Some(o) = owned(known.command, spec.name()) {
            bail!(
                "{var} is set: it gives k3s {} --{}, which the installer sets: {} (unset {var} \
                 and run again)",
                known.command.as_str(),
                spec.name(),
                o.instead
            );
        }
    }
    Ok(())
}

/// The variables of the installer's environment that k3s's install.sh records for its service
/// (`K3S_*`, `CONTAINERD_*`, and the proxy settings, any case), less ctr's client settings
/// that our export line sets (they are not meant for the daemons); and, beyond install.sh,
/// k3s's Go runtime memory settings (`GOGC`, `GOMEMLIMIT`), which a systemd user would put in
/// the unit's environment file by hand (containerd's are `CONTAINERD_GOGC`, as above).
pub fn recorded_env(all: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    all.filter(|(name, _)| {
        let upper = name.to_ascii_uppercase();
        (name.starts_with("K3S_")
            || name.starts_with("CONTAINERD_")
            || is_proxy_var(name)
            || GO_RUNTIME_VARS.contains(&name.as_str()))
            && !matches!(
                upper.as_str(),
                "CONTAINERD_ADDRESS" | "CONTAINERD_NAMESPACE"
            )
    })
    .collect()
}

/// The Go runtime's memory settings recorded for k3s.
pub const GO_RUNTIME_VARS: [&str; 2] = ["GOGC", "GOMEMLIMIT"];

/// HTTP_PROXY, HTTPS_PROXY, NO_PROXY in either case (as install.sh's `grep -Ei`).
pub fn is_proxy_var(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "NO_PROXY"
    )
}

/// `NAME=value` for `status`, with secrets masked: token, password and secret variables, and
/// the password in a proxy URL.
pub fn masked(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if ["TOKEN", "PASSWORD", "SECRET", "VPN_AUTH"]
        .iter()
        .any(|s| upper.contains(s))
    {
        return format!("{name}=********");
    }
    if is_proxy_var(name) {
        if let Some((scheme, rest)) = value.split_once("://") {
            if let Some((userinfo, host)) = rest.rsplit_once('@') {
                let user = userinfo.split(':').next().unwrap_or("");
                return format!("{name}={scheme}://{user}:********@{host}");
            }
        }
    }
    format!("{name}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as k3s v1.34.1's `k3s server --help` prints them.
    const HELP: &str = "NAME:
   k3s server - Run management server

OPTIONS:
   --config FILE, -c FILE                     (config) Load configuration from FILE (default: \"/etc/rancher/k3s/config.yaml\") [$K3S_CONFIG_FILE]
   --debug                                    (logging) Turn on debug logs [$K3S_DEBUG]
   --data-dir value, -d value                 (data) Folder to hold state default /var/lib/rancher/k3s or ${HOME}/.rancher/k3s if not root [$K3S_DATA_DIR]
   --cluster-cidr value                       (networking) IPv4/IPv6 network CIDRs to use for pod IPs (default: 10.42.0.0/16)
   --service-cidr value                       (networking) IPv4/IPv6 network CIDRs to use for service IPs (default: 10.43.0.0/16)
   --token value, -t value                    (cluster) Shared secret used to join a server or agent to a cluster [$K3S_TOKEN]
   --write-kubeconfig value, -o value         (client) Write kubeconfig for admin client to this file [$K3S_KUBECONFIG_OUTPUT]
   --write-kubeconfig-mode value              (client) Write kubeconfig with this mode [$K3S_KUBECONFIG_MODE]
   --tls-san value [ --tls-san value ]        (listener) Add additional hostnames or IPv4/IPv6 addresses as Subject Alternative Names on the server TLS cert
   --disable value                            (components) Do not deploy packaged components and delete any deployed components (valid items: coredns, servicelb, traefik, local-storage, metrics-server, runtime)
   --disable-kube-proxy                       (components) Disable running kube-proxy
   --node-name value                          (agent/node) Node name [$K3S_NODE_NAME]
   --node-label value [ --node-label value ]  (agent/node) Registering and starting kubelet with set of labels
   --kubelet-arg value                        (agent/flags) Customized flag for kubelet process
   --server value, -s value                   (experimental/cluster) Server to connect to, used to join a cluster [$K3S_URL]
   --help, -h                                 show help
";

    fn known() -> KnownFlags {
        KnownFlags::from_help(K3sCommand::Server, HELP)
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_lists_names_values_and_variables() {
        let known = known();
        let config = known.find("c").unwrap();
        assert_eq!(config.names, ["config", "c"]);
        assert!(config.takes_value);
        assert_eq!(config.env, ["K3S_CONFIG_FILE"]);
        let debug = known.find("debug").unwrap();
        assert!(!debug.takes_value);
        assert!(known.find("tls-san").unwrap().env.is_empty());
        assert!(known.find("no-such-flag").is_none());
    }

    #[test]
    fn flags_in_every_form_are_parsed_and_known() {
        let flags = parse_flags(
            &known(),
            &strings(&[
                "--node-label=a=b",
                "--tls-san",
                "x.example",
                "-t",
                "secret",
                "--debug",
            ]),
        )
        .unwrap();
        let pairs: Vec<(&str, Option<&str>)> = flags
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("node-label", Some("a=b")),
                ("tls-san", Some("x.example")),
                ("token", Some("secret")),
                ("debug", None)
            ]
        );
    }

    #[test]
    fn unknown_owned_and_valueless_flags_are_refused_with_what_to_do() {
        let error = |args: &[&str]| {
            parse_flags(&known(), &strings(args))
                .unwrap_err()
                .to_string()
        };
        assert!(error(&["--no-such"]).contains("has no flag --no-such"));
        let e = error(&["-d", "/x"]);
        assert!(
            e.contains("--data-dir is set by the installer") && e.contains("./install --data-dir"),
            "{e}"
        );
        assert!(error(&["--node-name=x"]).contains("./install --node-name"));
        assert!(error(&["--server", "https://x:6443"]).contains("(HA) is not supported"));
        assert!(error(&["--tls-san"]).contains("needs a value"));
        assert!(error(&["node-label"]).contains("not a flag"));
    }

    #[test]
    fn config_files_are_checked_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "node-label:\n  - a=b\ntls-san: x.example\ndebug: true\n",
        )
        .unwrap();
        let flags = read_config_file(&file, &known(), None).unwrap();
        assert_eq!(flags.len(), 3);
        assert_eq!(flags[0].value.as_deref(), Some("a=b"));
        assert_eq!(
            flags[1].origin,
            Origin::ConfigFile {
                file: file.clone(),
                line: 3
            }
        );

        std::fs::write(&file, "tls-san: a\ndata-dir: /srv\n").unwrap();
        let e = read_config_file(&file, &known(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2: --data-dir is set by the installer",
                file.display()
            )),
            "{e}"
        );

        std::fs::write(&file, "tls-san: a\nnode-lable: x\n").unwrap();
        let e = read_config_file(&file, &known(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: k3s server has no flag --node-lable"), "{e}");

        std::fs::write(&file, "tls-san: [a\nb: c\n").unwrap();
        let e = read_config_file(&file, &known(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{}:", file.display())) && e.contains("not valid YAML"),
            "{e}"
        );

        // An agent-only key is skipped by k3s server, as k3s does; k3s agent has no such
        // list and dies on a server-only key, so that is refused.
        let agent = KnownFlags::from_help(
            K3sCommand::Agent,
            "   --node-label value   (agent/node) labels\n   --lb-server-port value  (agent) port [$K3S_LB_SERVER_PORT]\n",
        );
        std::fs::write(&file, "lb-server-port: 6444\n").unwrap();
        assert!(read_config_file(&file, &known(), Some(&agent))
            .unwrap()
            .is_empty());
        std::fs::write(&file, "node-label: [a=b]\ntls-san: a\n").unwrap();
        let e = read_config_file(&file, &agent, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: k3s agent has no flag --tls-san"), "{e}");
    }

    #[test]
    fn dropins_follow_the_main_file_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.yaml");
        std::fs::write(&main, "service-cidr: 10.50.0.0/16\nnode-label: [a=1]\n").unwrap();
        std::fs::create_dir(dir.path().join("config.yaml.d")).unwrap();
        std::fs::write(
            dir.path().join("config.yaml.d/20-b.yaml"),
            "node-label+: [b=2]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("config.yaml.d/10-a.yml"), "debug: true\n").unwrap();
        std::fs::write(dir.path().join("config.yaml.d/notes.txt"), "ignored").unwrap();
        let env = BTreeMap::from([("K3S_CONFIG_FILE".to_string(), main.display().to_string())]);
        let known = known();
        let settings = Settings::check(&known, None, &[], &env).unwrap();
        assert_eq!(
            settings.config_files,
            [
                main.clone(),
                dir.path().join("config.yaml.d/10-a.yml"),
                dir.path().join("config.yaml.d/20-b.yaml")
            ]
        );
        assert_eq!(
            settings.value(&known, "service-cidr").as_deref(),
            Some("10.50.0.0/16")
        );
        assert!(settings.is_on(&known, "debug"));
        let labels: Vec<_> = settings
            .config
            .iter()
            .filter(|f| f.name == "node-label")
            .collect();
        assert_eq!(labels.len(), 2);

        let settings = Settings::check(
            &known,
            None,
            &strings(&["--service-cidr=10.60.0.0/16"]),
            &env,
        )
        .unwrap();
        assert_eq!(
            settings.value(&known, "service-cidr").as_deref(),
            Some("10.60.0.0/16")
        );
        let e = Settings::check(&known, None, &strings(&["--service-cidr=fd00::/108"]), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv4-only"), "{e}");
    }

    #[test]
    fn variables_of_owned_flags_are_refused_and_the_rest_recorded() {
        let known = known();
        let env = BTreeMap::from([("K3S_DATA_DIR".to_string(), "/srv".to_string())]);
        let e = check_env(&known, &env).unwrap_err().to_string();
        assert!(
            e.contains("K3S_DATA_DIR is set") && e.contains("./install --data-dir"),
            "{e}"
        );
        let env = BTreeMap::from([("K3S_KUBECONFIG_MODE".to_string(), "644".to_string())]);
        check_env(&known, &env).unwrap();
        let settings = Settings::check(&known, None, &[], &env).unwrap();
        assert_eq!(
            settings.value(&known, "write-kubeconfig-mode").as_deref(),
            Some("644")
        );

        let recorded = recorded_env(
            [
                ("K3S_TOKEN", "t"),
                ("CONTAINERD_HTTP_PROXY", "p"),
                ("CONTAINERD_ADDRESS", "/run/x.sock"),
                ("https_proxy", "http://u:pw@proxy:3128"),
                ("HOME", "/root"),
                ("INSTALL_K3S_EXEC", "--debug"),
                ("GOGC", "50"),
                ("GODEBUG", "gctrace=1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(
            recorded.keys().collect::<Vec<_>>(),
            ["CONTAINERD_HTTP_PROXY", "GOGC", "K3S_TOKEN", "https_proxy"]
        );
        assert_eq!(masked("K3S_TOKEN", "t"), "K3S_TOKEN=********");
        assert_eq!(
            masked("https_proxy", "http://u:pw@proxy:3128"),
            "https_proxy=http://u:********@proxy:3128"
        );
        assert_eq!(masked("K3S_DEBUG", "true"), "K3S_DEBUG=true");
    }

    #[test]
    fn install_exec_is_split_as_install_sh_does() {
        assert_eq!(
            split_install_exec("agent --node-label a=b"),
            (Some(K3sCommand::Agent), strings(&["--node-label", "a=b"]))
        );
        assert_eq!(split_install_exec("--debug"), (None, strings(&["--debug"])));
        assert_eq!(split_install_exec(""), (None, vec![]));
    }
}
