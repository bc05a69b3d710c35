//! Hidden subcommands edgepod runs itself, and `debug` diagnostics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::runtime::logs::Rotation;
use crate::runtime::shim::{self, ShimArgs};

#[derive(Subcommand, Debug)]
pub enum InternalCommand {
    /// Create, start and monitor one container (started by the agent).
    Shim {
        #[arg(long)]
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value_t = Rotation::default().max_size)]
        log_max_size: u64,
        #[arg(long, default_value_t = Rotation::default().max_files)]
        log_max_files: u32,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        oom_score_adj: i32,
        #[arg(long, default_value = "")]
        cgroups_path: String,
        /// Give the container a stdin FIFO (the spec's `stdin: true`).
        #[arg(long)]
        stdin: bool,
    },
    /// Run a command inside a running container and print the result as JSON.
    Exec {
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command inside a running container with its streams and a terminal if asked for
    /// (`kubectl exec`; started by the agent with descriptors 3 to 6 set up, see
    /// `runtime::exec_interactive`).
    ExecSession {
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        tty: bool,
        #[arg(long)]
        stdin: bool,
        #[arg(long)]
        stdout: bool,
        #[arg(long)]
        stderr: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Fork shims on request (started once by the agent).
    ShimServer {
        #[arg(long)]
        socket: PathBuf,
        /// The agent's PID: the server exits if it is not its parent any more.
        #[arg(long)]
        parent: i32,
    },
    /// Hold a pod's shared PID namespace (shareProcessNamespace) as its init.
    Pause {
        #[arg(long)]
        ns_file: PathBuf,
    },
    /// Join a fleet with a token and save the node identity (what `agent --token` does first).
    Join(super::hub_token::JoinArgs),
    /// The embedded MQTT broker alone, plain TCP, every client allowed, until SIGTERM (for
    /// `bench broker`, which needs its memory and CPU apart). Prints
    /// `listening ADDR anon-before-kib N` (its RssAnon before the broker started) once it
    /// accepts connections.
    #[cfg(feature = "bench")]
    Broker {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = crate::fleet::mqtt::broker::DEFAULT_MAX_QUEUED)]
        max_queued: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Round-trip a Pod through the SQLite store of the data dir and check its integrity.
    StoreCheck,
}

pub fn run(cmd: InternalCommand) -> ExitCode {
    match cmd {
        InternalCommand::Shim {
            id,
            bundle,
            state_root,
            log,
            log_max_size,
            log_max_files,
            oom_score_adj,
            cgroups_path,
            stdin,
        } => {
            let args = ShimArgs {
                id,
                bundle,
                state_root,
                log_path: log,
                rotation: Rotation {
                    max_size: log_max_size,
                    max_files: log_max_files,
                },
                oom_score_adj,
                cgroups_path,
                stdin,
            };
            ExitCode::from(shim::run(&args) as u8)
        }
        InternalCommand::Exec {
            state_root,
            id,
            timeout_ms,
            command,
        } => ExitCode::from(crate::runtime::exec::run(
            &state_root,
            &id,
            command,
            std::time::Duration::from_millis(timeout_ms),
        ) as u8),
        InternalCommand::ExecSession {
            state_root,
            id,
            tty,
            stdin,
            stdout,
            stderr,
            command,
        } => {
            let opts = crate::runtime::exec_interactive::SessionOptions {
                tty,
                stdin,
                stdout,
                stderr,
            };
            ExitCode::from(
                crate::runtime::exec_interactive::serve(&state_root, &id, opts, command) as u8,
            )
        }
        InternalCommand::ShimServer { socket, parent } => {
            ExitCode::from(crate::runtime::zygote::serve(&socket, parent) as u8)
        }
        InternalCommand::Pause { ns_file } => {
            ExitCode::from(crate::runtime::sandbox::pause_main(&ns_file) as u8)
        }
        #[cfg(feature = "bench")]
        InternalCommand::Broker { listen, max_queued } => match broker(listen, max_queued) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        // Dispatched in `cli::main`, where errors become messages.
        InternalCommand::Join(_) => ExitCode::FAILURE,
    }
}

#[cfg(feature = "bench")]
fn broker(listen: std::net::SocketAddr, max_queued: usize) -> anyhow::Result<()> {
    use crate::fleet::mqtt::broker::{self, BrokerConfig};
    use std::io::Write;
    crate::agent::install_stop_signals()?;
    // Two workers, as the hub's runtime that hosts the broker in production.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let before = super::bench_broker::status_kib(std::process::id(), "RssAnon:");
        let mut cfg = BrokerConfig::new(listen);
        cfg.max_queued = max_queued;
        let b = broker::start(cfg).await?;
        let mut out = std::io::stdout();
        writeln!(out, "listening {} anon-before-kib {before}", b.local_addr())?;
        out.flush()?;
        crate::roles::up::stop_signal().await;
        b.shutdown().await;
        Ok(())
    })
}

pub fn debug(data_dir: &Path, cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::StoreCheck => {
            let summary = crate::store::self_check(data_dir)?;
            println!("{summary}");
            Ok(())
        }
    }
}
