//! Pods whose images come from a registry, through `edgepod up` and stock kubectl: a pull
//! secret made by `kubectl create secret docker-registry`, the events a pull records, and the
//! waiting reasons of pulls that cannot or must not happen. Debian's docker-registry behind
//! basic auth, reached through registries.yaml as a plain-HTTP endpoint.

mod common;

use common::cluster::{Cluster, Options};
use common::registry::Registry;
use serde_json::Value;

fn pod_yaml(name: &str, image: &str, secret: Option<&str>, policy: &str) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets:\n  - name: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{secrets}  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

fn waiting(c: &Cluster, pod: &str) -> Option<(String, String)> {
    let out = c.kubectl(&["get", "pod", pod, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let w = &v["status"]["containerStatuses"][0]["state"]["waiting"];
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    ))
}

fn events(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    ])
}

#[test]
fn pods_pull_with_a_pull_secret_and_say_why_a_pull_fails() {
    let registry = Registry::with_auth("pi", "s3cret");
    registry.push_busybox("app/box:1.0");
    let conf = tempfile::tempdir().unwrap();
    let yaml = conf.path().join("registries.yaml");
    std::fs::write(&yaml, registry.registries_yaml()).unwrap();
    let yaml_arg = yaml.to_str().unwrap().to_string();
    let c = Cluster::with(Options {
        up_args: &["--private-registry", &yaml_arg],
        ..Default::default()
    });
    let image = format!("{}/app/box:1.0", registry.host());

    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", registry.host()),
        "--docker-username=pi",
        "--docker-password=s3cret",
    ]);
    c.apply_yaml(
        &["apply", "-f", "-"],
        &pod_yaml("good", &image, Some("regcred"), "IfNotPresent"),
    );
    c.wait_phase("default", "good", "Running");
    let ev = c.wait_for("Pulling and Pulled events", 20, || {
        let ev = events(&c, "good");
        (ev.contains("Pulled")).then_some(ev)
    });
    assert!(ev.contains(&format!("Pulling image \"{image}\"")), "{ev}");
    assert!(
        ev.contains(&format!("Successfully pulled image \"{image}\" in"))
            && ev.contains("Image size: "),
        "{ev}"
    );

    // Without the secret the registry refuses, and the pod says so in the registry's words,
    // then backs off.
    c.apply_yaml(
        &["apply", "-f", "-"],
        &pod_yaml(
            "nosecret",
            &format!("{}/app/box:2.0", registry.host()),
            None,
            "Always",
        ),
    );
    let (reason, message) = c.wait_for("ErrImagePull", 30, || {
        waiting(&c, "nosecret").filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    let ev = c.wait_for("the Failed event", 20, || {
        let ev = events(&c, "nosecret");
        ev.contains("Failed to pull image").then_some(ev)
    });
    assert!(
        ev.contains("401") && ev.to_lowercase().contains("authentication required"),
        "reason {reason}: {message}\n{ev}"
    );
    c.wait_for("ImagePullBackOff", 30, || {
        waiting(&c, "nosecret").filter(|(r, _)| r == "ImagePullBackOff")
    });

    // Never: an image the node lacks is not pulled.
    c.apply_yaml(
        &["apply", "-f", "-"],
        &pod_yaml(
            "never",
            &format!("{}/app/other:1.0", registry.host()),
            Some("regcred"),
            "Never",
        ),
    );
    let (_, message) = c.wait_for("ErrImageNeverPull", 30, || {
        waiting(&c, "never").filter(|(r, _)| r == "ErrImageNeverPull")
    });
    assert!(
        message.contains("is not present with pull policy of Never"),
        "{message}"
    );
    assert!(
        !registry.log().contains("app/other"),
        "Never asked the registry"
    );
}
