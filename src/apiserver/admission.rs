//! What the API server does to an object between decoding a request and storing it: strict
//! decoding into the kind's type, defaulting, and validation, as Kubernetes' registry
//! strategies do (`PrepareForCreate`, `Validate`, `PrepareForUpdate`, `ValidateUpdate`).
//!
//! Owns: per-kind rules at the API boundary (which fields a write may change, generation bumps,
//! status reset on create). Must not touch: storage or other objects (namespace existence and
//! the like are checked by the handlers, which hold the store).
use k8s_openapi::api::{apps, autoscaling, batch, core};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod jobs;

use super::error::{ApiError, Cause};
use crate::api::resources::Resource;
use crate::api::validate::{self, Scope, names};
use crate::api::{FieldError, FieldErrorKind, FieldErrors, defaults, selector};

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// A decoded, defaulted and validated object ready to store, with warnings for the client.
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Field errors as a 422 `Invalid` Status.
pub fn invalid(resource: &Resource, name: &str, errs: &FieldErrors) -> ApiError {
    let causes = errs
        .iter()
        .map(|e| {
            let text = e.to_string();
            let message = text
                .strip_prefix(&format!("{}: ", e.path))
                .unwrap_or(&text)
                .to_string();
            Cause {
                reason: cause_reason(&e.kind).to_string(),
                message,
                field: e.path.clone(),
            }
        })
        .collect();
    ApiError::invalid(resource.kind, resource.group, name, causes)
}

fn cause_reason(kind: &FieldErrorKind) -> &'static str {
    match kind {
        FieldErrorKind::Required => "FieldValueRequired",
        FieldErrorKind::Invalid | FieldErrorKind::Unknown => "FieldValueInvalid",
        FieldErrorKind::Duplicate => "FieldValueDuplicate",
        FieldErrorKind::NotSupported => "FieldValueNotSupported",
        FieldErrorKind::Forbidden => "FieldValueForbidden",
        FieldErrorKind::TooLong => "FieldValueTooLong",
        FieldErrorKind::NotFound => "FieldValueNotFound",
    }
}

/// Decodes `doc` as `T`. Unknown fields fail under Strict (400, as Kubernetes' strict decoding),
/// become warnings under Warn and are dropped silently under Ignore; wrongly typed values are
/// always a 400.
fn decode<T: DeserializeOwned + Serialize>(
    resource: &Resource,
    doc: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<T, ApiError> {
    let (decoded, errs) = crate::api::decode::lenient::<T>(doc.clone());
    let (unknown, other): (Vec<FieldError>, Vec<FieldError>) = errs
        .0
        .into_iter()
        .partition(|e| e.kind == FieldErrorKind::Unknown);
    let cannot = |detail: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {detail}",
            resource.kind, resource.version, resource.kind
        ))
    };
    if let Some(e) = other.first() {
        return Err(cannot(e.to_string()));
    }
    let unknown: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    unknown.join(", ")
                )));
            }
            FieldValidation::Warn => warnings.extend(unknown),
            FieldValidation::Ignore => {}
        }
    }
    decoded.ok_or_else(|| cannot("the object could not be decoded".to_string()))
}

fn to_value<T: Serialize>(obj: &T) -> Result<Value, ApiError> {
    serde_json::to_value(obj).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}

/// The name format each kind's names must follow.
fn name_rule(resource: &Resource) -> fn(&str) -> Vec<String> {
    match resource.kind {
        "Namespace" => names::dns1123_label,
        _ => names::dns1123_subdomain,
    }
}

fn scope(resource: &Resource) -> Scope {
    if resource.namespaced {
        Scope::Namespaced
    } else {
        Scope::Cluster
    }
}

/// Decodes, defaults and validates a new object. `doc` already carries its namespace and name.
pub fn admit_create(
    resource: &Resource,
    doc: &Value,
    validation: FieldValidation,
) -> Result<Admitted, ApiError> {
    let mut warnings = Vec::new();
    let name = name_of(doc);
    let mut errs = FieldErrors::default();
    let mut doc = std::borrow::Cow::Borrowed(doc);
    if resource.kind == "Job" {
        jobs::stamp_job_uid(doc.to_mut(), None);
    }
    let mut object = typed_defaults(resource, &doc, validation, &mut warnings, &mut errs)?;
    if let Some(meta) = object.get("metadata").cloned()
        && let Ok(meta) = serde_json::from_value::<crate::api::ObjectMeta>(meta)
        && let Err(e) = validate::object_meta(&meta, scope(resource), name_rule(resource))
    {
        // A pod's metadata is validated with its spec below; report it once.
        if resource.kind != "Pod" {
            errs.extend(e.0);
        }
    }
    if !errs.is_empty() {
        return Err(invalid(resource, &name, &errs));
    }
    prepare_for_create(resource, &mut object);
    Ok(Admitted { object, warnings })
}

/// Decodes, defaults and validates a replacement of `old`; `status` says which half the write
/// may change (the object's status subresource, or everything else).
pub fn admit_update(
    resource: &Resource,
    old: &Value,
    doc: &Value,
    validation: FieldValidation,
    status: bool,
) -> Result<Admitted, ApiError> {
    let mut warnings = Vec::new();
    let name = name_of(doc);
    let mut errs = FieldErrors::default();
    let mut doc = std::borrow::Cow::Borrowed(doc);
    if resource.kind == "Job" {
        jobs::stamp_job_uid(doc.to_mut(), Some(old));
    }
    let mut object = typed_defaults(resource, &doc, validation, &mut warnings, &mut errs)?;
    if let Some(meta) = object.get("metadata").cloned()
        && let Ok(meta) = serde_json::from_value::<crate::api::ObjectMeta>(meta)
        && let Err(e) = validate::object_meta(&meta, scope(resource), name_rule(resource))
        && resource.kind != "Pod"
    {
        errs.extend(e.0);
    }
    if resource.kind == "Pod" && !status {
        pod_update_rules(old, &object, &mut errs);
        crate::api::defaults::toleration_seconds(&mut object);
    }
    if resource.kind == "PersistentVolumeClaim" && !status {
        claim_update_rules(old, &object, &mut errs);
    }
    if !errs.is_empty() {
        return Err(invalid(resource, &name, &errs));
    }
    prepare_for_update(resource, old, &mut object, status);
    Ok(Admitted { object, warnings })
}

/// Strict decoding, the kind's defaults and its own validation (beyond metadata).
fn typed_defaults(
    resource: &Resource,
    doc: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
    errs: &mut FieldErrors,
) -> Result<Value, ApiError> {
    macro_rules! plain {
        ($t:ty) => {{
            let obj: $t = decode(resource, doc, validation, warnings)?;
            to_value(&obj)
        }};
    }
    macro_rules! workload {
        ($t:ty, $template:expr) => {{
            let mut obj: $t = decode(resource, doc, validation, warnings)?;
            if let Some(spec) = obj.spec.as_mut() {
                let (template, path, selector_labels) = $template(spec);
                if let Some(template) = template {
                    let pod_spec: &mut core::v1::PodSpec = template;
                    defaults::template_spec(pod_spec);
                    validate::template_spec(pod_spec, path, errs);
                }
                if let Some((selector, labels, path)) = selector_labels {
                    selector_matches_template(selector, labels, path, errs);
                }
            } else {
                errs.push(FieldError::required("spec"));
            }
            to_value(&obj)
        }};
    }
    match resource.kind {
        "Pod" => {
            let mut pod: core::v1::Pod = decode(resource, doc, validation, warnings)?;
            defaults::pod(&mut pod);
            if let Err(e) = validate::pod(&pod) {
                errs.extend(e.0);
            }
            to_value(&pod)
        }
        "Namespace" => {
            let mut ns: core::v1::Namespace = decode(resource, doc, validation, warnings)?;
            let spec = ns.spec.get_or_insert_with(Default::default);
            spec.finalizers
                .get_or_insert_with(|| vec!["kubernetes".to_string()]);
            to_value(&ns)
        }
        "Node" => plain!(core::v1::Node),
        "Event" => plain!(core::v1::Event),
        "ConfigMap" => plain!(core::v1::ConfigMap),
        "Endpoints" => plain!(core::v1::Endpoints),
        "Secret" => {
            let mut secret: core::v1::Secret = decode(resource, doc, validation, warnings)?;
            secret.type_.get_or_insert_with(|| "Opaque".to_string());
            to_value(&secret)
        }
        "Service" => {
            let mut svc: core::v1::Service = decode(resource, doc, validation, warnings)?;
            crate::api::service::defaults(&mut svc);
            if let Some(spec) = &svc.spec {
                errs.extend(crate::api::service::validate(spec).0);
            }
            to_value(&svc)
        }
        "PersistentVolumeClaim" => {
            let mut pvc: core::v1::PersistentVolumeClaim =
                decode(resource, doc, validation, warnings)?;
            match pvc.spec.as_mut() {
                Some(spec) => {
                    spec.volume_mode
                        .get_or_insert_with(|| "Filesystem".to_string());
                    claim_spec_rules(spec, "spec", errs);
                }
                None => errs.push(FieldError::required("spec")),
            }
            to_value(&pvc)
        }
        "ReplicaSet" => workload!(apps::v1::ReplicaSet, replica_set_parts),
        "Deployment" => workload!(apps::v1::Deployment, deployment_parts),
        "DaemonSet" => {
            let value = workload!(apps::v1::DaemonSet, daemon_set_parts)?;
            restart_always(&value, errs);
            Ok(value)
        }
        "StatefulSet" => {
            // The pods get a volume per claim template, so the template's mounts are checked
            // with those volumes in place, and the stored template is left without them.
            let added = claim_volumes_missing(doc);
            let mut value = workload!(apps::v1::StatefulSet, stateful_set_parts)?;
            remove_claim_volumes(&mut value, &added);
            restart_always(&value, errs);
            Ok(value)
        }
        "Job" => {
            let mut job: batch::v1::Job = decode(resource, doc, validation, warnings)?;
            jobs::job(&mut job, errs);
            to_value(&job)
        }
        "CronJob" => {
            let mut cj: batch::v1::CronJob = decode(resource, doc, validation, warnings)?;
            jobs::cron_job(&mut cj, errs);
            to_value(&cj)
        }
        "HorizontalPodAutoscaler" => {
            let mut hpa: autoscaling::v2::HorizontalPodAutoscaler =
                decode(resource, doc, validation, warnings)?;
            if let Some(spec) = hpa.spec.as_mut() {
                // SetDefaults_HorizontalPodAutoscaler: one replica at least, and 80 % CPU
                // utilisation when no metric is named.
                spec.min_replicas.get_or_insert(1);
                if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
                    spec.metrics = Some(vec![autoscaling::v2::MetricSpec {
                        type_: "Resource".to_string(),
                        resource: Some(autoscaling::v2::ResourceMetricSource {
                            name: "cpu".to_string(),
                            target: autoscaling::v2::MetricTarget {
                                type_: "Utilization".to_string(),
                                average_utilization: Some(80),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    }]);
                }
            }
            if let Some(spec) = &hpa.spec {
                if spec.max_replicas < 1 {
                    errs.push(FieldError::invalid(
                        "spec.maxReplicas",
                        spec.max_replicas.to_string(),
                        "must be greater than or equal to 1",
                    ));
                }
                if let Some(min) = spec.min_replicas
                    && min > spec.max_replicas
                {
                    errs.push(FieldError::invalid(
                        "spec.minReplicas",
                        min.to_string(),
                        "must be less than or equal to maxReplicas",
                    ));
                }
            } else {
                errs.push(FieldError::required("spec"));
            }
            to_value(&hpa)
        }
        other => Err(ApiError::internal(format!(
            "no admission rules for {other}"
        ))),
    }
}

/// A workload's template spec, where its errors are reported, and its selector with the
/// template labels it must select.
type Parts<'a> = (
    Option<&'a mut core::v1::PodSpec>,
    &'static str,
    Option<(
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        Option<std::collections::BTreeMap<String, String>>,
        &'static str,
    )>,
);

fn replica_set_parts(s: &mut apps::v1::ReplicaSetSpec) -> Parts<'_> {
    s.replicas.get_or_insert(1);
    let labels = s
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    let selector = s.selector.clone();
    (
        s.template.as_mut().and_then(|t| t.spec.as_mut()),
        "spec.template.spec",
        Some((Some(selector), labels, "spec.template.metadata.labels")),
    )
}

fn deployment_parts(s: &mut apps::v1::DeploymentSpec) -> Parts<'_> {
    s.replicas.get_or_insert(1);
    s.revision_history_limit.get_or_insert(10);
    s.progress_deadline_seconds.get_or_insert(600);
    let strategy = s.strategy.get_or_insert_with(Default::default);
    strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        ru.max_surge
            .get_or_insert(IntOrString::String("25%".into()));
        ru.max_unavailable
            .get_or_insert(IntOrString::String("25%".into()));
    }
    let labels = s.template.metadata.as_ref().and_then(|m| m.labels.clone());
    let selector = s.selector.clone();
    (
        s.template.spec.as_mut(),
        "spec.template.spec",
        Some((Some(selector), labels, "spec.template.metadata.labels")),
    )
}

fn daemon_set_parts(s: &mut apps::v1::DaemonSetSpec) -> Parts<'_> {
    s.revision_history_limit.get_or_insert(10);
    let strategy = s.update_strategy.get_or_insert_with(Default::default);
    strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    let labels = s.template.metadata.as_ref().and_then(|m| m.labels.clone());
    let selector = s.selector.clone();
    (
        s.template.spec.as_mut(),
        "spec.template.spec",
        Some((Some(selector), labels, "spec.template.metadata.labels")),
    )
}

fn stateful_set_parts(s: &mut apps::v1::StatefulSetSpec) -> Parts<'_> {
    add_claim_volumes(s);
    s.replicas.get_or_insert(1);
    s.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".to_string());
    s.revision_history_limit.get_or_insert(10);
    let strategy = s.update_strategy.get_or_insert_with(Default::default);
    strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.partition.get_or_insert(0);
    }
    let retention = s
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(Default::default);
    retention
        .when_deleted
        .get_or_insert_with(|| "Retain".to_string());
    retention
        .when_scaled
        .get_or_insert_with(|| "Retain".to_string());
    for t in s.volume_claim_templates.iter_mut().flatten() {
        if let Some(spec) = t.spec.as_mut() {
            spec.volume_mode
                .get_or_insert_with(|| "Filesystem".to_string());
        }
    }
    let labels = s.template.metadata.as_ref().and_then(|m| m.labels.clone());
    let selector = s.selector.clone();
    (
        s.template.spec.as_mut(),
        "spec.template.spec",
        Some((Some(selector), labels, "spec.template.metadata.labels")),
    )
}

/// DaemonSet and StatefulSet pods run for ever: their template may only say Always.
fn restart_always(obj: &Value, errs: &mut FieldErrors) {
    let policy = obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if policy != "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            policy,
            &["Always"],
        ));
    }
}

/// Claim template names with no volume of that name in the pod template.
fn claim_volumes_missing(doc: &Value) -> Vec<String> {
    let volumes = doc
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array);
    doc.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|n| !volumes.is_some_and(|vs| vs.iter().any(|v| v["name"] == *n)))
        .map(str::to_string)
        .collect()
}

/// Adds the volumes [`claim_volumes_missing`] names, as the controller will.
fn add_claim_volumes(s: &mut apps::v1::StatefulSetSpec) {
    let names: Vec<String> = s
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    let Some(spec) = s.template.spec.as_mut() else {
        return;
    };
    for name in names {
        if spec.volumes.iter().flatten().any(|v| v.name == name) {
            continue;
        }
        spec.volumes
            .get_or_insert_with(Vec::new)
            .push(core::v1::Volume {
                name: name.clone(),
                persistent_volume_claim: Some(core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: name.clone(),
                    read_only: None,
                }),
                ..Default::default()
            });
    }
}

fn remove_claim_volumes(obj: &mut Value, names: &[String]) {
    let Some(spec) = obj
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(list) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        list.retain(|v| !names.iter().any(|n| v["name"] == *n));
        if list.is_empty() {
            spec.remove("volumes");
        }
    }
}

/// A claim must say how it is mounted and how much storage it needs.
fn claim_spec_rules(
    spec: &core::v1::PersistentVolumeClaimSpec,
    path: &str,
    errs: &mut FieldErrors,
) {
    const MODES: [&str; 4] = [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ];
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        errs.push(FieldError::required(format!("{path}.accessModes")));
    }
    for m in modes.iter().filter(|m| !MODES.contains(&m.as_str())) {
        errs.push(FieldError::not_supported(
            format!("{path}.accessModes"),
            m.as_str(),
            &MODES,
        ));
    }
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let field = format!("{path}.resources[storage]");
    match storage {
        None => errs.push(FieldError::required(field)),
        Some(q) => match crate::api::quantity::parse_quantity(&q.0) {
            Ok(parsed) if parsed.is_zero() || parsed.is_negative() => errs.push(
                FieldError::invalid(field, &q.0, "must be greater than zero"),
            ),
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(field, &q.0, e)),
        },
    }
}

/// A workload's selector must be valid, non-empty and select its own template's labels.
fn selector_matches_template(
    selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    labels_path: &str,
    errs: &mut FieldErrors,
) {
    let Some(selector) = selector else {
        errs.push(FieldError::required("spec.selector"));
        return;
    };
    if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        ));
        return;
    }
    match selector::LabelSelector::from_meta(&selector) {
        Ok(parsed) => {
            if !parsed.matches(&labels.unwrap_or_default()) {
                errs.push(FieldError::invalid(
                    labels_path,
                    "",
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Err(e) => errs.push(FieldError::invalid("spec.selector", "", e.to_string())),
    }
}

/// Which parts of a running pod an update may change, as `ValidatePodUpdate` allows: images,
/// activeDeadlineSeconds, tolerations (additions) and the terminationGracePeriodSeconds.
fn pod_update_rules(old: &Value, new: &Value, errs: &mut FieldErrors) {
    let strip = |spec: Option<&Value>| -> Value {
        let mut spec = spec.cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        if let Some(s) = spec.as_object_mut() {
            s.remove("activeDeadlineSeconds");
            s.remove("tolerations");
            s.remove("terminationGracePeriodSeconds");
        }
        spec
    };
    let old_spec = strip(old.get("spec"));
    let new_spec = strip(new.get("spec"));
    // Binding sets nodeName once; after that it is as fixed as the rest.
    let unbound = |mut s: Value| {
        if let Some(o) = s.as_object_mut() {
            o.remove("nodeName");
        }
        s
    };
    let node_changed = old.pointer("/spec/nodeName").is_some_and(|n| !n.is_null())
        && old.pointer("/spec/nodeName") != new.pointer("/spec/nodeName");
    if unbound(old_spec) != unbound(new_spec) || node_changed {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

/// A claim's spec is fixed once created, but for its storage request.
fn claim_update_rules(old: &Value, new: &Value, errs: &mut FieldErrors) {
    let strip = |spec: Option<&Value>| {
        let mut spec = spec.cloned().unwrap_or(Value::Null);
        if let Some(s) = spec.as_object_mut() {
            s.remove("resources");
            s.remove("volumeAttributesClassName");
        }
        spec
    };
    if strip(old.get("spec")) != strip(new.get("spec")) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
}

/// Kinds whose spec changes bump `metadata.generation` (everything with a spec).
fn has_generation(resource: &Resource) -> bool {
    !matches!(resource.kind, "Event" | "ConfigMap" | "Secret")
}

fn prepare_for_create(resource: &Resource, obj: &mut Value) {
    if has_generation(resource) {
        obj["metadata"]["generation"] = json!(1);
    }
    match resource.kind {
        "Pod" => {
            let qos = serde_json::from_value::<core::v1::Pod>(obj.clone())
                .map(|p| {
                    p.spec
                        .as_ref()
                        .map(crate::api::qos::qos_class)
                        .unwrap_or("BestEffort")
                        .to_string()
                })
                .unwrap_or_else(|_| "BestEffort".to_string());
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            crate::api::defaults::toleration_seconds(obj);
        }
        "Namespace" => obj["status"] = json!({"phase": "Active"}),
        // Status is the controllers' and the nodes' to write; a create starts it empty.
        "Node" | "Event" | "ConfigMap" | "Secret" => {}
        _ => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }
}

fn prepare_for_update(resource: &Resource, old: &Value, obj: &mut Value, status: bool) {
    if status {
        // The status subresource changes status only.
        let mut kept = old.clone();
        kept["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        if let (Some(m), Some(new_meta)) = (kept.get_mut("metadata"), obj.get("metadata")) {
            if let Some(rv) = new_meta.get("resourceVersion") {
                m["resourceVersion"] = rv.clone();
            }
        }
        *obj = kept;
        return;
    }
    if !matches!(resource.kind, "Event" | "ConfigMap" | "Secret") {
        obj["status"] = old.get("status").cloned().unwrap_or(Value::Null);
        if obj["status"].is_null()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
    }
    // Fields only the server sets survive a client's replacement.
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old.pointer(&format!("/metadata/{key}")) {
            Some(v) => obj["metadata"][key] = v.clone(),
            None => {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(key);
                }
            }
        }
    }
    if has_generation(resource) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = old.get("spec") != obj.get("spec");
        obj["metadata"]["generation"] = json!(if spec_changed {
            generation + 1
        } else {
            generation
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::by_plural;

    fn pods() -> &'static Resource {
        by_plural("", "v1", "pods").expect("pods")
    }

    fn pod(extra: Value) -> Value {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        });
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        p
    }

    #[test]
    fn a_pod_is_defaulted_pending_with_generation_one() {
        let a = admit_create(pods(), &pod(json!({})), FieldValidation::Strict).unwrap();
        assert_eq!(a.object["status"]["phase"], "Pending");
        assert_eq!(a.object["status"]["qosClass"], "BestEffort");
        assert_eq!(a.object["spec"]["restartPolicy"], "Always");
        assert_eq!(a.object["metadata"]["generation"], 1);
    }

    #[test]
    fn pods_tolerate_not_ready_and_unreachable_for_five_minutes_unless_they_say_otherwise() {
        let a = admit_create(pods(), &pod(json!({})), FieldValidation::Strict).unwrap();
        let keys: Vec<(&str, i64)> = a.object["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap(),
                    t["tolerationSeconds"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("node.kubernetes.io/not-ready", 300),
                ("node.kubernetes.io/unreachable", 300)
            ]
        );
        let mut own = pod(json!({}));
        own["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute"}]);
        let a = admit_create(pods(), &own, FieldValidation::Strict).unwrap();
        let t = a.object["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].get("tolerationSeconds").is_none());
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
    }

    #[test]
    fn unknown_fields_fail_strict_warn_otherwise() {
        let mut doc = pod(json!({}));
        doc["spec"]["containers"][0]["imagee"] = json!("x");
        let e = admit_create(pods(), &doc, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "strict decoding error: unknown field \"spec.containers[0].imagee\""
        );
        let a = admit_create(pods(), &doc, FieldValidation::Warn).unwrap();
        assert_eq!(
            a.warnings,
            vec!["unknown field \"spec.containers[0].imagee\""]
        );
        assert!(a.object["spec"]["containers"][0].get("imagee").is_none());
    }

    #[test]
    fn invalid_objects_are_422_with_a_cause_per_field() {
        let mut doc = pod(json!({}));
        doc["metadata"]["labels"] = json!({"bad key!": "v"});
        doc["spec"]["containers"][0]["name"] = json!("");
        let e = admit_create(pods(), &doc, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(e.code, 422);
        let fields: Vec<&str> = e.causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"metadata.labels"), "{fields:?}");
        assert!(fields.contains(&"spec.containers[0].name"), "{fields:?}");
    }

    #[test]
    fn a_deployment_selector_must_match_its_template() {
        let deploy = by_plural("apps", "v1", "deployments").unwrap();
        let doc = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "other"}},
                             "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
            }
        });
        let e = admit_create(deploy, &doc, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(e.code, 422);
        assert_eq!(e.causes[0].field, "spec.template.metadata.labels");
        let mut ok = doc.clone();
        ok["spec"]["template"]["metadata"]["labels"]["app"] = json!("web");
        let a = admit_create(deploy, &ok, FieldValidation::Strict).unwrap();
        assert_eq!(a.object["spec"]["replicas"], 1);
        assert_eq!(
            a.object["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
    }

    #[test]
    fn statefulset_mounts_may_name_claim_templates_and_claims_need_storage() {
        let sts = by_plural("apps", "v1", "statefulsets").unwrap();
        let doc = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "busybox",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        });
        let a = admit_create(sts, &doc, FieldValidation::Strict).unwrap();
        assert!(
            a.object["spec"]["template"]["spec"]
                .get("volumes")
                .is_none()
        );
        assert_eq!(
            a.object["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            0
        );
        assert_eq!(
            a.object["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
        let mut bad = doc.clone();
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let e = admit_create(sts, &bad, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(e.causes[0].field, "spec.template.spec.restartPolicy");
        let mut bad = doc.clone();
        bad["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!("x");
        let e = admit_create(sts, &bad, FieldValidation::Strict)
            .err()
            .unwrap();
        assert_eq!(e.code, 422);

        let pvcs = by_plural("", "v1", "persistentvolumeclaims").unwrap();
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let a = admit_create(pvcs, &claim, FieldValidation::Strict).unwrap();
        assert_eq!(a.object["spec"]["volumeMode"], "Filesystem");
        let mut bad = claim.clone();
        bad["spec"]["resources"] = json!({});
        bad["spec"]["accessModes"] = json!(["Sometimes"]);
        let e = admit_create(pvcs, &bad, FieldValidation::Strict)
            .err()
            .unwrap();
        let fields: Vec<&str> = e.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
        let mut grown = a.object.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(admit_update(pvcs, &a.object, &grown, FieldValidation::Strict, false).is_ok());
        grown["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(admit_update(pvcs, &a.object, &grown, FieldValidation::Strict, false).is_err());
    }

    #[test]
    fn pod_updates_may_change_only_images_and_a_few_fields() {
        let old = admit_create(pods(), &pod(json!({})), FieldValidation::Strict)
            .unwrap()
            .object;
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("busybox:2");
        let a = admit_update(pods(), &old, &image, FieldValidation::Strict, false).unwrap();
        assert_eq!(a.object["metadata"]["generation"], 2);
        let mut cmd = old.clone();
        cmd["spec"]["containers"][0]["command"] = json!(["sh"]);
        let e = admit_update(pods(), &old, &cmd, FieldValidation::Strict, false)
            .err()
            .unwrap();
        assert_eq!(e.code, 422);
        assert_eq!(e.causes[0].field, "spec");
    }
}
