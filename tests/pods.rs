//! Static pods run for real: namespaces, volumes, security contexts, limits, logs and cleanup,
//! through libcontainer, as root. Each test drives a real agent with the `edgepod` binary.

mod common;

use common::node::{NODE, Node};

const MC1: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: mc1
  labels: {app: mc1}
spec:
  volumes:
  - name: html
    emptyDir: {}
  containers:
  - name: server
    image: busybox
    command: ["httpd", "-f", "-p", "8080", "-h", "/html"]
    volumeMounts:
    - {name: html, mountPath: /html, readOnly: true}
  - name: writer
    image: busybox
    command: ["sh", "-c", "while true; do date >> /html/index.html; sleep 1; done"]
    volumeMounts:
    - {name: html, mountPath: /html}
  - name: reader
    image: busybox
    command: ["sh", "-c", "sleep 2; while true; do wget -q -O- http://127.0.0.1:8080/index.html | tail -n 1 | sed 's/^/served: /'; sleep 1; done"]
"#;

const OUTSIDER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: outsider
spec:
  containers:
  - name: probe
    image: busybox
    command: ["sh", "-c", "sleep 3; while true; do if wget -q -T 2 -O- http://127.0.0.1:8080/index.html >/dev/null 2>&1; then echo reached; else echo unreachable; fi; sleep 1; done"]
"#;

#[test]
fn containers_of_a_pod_share_volume_and_loopback_other_pods_do_not() {
    let node = Node::start();
    node.put_manifest("mc1.yaml", MC1);
    node.put_manifest("outsider.yaml", OUTSIDER);
    let pod = node.wait_running("mc1");
    assert_eq!(pod["metadata"]["name"], format!("mc1-{NODE}"));
    assert_eq!(pod["spec"]["nodeName"], NODE);
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    // The reader fetched over 127.0.0.1 what the writer wrote into the shared emptyDir.
    let logs = node.wait_logs("mc1", "reader", "served: ");
    let line = logs.lines().find(|l| l.starts_with("served: ")).unwrap();
    assert!(line.len() > "served: ".len() + 10, "a date line: {line:?}");
    // Another pod has its own network namespace: 127.0.0.1:8080 is not mc1's server there.
    let outsider = node.wait_logs("outsider", "probe", "unreachable");
    assert!(!outsider.contains("reached\n") || outsider.contains("unreachable"));
    assert!(!outsider.lines().any(|l| l == "reached"), "{outsider}");
    // Hostname is the pod name, shared by all its containers.
    let out = node.edgepod(&["get", "pods", "-o", "wide"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("mc1-{NODE}"))
            && table.contains("3/3")
            && table.contains("Running"),
        "{table}"
    );
    let out = node.edgepod(&["get", "pods", "-l", "app=mc1", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pod/mc1-{NODE}")
    );
}

#[test]
fn security_context_ids_show_inside_and_on_volume_files() {
    let node = Node::start();
    node.put_manifest(
        "sec.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: security-context-demo
spec:
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
  volumes:
  - name: sec-ctx-vol
    emptyDir: {}
  containers:
  - name: sec-ctx-demo
    image: busybox
    command: ["sh", "-c", "id; echo hello > /data/demo/testfile; ls -ln /data/demo; touch /rootfile 2>&1 || true; hostname; sleep 3600"]
    volumeMounts:
    - {name: sec-ctx-vol, mountPath: /data/demo}
    securityContext:
      allowPrivilegeEscalation: false
"#,
    );
    node.wait_running("security-context-demo");
    let logs = node.wait_logs("security-context-demo", "sec-ctx-demo", "testfile");
    // busybox's id adds the names from the image's /etc/passwd and /etc/group.
    let id_line = logs.lines().find(|l| l.starts_with("uid=")).unwrap();
    assert!(
        id_line.starts_with("uid=1000(")
            && id_line.contains(" gid=3000(")
            && id_line.contains(" groups=2000("),
        "{id_line}"
    );
    let file_line = logs.lines().find(|l| l.contains("testfile")).unwrap();
    let fields: Vec<&str> = file_line.split_whitespace().collect();
    assert_eq!((fields[2], fields[3]), ("1000", "2000"), "{file_line}");
    assert!(
        logs.contains(&format!("security-context-demo-{NODE}")),
        "hostname is the pod name: {logs}"
    );
}

#[test]
fn memory_limit_kills_with_oomkilled_and_readonly_root_refuses_writes() {
    let node = Node::start();
    node.put_manifest(
        "oom.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]
    resources:
      limits: {memory: 24Mi}
"#,
    );
    node.put_manifest(
        "ro.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ro
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "if touch /probe 2>/dev/null; then echo writable; else echo read-only root; fi; echo ok > /tmp/x 2>&1 || echo tmp refused; sleep 3600"]
    securityContext:
      readOnlyRootFilesystem: true
"#,
    );
    let term = node.wait_for("oom container terminated", 60, || {
        let s = node.container_state("oom", "hog")?;
        let t = s["state"]["terminated"].clone();
        (!t.is_null()).then_some(t)
    });
    assert_eq!(term["reason"], "OOMKilled", "{term}");
    assert_eq!(term["exitCode"], 137);
    let pod = node.pod("oom").unwrap();
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    let logs = node.wait_logs("ro", "c", "read-only root");
    assert!(!logs.contains("writable"), "{logs}");
}

#[test]
fn removing_the_manifest_stops_the_pod_and_releases_everything() {
    let node = Node::start();
    node.put_manifest(
        "tmp.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: tmpfs
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 100m, memory: 16Mi}
"#,
    );
    let pod = node.wait_running("tmpfs");
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(edgepod::runtime::cgroups::exists(&format!(
        "/edgepod/pod{uid}"
    )));
    assert!(!node.mounts_under_data().is_empty());
    node.remove_manifest("tmp.yaml");
    node.wait_for("pod gone", 30, || node.pod("tmpfs").is_none().then_some(()));
    node.wait_for("state released", 30, || {
        (node.entries("containers").is_empty() && node.entries("pods").is_empty()).then_some(())
    });
    assert_eq!(node.mounts_under_data(), Vec::<String>::new());
    assert!(!edgepod::runtime::cgroups::exists(&format!(
        "/edgepod/pod{uid}"
    )));
    assert!(node.entries("run/libcontainer").is_empty());
    assert!(node.entries("logs").is_empty());
    let events = node.edgepod(&["get", "events"]);
    assert!(String::from_utf8_lossy(&events.stdout).contains("Killing"));
}

#[test]
fn malformed_manifests_are_reported_and_leave_running_pods_alone() {
    let node = Node::start();
    node.put_manifest(
        "good.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: good\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n",
    );
    let before = node.wait_running("good");
    let started = before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();

    let cases = [
        (
            "badyaml.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n",
            "badyaml",
        ),
        (
            "unknown.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unknown\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicyy: Always\n",
            "spec.containers[0].imagePullPolicyy",
        ),
        (
            "noname.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noname\nspec:\n  containers:\n  - name: a\n    image: busybox\n  - image: busybox\n",
            "spec.containers[1].name: Required value",
        ),
        (
            "dup.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dup\nspec:\n  containers:\n  - name: a\n    image: busybox\n  - name: a\n    image: busybox\n",
            "spec.containers[1].name: Duplicate value",
        ),
    ];
    for (file, yaml, needle) in cases {
        node.put_manifest(file, yaml);
        node.wait_for(&format!("error for {file}"), 20, || {
            let log = std::fs::read_to_string(node.data().join("agent.log")).unwrap_or_default();
            (log.contains(file) && log.contains(needle)).then_some(())
        });
    }
    // The error is also an event `describe` shows, naming file and field.
    let d = node.describe("unknown");
    assert!(
        d.contains("unknown.yaml") && d.contains("imagePullPolicyy"),
        "{d}"
    );
    let d = node.describe("noname");
    assert!(d.contains("spec.containers[1].name: Required value"), "{d}");

    // The agent is alive and the good pod untouched.
    let after = node.wait_running("good");
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        after["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
        started
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert!(node.pod("unknown").is_none() && node.pod("dup").is_none());

    // A missing image leaves the container Waiting with a reason, and the agent carries on.
    node.put_manifest(
        "noimage.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n  - name: c\n    image: registry.example/nothing:1.0\n",
    );
    let waiting = node.wait_for("ErrImagePull", 30, || {
        let s = node.container_state("noimage", "c")?;
        let reason = s["state"]["waiting"]["reason"].as_str()?.to_string();
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(s)
    });
    // Retries back off: the next attempts wait in ImagePullBackOff.
    node.wait_for("ImagePullBackOff", 30, || {
        let s = node.container_state("noimage", "c")?;
        (s["state"]["waiting"]["reason"] == "ImagePullBackOff").then_some(())
    });
    assert!(
        waiting["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("registry.example/nothing:1.0")
    );
    assert_eq!(node.pod("noimage").unwrap()["status"]["phase"], "Pending");

    // A valid file broken later keeps its pod running.
    node.put_manifest(
        "good.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: good\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    bogus: 1\n",
    );
    node.wait_for("error for the broken good.yaml", 20, || {
        node.describe("good").contains("bogus").then_some(())
    });
    let still = node.wait_running("good");
    assert_eq!(still["metadata"]["uid"], before["metadata"]["uid"]);
}

#[test]
fn pid_namespace_is_per_container_unless_the_pod_shares_it() {
    let node = Node::start();
    let pod = |name: &str, share: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  shareProcessNamespace: {share}
  containers:
  - name: sleeper
    image: busybox
    command: ["sleep", "4242"]
  - name: looker
    image: busybox
    command: ["sh", "-c", "sleep 2; ps -o pid,args; echo listed; sleep 3600"]
"#
        )
    };
    node.put_manifest("shared.yaml", &pod("shared", true));
    node.put_manifest("private.yaml", &pod("private", false));
    let shared = node.wait_logs("shared", "looker", "listed");
    assert!(
        shared.contains("sleep 4242"),
        "the other container's process is visible: {shared}"
    );
    let private = node.wait_logs("private", "looker", "listed");
    assert!(!private.contains("sleep 4242"), "{private}");
    assert!(
        private
            .lines()
            .any(|l| l.trim_start().starts_with("1 sh -c")),
        "own init is PID 1: {private}"
    );
}
