//! ConfigMaps and Secrets against `edgepod up` with a real agent, driven by stock kubectl: env
//! (valueFrom and envFrom), configMap and secret volumes with their modes, a volume refreshed
//! in place after `kubectl apply`, a pod waiting with CreateContainerConfigError until the
//! ConfigMap and key its env names exist, one ContainerCreating with a FailedMount event until
//! its volume's Secret exists, and the databases holding secrets readable by their owner only.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::cluster::Cluster;

const CONSUMER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: consumer
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap: {name: app-config}
  - name: creds
    secret:
      secretName: app-secret
      defaultMode: 0400
      items: [{key: password, path: db/password}]
  - name: one
    configMap:
      name: app-config
      items: [{key: color, path: color.txt, mode: 0600}]
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo COLOR=$COLOR; echo PASS=$PASS; echo CFG_size=$CFG_size; echo FILE=`cat /etc/cfg/color`; echo SECRET=`cat /etc/creds/db/password`; sleep 3600"]
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: app-config, key: color}}
    - name: PASS
      valueFrom: {secretKeyRef: {name: app-secret, key: password}}
    envFrom:
    - configMapRef: {name: app-config}
      prefix: CFG_
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: creds, mountPath: /etc/creds}
    - {name: one, mountPath: /etc/one}
    - {name: cfg, mountPath: /etc/sub-color, subPath: color}
"#;

const CONFIG_GREEN: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  color: green
  size: L
"#;

fn exec(c: &Cluster, pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(cmd);
    c.try_out(&args).trim().to_string()
}

#[test]
fn env_and_volumes_come_from_config_maps_and_secrets() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=color=blue",
        "--from-literal=size=L",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=password=hunter2",
    ]);
    c.apply_yaml(&["apply"], CONSUMER);
    c.wait_phase("default", "consumer", "Running");

    let logs = c.wait_for("the consumer's output", 30, || {
        let out = c.try_out(&["logs", "consumer"]);
        out.contains("SECRET=").then_some(out)
    });
    for want in [
        "COLOR=blue",
        "PASS=hunter2",
        "CFG_size=L",
        "FILE=blue",
        "SECRET=hunter2",
    ] {
        assert!(logs.contains(want), "{want} in {logs}");
    }

    // Modes as Kubernetes sets them: defaultMode 0644, the volume's defaultMode, an item's mode.
    for (path, mode) in [
        ("/etc/cfg/color", "644"),
        ("/etc/creds/db/password", "400"),
        ("/etc/one/color.txt", "600"),
    ] {
        assert_eq!(
            exec(&c, "consumer", &["stat", "-L", "-c", "%a", path]),
            mode,
            "{path}"
        );
    }
    // The secret never touches the disk: its volume is a tmpfs, mounted read-only.
    let mounts = exec(&c, "consumer", &["cat", "/proc/mounts"]);
    let creds = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/etc/creds"))
        .unwrap_or_else(|| panic!("/etc/creds in {mounts}"));
    assert_eq!(creds.split_whitespace().nth(2), Some("tmpfs"), "{creds}");
    let options = creds.split_whitespace().nth(3).unwrap_or_default();
    assert!(options.split(',').any(|o| o == "ro"), "{creds}");

    // A changed ConfigMap reaches the mounted volume in place; env and subPath mounts keep
    // what the container started with, as in Kubernetes.
    c.apply_yaml(&["apply"], CONFIG_GREEN);
    c.wait_for("the volume to show the new ConfigMap", 60, || {
        (exec(&c, "consumer", &["cat", "/etc/cfg/color"]) == "green").then_some(())
    });
    assert_eq!(
        exec(&c, "consumer", &["cat", "/etc/one/color.txt"]),
        "green"
    );
    assert_eq!(exec(&c, "consumer", &["cat", "/etc/sub-color"]), "blue");
    assert_eq!(exec(&c, "consumer", &["sh", "-c", "echo $COLOR"]), "blue");

    // The databases holding the secret are the owner's only, and no log line carries it.
    for db in ["edgepod.db", "hub.db"] {
        let mode = std::fs::metadata(c.dir.path().join(db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{db}");
    }
    let log = std::fs::read_to_string(c.dir.path().join("up.log")).unwrap();
    assert!(!log.contains("hunter2"), "the secret leaked into up.log");
}

const WAITER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: waiter
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo MODE=$MODE; sleep 3600"]
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: late-config, key: mode}}
"#;

const MOUNTER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: mounter
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: creds
    secret: {secretName: late-secret}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "cat /creds/token; echo; sleep 3600"]
    volumeMounts:
    - {name: creds, mountPath: /creds}
"#;

fn waiting(c: &Cluster, pod: &str) -> (String, String) {
    let out = c.try_out(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
    ]);
    let (reason, message) = out.split_once('|').unwrap_or(("", ""));
    (reason.to_string(), message.to_string())
}

#[test]
fn a_pod_waits_for_the_config_map_it_names() {
    let c = Cluster::start();
    c.apply_yaml(&["apply"], WAITER);
    c.apply_yaml(&["apply"], MOUNTER);
    c.wait_for(
        "CreateContainerConfigError for the missing ConfigMap",
        60,
        || {
            (waiting(&c, "waiter")
                == (
                    "CreateContainerConfigError".to_string(),
                    "configmap \"late-config\" not found".to_string(),
                ))
                .then_some(())
        },
    );
    // The event says it as the kubelet's does.
    c.wait_for("the Failed event", 30, || {
        c.try_out(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waiter,reason=Failed",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .contains("Error: configmap \"late-config\" not found")
        .then_some(())
    });
    c.ok(&[
        "create",
        "configmap",
        "late-config",
        "--from-literal=other=x",
    ]);
    c.wait_for("CreateContainerConfigError for the missing key", 60, || {
        (waiting(&c, "waiter")
            == (
                "CreateContainerConfigError".to_string(),
                "couldn't find key mode in ConfigMap default/late-config".to_string(),
            ))
            .then_some(())
    });
    c.apply_yaml(
        &["apply"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late-config\ndata:\n  mode: fast\n",
    );
    c.wait_phase("default", "waiter", "Running");
    c.wait_for("the value in the container's env", 30, || {
        c.try_out(&["logs", "waiter"])
            .contains("MODE=fast")
            .then_some(())
    });

    // A volume's missing Secret keeps the pod ContainerCreating with a FailedMount event.
    let mount_failed =
        "MountVolume.SetUp failed for volume \"creds\" : secret \"late-secret\" not found";
    assert_eq!(waiting(&c, "mounter").0, "ContainerCreating");
    c.wait_for("the FailedMount event", 30, || {
        let events = c.try_out(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=mounter,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        events.contains(mount_failed).then_some(())
    });
    c.ok(&[
        "create",
        "secret",
        "generic",
        "late-secret",
        "--from-literal=token=s3cr3t",
    ]);
    c.wait_phase("default", "mounter", "Running");
    c.wait_for("the secret file in the container", 30, || {
        c.try_out(&["logs", "mounter"])
            .contains("s3cr3t")
            .then_some(())
    });
}
