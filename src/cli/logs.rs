//! `edgepod logs POD [-c C] [-f] [--tail N] [--previous] [--timestamps]`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use crate::runtime::logs::{self, LogLine};

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
    let status = pod.status.clone().unwrap_or_default();
    let restart_count = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|s| s.name == container)
        .map(|s| s.restart_count)
        .unwrap_or(0) as u32;
    let attempt = if args.previous {
        if restart_count == 0 {
            bail!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                args.pod
            );
        }
        restart_count - 1
    } else {
        restart_count
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let path = data_dir
        .join("logs")
        .join(format!("{}_{}_{uid}", args.namespace, args.pod))
        .join(&container)
        .join(format!("{attempt}.log"));
    let lines = logs::read_all(&path).with_context(|| format!("reading {}", path.display()))?;
    let shown = if args.tail >= 0 {
        let n = args.tail as usize;
        &lines[lines.len().saturating_sub(n)..]
    } else {
        &lines[..]
    };
    let mut out = std::io::stdout();
    out.write_all(logs::render(shown, args.timestamps).as_bytes())?;
    out.flush()?;
    if args.follow {
        follow(
            &path,
            lines.len(),
            args.timestamps,
            &store,
            &args,
            &container,
            &uid,
        )?;
    }
    Ok(())
}

/// Prints lines as they are appended, until the container terminates or the pod goes away.
fn follow(
    path: &Path,
    mut seen: usize,
    timestamps: bool,
    store: &crate::store::Store,
    args: &LogsArgs,
    container: &str,
    uid: &str,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let lines: Vec<LogLine> = logs::read_all(path).unwrap_or_default();
        // Rotation can shrink the file set: never print a line twice, never panic.
        if lines.len() > seen {
            out.write_all(logs::render(&lines[seen..], timestamps).as_bytes())?;
            out.flush()?;
        }
        seen = seen.max(lines.len());
        let pod: Option<Pod> = store.get_as("Pod", &args.namespace, &args.pod)?;
        let running = pod
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
            .and_then(|p| p.status)
            .map(|s| {
                s.container_statuses
                    .into_iter()
                    .flatten()
                    .chain(s.init_container_statuses.into_iter().flatten())
                    .any(|c| {
                        c.name == container
                            && c.state
                                .is_some_and(|st| st.running.is_some() || st.waiting.is_some())
                    })
            })
            .unwrap_or(false);
        if !running {
            let lines = logs::read_all(path).unwrap_or_default();
            if lines.len() > seen {
                out.write_all(logs::render(&lines[seen..], timestamps).as_bytes())?;
            }
            return Ok(());
        }
    }
}
