//! `edgepod doctor`: checks that this host can run edgepod and prints what to fix.
//!
//! This file decides where the hub and the registries are (flags, the join token, the node
//! identity in the data dir, registries.yaml) and renders the report; the checks themselves
//! are `host::doctor`'s.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::host::doctor::{self, Check, HubTargets, Options, Report, Status, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One line per check, with `fix:` lines under what did not pass.
    Text,
    /// `{"checks":[{"id","status","message","fix"}],"summary":{...}}`, for tooling.
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// CNI plugin directories to check, as the agent's --cni-bin-dir (default: the agent's).
    #[arg(long = "cni-bin-dir", value_name = "DIR[:DIR]", value_delimiter = ':')]
    pub cni_bin_dir: Vec<PathBuf>,
    /// The hub's broker to check, HOST:PORT (default: from --token or the node's identity).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// A join token, as `edgepod agent --token` takes it: its broker and API are checked.
    #[arg(
        long,
        env = "EDGEPOD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The registries file the agent reads (--private-registry): its mirrors are checked.
    #[arg(long, value_name = "FILE", default_value = crate::agent::image_pull::DEFAULT_PRIVATE_REGISTRY)]
    pub private_registry: PathBuf,
    /// Directory of board configs.
    #[arg(long, value_name = "DIR", default_value = crate::host::board::DEFAULT_CONFIG_DIR)]
    pub board_config_dir: PathBuf,
    /// Check against this board config instead of detecting the board.
    #[arg(long, value_name = "NAME")]
    pub board: Option<String>,
    /// Read /proc and /sys under this directory (tests, chroots).
    #[arg(long, env = "EDGEPOD_HOST_ROOT", default_value = "/", hide = true)]
    pub host_root: PathBuf,
}

pub fn run(data_dir: &Path, args: DoctorArgs) -> ExitCode {
    let opts = Options {
        root: args.host_root.clone(),
        data_dir: data_dir.to_path_buf(),
        cni_bin_dirs: if args.cni_bin_dir.is_empty() {
            crate::network::cni::DEFAULT_BIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            args.cni_bin_dir.clone()
        },
        hub: hub(data_dir, &args),
        registries: registries(&args.private_registry),
        board_config_dir: args.board_config_dir.clone(),
        board: args.board.clone(),
    };
    let report = doctor::run(&opts);
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Output::Text => write_text(&mut out, &report, colour()),
    };
    if let Err(e) = written {
        eprintln!("error: writing the report: {e}");
        return ExitCode::FAILURE;
    }
    if report.summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Where the hub is: --server, else --token, else the identity a joined agent saved.
fn hub(data_dir: &Path, args: &DoctorArgs) -> Result<Option<HubTargets>, String> {
    if let Some(server) = &args.server {
        let broker = Target::parse(server, 8883).map_err(|e| format!("--server {e}"))?;
        return Ok(Some(HubTargets {
            source: "--server".into(),
            broker,
            api: None,
        }));
    }
    if let Some(token) = &args.token {
        let t = crate::fleet::identity::JoinToken::decode(token)
            .map_err(|e| format!("--token: {e}"))?;
        return Ok(Some(HubTargets {
            source: "--token".into(),
            broker: broker_target(&t.broker)?,
            api: Some(api_target(&t.api)?),
        }));
    }
    match crate::fleet::identity::NodeIdentity::load(data_dir) {
        Ok(Some(id)) => Ok(Some(HubTargets {
            source: format!("{}", data_dir.join("identity").display()),
            broker: broker_target(&id.broker_url)?,
            api: None,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("the node identity: {e}")),
    }
}

fn broker_target(url: &str) -> Result<Target, String> {
    let u: crate::fleet::mqtt::client::BrokerUrl = url.parse()?;
    Ok(Target {
        label: url.to_string(),
        host: u.host,
        port: u.port,
    })
}

/// `https://HOST[:PORT][/...]`.
fn api_target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("API URL {url:?} is not https://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut t = Target::parse(authority, 443)?;
    t.label = url.to_string();
    Ok(t)
}

/// The endpoints a pull of a Docker Hub image tries: its mirrors (or the `*` mirrors), then
/// Docker Hub itself.
fn registries(file: &Path) -> Result<Vec<Target>, String> {
    use crate::image::registries::{Registries, Scheme};
    let config = Registries::load(file).map_err(|e| e.to_string())?;
    let reference = crate::image::Reference::parse("docker.io/library/busybox:latest")
        .map_err(|e| e.to_string())?;
    config
        .endpoints(&reference)
        .into_iter()
        .map(|e| {
            let port = match e.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            };
            let mut t = Target::parse(&e.host, port)?;
            t.label = e.url();
            Ok(t)
        })
        .collect()
}

/// `PASS  kernel          6.1.21-v8+ ...`, a `fix:` line under each warn and fail.
fn write_text(out: &mut impl Write, report: &Report, colour: bool) -> std::io::Result<()> {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for Check {
        id,
        status,
        message,
        fix,
    } in &report.checks
    {
        let (word, code) = match status {
            Status::Pass => ("PASS", "32"),
            Status::Warn => ("WARN", "33"),
            Status::Fail => ("FAIL", "31"),
        };
        if colour {
            write!(out, "\x1b[1;{code}m{word}\x1b[0m")?;
        } else {
            write!(out, "{word}")?;
        }
        writeln!(out, "  {id:<width$}  {message}")?;
        if let Some(fix) = fix {
            writeln!(out, "      {:<width$}  fix: {fix}", "")?;
        }
    }
    let s = report.summary;
    writeln!(
        out,
        "\n{} checks: {} passed, {} warnings, {} failed",
        report.checks.len(),
        s.pass,
        s.warn,
        s.fail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_fix_lines_and_no_colour_off_a_terminal() {
        let report = Report::new(vec![
            Check::pass("kernel", "6.1.21"),
            Check::fail("cni-plugins", "missing", "install them"),
        ]);
        let mut buf = Vec::new();
        write_text(&mut buf, &report, false).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("PASS  kernel       6.1.21\n"), "{text}");
        assert!(text.contains("FAIL  cni-plugins  missing\n"), "{text}");
        assert!(
            text.contains("                   fix: install them\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn api_urls() {
        let t = api_target("https://hub.local:6443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("hub.local", 6443));
        assert_eq!(api_target("https://hub/x").unwrap().port, 443);
        assert!(api_target("http://hub").is_err());
    }
}
