//! `edgepod logs POD [-c C] [-f] [--tail N] [--previous] [--timestamps]`: the log the node's
//! `kubectl logs` would show, picked and read by the same code ([`crate::agent::streams`],
//! [`crate::runtime::logs`]).

use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use crate::agent::streams;
use crate::fleet::PodRef;
use crate::runtime::Runtime;
use crate::runtime::logs::{self, LogOptions};

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub pod: String,
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines from the end to show (-1: all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub tail: i64,
    /// The previous, terminated instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    #[arg(long)]
    pub timestamps: bool,
}

pub fn run(data_dir: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    let pod: Pod = store
        .get_as("Pod", &args.namespace, &args.pod)?
        .with_context(|| format!("pods \"{}\" not found", args.pod))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let names: Vec<String> = spec
        .containers
        .iter()
        .map(|c| c.name.clone())
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| c.name.clone()),
        )
        .collect();
    let container = match &args.container {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => bail!("container {c} is not valid for pod {}", args.pod),
        None if spec.containers.len() == 1 => spec.containers[0].name.clone(),
        None => bail!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            args.pod,
            names.join(" ")
        ),
    };
    let runtime = Runtime::new(data_dir, Default::default())?;
    let pod_ref = PodRef {
        namespace: args.namespace.clone(),
        name: args.pod.clone(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    };
    let source = streams::log_source(
        &runtime,
        &store,
        "this node",
        &pod_ref,
        &container,
        args.previous,
    )?;
    let opts = LogOptions {
        tail_lines: u64::try_from(args.tail).ok(),
        timestamps: args.timestamps,
        ..Default::default()
    };
    let mut go_on = || source.written(&runtime);
    let follow: Option<&mut dyn FnMut() -> bool> =
        if args.follow { Some(&mut go_on) } else { None };
    let mut out = std::io::stdout().lock();
    match logs::copy(&source.path, &opts, &mut out, follow) {
        // `edgepod logs … | head` closing the pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.with_context(|| format!("reading {}", source.path.display())),
    }
}
