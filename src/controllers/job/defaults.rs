//! What a new Job gets before it is stored, whoever makes it (the API server's admission for
//! kubectl's Jobs, the CronJob controller for its own): Kubernetes' `SetDefaults_Job` and the
//! job strategy's generated selector and labels. Kept here, beside the controller that relies
//! on them, so both writers produce the same object.
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The labels a Job's pods carry: the prefixed pair, and the legacy pair the seeds' examples
/// still select on (`--selector=job-name=pi`).
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_JOB_NAME: &str = "job-name";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";

/// The four generated labels with the values they must have.
pub fn generated_labels<'a>(name: &'a str, uid: &'a str) -> [(&'static str, &'a str); 4] {
    [
        (LEGACY_CONTROLLER_UID, uid),
        (LEGACY_JOB_NAME, name),
        (CONTROLLER_UID, uid),
        (JOB_NAME, name),
    ]
}

/// A random version-4 UUID, as the store would make at create. A Job needs its uid before it
/// is stored: its selector names it.
pub fn new_uid() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness: the clock keeps uids distinct enough for one hub.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b = n.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fills in a Job's defaults and, unless `manualSelector`, its generated selector and template
/// labels from `metadata.name` and `metadata.uid`. The pod template's own defaults are the
/// caller's (admission applies them with the other workloads').
pub fn apply(job: &mut Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    // Both unset: one pod to one completion. Parallelism alone leaves completions unset (a
    // work queue: done when any pod succeeds and none is left running).
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_string());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    if spec.pod_failure_policy.is_none() {
        spec.pod_replacement_policy
            .get_or_insert_with(|| "TerminatingOrFailed".to_string());
    }
    if spec.manual_selector != Some(true) {
        generate_selector(spec, &name, &uid);
    }
    // A Job without labels of its own shows its pods' (`SetDefaults_Job`, which Kubernetes
    // applies again when reading the stored Job, after the selector labels were generated).
    let template = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    if job.metadata.labels.as_ref().is_none_or(|l| l.is_empty())
        && let Some(labels) = template.filter(|l| !l.is_empty())
    {
        job.metadata.labels = Some(labels);
    }
}

/// The template gets the job's name and uid as labels (a user's own value is kept, and then
/// rejected by validation); the selector selects the uid.
fn generate_selector(spec: &mut JobSpec, name: &str, uid: &str) {
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for (k, v) in generated_labels(name, uid) {
        labels.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    spec.selector
        .get_or_insert_with(LabelSelector::default)
        .match_labels
        .get_or_insert_with(Default::default)
        .entry(CONTROLLER_UID.to_string())
        .or_insert_with(|| uid.to_string());
}
