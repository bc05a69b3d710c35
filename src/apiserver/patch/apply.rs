//! Server-side apply (`application/apply-patch+yaml`): merges a manager's configuration into the
//! live object, removes what the manager applied before and now omits (unless someone else owns
//! it), refuses to change fields other managers own unless forced, and records the manager's new
//! ownership. Also Kubernetes' two concessions to `kubectl` moving from client-side apply:
//! conflicts on fields the last-applied annotation already set are forced, and the annotation is
//! kept in step.
//!
//! Owns: the apply request semantics. Must not touch: the set algebra and walks
//! ([`super::fieldset`], [`super::walk`]) or entry encoding ([`super::managed_fields`]).

use serde_json::{Value, json};

use super::fieldset::{FieldSet, PathElement, display_path};
use super::managed_fields::{Entry, Managed, Operation, strip_meta, without_managed_fields};
use super::strategy_table as table;
use super::walk;
use crate::api::ManifestError;
use crate::apiserver::{ApiError, Cause};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The manager name kubectl uses for `apply --server-side`; Kubernetes special-cases it.
const KUBECTL: &str = "kubectl";

/// One apply request.
pub(super) struct Request<'a> {
    pub kind: &'a str,
    pub live: Option<&'a Value>,
    pub body: &'a [u8],
    pub manager: &'a str,
    pub force: bool,
    /// The time recorded for the manager if the object changes.
    pub now: &'a str,
}

pub(super) fn apply(req: &Request) -> Result<Value, ApiError> {
    let mut config = decode(req.body)?;
    check_config(req, &config)?;
    drop_nulls(&mut config);
    let ty = table::root(req.kind);
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Kubernetes fails here (a keyless or duplicated list element) with a 500, worded so.
    let config_set = walk::field_set(ty, &config).map_err(|e| {
        ApiError::internal(format!(
            "Internal error occurred: failed to create typed patch object ({}): {e}",
            describe_object(&config)
        ))
    })?;

    let live = req.live.map_or_else(|| json!({}), without_managed_fields);
    let mut managed = req.live.map(Managed::of).unwrap_or_default();
    let previous = managed.take(req.manager, Operation::Apply);

    let mut merged = walk::merge(ty, &live, &config);
    if let Some(previous) = &previous {
        prune(ty, &mut merged, &previous.fields, &config_set, &managed);
    }

    let cmp = walk::compare(ty, &live, &merged);
    let mut changed = cmp.added.clone();
    changed.union(&cmp.modified);
    let conflicts: Vec<(&Entry, FieldSet)> = managed
        .entries
        .iter()
        .map(|e| (e, e.fields.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !conflicts.is_empty() && !req.force {
        let allowed = match req.manager {
            KUBECTL => last_applied_fields(ty, &live),
            _ => None,
        };
        let remaining: Vec<(&Entry, FieldSet)> = conflicts
            .into_iter()
            .map(|(e, c)| match &allowed {
                Some(allowed) => (e, c.difference(allowed)),
                None => (e, c),
            })
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !remaining.is_empty() {
            return Err(conflict_error(remaining));
        }
    }

    // Forced (or allowed) conflicts change hands; removed fields are no one's.
    for e in &mut managed.entries {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    let mut owned = config_set;
    strip_meta(&mut owned);
    let time = if merged != live {
        Some(req.now.to_string())
    } else {
        previous.and_then(|p| p.time)
    };
    managed.entries.push(Entry {
        manager: req.manager.to_string(),
        operation: Operation::Apply,
        api_version,
        time,
        subresource: String::new(),
        fields: owned,
    });

    if req.manager == KUBECTL && last_applied(&merged).is_some() {
        set_last_applied(&mut merged, &config);
    }
    managed.write(&mut merged);
    Ok(merged)
}

/// The body as one object: YAML or JSON (which is YAML), as Kubernetes reads apply patches.
/// An empty body is an empty object, which the version check then refuses.
fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |msg: String| ApiError::bad_request(format!("error decoding YAML: {msg}"));
    let text = std::str::from_utf8(body).map_err(|e| bad(e.to_string()))?;
    let mut docs = crate::api::decode::documents("", text).map_err(|e| match e {
        ManifestError::Syntax { message, .. } => bad(message),
        other => bad(other.to_string()),
    })?;
    match docs.len() {
        0 => Ok(json!({})),
        1 => match docs.pop() {
            Some(obj @ Value::Object(_)) => Ok(obj),
            _ => Err(bad("the apply patch must be an object".into())),
        },
        n => Err(bad(format!("expected one object, found {n}"))),
    }
}

fn text<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The configuration must be of the object's kind and version and carry no managed fields.
fn check_config(req: &Request, config: &Value) -> Result<(), ApiError> {
    let expected = match req.live {
        Some(live) => text(live, "apiVersion").to_string(),
        None => crate::api::resources::RESOURCES
            .iter()
            .find(|r| r.kind == req.kind)
            .map_or_else(
                || text(config, "apiVersion").to_string(),
                |r| r.api_version(),
            ),
    };
    let specified = text(config, "apiVersion");
    if specified != expected {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {specified}, expected: {expected}"
        )));
    }
    let kind = text(config, "kind");
    if kind != req.kind {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            req.kind
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

/// `/v1, Kind=Pod default/web`, as Kubernetes names an object in apply errors.
fn describe_object(obj: &Value) -> String {
    let api_version = text(obj, "apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    format!(
        "{group}/{version}, Kind={} {}/{}",
        text(obj, "kind"),
        text(meta, "namespace"),
        text(meta, "name")
    )
}

/// A `null` in a configuration sets nothing, so owns nothing.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !child.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Removes from `merged` what the applier owned last time, no longer applies, and no one else
/// owns. A struct field stays while anything under it is owned; a list element only while the
/// element itself is.
fn prune(ty: table::Ty, merged: &mut Value, last: &FieldSet, config: &FieldSet, others: &Managed) {
    let mut owned = config.clone();
    for e in &others.entries {
        owned.union(&e.fields);
    }
    let mut doomed = FieldSet::default();
    collect_prunable(last, Some(&owned), &mut doomed, &mut Vec::new());
    walk::remove(ty, merged, &doomed);
}

fn collect_prunable(
    last: &FieldSet,
    owned: Option<&FieldSet>,
    out: &mut FieldSet,
    path: &mut Vec<PathElement>,
) {
    for (pe, previously) in last.children() {
        let now = owned.and_then(|o| o.get(pe));
        path.push(pe.clone());
        let keep = match pe {
            PathElement::Field(_) => now.is_some(),
            _ => now.is_some_and(FieldSet::is_member),
        };
        if keep {
            collect_prunable(previously, now, out, path);
        } else if previously.is_member() || matches!(pe, PathElement::Field(_)) {
            out.insert(path);
        } else {
            collect_prunable(previously, now, out, path);
        }
        path.pop();
    }
}

fn last_applied(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The fields client-side apply last set to the values they still have: conflicts there are
/// the same manager's, moving to server-side apply.
fn last_applied_fields(ty: table::Ty, live: &Value) -> Option<FieldSet> {
    let recorded: Value = serde_json::from_str(last_applied(live)?).ok()?;
    if text(&recorded, "apiVersion") != text(live, "apiVersion") {
        return None;
    }
    let set = walk::field_set(ty, &recorded).ok()?;
    let cmp = walk::compare(ty, &recorded, live);
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Keeps the client-side annotation describing what `kubectl` last applied.
fn set_last_applied(obj: &mut Value, config: &Value) {
    let mut recorded = config.clone();
    if let Some(Value::Object(annotations)) = recorded.pointer_mut("/metadata/annotations") {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            if let Some(Value::Object(meta)) = recorded.get_mut("metadata") {
                meta.remove("annotations");
            }
        }
    }
    // Go's JSON encoder ends the document with a newline, and so does kubectl's annotation.
    if let Some(Value::Object(annotations)) = obj.pointer_mut("/metadata/annotations") {
        annotations.insert(LAST_APPLIED.into(), Value::String(format!("{recorded}\n")));
    }
}

/// 409 with one cause per conflicting field, worded as Kubernetes words it.
fn conflict_error(mut conflicts: Vec<(&Entry, FieldSet)>) -> ApiError {
    conflicts.sort_by_key(|(e, _)| e.identifier());
    let mut causes = Vec::new();
    let mut lines = Vec::new();
    for (entry, set) in &conflicts {
        let who = entry.describe();
        lines.push(format!("conflicts with {who}:"));
        for path in set.paths() {
            let field = display_path(&path);
            lines.push(format!("- {field}"));
            causes.push(Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {who}"),
                field,
            });
        }
    }
    let message = match causes.as_slice() {
        [only] => format!(
            "Apply failed with 1 conflict: {}: {}",
            only.message, only.field
        ),
        _ => format!(
            "Apply failed with {} conflicts: {}",
            causes.len(),
            lines.join("\n")
        ),
    };
    let mut err = ApiError::new(409, "Conflict", message);
    err.causes = causes;
    err
}

#[cfg(test)]
mod tests {
    use super::super::managed_fields::record_update;
    use super::*;

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:01:00Z";

    fn apply_as(
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        let body = config.to_string();
        apply(&Request {
            kind: text(config, "kind"),
            live,
            body: body.as_bytes(),
            manager,
            force,
            now: T1,
        })
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        })
    }

    fn managers(obj: &Value) -> Vec<(String, String)> {
        Managed::of(obj)
            .entries
            .iter()
            .map(|e| (e.manager.clone(), format!("{:?}", e.operation)))
            .collect()
    }

    #[test]
    fn create_owns_everything_applied_but_identity() {
        let out = apply_as(None, &deployment(2, "nginx"), "ci", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        let mf = &out["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "ci");
        assert_eq!(mf["operation"], "Apply");
        assert_eq!(mf["apiVersion"], "apps/v1");
        assert_eq!(mf["time"], T1);
        assert_eq!(
            mf["fieldsV1"],
            json!({"f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
                },
            }})
        );
    }

    #[test]
    fn conflict_with_an_updater_is_worded_as_kubernetes_words_it() {
        let mut live = apply_as(None, &deployment(2, "nginx"), "ci", false).unwrap();
        let before = live.clone();
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:edited");
        record_update(Some(&before), &mut live, "kubectl-edit", T0);

        let err = apply_as(Some(&live), &deployment(2, "nginx:2"), "ci", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image"
        );
        assert_eq!(err.causes[0].reason, "FieldManagerConflict");
        assert_eq!(
            err.causes[0].field,
            ".spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn several_conflicts_are_listed_per_manager() {
        let live = apply_as(None, &deployment(2, "a"), "one", false).unwrap();
        let err = apply_as(Some(&live), &deployment(3, "b"), "two", false).unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 2 conflicts: conflicts with \"one\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn force_takes_ownership_of_conflicting_fields_only() {
        let live = apply_as(None, &deployment(2, "a"), "one", false).unwrap();
        let out = apply_as(Some(&live), &deployment(3, "a"), "two", true).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let m = Managed::of(&out);
        let owns = |manager: &str, path: &[&str]| {
            let path: Vec<PathElement> = path.iter().map(|p| PathElement::field(p)).collect();
            m.entries
                .iter()
                .find(|e| e.manager == manager)
                .is_some_and(|e| e.fields.has(&path))
        };
        assert!(!owns("one", &["spec", "replicas"]));
        assert!(owns("two", &["spec", "replicas"]));
        // Fields applied with the value they already had are shared, not taken.
        assert!(owns("one", &["spec", "selector"]));
        assert!(owns("two", &["spec", "selector"]));
    }

    #[test]
    fn same_value_is_shared_without_conflict() {
        let live = apply_as(None, &deployment(2, "a"), "one", false).unwrap();
        let out = apply_as(Some(&live), &deployment(2, "a"), "two", false).unwrap();
        assert_eq!(managers(&out).len(), 2);
    }

    #[test]
    fn omitted_field_is_removed_when_no_one_else_owns_it() {
        let mut config = deployment(2, "a");
        config["metadata"]["labels"] = json!({"team": "x", "tier": "web"});
        let live = apply_as(None, &config, "ci", false).unwrap();
        config["metadata"]["labels"] = json!({"team": "x"});
        if let Some(spec) = config["spec"].as_object_mut() {
            spec.remove("replicas");
        }
        let out = apply_as(Some(&live), &config, "ci", false).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"team": "x"}));
        assert!(out["spec"].get("replicas").is_none());
    }

    #[test]
    fn omitted_field_stays_when_another_manager_owns_it() {
        let live = apply_as(None, &deployment(2, "a"), "one", false).unwrap();
        let live = apply_as(Some(&live), &deployment(2, "a"), "two", false).unwrap();
        let mut config = deployment(2, "a");
        if let Some(spec) = config["spec"].as_object_mut() {
            spec.remove("replicas");
        }
        let out = apply_as(Some(&live), &config, "one", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn omitted_container_goes_with_everything_in_it() {
        let mut config = deployment(1, "a");
        config["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "web", "image": "a"}, {"name": "sidecar", "image": "s"}]);
        let mut live = apply_as(None, &config, "ci", false).unwrap();
        // Defaulting adds fields no one applied.
        live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] =
            json!("IfNotPresent");
        let out = apply_as(Some(&live), &deployment(1, "a"), "ci", false).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "a"}])
        );
    }

    #[test]
    fn keyed_lists_merge_with_defaulted_keys() {
        let mut config = deployment(1, "a");
        config["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}]);
        let mut live = apply_as(None, &config, "ci", false).unwrap();
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        config["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "name": "http"}]);
        let out = apply_as(Some(&live), &config, "ci", false).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn kubectl_moving_from_client_side_apply_is_not_a_conflict() {
        let first = deployment(2, "a");
        let mut live = first.clone();
        live["metadata"]["annotations"] = json!({LAST_APPLIED: first.to_string()});
        record_update(None, &mut live, "kubectl-client-side-apply", T0);

        let out = apply_as(Some(&live), &deployment(3, "a"), KUBECTL, false).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let recorded: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(recorded["spec"]["replicas"], 3);

        // Another manager name gets the conflict.
        let err = apply_as(Some(&live), &deployment(3, "a"), "other", false).unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut wrong_version = deployment(1, "a");
        wrong_version["apiVersion"] = json!("apps/v2");
        let err = apply_as(None, &wrong_version, "ci", false).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "Incorrect version specified in apply patch. Specified patch version: apps/v2, expected: apps/v1"
        );

        let mut with_mf = deployment(1, "a");
        with_mf["metadata"]["managedFields"] = json!([]);
        let err = apply_as(None, &with_mf, "ci", false).unwrap_err();
        assert_eq!(err.message, "metadata.managedFields must be nil");

        let mut keyless = deployment(1, "a");
        keyless["spec"]["template"]["spec"]["containers"] = json!([{"image": "a"}]);
        let err = apply_as(None, &keyless, "ci", false).unwrap_err();
        assert_eq!(err.code, 500);
        assert!(err.message.contains("failed to create typed patch object (apps/v1, Kind=Deployment default/web): .spec.template.spec.containers: element 0"));
    }

    #[test]
    fn yaml_bodies_are_read() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n";
        let out = apply(&Request {
            kind: "ConfigMap",
            live: None,
            body: yaml.as_bytes(),
            manager: "ci",
            force: false,
            now: T1,
        })
        .unwrap();
        assert_eq!(out["data"], json!({"k": "v"}));
        let err = apply(&Request {
            kind: "ConfigMap",
            live: None,
            body: b"a: [",
            manager: "ci",
            force: false,
            now: T1,
        })
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.starts_with("error decoding YAML: "));
    }

    #[test]
    fn reapplying_unchanged_keeps_the_time() {
        let live = apply_as(None, &deployment(1, "a"), "ci", false).unwrap();
        let mut live = live;
        live["metadata"]["managedFields"][0]["time"] = json!(T0);
        let out = apply_as(Some(&live), &deployment(1, "a"), "ci", false).unwrap();
        assert_eq!(out["metadata"]["managedFields"][0]["time"], T0);
    }
}
