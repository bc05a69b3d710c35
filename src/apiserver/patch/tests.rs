//! The kubectl flows end to end through the public API: the bodies below are what kubectl sends.

use serde_json::{Value, json};

use super::*;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn patch(kind: &str, live: &Value, t: PatchType, body: Value, manager: &str) -> Value {
    let opts = PatchOptions {
        field_manager: Some(manager),
        force: false,
    };
    let mut out = apply_patch(kind, Some(live), t, body.to_string().as_bytes(), &opts)
        .unwrap_or_else(|e| panic!("{kind} patch failed: {e}"));
    track_update(Some(live), &mut out, manager);
    out
}

fn ssa(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let opts = PatchOptions {
        field_manager: Some(manager),
        force,
    };
    let kind = config["kind"].as_str().unwrap_or_default();
    apply_patch(
        kind,
        live,
        PatchType::Apply,
        config.to_string().as_bytes(),
        &opts,
    )
}

fn deployment(env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx", "env": env}]},
            },
        },
    })
}

fn created(obj: &Value, manager: &str) -> Value {
    let mut obj = obj.clone();
    track_update(None, &mut obj, manager);
    obj
}

fn owner_of(obj: &Value, fields_v1_pointer: &str) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"].pointer(fields_v1_pointer).is_some())
        .map(|e| e["manager"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn content_types() {
    use PatchType::*;
    for (ct, t) in [
        ("application/json-patch+json", Some(Json)),
        ("application/merge-patch+json", Some(Merge)),
        (
            "application/strategic-merge-patch+json; charset=utf-8",
            Some(StrategicMerge),
        ),
        ("application/apply-patch+yaml", Some(Apply)),
        ("application/apply-patch+cbor", None),
        ("application/json", None),
    ] {
        assert_eq!(PatchType::from_content_type(ct), t, "{ct}");
    }
}

#[test]
fn kubectl_label_add_overwrite_remove() {
    let cm = created(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "x"}}, "data": {"k": "v"}}),
        "kubectl-create",
    );
    // kubectl label cm c env=prod
    let cm = patch(
        "ConfigMap",
        &cm,
        PatchType::Merge,
        json!({"metadata": {"labels": {"env": "prod"}}}),
        "kubectl-label",
    );
    assert_eq!(cm["metadata"]["labels"], json!({"app": "x", "env": "prod"}));
    assert_eq!(
        owner_of(&cm, "/f:metadata/f:labels/f:env"),
        ["kubectl-label"]
    );
    // kubectl label --overwrite cm c app=y
    let cm = patch(
        "ConfigMap",
        &cm,
        PatchType::Merge,
        json!({"metadata": {"labels": {"app": "y"}}}),
        "kubectl-label",
    );
    assert_eq!(cm["metadata"]["labels"]["app"], "y");
    assert_eq!(
        owner_of(&cm, "/f:metadata/f:labels/f:app"),
        ["kubectl-label"]
    );
    // kubectl label cm c env-
    let cm = patch(
        "ConfigMap",
        &cm,
        PatchType::Merge,
        json!({"metadata": {"labels": {"env": null}}}),
        "kubectl-label",
    );
    assert_eq!(cm["metadata"]["labels"], json!({"app": "y"}));
    assert!(owner_of(&cm, "/f:metadata/f:labels/f:env").is_empty());
    assert_eq!(cm["data"], json!({"k": "v"}));
}

#[test]
fn kubectl_annotate_and_rollout_restart_use_strategic_patches() {
    let d = created(&deployment(json!([])), "kubectl-create");
    let d = patch(
        "Deployment",
        &d,
        PatchType::StrategicMerge,
        json!({"metadata": {"annotations": {"owner": "team-a"}}}),
        "kubectl-annotate",
    );
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    let d = patch(
        "Deployment",
        &d,
        PatchType::StrategicMerge,
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}}),
        "kubectl-rollout",
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
}

#[test]
fn kubectl_scale_and_edit() {
    let d = created(
        &deployment(json!([{"name": "A", "value": "1"}])),
        "kubectl-create",
    );
    let d = patch(
        "Deployment",
        &d,
        PatchType::Merge,
        json!({"spec": {"replicas": 3}}),
        "kubectl-scale",
    );
    assert_eq!(d["spec"]["replicas"], 3);
    // kubectl edit: a two-way strategic patch with the list order.
    let d = patch(
        "Deployment",
        &d,
        PatchType::StrategicMerge,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"image": "nginx:1.27", "name": "app"}],
        }}}}),
        "kubectl-edit",
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(
        owner_of(
            &d,
            "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"app\"}/f:image"
        ),
        ["kubectl-edit"]
    );
}

/// `kubectl apply` (client-side): a three-way strategic patch carrying the new
/// last-applied-configuration, adding and then removing an env var.
#[test]
fn kubectl_apply_three_way_adds_and_removes_env_var() {
    let v1 = deployment(json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    let mut live = v1.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED: v1.to_string()});
    let live = created(&live, "kubectl-client-side-apply");
    // Someone else's env var, which apply must leave alone.
    let live = patch(
        "Deployment",
        &live,
        PatchType::StrategicMerge,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "Z"}],
                "env": [{"name": "Z", "value": "9"}],
                "name": "app",
            }],
        }}}}),
        "kubectl-set",
    );

    let v2 = deployment(
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]),
    );
    let live = patch(
        "Deployment",
        &live,
        PatchType::StrategicMerge,
        json!({
            "metadata": {"annotations": {LAST_APPLIED: v2.to_string()}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                    "env": [{"name": "C", "value": "3"}],
                    "name": "app",
                }],
            }}},
        }),
        "kubectl-client-side-apply",
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}, {"name": "Z", "value": "9"}])
    );

    let v3 = deployment(json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]));
    let live = patch(
        "Deployment",
        &live,
        PatchType::StrategicMerge,
        json!({
            "metadata": {"annotations": {LAST_APPLIED: v3.to_string()}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                    "env": [{"$patch": "delete", "name": "B"}],
                    "name": "app",
                }],
            }}},
        }),
        "kubectl-client-side-apply",
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}, {"name": "Z", "value": "9"}])
    );
    assert_eq!(
        live["metadata"]["annotations"][LAST_APPLIED],
        v3.to_string()
    );
    let env = "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"app\"}/f:env";
    assert!(owner_of(&live, &format!("{env}/k:{{\"name\":\"B\"}}")).is_empty());
    assert_eq!(
        owner_of(&live, &format!("{env}/k:{{\"name\":\"Z\"}}")),
        ["kubectl-set"]
    );
}

/// `kubectl apply --server-side`: create, a conflict with `kubectl edit`, `--force-conflicts`,
/// then dropping a field from the manifest.
#[test]
fn server_side_apply_create_conflict_force_and_removal() {
    let mut manifest = deployment(json!([{"name": "A", "value": "1"}]));
    manifest["metadata"]["labels"] = json!({"team": "a"});
    let live = ssa(None, &manifest, "kubectl", false).unwrap();
    assert_eq!(live["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(live["metadata"]["managedFields"][0]["operation"], "Apply");

    // kubectl edit changes the image.
    let live = patch(
        "Deployment",
        &live,
        PatchType::StrategicMerge,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:edited"}]}}}}),
        "kubectl-edit",
    );

    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let err = ssa(Some(&live), &manifest, "kubectl", false).unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.template.spec.containers[name=\"app\"].image"
    );

    let live = ssa(Some(&live), &manifest, "kubectl", true).unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    let image = "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"app\"}/f:image";
    assert_eq!(owner_of(&live, image), ["kubectl"]);
    // kubectl-edit owned nothing else, so it is gone.
    assert_eq!(
        live["metadata"]["managedFields"].as_array().map(Vec::len),
        Some(1)
    );

    // Dropping the label and the env var from the manifest removes them.
    if let Some(meta) = manifest["metadata"].as_object_mut() {
        meta.remove("labels");
    }
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
    let live = ssa(Some(&live), &manifest, "kubectl", false).unwrap();
    assert!(live["metadata"].get("labels").is_none());
    assert!(
        live["spec"]["template"]["spec"]["containers"][0]
            .get("env")
            .is_none()
    );
    assert_eq!(live["spec"]["replicas"], 1);
}

#[test]
fn option_and_body_errors() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let err = apply_patch(
        "ConfigMap",
        Some(&cm),
        PatchType::Apply,
        b"{}",
        &PatchOptions::default(),
    )
    .unwrap_err();
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    assert_eq!(
        err.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );

    let forced = PatchOptions {
        field_manager: None,
        force: true,
    };
    let err = apply_patch("ConfigMap", Some(&cm), PatchType::Merge, b"{}", &forced).unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(err.causes[0].field, "force");

    let err = apply_patch(
        "ConfigMap",
        None,
        PatchType::Merge,
        b"{}",
        &PatchOptions::default(),
    )
    .unwrap_err();
    assert_eq!((err.code, err.reason), (404, "NotFound"));

    let err = apply_patch(
        "ConfigMap",
        Some(&cm),
        PatchType::StrategicMerge,
        b"[]",
        &PatchOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.code, 400);

    let err = apply_patch(
        "ConfigMap",
        Some(&cm),
        PatchType::Json,
        br#"[{"op":"replace","path":"","value":[1]}]"#,
        &PatchOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.code, 422);
}
