//! The `edgepod` command line: parses flags, picks the role or local command, and turns errors
//! into messages. The only place `anyhow` is used; everything below returns typed errors.

mod agent;
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_api;
#[cfg(feature = "bench")]
mod bench_broker;
#[cfg(feature = "bench")]
mod bench_fleet;
#[cfg(feature = "bench")]
mod bench_network;
#[cfg(feature = "bench")]
mod bench_pull;
#[cfg(feature = "bench")]
mod bench_scheduler;
pub mod config_file;
mod describe;
mod doctor;
mod get;
mod hub_token;
mod image;
mod image_pull;
mod internal;
mod kubeconfig;
mod logs;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "edgepod",
    version,
    about = "Kubernetes-style pods on small devices",
    propagate_version = true
)]
pub struct Cli {
    /// Where edgepod keeps its state (SQLite store, images, containers, logs).
    #[arg(
        long,
        global = true,
        env = "EDGEPOD_DATA_DIR",
        default_value = "/var/lib/edgepod"
    )]
    pub data_dir: PathBuf,

    /// Flag settings for every command (`data-dir: …`, `node-labels: …`); flags and their
    /// environment variables win over it. Default: /etc/edgepod/config.yaml when it exists.
    #[arg(long, global = true, env = "EDGEPOD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node agent: static pods from a manifest directory, run through libcontainer.
    Agent(agent::AgentCommand),
    /// Run the hub: the Kubernetes API that kubectl drives, controllers and the binder.
    Hub(hub_token::HubCli),
    /// Run a hub and a local agent in one process: a one-device cluster.
    Up(up::UpArgs),
    /// Print the admin kubeconfig the hub wrote (`DATA_DIR/kubeconfig`).
    Kubeconfig,
    /// List objects from the local store (`get pods`).
    Get(get::GetArgs),
    /// Show one object in detail with its events (`describe pod NAME`).
    Describe(describe::DescribeArgs),
    /// Print a container's logs.
    Logs(logs::LogsArgs),
    /// Check that this host can run edgepod and print what to fix (exit code 1 on any fail).
    Doctor(doctor::DoctorArgs),
    /// Manage the local image store.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Speed and memory figures next to peers (runc, crun).
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Diagnostics that touch real subsystems.
    #[command(subcommand)]
    Debug(internal::DebugCommand),
    /// Processes edgepod starts itself (the container shim); not for people.
    #[command(subcommand, hide = true)]
    Internal(internal::InternalCommand),
}

pub fn main() -> ExitCode {
    // First, while this is the only thread: systemd's variables are for this process only.
    crate::roles::notify::take_from_env();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_tracing(&cli.command);
    let result = match cli.command {
        Command::Agent(args) => agent::run(&cli.data_dir, args),
        Command::Hub(hub) => match hub.command {
            Some(cmd) => hub_token::run(&cli.data_dir, cmd),
            None => up::run_hub(&cli.data_dir, hub.args),
        },
        Command::Up(args) => up::run_up(&cli.data_dir, args),
        Command::Kubeconfig => kubeconfig::run(&cli.data_dir),
        Command::Get(args) => get::run(&cli.data_dir, args),
        Command::Describe(args) => describe::run(&cli.data_dir, args),
        Command::Logs(args) => logs::run(&cli.data_dir, args),
        Command::Image(cmd) => image::run(&cli.data_dir, cmd),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => bench::run(cmd),
        Command::Debug(cmd) => internal::debug(&cli.data_dir, cmd),
        Command::Internal(internal::InternalCommand::Join(args)) => {
            hub_token::join(&cli.data_dir, args)
        }
        Command::Internal(cmd) => return internal::run(cmd),
        Command::Doctor(args) => return doctor::run(&cli.data_dir, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The command line with the configuration file's settings ([`config_file`]) under it.
fn parse() -> Result<Cli, ExitCode> {
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = Cli::command().get_matches_from(&argv);
    let (argv, applied) = config_file::apply(&Cli::command(), &first, &argv).map_err(|e| {
        eprintln!("error: {}", error_chain(&e));
        ExitCode::FAILURE
    })?;
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        let _ = e.print();
        if let Some(path) = applied.path.filter(|_| !applied.args.is_empty()) {
            eprintln!("(with settings from {})", path.display());
        }
        ExitCode::from(2)
    })
}

/// The error and its causes on one line, skipping a cause its parent's message already quotes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_tracing(command: &Command) {
    let level = std::env::var("EDGEPOD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(match command {
            Command::Agent(_) | Command::Hub(_) | Command::Up(_) => tracing::Level::INFO,
            _ => tracing::Level::WARN,
        });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter::Targets};
    // libcontainer and libcgroups warn about every controller this kernel lacks, per container.
    let deps = if level >= tracing::Level::DEBUG {
        level
    } else {
        tracing::Level::ERROR
    };
    let filter = Targets::new()
        .with_default(level)
        .with_target("libcgroups", deps)
        .with_target("libcontainer", deps);
    if matches!(command, Command::Internal(_)) {
        // The shim's fd 2 becomes the container's stderr inside libcontainer's init, which logs
        // through tracing until it execs: write to a duplicate of the original stderr (the
        // shim log) so those lines never land in the container's log.
        use std::os::fd::AsFd;
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return;
        };
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(std::fs::File::from(fd)))
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter);
        let _ = tracing_subscriber::registry().with(layer).try_init();
        return;
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Opens the store of a data dir for a local command.
fn open_store(data_dir: &std::path::Path) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context;
    crate::store::Store::open_in(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))
}
