//! `edgepod hub token …`, `edgepod hub node revoke`, `edgepod hub mosquitto-config`: the
//! fleet's join tokens, revocations and Mosquitto configuration, written straight into the data
//! dir (as the running hub reads them from there), plus the hidden `edgepod internal join`.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::fleet::identity::{self, DEFAULT_CLUSTER, MQTTS_PORT, mosquitto, token};

/// `edgepod hub [FLAGS]` runs the hub; `edgepod hub COMMAND` manages its fleet.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubCli {
    #[command(flatten)]
    pub args: super::up::HubArgs,
    #[command(subcommand)]
    pub command: Option<HubCommand>,
}

#[derive(Subcommand, Debug)]
pub enum HubCommand {
    /// Join tokens for devices (`edgepod agent --token`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Fleet nodes: cut a device off.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Write a Mosquitto configuration, certificates and ACL for the fleet.
    MosquittoConfig(MosquittoArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a join token and print it (only this once: the hub keeps a hash).
    Create {
        /// How long the token may be used: 24h, 30m, 7d, 1h30m; 0 never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The hub API as devices reach it (https://HOST:PORT). Default: the server of the
        /// admin kubeconfig the hub wrote.
        #[arg(long)]
        server: Option<String>,
        /// The broker as devices reach it (mqtts://HOST:PORT). Default: the API's host, port
        /// 8883.
        #[arg(long)]
        broker: Option<String>,
        /// The cluster's topic name (edgepod/v1/CLUSTER/…).
        #[arg(long, default_value = DEFAULT_CLUSTER)]
        cluster: String,
    },
    /// List the tokens the hub accepts (ids, not secrets).
    List,
    /// Stop accepting a token.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Refuse NAME from now on: no new certificate, no access in the broker's ACL.
    Revoke { name: String },
    /// The nodes that joined with a token, and those revoked.
    List,
}

#[derive(Args, Debug)]
pub struct MosquittoArgs {
    /// Directory for mosquitto.conf, ca.crt, broker.crt, broker.key and acl.
    #[arg(long)]
    pub out: PathBuf,
    /// The TLS listener's port.
    #[arg(long, default_value_t = MQTTS_PORT)]
    pub listen: u16,
    /// Address the listener binds (default: all).
    #[arg(long)]
    pub bind: Option<String>,
    #[arg(long, default_value = DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Extra DNS names or IP addresses for the broker's certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
}

/// `edgepod internal join`: what `edgepod agent --token` does first, alone.
#[derive(Args, Debug)]
pub struct JoinArgs {
    #[arg(long, env = "EDGEPOD_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long)]
    pub node_name: String,
}

pub fn run(data_dir: &Path, cmd: HubCommand) -> anyhow::Result<()> {
    match cmd {
        HubCommand::Token(TokenCommand::Create {
            ttl,
            description,
            server,
            broker,
            cluster,
        }) => create(data_dir, &ttl, description, server, broker, cluster),
        HubCommand::Token(TokenCommand::List) => {
            let tokens = token::list(data_dir)?;
            println!("{:<14}{:<27}{:<12}DESCRIPTION", "ID", "EXPIRES", "CLUSTER");
            let now = jiff::Timestamp::now();
            for t in tokens {
                let expires = match (&t.expires, t.expired_at(now)) {
                    (None, _) => "never".to_string(),
                    (Some(e), true) => format!("{e} (expired)"),
                    (Some(e), false) => e.clone(),
                };
                println!(
                    "{:<14}{expires:<27}{:<12}{}",
                    t.id, t.cluster, t.description
                );
            }
            Ok(())
        }
        HubCommand::Token(TokenCommand::Delete { id }) => {
            if !token::delete(data_dir, &id)? {
                anyhow::bail!("no join token with id {id}");
            }
            println!("join token {id} deleted");
            Ok(())
        }
        HubCommand::Node(NodeCommand::Revoke { name }) => {
            if identity::nodes::revoke(data_dir, &name)? {
                println!("node {name} revoked");
            } else {
                println!("node {name} was already revoked");
            }
            Ok(())
        }
        HubCommand::Node(NodeCommand::List) => {
            let file = identity::nodes::load(data_dir)?;
            println!("{:<32}{:<34}REVOKED", "NAME", "JOINED");
            for (name, n) in &file.nodes {
                let joined = n.joined.as_deref().unwrap_or("-");
                let revoked = n.revoked.as_deref().unwrap_or("-");
                println!("{name:<32}{joined:<34}{revoked}");
            }
            Ok(())
        }
        HubCommand::MosquittoConfig(args) => {
            let conf = mosquitto::write_config(
                data_dir,
                &mosquitto::Options {
                    out: args.out,
                    port: args.listen,
                    bind: args.bind,
                    cluster: args.cluster,
                    sans: args.tls_san,
                },
            )?;
            println!("{}", conf.display());
            Ok(())
        }
    }
}

fn create(
    data_dir: &Path,
    ttl: &str,
    description: String,
    server: Option<String>,
    broker: Option<String>,
    cluster: String,
) -> anyhow::Result<()> {
    let ttl = token::parse_ttl(ttl)?;
    let api = match server {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => kubeconfig_server(data_dir)?,
    };
    let (host, _) = identity::node::split_url(&api, "https://", 6443)
        .context("--server must be https://HOST:PORT")?;
    if host == "127.0.0.1" || host == "::1" || host == "localhost" {
        eprintln!(
            "warning: the token names {api}, which only this machine reaches; \
             pass --server https://ADDRESS:PORT for devices elsewhere"
        );
    }
    let broker = match broker {
        Some(b) => b,
        None if host.contains(':') => format!("mqtts://[{host}]:{MQTTS_PORT}"),
        None => format!("mqtts://{host}:{MQTTS_PORT}"),
    };
    if !(broker.starts_with("mqtts://") || broker.starts_with("mqtt://")) {
        anyhow::bail!("--broker {broker:?}: expected mqtts://HOST:PORT");
    }
    let (_, fingerprint) = crate::apiserver::tls::ca_certificate(data_dir)?;
    let (record, text) = token::create(
        data_dir,
        token::NewToken {
            api,
            broker,
            ca_fingerprint: fingerprint,
            cluster,
            ttl,
            description,
        },
    )?;
    eprintln!(
        "join token {} (expires {})",
        record.id,
        record.expires.as_deref().unwrap_or("never")
    );
    println!("{text}");
    Ok(())
}

/// The `server:` of the admin kubeconfig the hub writes when it starts.
fn kubeconfig_server(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("kubeconfig");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no kubeconfig to read the hub's address from (start the hub first, or pass \
             --server https://HOST:PORT)",
            path.display()
        )
    })?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_string())
        .with_context(|| format!("{}: no server", path.display()))
}

pub fn join(data_dir: &Path, args: JoinArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let id = runtime.block_on(identity::join(&args.token, &args.node_name, data_dir))?;
    println!(
        "joined cluster {} as {}; broker {}",
        id.cluster, id.node_name, id.broker_url
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn hub_flags_and_subcommands_parse() {
        use clap::Parser;
        super::super::Cli::command().debug_assert();
        let cli = super::super::Cli::try_parse_from([
            "edgepod",
            "hub",
            "token",
            "create",
            "--ttl",
            "0",
            "--cluster",
            "c1",
        ])
        .expect("token create");
        assert!(matches!(
            cli.command,
            super::super::Command::Hub(super::HubCli {
                command: Some(_),
                ..
            })
        ));
        let cli =
            super::super::Cli::try_parse_from(["edgepod", "hub", "--listen", "127.0.0.1:7443"])
                .expect("hub flags");
        assert!(matches!(
            cli.command,
            super::super::Command::Hub(super::HubCli { command: None, .. })
        ));
    }
}
