use std::sync::Mutex;

use super::calculate::*;
use super::*;

fn t(secs: i64) -> Timestamp {
    let base: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
    base.checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn pod(name: &str, state: PodState, usage: i64) -> PodInput {
    PodInput {
        name: name.into(),
        state,
        sampled: state != PodState::Missing,
        usage,
        request: Ok(100),
    }
}

fn replicas(current: i32, target: i32, pods: &[PodInput]) -> i32 {
    cpu_replicas(current, Target::Utilization(target), pods)
        .unwrap()
        .replicas
}

#[test]
fn usage_within_ten_percent_of_the_target_keeps_the_size() {
    let at = |u| [pod("a", PodState::Ready, u), pod("b", PodState::Ready, u)];
    // 52% and 45% of a 50% target: within tolerance.
    assert_eq!(replicas(2, 50, &at(52)), 2);
    assert_eq!(replicas(2, 50, &at(45)), 2);
    // 60% of 50%: ratio 1.2, ceil(1.2 × 2) = 3.
    assert_eq!(replicas(2, 50, &at(60)), 3);
    // 200% of 50%: four times the pods.
    let r = cpu_replicas(2, Target::Utilization(50), &at(200)).unwrap();
    assert_eq!((r.replicas, r.utilization, r.average_millis), (8, 200, 200));
    // 10% of 50%: ceil(0.2 × 2) = 1.
    assert_eq!(replicas(2, 50, &at(10)), 1);
}

#[test]
fn unmeasured_and_unready_pods_make_the_estimate_conservative() {
    // Scaling up: the unready pod is assumed idle. Ready pod at 100% of a 50% target is
    // ratio 2; with the unready one at 0 it is ratio 1 → no change.
    let pods = [
        pod("a", PodState::Ready, 100),
        pod("b", PodState::Unready, 0),
    ];
    assert_eq!(replicas(2, 50, &pods), 2);
    // Scaling down: a pod without a sample is assumed to use its full request. Ready pod at
    // 10% (ratio 0.2); with the missing one at 100%: 55% → ratio 1.1, within tolerance.
    let pods = [
        pod("a", PodState::Ready, 10),
        pod("b", PodState::Missing, 0),
    ];
    assert_eq!(replicas(2, 50, &pods), 2);
    // Scaling up with a missing pod: it counts as idle. 3 pods at 150% + 1 at 0: 112% of
    // 50% → ratio 2.24 → ceil(2.24 × 4) = 9.
    let pods = [
        pod("a", PodState::Ready, 150),
        pod("b", PodState::Ready, 150),
        pod("c", PodState::Ready, 150),
        pod("d", PodState::Missing, 0),
    ];
    assert_eq!(replicas(4, 50, &pods), 9);
    // Ignored pods (deleting, failed) count for nothing.
    let pods = [
        pod("a", PodState::Ready, 60),
        pod("z", PodState::Ignored, 0),
    ];
    assert_eq!(replicas(1, 50, &pods), 2);
}

#[test]
fn missing_metrics_and_requests_are_errors() {
    let fifty = Target::Utilization(50);
    assert!(cpu_replicas(1, fifty, &[]).is_err());
    let err = cpu_replicas(1, fifty, &[pod("a", PodState::Missing, 0)]).unwrap_err();
    assert!(err.contains("no metrics returned"), "{err}");
    let mut p = pod("a", PodState::Ready, 10);
    p.request = Err("c".into());
    let err = cpu_replicas(1, fifty, &[p.clone()]).unwrap_err();
    assert_eq!(err, "missing request for cpu in container c of Pod a");
    // An average-value target needs no requests: 10m against 20m per pod halves the pods.
    let r = cpu_replicas(2, Target::AverageMillis(20), &[p.clone(), p]).unwrap();
    assert_eq!((r.replicas, r.average_millis), (1, 10));
}

fn defaults() -> (Rules, Rules) {
    let hpa = json!({"spec": {}});
    (Rules::of(&hpa, true), Rules::of(&hpa, false))
}

#[test]
fn scale_down_waits_for_the_highest_recommendation_of_the_window() {
    let (up, down) = defaults();
    let mut h = History::default();
    // A fresh history holds the current size: no scale-down right after a (re)start.
    let n = normalize(&mut h, &up, &down, (1, 10), 4, 1, t(0));
    assert_eq!(n.replicas, 4);
    assert_eq!(n.stabilized.map(|s| s.0), Some("ScaleDownStabilized"));
    assert_eq!(
        normalize(&mut h, &up, &down, (1, 10), 4, 3, t(100)).replicas,
        4
    );
    // 300 s after the first recommendation only 3 and 1 remain in the window: 3.
    assert_eq!(
        normalize(&mut h, &up, &down, (1, 10), 4, 1, t(301)).replicas,
        3
    );
    // Then the 3 leaves the window too.
    let n = normalize(&mut h, &up, &down, (1, 10), 3, 1, t(401));
    assert_eq!(
        (n.replicas, n.reason, n.limited),
        (1, "DesiredWithinRange", false)
    );
}

#[test]
fn scale_up_is_limited_to_four_pods_or_double_per_fifteen_seconds() {
    let (up, down) = defaults();
    let mut h = History::default();
    let n = normalize(&mut h, &up, &down, (1, 50), 1, 20, t(0));
    assert_eq!((n.replicas, n.reason, n.limited), (5, "ScaleUpLimit", true));
    record_scale(&mut h, &up, &down, 1, 5, t(0));
    // Within the same 15 s the period started at 1 replica: still at most 5.
    assert_eq!(
        normalize(&mut h, &up, &down, (1, 50), 5, 20, t(10)).replicas,
        5
    );
    // After it, doubling beats four pods: 10.
    let n = normalize(&mut h, &up, &down, (1, 50), 5, 20, t(16));
    assert_eq!(n.replicas, 10);
    record_scale(&mut h, &up, &down, 5, 10, t(16));
    // maxReplicas caps before the rate does.
    let n = normalize(&mut h, &up, &down, (1, 12), 10, 40, t(40));
    assert_eq!((n.replicas, n.reason), (12, "TooManyReplicas"));
}

#[test]
fn min_replicas_floor_a_scale_down_and_policies_can_slow_it() {
    let hpa = json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}});
    let (up, down) = (Rules::of(&hpa, true), Rules::of(&hpa, false));
    assert_eq!(up, defaults().0);
    let mut h = History::default();
    let n = normalize(&mut h, &up, &down, (2, 10), 6, 1, t(0));
    assert_eq!((n.replicas, n.reason), (5, "ScaleDownLimit"));
    record_scale(&mut h, &up, &down, 6, 5, t(0));
    assert_eq!(
        normalize(&mut h, &up, &down, (2, 10), 5, 1, t(30)).replicas,
        5
    );
    let (_, plain) = defaults();
    let mut h = History::default();
    let n = normalize(
        &mut h,
        &up,
        &Rules { window: 0, ..plain },
        (2, 10),
        6,
        1,
        t(0),
    );
    assert_eq!((n.replicas, n.reason), (2, "TooFewReplicas"));
}

struct Fake(Mutex<HashMap<String, PodCpu>>);

impl MetricsSource for Fake {
    fn pod_cpu(&self, _: &str) -> HashMap<String, PodCpu> {
        self.0.lock().unwrap().clone()
    }
}

fn fake(usage: &[(&str, i64)]) -> Arc<Fake> {
    let samples = usage
        .iter()
        .map(|(name, m)| {
            let s = PodCpu {
                uid: String::new(),
                millicores: *m,
                timestamp: t(-5),
                window: Duration::from_secs(10),
            };
            (name.to_string(), s)
        })
        .collect();
    Arc::new(Fake(Mutex::new(samples)))
}

fn cluster(replicas: i64, pods: &[&str]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    s.create("Deployment", &json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}))
    .unwrap();
    for name in pods {
        s.create(
            "Pod",
            &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        )
        .unwrap();
    }
    s.create(
        "HorizontalPodAutoscaler",
        &json!({"apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                              "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
    )
    .unwrap();
    (dir, s)
}

fn condition(hpa: &Value, type_: &str) -> (String, String) {
    let c = hpa["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

#[test]
fn a_busy_deployment_is_scaled_up_and_the_status_says_why() {
    let (_d, s) = cluster(1, &["web-a"]);
    let mut hpa = Autoscaler::new(fake(&[("web-a", 200)]));
    hpa.pass(&s, t(0)).unwrap();
    let deploy = s.get("Deployment", "default", "web").unwrap().unwrap();
    assert_eq!(deploy["spec"]["replicas"], 4, "200% of a 50% target");
    assert_eq!(deploy["metadata"]["generation"], 2);
    let h = s
        .get("HorizontalPodAutoscaler", "default", "web")
        .unwrap()
        .unwrap();
    let st = &h["status"];
    assert_eq!(
        (
            st["currentReplicas"].as_i64(),
            st["desiredReplicas"].as_i64()
        ),
        (Some(1), Some(4))
    );
    assert_eq!(
        st["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        200
    );
    assert_eq!(
        st["currentMetrics"][0]["resource"]["current"]["averageValue"],
        "200m"
    );
    assert_eq!(st["lastScaleTime"], "2026-01-01T01:00:00Z");
    assert_eq!(
        condition(&h, "AbleToScale"),
        ("True".into(), "SucceededRescale".into())
    );
    assert_eq!(
        condition(&h, "ScalingActive"),
        ("True".into(), "ValidMetricFound".into())
    );
    assert_eq!(
        condition(&h, "ScalingLimited"),
        ("False".into(), "DesiredWithinRange".into())
    );
    let events = s
        .events_for("HorizontalPodAutoscaler", "default", "web")
        .unwrap();
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("SuccessfulRescale")
        && e.message.as_deref()
            == Some("New size: 4; reason: cpu resource utilization (percentage of request) above target")));
    // Not due again before the sync period (and the spec did not change).
    s.update_with("Deployment", "default", "web", |d| {
        d["spec"]["replicas"] = json!(1);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    hpa.pass(&s, t(5)).unwrap();
    assert_eq!(
        s.get("Deployment", "default", "web").unwrap().unwrap()["spec"]["replicas"],
        1
    );
    hpa.pass(&s, t(15)).unwrap();
    let replicas =
        s.get("Deployment", "default", "web").unwrap().unwrap()["spec"]["replicas"].clone();
    assert_eq!(replicas, 4);
}

#[test]
fn without_metrics_scaling_is_inactive_and_bounds_still_apply() {
    let (_d, s) = cluster(1, &["web-a"]);
    let mut hpa = Autoscaler::new(Arc::new(NoMetrics));
    hpa.pass(&s, t(0)).unwrap();
    let h = s
        .get("HorizontalPodAutoscaler", "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(
        condition(&h, "ScalingActive"),
        ("False".into(), "FailedGetResourceMetric".into())
    );
    assert_eq!(h["status"]["currentMetrics"], json!([{"type": ""}]));
    assert_eq!(
        s.get("Deployment", "default", "web").unwrap().unwrap()["spec"]["replicas"],
        1
    );
    // Above maxReplicas the target is brought down without any metric.
    let (_d, s) = cluster(9, &[]);
    hpa.pass(&s, t(0)).unwrap();
    assert_eq!(
        s.get("Deployment", "default", "web").unwrap().unwrap()["spec"]["replicas"],
        5
    );
    // A missing target: AbleToScale False.
    s.delete("Deployment", "default", "web").unwrap();
    hpa.pass(&s, t(20)).unwrap();
    let h = s
        .get("HorizontalPodAutoscaler", "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(
        condition(&h, "AbleToScale"),
        ("False".into(), "FailedGetScale".into())
    );
}

#[test]
fn a_young_pods_sample_counts_only_once_it_was_ready_for_a_whole_window() {
    let mut p = json!({"metadata": {"name": "p", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "0.1"}}}]},
        "status": {"phase": "Running", "startTime": "2026-01-01T00:59:00Z",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:59:50Z"}]}});
    let sample = |at: i64| PodCpu {
        uid: "u1".into(),
        millicores: 50,
        timestamp: t(at),
        window: Duration::from_secs(15),
    };
    // Ready at -10 s, window 15 s: a sample ending at 0 s began before the pod was ready.
    assert_eq!(
        pod_input(&p, Some(&sample(0)), t(0)).state,
        PodState::Unready
    );
    assert_eq!(pod_input(&p, Some(&sample(6)), t(6)).state, PodState::Ready);
    assert_eq!(pod_input(&p, Some(&sample(6)), t(6)).request, Ok(100));
    // A sample of an older pod of the same name is not this pod's.
    let other = PodCpu {
        uid: "u0".into(),
        ..sample(6)
    };
    assert_eq!(pod_input(&p, Some(&other), t(6)).state, PodState::Missing);
    p["status"]["phase"] = json!("Pending");
    assert_eq!(pod_input(&p, None, t(6)).state, PodState::Unready);
    p["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
    assert_eq!(pod_input(&p, None, t(6)).state, PodState::Ignored);
}
