//! `edgepod get pods`: the local store's pods, printed as kubectl prints them.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use crate::api::LabelSelector;
use crate::api::decode;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Resource type: pods (po), events (ev).
    pub resource: String,
    /// Only this object.
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, as kubectl's -l.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Output: wide, yaml, json, name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Show labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
}

pub fn run(data_dir: &Path, args: GetArgs) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match args.resource.as_str() {
        "pods" | "pod" | "po" => {}
        "events" | "event" | "ev" => return events(&store, &args),
        other => bail!(
            "the server doesn't have a resource type \"{other}\" (this local command knows pods and events)"
        ),
    }
    let selector = match &args.selector {
        Some(s) => Some(
            LabelSelector::parse(s)
                .map_err(|e| anyhow::anyhow!("invalid label selector {s:?}: {e}"))?,
        ),
        None => None,
    };
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    let mut pods: Vec<Pod> = store
        .list_as("Pod", ns, selector.as_ref())
        .context("listing pods")?;
    if let Some(name) = &args.name {
        pods.retain(|p| p.metadata.name.as_deref() == Some(name.as_str()));
        if pods.is_empty() {
            bail!("pods \"{name}\" not found");
        }
    }
    // One object by name, otherwise a v1 List, as kubectl prints them.
    let document = || -> anyhow::Result<serde_json::Value> {
        Ok(if args.name.is_some() {
            serde_json::to_value(&pods[0])?
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": pods, "metadata": {"resourceVersion": ""}})
        })
    };
    match args.output.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&document()?)?),
        Some("yaml") => print!("{}", decode::to_yaml(&document()?)?),
        Some("name") => {
            for p in &pods {
                println!("pod/{}", p.metadata.name.as_deref().unwrap_or(""));
            }
        }
        Some("wide") | None => print_table(
            &pods,
            args.output.as_deref() == Some("wide"),
            args.all_namespaces,
            args.show_labels,
        ),
        Some(other) => bail!(
            "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,wide,yaml"
        ),
    }
    if pods.is_empty() {
        eprintln!("No resources found in {} namespace.", args.namespace);
    }
    Ok(())
}

fn print_table(pods: &[Pod], wide: bool, all_ns: bool, labels: bool) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<&str> = Vec::new();
    if all_ns {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    if wide {
        header.extend(["IP", "NODE"]);
    }
    if labels {
        header.push("LABELS");
    }
    for p in pods {
        let mut row = Vec::new();
        if all_ns {
            row.push(p.metadata.namespace.clone().unwrap_or_default());
        }
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
        let ready = statuses.iter().filter(|s| s.ready).count();
        let restarts: i32 = statuses.iter().map(|s| s.restart_count).sum();
        row.push(p.metadata.name.clone().unwrap_or_default());
        row.push(format!("{ready}/{total}"));
        row.push(display_status(p));
        row.push(restarts.to_string());
        row.push(age(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
        if wide {
            row.push(
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| "<none>".into()),
            );
            row.push(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "<none>".into()),
            );
        }
        if labels {
            let l = p.metadata.labels.clone().unwrap_or_default();
            let s: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row.push(if s.is_empty() {
                "<none>".into()
            } else {
                s.join(",")
            });
        }
        rows.push(row);
    }
    print_rows(&header, &rows);
}

pub fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    if rows.is_empty() {
        return;
    }
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The STATUS column as kubectl computes it: init progress, waiting or terminated reasons.
pub fn display_status(p: &Pod) -> String {
    let status = p.status.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .or(status.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let inits = status.init_container_statuses.clone().unwrap_or_default();
    let init_total = p
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|v| v.len())
        .unwrap_or(0);
    for (i, s) in inits.iter().enumerate() {
        let st = s.state.clone().unwrap_or_default();
        if let Some(t) = &st.terminated {
            if t.exit_code == 0 {
                continue;
            }
            return format!(
                "Init:{}",
                t.reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code))
            );
        }
        if let Some(w) = &st.waiting
            && let Some(r) = &w.reason
            && r != "PodInitializing"
        {
            return format!("Init:{r}");
        }
        if st.running.is_some()
            && p.spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|v| v.get(i))
                .is_some_and(|c| c.restart_policy.as_deref() == Some("Always"))
        {
            continue;
        }
        return format!("Init:{i}/{init_total}");
    }
    let mut has_running = false;
    for s in status.container_statuses.iter().flatten().rev() {
        let st = s.state.clone().unwrap_or_default();
        if let Some(w) = &st.waiting
            && let Some(r) = &w.reason
        {
            reason = r.clone();
        } else if let Some(t) = &st.terminated {
            reason = t.reason.clone().unwrap_or_else(|| match t.signal {
                Some(sig) => format!("Signal:{sig}"),
                None => format!("ExitCode:{}", t.exit_code),
            });
        } else if st.running.is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if p.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".into();
    }
    reason
}

/// kubectl's short age format: 45s, 3m10s, 5h, 2d.
pub fn age(t: Option<jiff::Timestamp>) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn events(store: &crate::store::Store, args: &GetArgs) -> anyhow::Result<()> {
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    let events: Vec<k8s_openapi::api::core::v1::Event> = store.list_as("Event", ns, None)?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                age(e.last_timestamp.as_ref().map(|t| t.0)),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                format!(
                    "{}/{}",
                    e.involved_object
                        .kind
                        .clone()
                        .unwrap_or_default()
                        .to_lowercase(),
                    e.involved_object.name.clone().unwrap_or_default()
                ),
                e.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_rows(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &rows);
    Ok(())
}
