//! Server-side tables: what `kubectl get` prints. kubectl asks for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json` and prints the
//! `meta.k8s.io/v1` `Table` it gets back: column definitions (priority 0 always shown, 1 only
//! with `-o wide`) and one row of cells per object, plus the object itself (by default only its
//! metadata, which kubectl needs for `-A`'s NAMESPACE column and `--show-labels`).
//!
//! Owns: the columns of every kind in [`RESOURCES`](crate::api::resources::RESOURCES), the
//! cells derived from each object as a real cluster's printers derive them (see [`pod`] for the
//! pod STATUS logic, [`format`] for ages), and the `includeObject` policy. Must not touch:
//! listing, watching or paging (the lead passes the objects in and sets the list metadata with
//! [`set_list_metadata`]), nor the objects themselves.
//!
//! Cells always include the wide (priority 1) columns, as Kubernetes' API server does; kubectl
//! drops them unless asked for `-o wide`.

mod cells;
pub mod format;
pub mod pod;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::api::resources::Resource;

pub use format::human_duration;

/// The `includeObject` query parameter: how much of each object a row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata: the default.
    #[default]
    Metadata,
    /// The whole object (kubectl asks for this with `--sort-by`).
    Object,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("includeObject must be None, Metadata or Object, not {0:?}")]
pub struct BadIncludeObject(pub String);

impl From<BadIncludeObject> for crate::apiserver::ApiError {
    fn from(e: BadIncludeObject) -> Self {
        crate::apiserver::ApiError::bad_request(e.to_string())
    }
}

impl IncludeObject {
    /// Parses the query value; absent or empty means the default, [`IncludeObject::Metadata`].
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, BadIncludeObject> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(BadIncludeObject(other.to_string())),
        }
    }
}

/// True when an `Accept` header asks for a `meta.k8s.io/v1` Table (JSON). Only v1 is served:
/// kubectl lists it first; the deprecated v1beta1 Table is not.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
        {
            return false;
        }
        let (mut as_table, mut group, mut version, mut refused) = (false, false, false, false);
        for param in parts {
            match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("as", v)) => as_table = v == "Table",
                Some(("g", v)) => group = v == "meta.k8s.io",
                Some(("v", v)) => version = v == "v1",
                Some(("q", v)) => refused = v.parse::<f32>().is_ok_and(|q| q <= 0.0),
                _ => {}
            }
        }
        as_table && group && version && !refused
    })
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// kubectl prints it upper-cased: `Nominated Node` → `NOMINATED NODE`.
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`: the cell's JSON type.
    pub kind: &'static str,
    /// `name` marks the object-name column.
    pub format: &'static str,
    /// 0: always shown; 1: `-o wide` only.
    pub priority: u8,
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority,
        description,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
    description: "The object's name, unique within its namespace.",
};
const AGE: Column = col("Age", "string", 0, "Time since the object was created.");
const CONTAINERS: Column = col(
    "Containers",
    "string",
    1,
    "The names of the template's containers.",
);
const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "The images of the template's containers.",
);
const SELECTOR: Column = col(
    "Selector",
    "string",
    1,
    "The label selector of the pods it manages.",
);

const POD: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        0,
        "Ready containers over all containers.",
    ),
    col(
        "Status",
        "string",
        0,
        "What the pod's containers are doing, in one word.",
    ),
    col(
        "Restarts",
        "string",
        0,
        "Container restarts, and how long ago the last one was.",
    ),
    AGE,
    col("IP", "string", 1, "The pod's first IP address."),
    col("Node", "string", 1, "The node the pod is bound to."),
    col(
        "Nominated Node",
        "string",
        1,
        "The node the scheduler nominated after preemption.",
    ),
    col(
        "Readiness Gates",
        "string",
        1,
        "Readiness gates met over readiness gates.",
    ),
];
const NAMESPACE: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        0,
        "Active, or Terminating while its objects are deleted.",
    ),
    AGE,
];
const NODE: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        0,
        "Ready or NotReady, and SchedulingDisabled when cordoned.",
    ),
    col(
        "Roles",
        "string",
        0,
        "Roles from the node's node-role.kubernetes.io/ labels.",
    ),
    AGE,
    col("Version", "string", 0, "The version of the node's agent."),
    col(
        "Internal-IP",
        "string",
        1,
        "The node's first internal address.",
    ),
    col(
        "External-IP",
        "string",
        1,
        "The node's first external address.",
    ),
    col("OS-Image", "string", 1, "The node's operating system."),
    col("Kernel-Version", "string", 1, "The node's kernel version."),
    col(
        "Container-Runtime",
        "string",
        1,
        "The node's container runtime and its version.",
    ),
];
const EVENT: &[Column] = &[
    col(
        "Last Seen",
        "string",
        0,
        "Time since the event last happened.",
    ),
    col("Type", "string", 0, "Normal or Warning."),
    col(
        "Reason",
        "string",
        0,
        "Why the event happened, in one CamelCase word.",
    ),
    col(
        "Object",
        "string",
        0,
        "The object the event is about, as kind/name.",
    ),
    col(
        "Subobject",
        "string",
        1,
        "The part of the object, such as one container.",
    ),
    col(
        "Source",
        "string",
        1,
        "The component, and host, that reported it.",
    ),
    col("Message", "string", 0, "What happened, for people."),
    col(
        "First Seen",
        "string",
        1,
        "Time since the event first happened.",
    ),
    col("Count", "integer", 1, "How many times it happened."),
    Column {
        priority: 1,
        ..NAME
    },
];
const CONFIG_MAP: &[Column] = &[
    NAME,
    col("Data", "integer", 0, "Number of keys, text and binary."),
    AGE,
];
const SECRET: &[Column] = &[
    NAME,
    col("Type", "string", 0, "The kind of secret, such as Opaque."),
    col("Data", "integer", 0, "Number of keys."),
    AGE,
];
const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        0,
        "Ready addresses with their ports; the first three, then how many more.",
    ),
    AGE,
];
const SERVICE: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    col("Cluster-IP", "string", 0, "The service's first cluster IP."),
    col(
        "External-IP",
        "string",
        0,
        "Addresses it is reachable at from outside.",
    ),
    col(
        "Port(s)",
        "string",
        0,
        "Ports, as port[:nodePort]/protocol.",
    ),
    AGE,
    col(
        "Selector",
        "string",
        1,
        "The labels of the pods it sends traffic to.",
    ),
];
const PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    NAME,
    col("Status", "string", 0, "Pending, Bound or Lost."),
    col("Volume", "string", 0, "The volume bound to the claim."),
    col("Capacity", "string", 0, "The storage the bound volume has."),
    col(
        "Access Modes",
        "string",
        0,
        "How the volume may be mounted: RWO, ROX, RWX, RWOP.",
    ),
    col("StorageClass", "string", 0, "The claim's storage class."),
    col(
        "VolumeAttributesClass",
        "string",
        0,
        "The claim's volume attributes class.",
    ),
    AGE,
    col("VolumeMode", "string", 1, "Filesystem or Block."),
];
const REPLICA_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", 0, "Pods it should have."),
    col("Current", "integer", 0, "Pods it has."),
    col("Ready", "integer", 0, "Pods that are ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Ready pods over desired pods."),
    col(
        "Up-to-date",
        "integer",
        0,
        "Pods running the current template.",
    ),
    col("Available", "integer", 0, "Pods available to serve."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const DAEMON_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", 0, "Nodes that should run its pod."),
    col("Current", "integer", 0, "Nodes that run its pod."),
    col("Ready", "integer", 0, "Nodes whose pod is ready."),
    col(
        "Up-to-date",
        "integer",
        0,
        "Nodes whose pod runs the current template.",
    ),
    col("Available", "integer", 0, "Nodes whose pod is available."),
    col(
        "Node Selector",
        "string",
        0,
        "The labels a node needs to run its pod.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const STATEFUL_SET: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Ready pods over desired pods."),
    AGE,
    CONTAINERS,
    IMAGES,
];
const JOB: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        0,
        "Running, Complete, Failed, Suspended or Terminating.",
    ),
    col(
        "Completions",
        "string",
        0,
        "Succeeded pods over the completions wanted.",
    ),
    col(
        "Duration",
        "string",
        0,
        "How long it ran, or has been running.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const CRON_JOB: &[Column] = &[
    NAME,
    col("Schedule", "string", 0, "When it runs, in cron syntax."),
    col("Timezone", "string", 0, "The time zone of the schedule."),
    col("Suspend", "string", 0, "Whether new runs are held back."),
    col("Active", "integer", 0, "Jobs running now."),
    col(
        "Last Schedule",
        "string",
        0,
        "Time since a job was last started.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const HPA: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        0,
        "The object it scales, as Kind/name.",
    ),
    col(
        "Targets",
        "string",
        0,
        "Current over target value of each metric.",
    ),
    col("MinPods", "string", 0, "The fewest replicas it scales to."),
    col("MaxPods", "integer", 0, "The most replicas it scales to."),
    col("Replicas", "integer", 0, "Replicas now."),
    AGE,
];
/// Kinds without printer of their own (none today) get NAME and AGE.
const DEFAULT: &[Column] = &[NAME, AGE];

type Cells = fn(&Value, Timestamp) -> Vec<Value>;

fn default_cells(v: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(format::text(v, "/metadata/name")),
        json!(format::age(v, "/metadata/creationTimestamp", now)),
    ]
}

/// The columns and cell printer of a resource, by its group and kind.
fn printer(resource: &Resource) -> (&'static [Column], Cells) {
    match (resource.group, resource.kind) {
        ("", "Pod") => (POD, pod::cells),
        ("", "Namespace") => (NAMESPACE, cells::namespace),
        ("", "Node") => (NODE, cells::node),
        ("", "Event") => (EVENT, cells::event),
        ("", "ConfigMap") => (CONFIG_MAP, cells::config_map),
        ("", "Secret") => (SECRET, cells::secret),
        ("", "Service") => (SERVICE, cells::service),
        ("", "Endpoints") => (ENDPOINTS, cells::endpoints),
        ("", "PersistentVolumeClaim") => (PERSISTENT_VOLUME_CLAIM, cells::persistent_volume_claim),
        ("apps", "ReplicaSet") => (REPLICA_SET, cells::replica_set),
        ("apps", "Deployment") => (DEPLOYMENT, cells::deployment),
        ("apps", "DaemonSet") => (DAEMON_SET, cells::daemon_set),
        ("apps", "StatefulSet") => (STATEFUL_SET, cells::stateful_set),
        ("batch", "Job") => (JOB, cells::job),
        ("batch", "CronJob") => (CRON_JOB, cells::cron_job),
        ("autoscaling", "HorizontalPodAutoscaler") => (HPA, cells::horizontal_pod_autoscaler),
        _ => (DEFAULT, default_cells),
    }
}

/// The columns of a resource's table.
pub fn columns(resource: &Resource) -> &'static [Column] {
    printer(resource).0
}

/// `columnDefinitions` as JSON.
pub fn column_definitions(resource: &Resource) -> Value {
    let defs: Vec<Value> = columns(resource)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    Value::Array(defs)
}

/// The object a row carries, per `includeObject`.
fn row_object(resource: &Resource, object: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
        IncludeObject::Object => {
            let mut full = object.clone();
            // Stored objects may lack their type; kubectl decodes the row's object by it.
            if let Some(map) = full.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(resource.api_version()));
                map.entry("kind").or_insert_with(|| json!(resource.kind));
            }
            Some(full)
        }
    }
}

/// The rows for `objects` as of `now`, without the surrounding table (a watch event carries a
/// table of one row).
pub fn rows_at(
    resource: &Resource,
    objects: &[Value],
    include: IncludeObject,
    now: Timestamp,
) -> Vec<Value> {
    let cells = printer(resource).1;
    objects
        .iter()
        .map(|object| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells(object, now)));
            if resource.group.is_empty() && resource.kind == "Pod" {
                if let Some(conditions) = pod::conditions(object) {
                    row.insert("conditions".into(), conditions);
                }
            }
            if let Some(obj) = row_object(resource, object, include) {
                row.insert("object".into(), obj);
            }
            Value::Object(row)
        })
        .collect()
}

/// A `meta.k8s.io/v1` Table of `objects` (a list's items, or the one object of a get) as of
/// `now`. Its `metadata` is empty: a list handler fills it with [`set_list_metadata`].
pub fn table_at(
    resource: &Resource,
    objects: &[Value],
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(resource),
        "rows": rows_at(resource, objects, include, now),
    })
}

/// [`table_at`] as of now.
pub fn table(resource: &Resource, objects: &[Value], include: IncludeObject) -> Value {
    table_at(resource, objects, include, Timestamp::now())
}

/// Sets a list table's `metadata`: the list's resourceVersion, the continue token when the
/// list was cut short by `limit`, and how many objects remain when known.
pub fn set_list_metadata(
    table: &mut Value,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining_item_count: Option<i64>,
) {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(resource_version));
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        meta.insert("continue".into(), json!(token));
    }
    if let Some(remaining) = remaining_item_count {
        meta.insert("remainingItemCount".into(), json!(remaining));
    }
    if let Some(map) = table.as_object_mut() {
        map.insert("metadata".into(), Value::Object(meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::{RESOURCES, by_plural};

    fn now() -> Timestamp {
        "2024-01-01T00:05:00Z".parse().expect("time")
    }

    fn sample() -> Value {
        json!({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "a"},
                            "creationTimestamp": "2024-01-01T00:00:00Z"}})
    }

    #[test]
    fn kubectl_accept_asks_for_a_table() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(wants_table(
            "application/json; g=meta.k8s.io; v=v1; as=Table"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
        ));
        assert!(!wants_table("application/yaml;as=Table;v=v1;g=meta.k8s.io"));
        assert!(!wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io;q=0"
        ));
    }

    #[test]
    fn include_object_parses_strictly() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        let err = IncludeObject::parse(Some("all")).expect_err("bad value");
        let api: crate::apiserver::ApiError = err.into();
        assert_eq!(api.code, 400);
    }

    #[test]
    fn every_resource_has_cells_for_every_column() {
        for r in RESOURCES {
            assert_ne!(columns(r), DEFAULT, "{} has no printer", r.kind);
            for obj in [sample(), json!({}), json!(null)] {
                let rows = rows_at(r, &[obj], IncludeObject::None, now());
                let cells = rows[0]["cells"].as_array().map(Vec::len);
                assert_eq!(cells, Some(columns(r).len()), "{}", r.kind);
            }
            let names: Vec<&str> = columns(r).iter().map(|c| c.name).collect();
            assert!(names.contains(&"Name"), "{}", r.kind);
        }
    }

    #[test]
    fn pods_table_looks_like_kubectl_expects() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        let t = table_at(pods, &[sample()], IncludeObject::Metadata, now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["priority"] == 0)
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "a");
        assert_eq!(row["cells"][4], "5m");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["labels"]["app"], "a");
    }

    #[test]
    fn include_object_controls_the_row_object() {
        let deploy = by_plural("apps", "v1", "deployments").expect("deployments");
        let none = rows_at(deploy, &[sample()], IncludeObject::None, now());
        assert!(none[0].get("object").is_none());
        let full = rows_at(deploy, &[sample()], IncludeObject::Object, now());
        assert_eq!(full[0]["object"]["kind"], "Deployment");
        assert_eq!(full[0]["object"]["apiVersion"], "apps/v1");
        assert_eq!(full[0]["object"]["metadata"]["name"], "a");
    }

    #[test]
    fn list_metadata_and_empty_lists() {
        let ns = by_plural("", "v1", "namespaces").expect("namespaces");
        let mut t = table_at(ns, &[], IncludeObject::Metadata, now());
        assert_eq!(t["rows"], json!([]));
        set_list_metadata(&mut t, "42", Some("tok"), Some(3));
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3})
        );
        set_list_metadata(&mut t, "43", Some(""), None);
        assert_eq!(t["metadata"], json!({"resourceVersion": "43"}));
    }

    #[test]
    fn events_show_last_seen_first() {
        let ev = by_plural("", "v1", "events").expect("events");
        let shown: Vec<&str> = columns(ev)
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| c.name)
            .collect();
        assert_eq!(shown, ["Last Seen", "Type", "Reason", "Object", "Message"]);
    }
}
