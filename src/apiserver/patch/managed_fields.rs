//! `metadata.managedFields`: who owns which fields. Reads and writes the entries (manager,
//! operation, apiVersion, time, `FieldsV1`), and records the ownership a non-apply write
//! takes: the fields it changed, taken from whoever owned them.
//!
//! Owns: the entry encoding and update bookkeeping. Must not touch: the object's other fields,
//! and apply's merge and conflicts ([`super::apply`]).

use serde_json::{Map, Value, json};

use super::fieldset::{FieldSet, PathElement};
use super::strategy_table as table;
use super::walk;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, seconds, UTC: when the manager last changed the object.
    pub time: Option<String>,
    /// Empty for the main resource.
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Kubernetes tells managers apart by name, operation and subresource, and updaters also by
    /// API version, so that one applier keeps one entry whatever version it applies.
    fn is(&self, manager: &str, operation: Operation, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_empty()
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// The manager's identifier as Kubernetes builds it (the entry's JSON without time or
    /// fields); conflicts are grouped and sorted by it.
    pub fn identifier(&self) -> String {
        let mut id = format!(
            "{{\"manager\":{},\"operation\":\"{}\"",
            json!(self.manager),
            self.operation.as_str()
        );
        if self.operation == Operation::Update {
            id.push_str(&format!(",\"apiVersion\":{}", json!(self.api_version)));
        }
        if !self.subresource.is_empty() {
            id.push_str(&format!(",\"subresource\":{}", json!(self.subresource)));
        }
        id.push('}');
        id
    }

    /// How a conflict message names the manager: `"kubectl-edit" using v1` for an updater,
    /// `"other-applier"` for an applier.
    pub fn describe(&self) -> String {
        let mut s = json!(self.manager).to_string();
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {}", json!(self.subresource)));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn decode(v: &Value) -> Option<Entry> {
        let text = |k: &str| v.get(k).and_then(Value::as_str);
        let operation = match text("operation")? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        if text("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        let fields = match v.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(f) => FieldSet::from_fields_v1(f)?,
        };
        Some(Entry {
            manager: text("manager").unwrap_or_default().to_string(),
            operation,
            api_version: text("apiVersion").unwrap_or_default().to_string(),
            time: text("time").map(str::to_string),
            subresource: text("subresource").unwrap_or_default().to_string(),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            m.insert("time".into(), json!(time));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// All entries of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Managed {
    pub entries: Vec<Entry>,
}

impl Managed {
    /// `None` when the list is not a valid `managedFields`.
    fn decode(list: &Value) -> Option<Managed> {
        let mut managed = Managed::default();
        for v in list.as_array()? {
            let entry = Entry::decode(v)?;
            // A manager listed twice owns the union, rather than the whole list being refused.
            match managed.entries.iter_mut().find(|e| {
                e.is(&entry.manager, entry.operation, &entry.api_version)
                    && e.subresource == entry.subresource
            }) {
                Some(existing) => existing.fields.union(&entry.fields),
                None => managed.entries.push(entry),
            }
        }
        Some(managed)
    }

    /// The object's entries; none when it has none or they cannot be read (Kubernetes refuses
    /// to apply to such an object; ownership restarting is the gentler failure).
    pub fn of(obj: &Value) -> Managed {
        obj.pointer("/metadata/managedFields")
            .and_then(Managed::decode)
            .unwrap_or_default()
    }

    /// The entry of `manager` for `operation`, created empty if missing.
    pub fn entry(&mut self, manager: &str, operation: Operation, api_version: &str) -> &mut Entry {
        let at = match self
            .entries
            .iter()
            .position(|e| e.is(manager, operation, api_version))
        {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    manager: manager.to_string(),
                    operation,
                    api_version: api_version.to_string(),
                    time: None,
                    subresource: String::new(),
                    fields: FieldSet::default(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[at]
    }

    /// Removes and returns the entry of `manager` for `operation`.
    pub fn take(&mut self, manager: &str, operation: Operation) -> Option<Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.is(manager, operation, ""))?;
        Some(self.entries.remove(at))
    }

    /// Writes the entries into `obj`, dropping managers that own nothing, in Kubernetes' order
    /// (appliers first, then by time, manager, version); no entries means no `managedFields`.
    pub fn write(mut self, obj: &mut Value) {
        self.entries.retain(|e| !e.fields.is_empty());
        self.entries.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let Value::Object(root) = obj else {
            return;
        };
        if self.entries.is_empty() {
            if let Some(Value::Object(meta)) = root.get_mut("metadata") {
                meta.remove("managedFields");
            }
            return;
        }
        let list = Value::Array(self.entries.iter().map(Entry::encode).collect());
        let meta = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            meta.insert("managedFields".into(), list);
        }
    }
}

/// The object without `metadata.managedFields`, for comparing and merging.
pub(super) fn without_managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.remove("managedFields");
    }
    obj
}

/// Drops the paths Kubernetes never records ownership of: identity and bookkeeping the server
/// owns (`stripmeta`).
pub(super) fn strip_meta(set: &mut FieldSet) {
    let f = PathElement::field;
    for name in ["apiVersion", "kind", "metadata"] {
        set.remove_member(&[f(name)]);
    }
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.remove_member(&[f("metadata"), f(name)]);
    }
}

/// The entries an update starts from: those the writer sent, if it sent any (a client may edit
/// them); none if it sent `[]` or `[{}]` (Kubernetes' way to reset them); else the live ones.
fn managed_for_update(before: Option<&Value>, after: &Value) -> Managed {
    let live = || before.map(Managed::of).unwrap_or_default();
    match after.pointer("/metadata/managedFields") {
        Some(Value::Array(list))
            if list.is_empty() || (list.len() == 1 && list[0] == json!({})) =>
        {
            Managed::default()
        }
        Some(sent) if !sent.is_null() => match Managed::decode(sent) {
            Some(m) if !m.entries.is_empty() => m,
            _ => live(),
        },
        _ => live(),
    }
}

/// Records a non-apply write by `manager`: it now owns every field it added or changed, which
/// no one else owns any more, and no one owns what it removed.
pub(super) fn record_update(before: Option<&Value>, after: &mut Value, manager: &str, now: &str) {
    let ty = table::root(
        after
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let mut managed = managed_for_update(before, after);
    let old = before.map_or_else(|| json!({}), without_managed_fields);
    let new = without_managed_fields(after);
    let cmp = walk::compare(ty, &old, &new);
    let mut changed = cmp.added;
    changed.union(&cmp.modified);
    strip_meta(&mut changed);
    for e in &mut managed.entries {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    if !changed.is_empty() {
        let api_version = after
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let me = managed.entry(manager, Operation::Update, api_version);
        me.fields.union(&changed);
        me.time = Some(now.to_string());
    }
    managed.write(after);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-02T03:04:05Z";

    fn entries(obj: &Value) -> &Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
    }

    #[test]
    fn create_records_what_the_creator_set() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        });
        record_update(None, &mut pod, "kubectl-create", NOW);
        assert_eq!(
            entries(&pod),
            &vec![json!({
                "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}},
                },
            })]
        );
    }

    #[test]
    fn update_takes_changed_fields_from_their_owner() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x", "tier": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        });
        record_update(None, &mut pod, "kubectl-create", NOW);
        let before = pod.clone();
        pod["spec"]["containers"][0]["image"] = json!("j");
        pod["metadata"]["labels"]
            .as_object_mut()
            .map(|l| l.remove("tier"));
        record_update(
            Some(&before),
            &mut pod,
            "kubectl-edit",
            "2025-01-02T03:04:06Z",
        );

        let managed = Managed::of(&pod);
        let creator = &managed.entries[0];
        assert_eq!(creator.manager, "kubectl-create");
        let encoded = creator.fields.to_fields_v1();
        assert_eq!(
            encoded,
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:name": {}}}},
            })
        );
        let editor = &managed.entries[1];
        assert_eq!(editor.manager, "kubectl-edit");
        assert_eq!(
            editor.fields.to_fields_v1(),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:image": {}}}}})
        );
    }

    #[test]
    fn a_write_that_changes_nothing_records_nothing() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        record_update(None, &mut cm, "a", NOW);
        let before = cm.clone();
        let mut after = cm.clone();
        after["metadata"]["resourceVersion"] = json!("7");
        record_update(Some(&before), &mut after, "b", "later");
        assert_eq!(entries(&after).len(), 1);
        assert_eq!(entries(&after)[0]["manager"], "a");
        assert_eq!(entries(&after)[0]["time"], NOW);
    }

    #[test]
    fn sending_empty_managed_fields_resets_them() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        record_update(None, &mut cm, "a", NOW);
        let before = cm.clone();
        let mut after = cm.clone();
        after["metadata"]["managedFields"] = json!([]);
        record_update(Some(&before), &mut after, "b", NOW);
        assert!(after["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn describes_managers_as_conflict_messages_do() {
        let mut m = Managed::default();
        m.entry("kubectl-edit", Operation::Update, "apps/v1");
        m.entry("ci", Operation::Apply, "apps/v1");
        assert_eq!(m.entries[0].describe(), "\"kubectl-edit\" using apps/v1");
        assert_eq!(m.entries[1].describe(), "\"ci\"");
        assert_eq!(
            m.entries[0].identifier(),
            "{\"manager\":\"kubectl-edit\",\"operation\":\"Update\",\"apiVersion\":\"apps/v1\"}"
        );
    }

    #[test]
    fn writes_appliers_first_and_drops_empty_managers() {
        let mut m = Managed::default();
        m.entry("u", Operation::Update, "v1")
            .fields
            .insert(&[PathElement::field("data")]);
        m.entry("a", Operation::Apply, "v1")
            .fields
            .insert(&[PathElement::field("data")]);
        m.entry("empty", Operation::Update, "v1");
        let mut obj = json!({"metadata": {}});
        m.write(&mut obj);
        let managers: Vec<&str> = entries(&obj)
            .iter()
            .map(|e| e["manager"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(managers, ["a", "u"]);
        assert_eq!(Managed::of(&obj).entries.len(), 2);
    }
}
