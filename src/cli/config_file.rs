//! The configuration file (`/etc/edgepod/config.yaml`, `--config FILE`, `EDGEPOD_CONFIG`):
//! flag settings every role and command reads, so a service unit needs no long command line.
//!
//! Keys are long flag names without the dashes (`data-dir`, `node-labels`, `token`); a value is
//! what the flag would be given: a string or number, `true`/`false` for a switch (given or
//! not), a list for a repeatable flag (or joined with commas for a flag that takes a comma list,
//! as `node-labels: [gpu=true, disk=ssd]`), a map for a `KEY=VALUE[,…]` flag. One file serves
//! every role: a key that is a flag of another command but not the one being run is ignored; a
//! key that is no command's flag is an error. A top-level key naming a command with a map
//! value (`agent: {node-labels: …}`) holds settings for that command only, which win over the
//! shared ones.
//!
//! Precedence: the command line, then the flag's environment variable (`EDGEPOD_TOKEN`, …),
//! then this file, then the built-in default. An environment variable is set per service or
//! per shell, so it is treated as the more specific setting (k3s turns its file into arguments
//! and so lets the file beat its variables; here a unit's `Environment=` wins).
//!
//! Settings reach clap as arguments appended to the command line, so every flag's own parsing
//! and checks apply, and flags added later work without touching this file. They apply to the
//! global flags always and to a top-level command's own flags when it runs itself
//! (`edgepod hub`, not `edgepod hub token create`, whose `--broker` means something else).
//!
//! Owns: finding, reading and checking the file, turning it into arguments. Must not touch:
//! what any flag means (that is its command's module).
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};
use serde_yaml_ng::Value;

/// Read when it exists and neither `--config` nor `EDGEPOD_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/edgepod/config.yaml";

/// The id of the global `--config` argument.
pub const CONFIG_ARG: &str = "config";

/// The file in effect and the arguments its settings add.
#[derive(Debug, Default)]
pub struct Applied {
    pub path: Option<PathBuf>,
    pub args: Vec<OsString>,
}

/// `argv` with the settings of the configuration file added (before a `--`, else at the end);
/// `matches` is `argv` parsed once without them.
pub fn apply(
    cmd: &clap::Command,
    matches: &ArgMatches,
    argv: &[OsString],
) -> anyhow::Result<(Vec<OsString>, Applied)> {
    let applied = settings(cmd, matches)?;
    let mut out = argv.to_vec();
    let at = out.iter().position(|a| a == "--").unwrap_or(out.len());
    out.splice(at..at, applied.args.iter().cloned());
    Ok((out, applied))
}

/// Which file: `--config`/`EDGEPOD_CONFIG` (must exist), else the default when it exists.
fn path_of(matches: &ArgMatches) -> anyhow::Result<Option<PathBuf>> {
    match matches.get_one::<PathBuf>(CONFIG_ARG) {
        Some(p) => {
            if !p.exists() {
                bail!("config file {}: no such file", p.display());
            }
            Ok(Some(p.clone()))
        }
        None => Ok(Path::new(DEFAULT_PATH)
            .exists()
            .then(|| PathBuf::from(DEFAULT_PATH))),
    }
}

fn settings(cmd: &clap::Command, matches: &ArgMatches) -> anyhow::Result<Applied> {
    let Some((sub_name, sub_matches)) = matches.subcommand() else {
        return Ok(Applied::default());
    };
    let Some(sub_cmd) = cmd.find_subcommand(sub_name) else {
        return Ok(Applied::default());
    };
    // Processes edgepod starts itself get everything on their command line.
    if sub_cmd.is_hide_set() {
        return Ok(Applied::default());
    }
    let Some(path) = path_of(matches)? else {
        return Ok(Applied::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file = parse(&path, &text)?;
    let commands: Vec<&clap::Command> =
        cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    let globals: Vec<&clap::Arg> = flags(cmd).filter(|a| a.is_global_set()).collect();
    let is_known = |key: &str, only: Option<&clap::Command>| {
        globals.iter().any(|a| a.get_long() == Some(key))
            || commands
                .iter()
                .filter(|c| only.is_none_or(|o| o.get_name() == c.get_name()))
                .any(|c| flags(c).any(|a| a.get_long() == Some(key)))
    };
    let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
    let mut section: BTreeMap<String, Value> = BTreeMap::new();
    for (key, value) in file {
        if let (Some(c), Value::Mapping(m)) =
            (commands.iter().find(|c| c.get_name() == key), &value)
        {
            for (k, v) in m {
                let k = key_str(&path, k)?;
                if !is_known(&k, Some(c)) {
                    bail!(unknown(&path, &format!("{key}.{k}"), &k, c, &globals));
                }
                if c.get_name() == sub_name {
                    section.insert(k, v.clone());
                }
            }
            continue;
        }
        if !is_known(&key, None) {
            let all = commands.iter().flat_map(|c| flags(c));
            bail!(unknown_among(
                &path,
                &key,
                &key,
                all.chain(globals.iter().copied())
            ));
        }
        wanted.insert(key, value);
    }
    wanted.extend(section);
    // The command's own flags only when it runs itself, not one of its subcommands.
    let own: Vec<&clap::Arg> = if sub_matches.subcommand().is_none() {
        flags(sub_cmd).filter(|a| !a.is_global_set()).collect()
    } else {
        Vec::new()
    };
    let mut args = Vec::new();
    for (key, value) in &wanted {
        let (arg, levels) = if let Some(a) = globals.iter().find(|a| a.get_long() == Some(key)) {
            // A global flag's value and source may sit at any level of the command chain.
            (*a, chain(matches))
        } else if let Some(a) = own.iter().find(|a| a.get_long() == Some(key)) {
            (*a, vec![sub_matches])
        } else {
            // Another command's flag.
            continue;
        };
        let id = arg.get_id().as_str();
        if levels.iter().any(|m| {
            matches!(
                m.try_contains_id(id).ok().and_then(|_| m.value_source(id)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        }) {
            continue;
        }
        args.extend(to_args(&path, key, arg, value)?);
    }
    Ok(Applied {
        path: Some(path),
        args,
    })
}

/// `matches` and those of the subcommands below it.
fn chain(matches: &ArgMatches) -> Vec<&ArgMatches> {
    let mut out = vec![matches];
    while let Some((_, m)) = out[out.len() - 1].subcommand() {
        out.push(m);
    }
    out
}

/// The flags of `cmd` a file may set (named, not help or version, not `--config` itself).
fn flags(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id().as_str() != CONFIG_ARG
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

/// The top-level mapping of the file, in file order.
fn parse(path: &Path, text: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow::anyhow!("config file {}: line {}: {e}", path.display(), l.line()),
        None => anyhow::anyhow!("config file {}: {e}", path.display()),
    })?;
    match doc {
        // An empty file, or one with only comments.
        Value::Null => Ok(Vec::new()),
        Value::Mapping(m) => m
            .into_iter()
            .map(|(k, v)| Ok((key_str(path, &k)?, v)))
            .collect(),
        _ => bail!(
            "config file {}: expected a mapping of flag names to values (`data-dir: /srv/edgepod`)",
            path.display()
        ),
    }
}

fn key_str(path: &Path, key: &Value) -> anyhow::Result<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        other => bail!(
            "config file {}: key {}: flag names are strings",
            path.display(),
            scalar(other).unwrap_or_else(|| format!("{other:?}"))
        ),
    }
}

/// The arguments that give `arg` the value `value`.
fn to_args(
    path: &Path,
    key: &str,
    arg: &clap::Arg,
    value: &Value,
) -> anyhow::Result<Vec<OsString>> {
    let bad = |what: &str| anyhow::anyhow!("config file {}: key {key}: {what}", path.display());
    let flag = |v: &str| OsString::from(format!("--{key}={v}"));
    match (arg.get_action(), value) {
        (_, Value::Null) => Ok(Vec::new()),
        (ArgAction::SetTrue, Value::Bool(true)) => Ok(vec![OsString::from(format!("--{key}"))]),
        (ArgAction::SetTrue, Value::Bool(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err(bad("a switch: true or false")),
        (ArgAction::Append, Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                scalar(i)
                    .map(|s| flag(&s))
                    .ok_or_else(|| bad("list items are strings or numbers"))
            })
            .collect(),
        (_, Value::Sequence(items)) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            let parts = parts.ok_or_else(|| bad("list items are strings or numbers"))?;
            Ok(vec![flag(&parts.join(","))])
        }
        (_, Value::Mapping(m)) => {
            let mut parts = Vec::new();
            for (k, v) in m {
                match (scalar(k), scalar(v)) {
                    (Some(k), Some(v)) => parts.push(format!("{k}={v}")),
                    _ => return Err(bad("map keys and values are strings or numbers")),
                }
            }
            Ok(vec![flag(&parts.join(","))])
        }
        (_, v) => scalar(v)
            .map(|s| vec![flag(&s)])
            .ok_or_else(|| bad("expected a string, number, true/false, list or map")),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unknown(
    path: &Path,
    shown: &str,
    key: &str,
    cmd: &clap::Command,
    globals: &[&clap::Arg],
) -> String {
    unknown_among(path, shown, key, flags(cmd).chain(globals.iter().copied()))
}

fn unknown_among<'a>(
    path: &Path,
    shown: &str,
    key: &str,
    known: impl Iterator<Item = &'a clap::Arg>,
) -> String {
    let best = known
        .filter_map(|a| a.get_long())
        .map(|l| (edit_distance(key, l), l))
        .min();
    let hint = match best {
        Some((d, l)) if d <= 2.max(key.len() / 4) => format!(" (did you mean {l:?}?)"),
        _ => String::new(),
    };
    format!(
        "config file {}: unknown key {shown:?}: no edgepod command has a flag --{key}{hint}",
        path.display()
    )
}

/// Levenshtein distance, for the did-you-mean hint.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        Command::new("edgepod")
            .arg(
                Arg::new("data_dir")
                    .long("data-dir")
                    .global(true)
                    .default_value("/var/lib/edgepod"),
            )
            .arg(
                Arg::new(CONFIG_ARG)
                    .long("config")
                    .global(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .subcommand(
                Command::new("agent")
                    .arg(
                        Arg::new("node_labels")
                            .long("node-labels")
                            .default_value(""),
                    )
                    .arg(
                        Arg::new("cni_bin_dir")
                            .long("cni-bin-dir")
                            .action(ArgAction::Append),
                    )
                    .arg(
                        Arg::new("off")
                            .long("disable-service-proxy")
                            .action(ArgAction::SetTrue),
                    )
                    .arg(
                        Arg::new("token")
                            .long("token")
                            .env("EDGEPOD_TEST_CONFIG_TOKEN"),
                    ),
            )
            .subcommand(
                Command::new("hub")
                    .arg(Arg::new("listen").long("listen"))
                    .subcommand(Command::new("token").arg(Arg::new("broker").long("broker"))),
            )
            .subcommand(
                Command::new("internal")
                    .hide(true)
                    .arg(Arg::new("x").long("x")),
            )
    }

    fn run(argv: &[&str], yaml: &str) -> anyhow::Result<Vec<String>> {
        let dir = std::env::temp_dir().join(format!("edgepod-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file = dir.join(format!("{n}.yaml"));
        std::fs::write(&file, yaml)?;
        let mut full: Vec<OsString> = argv.iter().map(OsString::from).collect();
        full.push("--config".into());
        full.push(file.clone().into());
        let m = cli().try_get_matches_from(&full)?;
        let r = apply(&cli(), &m, &full);
        let _ = std::fs::remove_file(&file);
        let (out, _) = r?;
        Ok(out[full.len()..]
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn values_become_flags() {
        let got = run(
            &["edgepod", "agent"],
            "data-dir: /srv/e\nnode-labels: [gpu=true, disk=ssd]\ncni-bin-dir: [/a, /b]\ndisable-service-proxy: true\nlisten: 0.0.0.0:1\n",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--cni-bin-dir=/a",
                "--cni-bin-dir=/b",
                "--data-dir=/srv/e",
                "--disable-service-proxy",
                "--node-labels=gpu=true,disk=ssd"
            ]
        );
        let got = run(
            &["edgepod", "agent"],
            "node-labels: {gpu: true, n: 3}\ndisable-service-proxy: false\n",
        )
        .unwrap();
        assert_eq!(got, ["--node-labels=gpu=true,n=3"]);
    }

    #[test]
    fn command_line_wins_and_sections_apply_to_their_command() {
        let got = run(
            &["edgepod", "agent", "--node-labels", "a=b"],
            "node-labels: c=d\n",
        )
        .unwrap();
        assert!(got.is_empty(), "{got:?}");
        let got = run(&["edgepod", "--data-dir", "/x", "hub"], "data-dir: /y\nlisten: 1.2.3.4:5\nagent: {node-labels: x=y}\nhub: {listen: 9.9.9.9:9}\n").unwrap();
        assert_eq!(got, ["--listen=9.9.9.9:9"]);
        // A nested command gets the global flags only.
        let got = run(
            &["edgepod", "hub", "token"],
            "data-dir: /y\nlisten: 1.2.3.4:5\n",
        )
        .unwrap();
        assert_eq!(got, ["--data-dir=/y"]);
        // Hidden commands read no file.
        assert!(
            run(&["edgepod", "internal"], "data-dir: /y\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = run(&["edgepod", "agent"], "node-lables: a=b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node-lables")
                && e.contains("did you mean \"node-labels\"")
                && e.contains(".yaml"),
            "{e}"
        );
        let e = run(&["edgepod", "agent"], "hub: {node-labels: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub.node-labels"), "{e}");
        let e = run(&["edgepod", "agent"], "a: b\n  c: : d\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains(".yaml"), "{e}");
        let e = run(&["edgepod", "agent"], "disable-service-proxy: yes please\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disable-service-proxy"), "{e}");
        // Nested commands' flags are not file keys.
        assert!(run(&["edgepod", "agent"], "broker: x\n").is_err());
        assert!(
            run(&["edgepod", "agent"], "# nothing yet\n")
                .unwrap()
                .is_empty()
        );
    }
}
