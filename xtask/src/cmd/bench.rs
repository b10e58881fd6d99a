//! `cargo xtask bench`: the launcher's cost on syscall loops (the default), or the installed
//! stack (`--stack`, `--addons`, `--memory`, which build the bundle); a markdown table on
//! stdout, JSON, and optionally the table between markers in a file.

use super::Ctx;
use crate::pipeline::{self, Report};
use crate::{bench, bench_stack, sandbox};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// Where: `plain`, `current`, `debian`, an e2e host (`current-overlay`, ...), or a path
    /// to a runsc binary. Repeatable: each host is measured in turn (with --images, into one
    /// table).
    #[arg(long = "host", default_value = "plain")]
    hosts: Vec<String>,
    /// Run everything (tracer, tracee, runsc) on this CPU.
    #[arg(long)]
    pin: Option<u32>,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Iterations of the non-path syscall loop (a).
    #[arg(long, default_value_t = 1_000_000)]
    n_syscall: u64,
    /// Iterations of the open loops (b), (b2), (c).
    #[arg(long, default_value_t = 20_000)]
    n_open: u64,
    /// Where the JSON report goes (default target/k3s-gvisor/bench/<host>.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace the table between `<!-- bench:<host> -->` markers in this file
    /// (`<!-- bench:stack-<host> -->` with --stack).
    #[arg(long)]
    update: Option<PathBuf>,
    /// Measure the installed stack instead (builds the bundle): a pod's loops against a
    /// container with no launcher, and on plain Linux k3s's idle CPU with and without the
    /// launcher.
    #[arg(long)]
    stack: bool,
    /// Measure what k3s's add-ons (traefik, metrics-server, local-storage) cost instead
    /// (builds the bundle): idle memory and node Ready with them on against off, alternating
    /// per round, and the bundle's size with and without them; `<!-- bench:addons-<host> -->`.
    #[arg(long, conflicts_with = "stack")]
    addons: bool,
    /// Measure k3s's memory settings instead (builds the bundle): each SET (repeatable) is
    /// comma-separated parts, `VAR=value` that ./install records (`GOGC=25` for k3s,
    /// `CONTAINERD_GOGC=50` for containerd and its shims) or `--flag[=value]`, a k3s flag
    /// (`--kube-apiserver-arg=watch-cache=false`; `--enable-pprof` adds Go's heap figures),
    /// measured against the installer's default, alternating per round: idle RSS, k3s's idle
    /// CPU, the API's latency, and where the memory is; `<!-- bench:memory-<host> -->`.
    #[arg(long = "memory", value_name = "SET", allow_hyphen_values = true, conflicts_with_all = ["stack", "addons"])]
    memory_sets: Vec<String>,
    /// Measure a large multi-layer image instead (builds the bundle; issue 27, "Real images"):
    /// imported with `./install images import`, a Deployment scaled 1 -> --replicas, the time
    /// to Ready and the snapshotter's disk use, with the data dir where the sandbox puts it and
    /// on a tmpfs inside it; where containerd's overlayfs snapshotter loads, native against
    /// overlayfs (`ctr run`) in the same install; `<!-- bench:images -->`, every host in one
    /// table.
    #[arg(long, conflicts_with_all = ["stack", "addons", "memory_sets"])]
    images: bool,
    /// With --images: the replicas the Deployment is scaled to.
    #[arg(long, default_value_t = 10)]
    replicas: u32,
    /// With --images: data layers on top of the busybox image, and MiB of random data in each.
    #[arg(long, default_value_t = 6)]
    image_layers: u32,
    #[arg(long, default_value_t = 50)]
    layer_mib: u64,
    /// With --stack: seconds of each idle-CPU window; with --addons and --memory: the idle
    /// wait before memory is read (and with --memory, the CPU window).
    #[arg(long, default_value_t = 60)]
    idle_seconds: u32,
    /// With --stack, in a sandbox: its network (as for e2e).
    #[arg(long, value_enum, default_value_t = sandbox::Network::Interface)]
    network: sandbox::Network,
}

pub fn run(ctx: &Ctx, args: BenchArgs) -> Result<()> {
    let hosts = args
        .hosts
        .iter()
        .map(|name| Ok((name.as_str(), ctx.host(name)?)))
        .collect::<Result<Vec<_>>>()?;
    if args.images {
        return images(ctx, &args, &hosts);
    }
    for (name, host) in &hosts {
        if args.stack || args.addons || !args.memory_sets.is_empty() {
            stack(ctx, &args, name, host)?
        } else {
            launcher(ctx, &args, name, host)?
        }
    }
    Ok(())
}

/// `--images`: the large image on every host, one table.
fn images(ctx: &Ctx, args: &BenchArgs, hosts: &[(&str, crate::e2e::Host)]) -> Result<()> {
    let layout = &ctx.layout;
    let proof = ctx.proof_inputs()?;
    let work = layout.work.join("bench");
    let image = bench_stack::ImageInput {
        file: work.join("real-image.oci.tar"),
        reference: format!(
            "docker.io/k3s-gvisor/bench-real:{}x{}m",
            args.image_layers, args.layer_mib
        ),
        replicas: args.replicas,
    };
    crate::ui::step(
        "bench",
        format!(
            "the image: busybox + {} layers of {} MiB at {}",
            args.image_layers,
            args.layer_mib,
            image.file.display()
        ),
    );
    crate::image::bench_image::write(
        &layout.work.join("out/images/busybox.oci.tar"),
        &crate::image::bench_image::BenchImage {
            layers: args.image_layers,
            layer_bytes: args.layer_mib << 20,
        },
        &image.file,
        &image.reference,
        ctx.config.bundle.source_date_epoch,
    )?;
    let mut shapes = Vec::new();
    for (name, host) in hosts {
        if let Some(why) = &host.skipped {
            eprintln!("skipping {name}: {why}");
            continue;
        }
        let opts = stack_options(ctx, args, &proof, name, host);
        shapes.push(bench_stack::run_images(&opts, &image)?);
    }
    let _ = std::fs::remove_file(&image.file);
    let report = bench_stack::ImagesReport {
        command: format!(
            "cargo xtask bench --images{}{}",
            hosts
                .iter()
                .map(|(name, _)| format!(" --host {name}"))
                .collect::<String>(),
            if (args.replicas, args.image_layers, args.layer_mib) == (10, 6, 50) {
                String::new()
            } else {
                format!(
                    " --replicas {} --image-layers {} --layer-mib {}",
                    args.replicas, args.image_layers, args.layer_mib
                )
            }
        ),
        image: format!(
            "{} (busybox + {} uncompressed layers of {} MiB of random data)",
            image.reference, args.image_layers, args.layer_mib
        ),
        replicas: args.replicas,
        shapes,
    };
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| work.join("images.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    let table = bench_stack::markdown_images(&report);
    print!("{table}");
    eprintln!("JSON: {}", json.display());
    if let Some(file) = &args.update {
        bench::update(file, "images", &table)?;
        eprintln!("updated the images table in {}", file.display());
    }
    Ok(())
}

fn stack_options<'a>(
    ctx: &'a Ctx,
    args: &'a BenchArgs,
    proof: &'a crate::cmd::ProofInputs,
    host_arg: &'a str,
    host: &'a crate::e2e::Host,
) -> bench_stack::StackOptions<'a> {
    let layout = &ctx.layout;
    bench_stack::StackOptions {
        tarball: &proof.tarball,
        work: layout.work.join("bench"),
        scripts: &proof.scripts,
        loop_sources: layout.repo.join("crates/launcher/benches"),
        host,
        host_arg,
        network: args.network,
        rounds: args.rounds,
        n_syscall: args.n_syscall,
        n_open: args.n_open,
        idle_seconds: args.idle_seconds,
        memory_sets: &args.memory_sets,
    }
}

/// The installed stack: `--stack`, `--addons` or `--memory`.
fn stack(ctx: &Ctx, args: &BenchArgs, host_arg: &str, host: &crate::e2e::Host) -> Result<()> {
    let layout = &ctx.layout;
    let proof = ctx.proof_inputs()?;
    let stack_opts = stack_options(ctx, args, &proof, host_arg, host);
    let (report, label) = if args.addons {
        (bench_stack::run_addons(&stack_opts)?, "addons")
    } else if !args.memory_sets.is_empty() {
        (bench_stack::run_memory(&stack_opts)?, "memory")
    } else {
        (bench_stack::run(&stack_opts)?, "stack")
    };
    let label = format!("{label}-{}", host.label);
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| layout.work.join("bench").join(format!("{label}.json")));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    let table = bench_stack::markdown(&report);
    print!("{table}");
    eprintln!("JSON: {}", json.display());
    if let Some(file) = &args.update {
        bench::update(file, &label, &table)?;
        eprintln!("updated the {label} table in {}", file.display());
    }
    Ok(())
}

/// The launcher on syscall loops, against its baselines (only the runtime crates are built).
fn launcher(ctx: &Ctx, args: &BenchArgs, host_arg: &str, host: &crate::e2e::Host) -> Result<()> {
    let layout = &ctx.layout;
    let mut report = Report::default();
    let crates = pipeline::build_crates(&ctx.config, layout, &mut report)?;
    let launcher = crates
        .iter()
        .find(|p| p.ends_with("launcher"))
        .context("bundle.toml builds no launcher crate")?;
    let result = bench::run(
        &bench::BenchOptions {
            launcher,
            runsc: host.runsc.as_deref(),
            label: &host.label,
            host: host_arg,
            pin: args.pin,
            rounds: args.rounds,
            n_syscall: args.n_syscall,
            n_open: args.n_open,
        },
        &layout.repo.join("crates/launcher/benches"),
    )?;
    let json = args.json.clone().unwrap_or_else(|| {
        layout
            .work
            .join("bench")
            .join(format!("{}.json", host.label))
    });
    std::fs::create_dir_all(json.parent().unwrap())?;
    std::fs::write(&json, serde_json::to_vec_pretty(&result)?)?;
    let table = bench::markdown(&result);
    print!("{table}");
    eprintln!("JSON: {}", json.display());
    if let Some(file) = &args.update {
        bench::update(file, &host.label, &table)?;
        eprintln!("updated the {} table in {}", host.label, file.display());
    }
    Ok(())
}
