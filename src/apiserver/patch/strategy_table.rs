//! The list and map semantics of the served kinds, which k8s-openapi does not carry at runtime:
//! for each (type, field) the type of the field's value, how strategic merge patch treats a
//! list there (`patchStrategy`/`patchMergeKey`), and how server-side apply owns it
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, atomic structs).
//!
//! Owns: that table and the root type of each kind. Must not touch: values; the patchers walk
//! them. Fields the table does not name fall back to [`Field::UNKNOWN`]: maps merge, lists are
//! replaced (SMP) or owned whole (SSA), which is what Kubernetes does for schemaless data.

/// A node of the type tree: a kind's root or a struct the table knows fields of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    /// A struct or map the table says nothing about.
    Unknown,
    Pod,
    /// Deployment, ReplicaSet, DaemonSet, StatefulSet.
    Workload,
    Job,
    CronJob,
    Node,
    Service,
    /// Namespace, HorizontalPodAutoscaler: only `status.conditions` is keyed.
    StatusConditions,
    /// ConfigMap, Secret, Event and unknown kinds: only metadata has known lists.
    MetaOnly,
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    WorkloadSpec,
    JobTemplateSpec,
    JobSpec,
    CronJobSpec,
    NodeSpec,
    NodeStatus,
    ServiceSpec,
    /// A `status` whose only keyed list is `conditions` (by type).
    ConditionsStatus,
}

/// How strategic merge patch combines a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Smp {
    /// No patch strategy: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy: merge` with `patchMergeKey`: elements merge by that key.
    MergeKey(&'static str),
    /// `patchStrategy: merge` on a list of scalars: union.
    MergeSet,
}

/// A key field of an SSA associative list, with the schema default used when an element omits it
/// (`protocol` defaults to TCP, so `{containerPort: 80}` is the element `[containerPort=80,protocol="TCP"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

const fn key(name: &'static str) -> Key {
    Key {
        name,
        default: None,
    }
}

const TCP_DEFAULT: Option<&str> = Some("TCP");

/// How server-side apply owns a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ssa {
    /// Maps/structs field by field; lists (having no list type) as a whole.
    Granular,
    /// Owned as one value (`+structType=atomic`, `+mapType=atomic`, `+listType=atomic`).
    Atomic,
    /// `+listType=set`: each scalar is owned (`v:`).
    Set,
    /// `+listType=map`: each element is owned by its keys (`k:`).
    Map(&'static [Key]),
}

/// What the table knows about one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Field {
    /// The type of the field's value, or of its elements for a list.
    pub ty: Ty,
    pub smp: Smp,
    pub ssa: Ssa,
    /// Present (if only as null) in Go's zero value of its parent (a non-pointer struct, or a
    /// list without omitempty), so writers own what is in it, never the node itself.
    pub zero_present: bool,
}

impl Field {
    pub const UNKNOWN: Field = Field {
        ty: Ty::Unknown,
        smp: Smp::Replace,
        ssa: Ssa::Granular,
        zero_present: false,
    };

    /// The merge key SMP uses for this list, if it merges lists of objects.
    pub fn merge_key(&self) -> Option<&'static str> {
        match self.smp {
            Smp::MergeKey(k) => Some(k),
            _ => None,
        }
    }

    pub fn smp_merges(&self) -> bool {
        !matches!(self.smp, Smp::Replace)
    }
}

/// The type of a kind's root object.
pub(super) fn root(kind: &str) -> Ty {
    match kind {
        "Pod" => Ty::Pod,
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => Ty::Workload,
        "Job" => Ty::Job,
        "CronJob" => Ty::CronJob,
        "Node" => Ty::Node,
        "Service" => Ty::Service,
        "Namespace" | "HorizontalPodAutoscaler" => Ty::StatusConditions,
        _ => Ty::MetaOnly,
    }
}

struct Row {
    on: Ty,
    name: &'static str,
    field: Field,
}

const fn nested(on: Ty, name: &'static str, ty: Ty) -> Row {
    Row {
        on,
        name,
        field: Field {
            ty,
            smp: Smp::Replace,
            ssa: Ssa::Granular,
            zero_present: true,
        },
    }
}

/// A list of objects merged by `merge_key` (SMP) and keyed by `keys` (SSA).
const fn keyed(
    on: Ty,
    name: &'static str,
    ty: Ty,
    merge_key: &'static str,
    keys: &'static [Key],
) -> Row {
    Row {
        on,
        name,
        field: Field {
            ty,
            smp: Smp::MergeKey(merge_key),
            ssa: Ssa::Map(keys),
            zero_present: false,
        },
    }
}

const fn atomic(on: Ty, name: &'static str) -> Row {
    Row {
        on,
        name,
        field: Field {
            ty: Ty::Unknown,
            smp: Smp::Replace,
            ssa: Ssa::Atomic,
            zero_present: false,
        },
    }
}

const NAME: &[Key] = &[key("name")];
const TYPE: &[Key] = &[key("type")];
const IP: &[Key] = &[key("ip")];

/// Kubernetes' struct tags and list markers for the fields that matter to the served kinds
/// (k8s.io/api core/v1, apps/v1, batch/v1, autoscaling/v2; apimachinery meta/v1).
const TABLE: &[Row] = &[
    // Roots.
    nested(Ty::Pod, "metadata", Ty::ObjectMeta),
    nested(Ty::Pod, "spec", Ty::PodSpec),
    nested(Ty::Pod, "status", Ty::PodStatus),
    nested(Ty::Workload, "metadata", Ty::ObjectMeta),
    nested(Ty::Workload, "spec", Ty::WorkloadSpec),
    nested(Ty::Workload, "status", Ty::ConditionsStatus),
    nested(Ty::Job, "metadata", Ty::ObjectMeta),
    nested(Ty::Job, "spec", Ty::JobSpec),
    nested(Ty::Job, "status", Ty::ConditionsStatus),
    nested(Ty::CronJob, "metadata", Ty::ObjectMeta),
    nested(Ty::CronJob, "spec", Ty::CronJobSpec),
    nested(Ty::Node, "metadata", Ty::ObjectMeta),
    nested(Ty::Node, "spec", Ty::NodeSpec),
    nested(Ty::Node, "status", Ty::NodeStatus),
    nested(Ty::Service, "metadata", Ty::ObjectMeta),
    nested(Ty::Service, "spec", Ty::ServiceSpec),
    nested(Ty::Service, "status", Ty::ConditionsStatus),
    nested(Ty::StatusConditions, "metadata", Ty::ObjectMeta),
    nested(Ty::StatusConditions, "status", Ty::ConditionsStatus),
    nested(Ty::MetaOnly, "metadata", Ty::ObjectMeta),
    // meta/v1 ObjectMeta.
    keyed(
        Ty::ObjectMeta,
        "ownerReferences",
        Ty::Unknown,
        "uid",
        &[key("uid")],
    ),
    Row {
        on: Ty::ObjectMeta,
        name: "finalizers",
        field: Field {
            ty: Ty::Unknown,
            smp: Smp::MergeSet,
            ssa: Ssa::Set,
            zero_present: false,
        },
    },
    atomic(Ty::ObjectMeta, "managedFields"),
    // Pod templates, wherever they sit.
    nested(Ty::PodTemplateSpec, "metadata", Ty::ObjectMeta),
    nested(Ty::PodTemplateSpec, "spec", Ty::PodSpec),
    nested(Ty::WorkloadSpec, "template", Ty::PodTemplateSpec),
    atomic(Ty::WorkloadSpec, "selector"),
    nested(Ty::JobSpec, "template", Ty::PodTemplateSpec),
    atomic(Ty::JobSpec, "selector"),
    nested(Ty::CronJobSpec, "jobTemplate", Ty::JobTemplateSpec),
    nested(Ty::JobTemplateSpec, "metadata", Ty::ObjectMeta),
    nested(Ty::JobTemplateSpec, "spec", Ty::JobSpec),
    // core/v1 PodSpec.
    // The one keyed list without omitempty: `containers: null` is in every zero PodSpec.
    Row {
        on: Ty::PodSpec,
        name: "containers",
        field: Field {
            ty: Ty::Container,
            smp: Smp::MergeKey("name"),
            ssa: Ssa::Map(NAME),
            zero_present: true,
        },
    },
    keyed(Ty::PodSpec, "initContainers", Ty::Container, "name", NAME),
    keyed(
        Ty::PodSpec,
        "ephemeralContainers",
        Ty::Container,
        "name",
        NAME,
    ),
    // Also `retainKeys`, which only the client acts on: it sends `$retainKeys`.
    keyed(Ty::PodSpec, "volumes", Ty::Unknown, "name", NAME),
    keyed(Ty::PodSpec, "imagePullSecrets", Ty::Unknown, "name", NAME),
    keyed(Ty::PodSpec, "hostAliases", Ty::Unknown, "ip", IP),
    keyed(
        Ty::PodSpec,
        "topologySpreadConstraints",
        Ty::Unknown,
        "topologyKey",
        &[key("topologyKey"), key("whenUnsatisfiable")],
    ),
    keyed(Ty::PodSpec, "schedulingGates", Ty::Unknown, "name", NAME),
    keyed(Ty::PodSpec, "resourceClaims", Ty::Unknown, "name", NAME),
    // core/v1 Container (EphemeralContainer has the same tags).
    keyed(
        Ty::Container,
        "ports",
        Ty::Unknown,
        "containerPort",
        &[
            key("containerPort"),
            Key {
                name: "protocol",
                default: TCP_DEFAULT,
            },
        ],
    ),
    keyed(Ty::Container, "env", Ty::Unknown, "name", NAME),
    keyed(
        Ty::Container,
        "volumeMounts",
        Ty::Unknown,
        "mountPath",
        &[key("mountPath")],
    ),
    keyed(
        Ty::Container,
        "volumeDevices",
        Ty::Unknown,
        "devicePath",
        &[key("devicePath")],
    ),
    // core/v1 PodStatus.
    keyed(Ty::PodStatus, "conditions", Ty::Unknown, "type", TYPE),
    keyed(Ty::PodStatus, "podIPs", Ty::Unknown, "ip", IP),
    // SMP merges hostIPs by ip, but SSA owns the list whole (`+listType=atomic`).
    Row {
        on: Ty::PodStatus,
        name: "hostIPs",
        field: Field {
            ty: Ty::Unknown,
            smp: Smp::MergeKey("ip"),
            ssa: Ssa::Atomic,
            zero_present: false,
        },
    },
    keyed(
        Ty::PodStatus,
        "resourceClaimStatuses",
        Ty::Unknown,
        "name",
        NAME,
    ),
    // Statuses whose keyed list is conditions.
    keyed(
        Ty::ConditionsStatus,
        "conditions",
        Ty::Unknown,
        "type",
        TYPE,
    ),
    // core/v1 Node.
    Row {
        on: Ty::NodeSpec,
        name: "podCIDRs",
        field: Field {
            ty: Ty::Unknown,
            smp: Smp::MergeSet,
            ssa: Ssa::Set,
            zero_present: false,
        },
    },
    keyed(Ty::NodeStatus, "conditions", Ty::Unknown, "type", TYPE),
    keyed(Ty::NodeStatus, "addresses", Ty::Unknown, "type", TYPE),
    // core/v1 Service.
    keyed(
        Ty::ServiceSpec,
        "ports",
        Ty::Unknown,
        "port",
        &[
            key("port"),
            Key {
                name: "protocol",
                default: TCP_DEFAULT,
            },
        ],
    ),
    atomic(Ty::ServiceSpec, "selector"),
];

/// What the table says about `name` inside a value of type `on`.
pub(super) fn field(on: Ty, name: &str) -> Field {
    if on == Ty::Unknown {
        return Field::UNKNOWN;
    }
    TABLE
        .iter()
        .find(|row| row.on == on && row.name == name)
        .map_or(Field::UNKNOWN, |row| row.field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_from_each_root_to_container_env() {
        for kind in ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"] {
            let spec = field(root(kind), "spec").ty;
            let template = field(spec, "template").ty;
            let pod = field(template, "spec").ty;
            let containers = field(pod, "containers");
            assert_eq!(containers.merge_key(), Some("name"), "{kind}");
            assert_eq!(field(containers.ty, "env").merge_key(), Some("name"));
        }
        let cron = field(root("CronJob"), "spec").ty;
        let job = field(field(cron, "jobTemplate").ty, "spec").ty;
        let pod = field(field(job, "template").ty, "spec").ty;
        assert_eq!(field(pod, "initContainers").merge_key(), Some("name"));
    }

    #[test]
    fn unknown_places_replace_lists() {
        let f = field(Ty::PodSpec, "tolerations");
        assert_eq!(f.smp, Smp::Replace);
        assert_eq!(field(Ty::Unknown, "containers"), Field::UNKNOWN);
        assert_eq!(field(root("ConfigMap"), "data"), Field::UNKNOWN);
    }

    #[test]
    fn ssa_keys_differ_from_merge_keys_where_kubernetes_says_so() {
        let ports = field(Ty::Container, "ports");
        assert_eq!(ports.merge_key(), Some("containerPort"));
        assert!(matches!(ports.ssa, Ssa::Map(keys) if keys.len() == 2));
        assert_eq!(field(Ty::PodStatus, "hostIPs").ssa, Ssa::Atomic);
        assert_eq!(field(Ty::ObjectMeta, "finalizers").smp, Smp::MergeSet);
    }
}
