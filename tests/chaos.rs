//! The agent is SIGKILLed 20 times at random moments while pods start, crash and stop; after
//! the last restart every pod is in its right state and nothing is duplicated or leaked.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::node::{NODE, Node};

/// A small deterministic generator: the test must be reproducible, not "random".
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn manifest(name: &str, kind: u64) -> String {
    let (policy, cmd) = match kind {
        0 => ("Always", "sleep 3600"),
        1 => ("Always", "echo crash; exit 1"),
        _ => ("Never", "sleep 1; exit 0"),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, '{cmd}']\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n"
    )
}

#[test]
fn agent_killed_at_random_moments_leaves_a_consistent_node() {
    let mut node = Node::start();
    let mut rng = Lcg(0x5eed);
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    let mut present: HashMap<String, u64> = HashMap::new();
    // Every pod UID the manifests ever asked for, computed the way the agent does.
    let mut source = edgepod::agent::static_pods::StaticPodSource::new(&node.manifests(), NODE);
    let mut ever: HashSet<String> = HashSet::new();
    for _round in 0..20 {
        for _ in 0..2 {
            let name = &names[rng.next(names.len() as u64) as usize];
            if present.contains_key(name) && rng.next(3) == 0 {
                node.remove_manifest(&format!("{name}.yaml"));
                present.remove(name);
            } else {
                let kind = rng.next(3);
                node.put_manifest(&format!("{name}.yaml"), &manifest(name, kind));
                present.insert(name.clone(), kind);
            }
        }
        source.scan();
        ever.extend(source.pods().iter().filter_map(|p| p.metadata.uid.clone()));
        std::thread::sleep(Duration::from_millis(100 + rng.next(1200)));
        node.kill_agent();
        node.start_agent();
    }
    // A known final set: one long runner, one crash-looper, one that completes.
    for name in &names {
        let _ = std::fs::remove_file(node.manifests().join(format!("{name}.yaml")));
    }
    let finals = [("p0", 0u64), ("p1", 1), ("p2", 2)];
    for (name, kind) in finals {
        node.put_manifest(&format!("{name}.yaml"), &manifest(name, kind));
    }
    node.wait_running("p0");
    node.wait_for("p2 Succeeded", 60, || {
        (node.pod("p2")?["status"]["phase"] == "Succeeded").then_some(())
    });
    node.wait_for("p1 crash-looping", 60, || {
        let s = node.container_state("p1", "c")?;
        (s["restartCount"].as_i64()? >= 1).then_some(())
    });
    let wanted: HashSet<String> = ["p0", "p1", "p2"]
        .iter()
        .map(|n| format!("{n}-{NODE}"))
        .collect();
    node.wait_for("only the final pods remain", 60, || {
        let out = node.edgepod(&["get", "pods", "-o", "name"]);
        let listed: HashSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_start_matches("pod/").to_string())
            .collect();
        (listed == wanted).then_some(())
    });

    let uids: HashMap<String, String> = ["p0", "p1", "p2"]
        .iter()
        .map(|n| {
            (
                node.pod(n).unwrap()["metadata"]["uid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                n.to_string(),
            )
        })
        .collect();
    node.wait_for("everything else released", 60, || {
        let runtime = edgepod::runtime::Runtime::new(node.data(), Default::default()).ok()?;
        let all = runtime.list();
        let foreign = all.iter().any(|c| !uids.contains_key(&c.meta.pod_uid));
        let pods_dirs: HashSet<String> = node.entries("pods").into_iter().collect();
        (!foreign && pods_dirs.iter().all(|d| uids.contains_key(d))).then_some(())
    });

    // No duplicates: at most one running container per pod container.
    let runtime = edgepod::runtime::Runtime::new(node.data(), Default::default()).unwrap();
    let mut running: HashMap<(String, String), usize> = HashMap::new();
    for c in runtime.list() {
        if matches!(c.state, edgepod::runtime::ContainerState::Running(_)) {
            *running
                .entry((c.meta.pod_uid.clone(), c.meta.container_name.clone()))
                .or_default() += 1;
        }
    }
    assert!(running.values().all(|n| *n == 1), "{running:?}");
    // Every mount under the data dir belongs to a pod that still exists.
    for m in node.mounts_under_data() {
        assert!(
            uids.keys().any(|u| m.contains(u.as_str())),
            "leaked mount {m}"
        );
    }
    // No cgroup of a pod that is gone. A pod's cgroup goes after its directory (the kernel
    // refuses to remove it until its last task has exited), so give a loaded machine time.
    let leaked = || -> Vec<&String> {
        ever.iter()
            .filter(|u| !uids.contains_key(*u))
            .filter(|u| edgepod::runtime::cgroups::exists(&format!("/edgepod/pod{u}")))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !leaked().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(leaked().is_empty(), "leaked cgroups of pods {:?}", leaked());
    let db = rusqlite::Connection::open(node.data().join("edgepod.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
