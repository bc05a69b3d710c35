//! `edgepod describe pod NAME`: the pod, its containers' states and its events.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;
use clap::Args;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};

use super::get::{age, display_status};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Resource type (pod).
    pub resource: String,
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

pub fn run(data_dir: &Path, args: DescribeArgs) -> anyhow::Result<()> {
    if !matches!(args.resource.as_str(), "pod" | "pods" | "po") {
        bail!("describe knows pods only, not \"{}\"", args.resource);
    }
    let store = super::open_store(data_dir)?;
    let pod: Option<Pod> = store.get_as("Pod", &args.namespace, &args.name)?;
    let events = store.events_for("Pod", &args.namespace, &args.name)?;
    let Some(pod) = pod else {
        if events.is_empty() {
            bail!("pods \"{}\" not found", args.name);
        }
        // A manifest that never parsed has no pod, only the events that say why.
        println!(
            "Name:         {}\nNamespace:    {}\nStatus:       <not created>",
            args.name, args.namespace
        );
        print_events(&events);
        return Ok(());
    };
    print!("{}", render(&pod));
    print_events(&events);
    Ok(())
}

fn render(pod: &Pod) -> String {
    let mut s = String::new();
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let kv = |map: &Option<std::collections::BTreeMap<String, String>>| {
        let v: Vec<String> = map
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.join("\n              ")
        }
    };
    let _ = writeln!(s, "Name:         {}", m.name.as_deref().unwrap_or(""));
    let _ = writeln!(
        s,
        "Namespace:    {}",
        m.namespace.as_deref().unwrap_or("default")
    );
    let _ = writeln!(
        s,
        "Node:         {}/{}",
        spec.node_name.as_deref().unwrap_or("<none>"),
        status.host_ip.as_deref().unwrap_or("")
    );
    if let Some(t) = &status.start_time {
        let _ = writeln!(s, "Start Time:   {}", t.0);
    }
    let _ = writeln!(s, "Labels:       {}", kv(&m.labels));
    let _ = writeln!(s, "Annotations:  {}", kv(&m.annotations));
    let _ = writeln!(
        s,
        "Status:       {}",
        status.phase.as_deref().unwrap_or("Pending")
    );
    let _ = writeln!(
        s,
        "IP:           {}",
        status.pod_ip.as_deref().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "QoS Class:    {}",
        status.qos_class.as_deref().unwrap_or("")
    );
    let _ = writeln!(s, "Display:      {}", display_status(pod));
    let sections = [
        (
            "Init Containers:",
            spec.init_containers.clone().unwrap_or_default(),
            status.init_container_statuses.clone().unwrap_or_default(),
        ),
        (
            "Containers:",
            spec.containers.clone(),
            status.container_statuses.clone().unwrap_or_default(),
        ),
    ];
    for (title, containers, statuses) in sections {
        if containers.is_empty() {
            continue;
        }
        let _ = writeln!(s, "{title}");
        for c in containers {
            let st = statuses.iter().find(|x| x.name == c.name);
            let _ = writeln!(s, "  {}:", c.name);
            if let Some(id) = st.and_then(|x| x.container_id.as_deref()) {
                let _ = writeln!(s, "    Container ID:  {id}");
            }
            let _ = writeln!(s, "    Image:         {}", c.image.as_deref().unwrap_or(""));
            if let Some(cmd) = &c.command {
                let _ = writeln!(s, "    Command:       {}", cmd.join(" "));
            }
            if let Some(args) = &c.args {
                let _ = writeln!(s, "    Args:          {}", args.join(" "));
            }
            if let Some(st) = st {
                write_state(&mut s, "State", st.state.as_ref());
                if st
                    .last_state
                    .as_ref()
                    .is_some_and(|l| l.terminated.is_some())
                {
                    write_state(&mut s, "Last State", st.last_state.as_ref());
                }
                let _ = writeln!(s, "    Ready:         {}", st.ready);
                let _ = writeln!(s, "    Restart Count: {}", st.restart_count);
            }
            write_resources(&mut s, &c);
            let _ = st.map(|x: &ContainerStatus| x.started);
        }
    }
    let _ = writeln!(s, "Conditions:\n  Type              Status");
    for c in status.conditions.iter().flatten() {
        let _ = writeln!(s, "  {:<17} {}", c.type_, c.status);
    }
    s
}

fn write_state(s: &mut String, label: &str, state: Option<&ContainerState>) {
    let Some(state) = state else { return };
    if let Some(r) = &state.running {
        let _ = writeln!(s, "    {label:<14} Running");
        if let Some(t) = &r.started_at {
            let _ = writeln!(s, "      Started:     {}", t.0);
        }
    } else if let Some(w) = &state.waiting {
        let _ = writeln!(s, "    {:<14} Waiting", format!("{label}:"));
        let _ = writeln!(
            s,
            "      Reason:      {}",
            w.reason.as_deref().unwrap_or("")
        );
        if let Some(m) = &w.message {
            let _ = writeln!(s, "      Message:     {m}");
        }
    } else if let Some(t) = &state.terminated {
        let _ = writeln!(s, "    {:<14} Terminated", format!("{label}:"));
        let _ = writeln!(
            s,
            "      Reason:      {}",
            t.reason.as_deref().unwrap_or("")
        );
        let _ = writeln!(s, "      Exit Code:   {}", t.exit_code);
        if let Some(sig) = t.signal {
            let _ = writeln!(s, "      Signal:      {sig}");
        }
        if let Some(x) = &t.started_at {
            let _ = writeln!(s, "      Started:     {}", x.0);
        }
        if let Some(x) = &t.finished_at {
            let _ = writeln!(s, "      Finished:    {}", x.0);
        }
    }
}

fn write_resources(s: &mut String, c: &k8s_openapi::api::core::v1::Container) {
    let Some(r) = &c.resources else { return };
    for (label, map) in [("Limits", &r.limits), ("Requests", &r.requests)] {
        if let Some(map) = map.as_ref().filter(|m| !m.is_empty()) {
            let _ = writeln!(s, "    {label}:");
            for (k, v) in map {
                let _ = writeln!(s, "      {k}: {}", v.0);
            }
        }
    }
}

fn print_events(events: &[k8s_openapi::api::core::v1::Event]) {
    if events.is_empty() {
        println!("Events:       <none>");
        return;
    }
    println!(
        "Events:\n  Type     Reason     Age    From     Message\n  ----     ------     ----   ----     -------"
    );
    for e in events {
        let count = e.count.unwrap_or(1);
        let age_s = age(e.last_timestamp.as_ref().map(|t| t.0));
        let age_col = if count > 1 {
            format!("{age_s} (x{count})")
        } else {
            age_s
        };
        println!(
            "  {:<8} {:<10} {:<6} {:<8} {}",
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            age_col,
            e.source
                .as_ref()
                .and_then(|s| s.component.clone())
                .unwrap_or_default(),
            e.message.as_deref().unwrap_or("")
        );
    }
}
