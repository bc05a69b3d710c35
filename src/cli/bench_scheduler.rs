//! `edgepod bench scheduler`: scheduler throughput in-process, on a temporary store holding N
//! simulated Node objects (varied labels and capacity, no agents) and M pending pods, then the
//! time for a Deployment-like batch (1,000 pods of one owner) to be fully bound.
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
        let replicas = 1000;
        create_all(
            &store,
            "Pod",
            (0..replicas)
                .map(|i| pod(&format!("deploy-{i:04}"), i, Some("deploy-rs")))
                .collect(),
        )?;
        let (bound, secs, _) = bind_all(&mut sched, &store)?;
        let spread = store
            .list("Pod", Some("default"), None)?
            .iter()
            .filter(|p| crate::controllers::pod_control::controller_uid(p) == Some("deploy-rs"))
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        println!(
            "  deployment:      {replicas} replicas of one owner bound in {:.0} ms ({bound} bound, over {spread} nodes)",
            secs * 1000.0
        );
        anyhow::Ok(())
    })();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
