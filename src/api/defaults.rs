//! Defaults the API server applies to a v1 Pod on create (`SetDefaults_Pod` and the defaulters
//! of the types inside it).
//!
//! Owns: filling in unset fields exactly as Kubernetes does, so that stored pods and `-o yaml`
//! look the same as a cluster's. Must not touch: validation (run afterwards) or any field the
//! user set; only unset (or, where Kubernetes treats it as unset, empty) fields change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, HTTPGetAction, LifecycleHandler, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;

use super::Pod;
use super::quantity::parse_quantity;
use super::validate::volume_sources;

/// The mode files in secret, configMap, downwardAPI and projected volumes get (0644).
const DEFAULT_FILE_MODE: i32 = 0o644;

/// Applies the API server's defaults in place.
pub fn pod(pod: &mut Pod) {
    if pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod.metadata.namespace = Some("default".to_string());
    }
    // A Go Pod always has a spec, so a manifest without one is defaulted like an empty one.
    template_spec(pod.spec.get_or_insert_with(PodSpec::default));
}

/// The defaults of a pod spec, for pods and for the pod templates of workloads alike.
pub fn template_spec(spec: &mut PodSpec) {
    pod_spec(spec);
    let host_network = spec.host_network == Some(true);
    for c in all_containers(spec) {
        container(c);
        if let Some(r) = c.resources.as_mut() {
            requests_from_limits(r);
        }
        if host_network {
            // With host networking a container port is a host port.
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or_default() == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    spec.enable_service_links.get_or_insert(true);
}

/// kube-apiserver's DefaultTolerationSeconds plugin: a pod that does not tolerate the
/// not-ready and unreachable NoExecute taints tolerates them for 300 s, so a node going away
/// evicts its pods after five minutes rather than at once. Pods the hub's controllers make get it
/// too: in Kubernetes they pass through the same admission.
pub fn toleration_seconds(pod: &mut serde_json::Value) {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let list = &mut pod["spec"]["tolerations"];
        let covered = list.as_array().into_iter().flatten().any(|t| {
            let k = t["key"].as_str().unwrap_or_default();
            let e = t["effect"].as_str().unwrap_or_default();
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if covered {
            continue;
        }
        if !list.is_array() {
            *list = serde_json::json!([]);
        }
        if let Some(l) = list.as_array_mut() {
            l.push(
                serde_json::json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                          "tolerationSeconds": 300}),
            );
        }
    }
}

fn all_containers(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    spec.containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
}

fn set_if_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or_default().is_empty() {
        *field = Some(value.to_string());
    }
}

fn pod_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.restart_policy, "Always");
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        let policy = if image_tag_is_latest(c.image.as_deref().unwrap_or_default()) {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.image_pull_policy = Some(policy.to_string());
    }
    set_if_empty(&mut c.termination_message_path, "/dev/termination-log");
    set_if_empty(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        set_if_empty(&mut port.protocol, "TCP");
    }
    for var in c.env.iter_mut().flatten() {
        env_var(var);
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe(p);
    }
    if let Some(lifecycle) = c.lifecycle.as_mut() {
        for h in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
            .into_iter()
            .flatten()
        {
            lifecycle_handler(h);
        }
    }
    if let Some(r) = c.resources.as_mut() {
        for list in [&mut r.limits, &mut r.requests].into_iter().flatten() {
            round_up_to_millis(list);
        }
    }
}

/// The tag Kubernetes reads from an image reference: `latest` when neither a tag nor a digest is
/// given. A registry port (`host:5000/app`) is not a tag.
fn image_tag_is_latest(image: &str) -> bool {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_component = name.rsplit('/').next().unwrap_or(name);
    match last_component.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => digest.is_none(),
    }
}

fn env_var(var: &mut EnvVar) {
    if let Some(field_ref) = var.value_from.as_mut().and_then(|s| s.field_ref.as_mut()) {
        set_if_empty(&mut field_ref.api_version, "v1");
    }
}

fn probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or_default() == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        http_get(h);
    }
    if let Some(g) = p.grpc.as_mut() {
        g.service.get_or_insert_with(String::new);
    }
}

fn lifecycle_handler(h: &mut LifecycleHandler) {
    if let Some(g) = h.http_get.as_mut() {
        http_get(g);
    }
}

fn http_get(h: &mut HTTPGetAction) {
    set_if_empty(&mut h.path, "/");
    set_if_empty(&mut h.scheme, "HTTP");
}

/// A limit without a request makes the request equal to the limit (pods only).
fn requests_from_limits(r: &mut ResourceRequirements) {
    let Some(limits) = r.limits.as_ref() else {
        return;
    };
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    for (name, limit) in limits {
        requests
            .entry(name.clone())
            .or_insert_with(|| limit.clone());
    }
}

/// Kubernetes rounds every resource quantity up to millis and stores it in canonical form;
/// quantities that do not parse are left for validation to report.
fn round_up_to_millis(list: &mut BTreeMap<String, WireQuantity>) {
    for value in list.values_mut() {
        if let Ok(q) = parse_quantity(&value.0) {
            value.0 = q.round_up_to_millis().to_string();
        }
    }
}

fn volume(v: &mut Volume) {
    if volume_sources(v).is_empty() {
        v.empty_dir = Some(Default::default());
    }
    if let Some(h) = v.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_FILE_MODE);
    }
    if let Some(c) = v.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_FILE_MODE);
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_FILE_MODE);
        for file in d.items.iter_mut().flatten() {
            if let Some(f) = file.field_ref.as_mut() {
                set_if_empty(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(p) = v.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_FILE_MODE);
        for source in p.sources.iter_mut().flatten() {
            if let Some(t) = source.service_account_token.as_mut() {
                t.expiration_seconds.get_or_insert(3600);
            }
            for file in source
                .downward_api
                .iter_mut()
                .flat_map(|d| d.items.iter_mut().flatten())
            {
                if let Some(f) = file.field_ref.as_mut() {
                    set_if_empty(&mut f.api_version, "v1");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::decode;

    fn defaulted(yaml: &str) -> Pod {
        let doc = decode::documents("t.yaml", yaml).unwrap().remove(0);
        let mut p = decode::pod("t.yaml", doc).unwrap();
        pod(&mut p);
        p
    }

    const POD: &str = "
apiVersion: v1
kind: Pod
metadata:
  name: kubia
spec:
  containers:
  - name: web
    image: luksa/kubia
    ports:
    - containerPort: 8080
    env:
    - name: POD
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    livenessProbe:
      httpGet:
        port: 8080
    resources:
      limits:
        cpu: 0.5
        memory: 1.5Gi
      requests:
        memory: 64Mi
  volumes:
  - name: scratch
  - name: host
    hostPath:
      path: /tmp
  - name: cfg
    configMap:
      name: settings
";

    #[test]
    fn pod_level_defaults() {
        let p = defaulted(POD);
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let spec = p.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.security_context, Some(PodSecurityContext::default()));
        assert_eq!(spec.enable_service_links, Some(true));
    }

    #[test]
    fn container_defaults() {
        let spec = defaulted(POD).spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, None);
        let field_ref = c.env.as_ref().unwrap()[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field_ref.api_version.as_deref(), Some("v1"));
    }

    #[test]
    fn probe_defaults() {
        let spec = defaulted(POD).spec.unwrap();
        let probe = spec.containers[0].liveness_probe.as_ref().unwrap();
        assert_eq!(probe.timeout_seconds, Some(1));
        assert_eq!(probe.period_seconds, Some(10));
        assert_eq!(probe.success_threshold, Some(1));
        assert_eq!(probe.failure_threshold, Some(3));
        let http = probe.http_get.as_ref().unwrap();
        assert_eq!(http.scheme.as_deref(), Some("HTTP"));
        assert_eq!(http.path.as_deref(), Some("/"));
    }

    #[test]
    fn requests_default_to_limits_in_canonical_form() {
        let spec = defaulted(POD).spec.unwrap();
        let r = spec.containers[0].resources.as_ref().unwrap();
        let requests = r.requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "500m");
        assert_eq!(requests["memory"].0, "64Mi", "an explicit request is kept");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1536Mi");
    }

    #[test]
    fn volume_defaults() {
        let spec = defaulted(POD).spec.unwrap();
        let vols = spec.volumes.unwrap();
        assert_eq!(vols[0].empty_dir, Some(Default::default()));
        assert_eq!(
            vols[1].host_path.as_ref().unwrap().type_.as_deref(),
            Some("")
        );
        assert_eq!(vols[1].empty_dir, None);
        assert_eq!(
            vols[2].config_map.as_ref().unwrap().default_mode,
            Some(0o644)
        );
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, latest) in [
            ("busybox", true),
            ("busybox:latest", true),
            ("busybox:1.36", false),
            ("registry.local:5000/busybox", true),
            ("registry.local:5000/busybox:1.36", false),
            ("busybox@sha256:0123", false),
            ("busybox:latest@sha256:0123", true),
        ] {
            assert_eq!(image_tag_is_latest(image), latest, "{image}");
        }
        let yaml = POD.replace("luksa/kubia", "luksa/kubia:v1");
        let spec = defaulted(&yaml).spec.unwrap();
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        let yaml = POD.replace(
            "    image: luksa/kubia\n",
            "    image: luksa/kubia\n    imagePullPolicy: Never\n",
        );
        let spec = defaulted(&yaml).spec.unwrap();
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn host_network_copies_container_ports_to_host_ports() {
        let yaml = POD.replace("spec:\n", "spec:\n  hostNetwork: true\n");
        let spec = defaulted(&yaml).spec.unwrap();
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].host_port,
            Some(8080)
        );
    }

    #[test]
    fn explicit_values_are_kept() {
        let yaml = POD.replace(
            "spec:\n",
            "spec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 5\n  enableServiceLinks: false\n",
        );
        let spec = defaulted(&yaml).spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        assert_eq!(spec.enable_service_links, Some(false));
    }

    #[test]
    fn init_containers_are_defaulted_too() {
        let yaml = POD.replace(
            "spec:\n",
            "spec:\n  initContainers:\n  - name: setup\n    image: busybox:1.36\n",
        );
        let spec = defaulted(&yaml).spec.unwrap();
        let init = &spec.init_containers.unwrap()[0];
        assert_eq!(init.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(init.termination_message_policy.as_deref(), Some("File"));
    }
}
