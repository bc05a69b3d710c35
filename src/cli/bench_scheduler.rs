//! `edgepod bench scheduler`: scheduler throughput in-process, on a temporary store holding N
//! simulated Node objects (varied labels and capacity, no agents) and M pending pods, then the
//! time for a Deployment of 1,000 replicas to be fully bound: the Deployment and ReplicaSet
//! controllers' passes and the scheduler's, in turn, as the hub runs them.
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

fn node(i: usize) -> Value {
    let zones = ["a", "b", "c", "d"];
    let mut labels = json!({
        "kubernetes.io/hostname": format!("sim-{i:04}"),
        "kubernetes.io/os": "linux",
        "topology.kubernetes.io/zone": zones[i % zones.len()],
        "disk": if i % 3 == 0 { "ssd" } else { "hdd" },
    });
    let cpu = 2 << (i % 4);
    let mut allocatable = json!({
        "cpu": cpu.to_string(),
        "memory": format!("{}Gi", cpu * 2),
        "pods": "110",
    });
    if i % 10 == 0 {
        labels["gpu"] = json!("true");
        allocatable["nvidia.com/gpu"] = json!("8");
    }
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("sim-{i:04}"), "labels": labels},
        "status": {"allocatable": allocatable, "capacity": allocatable,
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A pending pod; without `owner`, every 20th asks for ssd and every 20th for a GPU, and each
/// ten share a ReplicaSet.
fn pod(name: &str, i: usize, owner: Option<&str>) -> Value {
    let mut requests = json!({"cpu": "100m", "memory": "128Mi"});
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    match if owner.is_some() { 2 } else { i % 20 } {
        0 => spec["nodeSelector"] = json!({"disk": "ssd"}),
        1 => {
            spec["nodeSelector"] = json!({"gpu": "true"});
            requests["nvidia.com/gpu"] = json!("1");
        }
        _ => {}
    }
    spec["containers"][0]["resources"] = json!({"requests": requests});
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec, "status": {"phase": "Pending"}});
    let owner = owner
        .map(str::to_string)
        .unwrap_or(format!("rs-{}", i / 10));
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": owner, "uid": owner, "controller": true}]);
    p
}

fn create_all(store: &Store, kind: &str, objs: Vec<Value>) -> Result<(), StoreError> {
    for chunk in objs.chunks(1000) {
        store.write(|tx| {
            for o in chunk {
                tx.create(kind, o)?;
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(())
}

/// Passes until one binds nothing; returns (pods bound, seconds, passes).
fn bind_all(sched: &mut Scheduler, store: &Store) -> anyhow::Result<(usize, f64, usize)> {
    let start = Instant::now();
    let (mut bound, mut passes) = (0, 0);
    loop {
        let stats = sched.pass(store)?;
        passes += 1;
        bound += stats.bound;
        if stats.bound == 0 {
            break;
        }
    }
    Ok((bound, start.elapsed().as_secs_f64(), passes))
}

/// Stores a Deployment of 1,000 replicas and runs the Deployment, ReplicaSet and scheduler
/// passes until every pod is bound: (replicas, ms until all pods existed, ms until all were
/// bound, nodes used).
fn deployment(sched: &mut Scheduler, store: &Store) -> anyhow::Result<(usize, f64, f64, usize)> {
    use crate::controllers::{deployment, replicaset};
    let replicas = 1000;
    let template = json!({"metadata": {"labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
    store.create(
        "Deployment",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bench", "namespace": "default", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
                "template": template, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}),
    )?;
    let selector =
        crate::api::selector::LabelSelector::parse("app=bench").map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let mut created_ms = None;
    for _ in 0..100 {
        let now = jiff::Timestamp::now();
        deployment::pass(store, now)?;
        replicaset::pass(store, now)?;
        sched.pass(store)?;
        let pods = store.list("Pod", Some("default"), Some(&selector))?;
        if pods.len() >= replicas && created_ms.is_none() {
            created_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        let nodes: std::collections::BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        let bound = pods
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count();
        if bound >= replicas {
            let bound_ms = start.elapsed().as_secs_f64() * 1000.0;
            return Ok((
                replicas,
                created_ms.unwrap_or(bound_ms),
                bound_ms,
                nodes.len(),
            ));
        }
    }
    anyhow::bail!("the Deployment's pods were not all bound after 100 rounds")
}

pub fn run(nodes: usize, pods: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("edgepod-bench-sched-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_in(&dir).context("opening the bench store")?;
    let result = (|| {
        create_all(&store, "Node", (0..nodes).map(node).collect())?;
        create_all(
            &store,
            "Pod",
            (0..pods)
                .map(|i| pod(&format!("p-{i:05}"), i, None))
                .collect(),
        )?;
        println!("edgepod bench scheduler: {nodes} simulated nodes, {pods} pending pods");
        let mut sched = Scheduler::new();
        let (bound, secs, passes) = bind_all(&mut sched, &store)?;
        println!(
            "  bind all:        {bound} pods in {:.0} ms ({passes} passes) = {:.0} pods/s",
            secs * 1000.0,
            bound as f64 / secs
        );
        let (replicas, created_ms, bound_ms, spread) = deployment(&mut sched, &store)?;
        println!(
            "  deployment:      {replicas} replicas through the Deployment and ReplicaSet controllers: \
             all created in {created_ms:.0} ms, all bound in {bound_ms:.0} ms (over {spread} nodes)"
        );
        anyhow::Ok(())
    })();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
