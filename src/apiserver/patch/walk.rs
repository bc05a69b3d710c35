//! Structural walks of an object along the schema table, with server-side apply's view of it:
//! associative lists are addressed by key, sets by value, atomic lists and structs as one value.
//! Gives the field set a value sets, the comparison of two versions of an object, the apply merge
//! of a configuration into a live object, and the removal of paths.
//!
//! Owns: those four walks. Must not touch: managers or decisions about ownership
//! ([`super::managed_fields`], [`super::apply`]). `null` counts as absent everywhere, as in the
//! typed objects Kubernetes compares.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, PathElement, display_path};
use super::strategy_table::{self as table, Field, Ssa, Ty};

/// The element type of a list, seen as a field of its own.
fn item_field(list: Field) -> Field {
    Field {
        ty: list.ty,
        ..Field::UNKNOWN
    }
}

fn granular_list(field: Field) -> bool {
    matches!(field.ssa, Ssa::Map(_) | Ssa::Set)
}

fn granular_map(field: Field) -> bool {
    field.ssa != Ssa::Atomic
}

/// How an element of a granular list is addressed.
pub(super) fn item_element(list: Field, item: &Value) -> Result<PathElement, String> {
    match list.ssa {
        Ssa::Map(keys) => {
            let Value::Object(obj) = item else {
                return Err(format!("expected an object, got {item}"));
            };
            let mut fields = Map::new();
            for key in keys {
                let value = match (obj.get(key.name).filter(|v| !v.is_null()), key.default) {
                    (Some(v), _) => v.clone(),
                    (None, Some(default)) => Value::String(default.to_string()),
                    (None, None) => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                            key.name
                        ));
                    }
                };
                fields.insert(key.name.to_string(), value);
            }
            Ok(PathElement::key(fields))
        }
        Ssa::Set if !item.is_object() && !item.is_array() => Ok(PathElement::value(item)),
        _ => Err(format!("expected a scalar, got {item}")),
    }
}

/// The paths a configuration sets: what its applier will own. Errors name the offending list
/// as Kubernetes does (`.spec.containers: element 0: …`).
pub(super) fn field_set(ty: Ty, obj: &Value) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    if let Value::Object(map) = obj {
        map_fields(ty, map, &mut set, &mut Vec::new())?;
    }
    set.prune();
    Ok(set)
}

fn map_fields(
    ty: Ty,
    map: &Map<String, Value>,
    node: &mut FieldSet,
    path: &mut Vec<PathElement>,
) -> Result<(), String> {
    for (name, value) in map {
        if value.is_null() {
            continue;
        }
        let pe = PathElement::field(name);
        path.push(pe.clone());
        value_fields(table::field(ty, name), value, node.child(pe), path)?;
        path.pop();
    }
    Ok(())
}

fn value_fields(
    field: Field,
    value: &Value,
    node: &mut FieldSet,
    path: &mut Vec<PathElement>,
) -> Result<(), String> {
    match value {
        Value::Object(map) if granular_map(field) && !map.is_empty() => {
            map_fields(field.ty, map, node, path)
        }
        Value::Array(items) if granular_list(field) => {
            for (i, item) in items.iter().enumerate() {
                let pe = item_element(field, item)
                    .map_err(|e| format!("{}: element {i}: {e}", display_path(path)))?;
                if node.contains(&pe) {
                    let mut dup = path.clone();
                    dup.push(pe);
                    return Err(format!(
                        "{}: duplicate entries for key {}",
                        display_path(path),
                        display_path(&dup[path.len()..])
                    ));
                }
                let child = node.child(pe.clone());
                child.set_member();
                if let Value::Object(map) = item {
                    path.push(pe);
                    map_fields(field.ty, map, child, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        _ => {
            node.set_member();
            Ok(())
        }
    }
}

/// What changed between two versions of an object, as paths.
#[derive(Debug, Default)]
pub(super) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares `before` and `after` (objects of root type `ty`). A node only one side has is added
/// or removed, and so is everything below it; a leaf or atomic value both have is modified
/// when it differs. Nodes present in Go's zero object (`metadata`, `spec`, `status`, pod
/// templates, `containers`) count as always present, as in Kubernetes' typed objects, so a
/// creator owns what is in them, not them.
pub(super) fn compare(ty: Ty, before: &Value, after: &Value) -> Comparison {
    let mut out = Comparison::default();
    let root = Field {
        ty,
        ..Field::UNKNOWN
    };
    compare_value(root, Some(before), Some(after), &mut Vec::new(), &mut out);
    out.added.prune();
    out.modified.prune();
    out.removed.prune();
    out
}

fn compare_value(
    field: Field,
    before: Option<&Value>,
    after: Option<&Value>,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let before = before.filter(|v| !v.is_null());
    let after = after.filter(|v| !v.is_null());
    if before.is_none() && after.is_none() {
        return;
    }
    let objects = before.is_none_or(Value::is_object) && after.is_none_or(Value::is_object);
    let arrays = before.is_none_or(Value::is_array) && after.is_none_or(Value::is_array);
    if objects && granular_map(field) {
        if !field.zero_present && !is_top_level_struct(path) {
            mark_presence(before, after, path, out);
        }
        let empty = Map::new();
        let b = before.and_then(Value::as_object).unwrap_or(&empty);
        let a = after.and_then(Value::as_object).unwrap_or(&empty);
        for name in b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))) {
            path.push(PathElement::field(name));
            compare_value(
                table::field(field.ty, name),
                b.get(name),
                a.get(name),
                path,
                out,
            );
            path.pop();
        }
    } else if arrays && granular_list(field) {
        if !field.zero_present {
            mark_presence(before, after, path, out);
        }
        let b = index_items(field, before);
        let a = index_items(field, after);
        let item = item_field(field);
        for (pe, bv) in &b {
            let av = a.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
            path.push(pe.clone());
            compare_value(item, Some(bv), av, path, out);
            path.pop();
        }
        for (pe, av) in &a {
            if !b.iter().any(|(p, _)| p == pe) {
                path.push(pe.clone());
                compare_value(item, None, Some(av), path, out);
                path.pop();
            }
        }
    } else {
        match (before, after) {
            (Some(b), Some(a)) if b != a => out.modified.insert(path),
            (Some(_), Some(_)) => {}
            _ => mark_presence(before, after, path, out),
        }
    }
}

fn is_top_level_struct(path: &[PathElement]) -> bool {
    matches!(path, [PathElement::Field(name)] if matches!(name.as_str(), "metadata" | "spec" | "status"))
}

fn mark_presence(
    before: Option<&Value>,
    after: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (before, after) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// The elements of a granular list by address; elements that have none (a live object can
/// break the rules a configuration is held to) by position, so they still compare.
fn index_items(field: Field, list: Option<&Value>) -> Vec<(PathElement, &Value)> {
    let mut out: Vec<(PathElement, &Value)> = Vec::new();
    for (i, item) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pe = item_element(field, item).unwrap_or(PathElement::Index(i as u64));
        if !out.iter().any(|(p, _)| *p == pe) {
            out.push((pe, item));
        }
    }
    out
}

/// Server-side apply's merge of `config` into `live`: the configuration's values win, maps merge
/// key by key, granular lists merge element by element (live order kept, the configuration's
/// elements placed in its order), atomic values are replaced.
pub(super) fn merge(ty: Ty, live: &Value, config: &Value) -> Value {
    let root = Field {
        ty,
        ..Field::UNKNOWN
    };
    merge_value(root, live, config)
}

fn merge_value(field: Field, live: &Value, config: &Value) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if granular_map(field) => {
            let mut out = l.clone();
            for (name, cv) in c {
                let merged = match l.get(name) {
                    Some(lv) => merge_value(table::field(field.ty, name), lv, cv),
                    None => cv.clone(),
                };
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) if granular_list(field) => {
            Value::Array(merge_items(field, l, c))
        }
        _ => config.clone(),
    }
}

/// Interleaves live and configured elements as structured-merge-diff does: live-only elements
/// stay where they are, shared and new elements follow the configuration's order.
fn merge_items(field: Field, live: &[Value], config: &[Value]) -> Vec<Value> {
    let item = item_field(field);
    let lhs: Vec<Option<PathElement>> = live.iter().map(|v| item_element(field, v).ok()).collect();
    let rhs: Vec<Option<PathElement>> =
        config.iter().map(|v| item_element(field, v).ok()).collect();
    let in_rhs = |pe: &Option<PathElement>| pe.is_some() && rhs.contains(pe);
    let live_match = |pe: &Option<PathElement>| {
        pe.as_ref()
            .and_then(|_| lhs.iter().position(|l| l == pe))
            .map(|i| &live[i])
    };
    let shared: Vec<&Option<PathElement>> = rhs
        .iter()
        .filter(|pe| pe.is_some() && lhs.contains(pe))
        .collect();
    let mut next_shared = 0;
    let mut merged_rhs: Vec<&Option<PathElement>> = Vec::new();

    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut li, mut ri) = (0, 0);
    while li < live.len() || ri < config.len() {
        if li < live.len() && ri < config.len() {
            if lhs[li].is_some() && lhs[li] == rhs[ri] {
                out.push(merge_value(item, &live[li], &config[ri]));
                merged_rhs.push(&rhs[ri]);
                li += 1;
                ri += 1;
                next_shared += 1;
                continue;
            }
            let wanted = shared.get(next_shared);
            if in_rhs(&lhs[li]) && wanted.is_some_and(|w| **w != lhs[li]) {
                // A shared element, but not the one due now: it is emitted with the config's.
                li += 1;
                continue;
            }
        }
        if li < live.len() {
            if !in_rhs(&lhs[li]) {
                out.push(live[li].clone());
                li += 1;
                continue;
            }
            if merged_rhs.contains(&&lhs[li]) {
                li += 1;
                continue;
            }
        }
        if ri >= config.len() {
            // Unreachable with distinct configured keys; keeps the loop finite regardless.
            out.push(live[li].clone());
            li += 1;
            continue;
        }
        let pe = &rhs[ri];
        merged_rhs.push(pe);
        out.push(match live_match(pe) {
            Some(lv) => merge_value(item, lv, &config[ri]),
            None => config[ri].clone(),
        });
        ri += 1;
        if shared.get(next_shared).is_some_and(|w| *w == pe) {
            next_shared += 1;
        }
    }
    out
}

/// Removes every member of `set` from `obj` (a list element or field with everything below it).
/// A map or list emptied by the removal goes too, as Kubernetes' omitempty encoding would drop it.
pub(super) fn remove(ty: Ty, obj: &mut Value, set: &FieldSet) {
    if let Value::Object(map) = obj {
        remove_in_map(ty, map, set);
    }
}

fn remove_in_map(ty: Ty, map: &mut Map<String, Value>, set: &FieldSet) {
    for (pe, node) in set.children() {
        let PathElement::Field(name) = pe else {
            continue;
        };
        if node.is_member() {
            map.remove(name);
            continue;
        }
        let Some(child) = map.get_mut(name) else {
            continue;
        };
        let was_empty = is_empty_container(child);
        remove_in_value(table::field(ty, name), child, node);
        if !was_empty && is_empty_container(child) {
            map.remove(name);
        }
    }
}

fn remove_in_value(field: Field, value: &mut Value, node: &FieldSet) {
    match value {
        Value::Object(map) => remove_in_map(field.ty, map, node),
        Value::Array(items) if granular_list(field) => {
            items.retain_mut(|item| {
                let Some(n) = item_element(field, item).ok().and_then(|pe| node.get(&pe)) else {
                    return true;
                };
                if n.is_member() {
                    return false;
                }
                if let Value::Object(map) = item {
                    remove_in_map(field.ty, map, n);
                }
                true
            });
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn printed(set: &FieldSet) -> Vec<String> {
        set.paths().iter().map(|p| display_path(p)).collect()
    }

    #[test]
    fn field_set_owns_leaves_and_keyed_elements() {
        let config = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "args": ["a"]}]},
        });
        let set = field_set(Ty::Pod, &config).unwrap();
        assert_eq!(
            printed(&set),
            [
                ".apiVersion",
                ".kind",
                ".metadata.name",
                ".metadata.labels.app",
                ".spec.containers[name=\"c\"]",
                ".spec.containers[name=\"c\"].args",
                ".spec.containers[name=\"c\"].image",
                ".spec.containers[name=\"c\"].name",
                ".spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"]",
                ".spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ]
        );
    }

    #[test]
    fn field_set_rejects_missing_keys_and_duplicates() {
        let err =
            field_set(Ty::Pod, &json!({"spec": {"containers": [{"image": "i"}]}})).unwrap_err();
        assert_eq!(
            err,
            ".spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
        );
        let err = field_set(
            Ty::Pod,
            &json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ".spec.containers: duplicate entries for key [name=\"a\"]"
        );
    }

    #[test]
    fn atomic_structs_and_sets() {
        let config = json!({"metadata": {"finalizers": ["a"]}, "spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let set = field_set(Ty::Workload, &config).unwrap();
        assert_eq!(
            printed(&set),
            [".metadata.finalizers[=\"a\"]", ".spec.selector"]
        );
    }

    #[test]
    fn compare_marks_new_nodes_and_changed_leaves() {
        let before = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "1"}]}});
        let after = json!({
            "metadata": {"name": "p", "labels": {"x": "y"}},
            "spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b", "image": "3"}]},
        });
        let cmp = compare(Ty::Pod, &before, &after);
        assert_eq!(
            printed(&cmp.added),
            [
                ".metadata.labels",
                ".metadata.labels.x",
                ".spec.containers[name=\"b\"]",
                ".spec.containers[name=\"b\"].image",
                ".spec.containers[name=\"b\"].name",
            ]
        );
        assert_eq!(
            printed(&cmp.modified),
            [".spec.containers[name=\"a\"].image"]
        );
        assert!(cmp.removed.is_empty());
        let back = compare(Ty::Pod, &after, &before);
        assert_eq!(back.removed.paths().len(), 5);
    }

    #[test]
    fn compare_from_nothing_leaves_top_level_structs_unowned() {
        let cmp = compare(
            table::root("ConfigMap"),
            &json!({}),
            &json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
        );
        assert_eq!(printed(&cmp.added), [".data", ".data.k", ".metadata.name"]);
    }

    #[test]
    fn merge_keeps_live_order_and_appends_new_elements() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}, {"name": "c"}]}});
        let config = json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "d"}]}});
        let out = merge(Ty::Pod, &live, &config);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c"}, {"name": "d"}])
        );
    }

    #[test]
    fn merge_follows_config_order_for_shared_elements() {
        let live = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let config = json!({"metadata": {"finalizers": ["c", "a"]}});
        let out = merge(Ty::Pod, &live, &config);
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c", "a"]));
    }

    #[test]
    fn merge_replaces_atomic_values() {
        let live = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {"containers": [{"name": "a", "args": ["x"]}]}}}});
        let config = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}, "template": {"spec": {"containers": [{"name": "a", "args": ["y"]}]}}}});
        let out = merge(Ty::Workload, &live, &config);
        assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["y"])
        );
    }

    #[test]
    fn remove_drops_elements_fields_and_emptied_containers() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        let mut set = FieldSet::default();
        set.insert(&[
            PathElement::field("metadata"),
            PathElement::field("labels"),
            PathElement::field("a"),
        ]);
        let mut key = Map::new();
        key.insert("name".into(), json!("a"));
        set.insert(&[
            PathElement::field("spec"),
            PathElement::field("containers"),
            PathElement::key(key),
        ]);
        remove(Ty::Pod, &mut obj, &set);
        assert_eq!(obj, json!({"spec": {"containers": [{"name": "b"}]}}));
    }
}
