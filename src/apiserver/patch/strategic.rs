//! Strategic merge patch, as the API server applies it (`strategicpatch.StrategicMergeMapPatch`):
//! a JSON merge patch whose lists merge by key where the schema says so, plus the directives
//! `$patch` (replace, delete), `$retainKeys`, `$deleteFromPrimitiveList/<list>` and
//! `$setElementOrder/<list>`.
//!
//! Owns: merging one patch into one object. Must not touch: managed fields, validation, or the
//! schema table ([`super::strategy_table`] says which lists merge).
//!
//! Where Kubernetes copies a patch value into a field the object lacks, it copies it verbatim and
//! lets the typed decoder drop leftover directives; having no typed decoder, this merges such a
//! value into nothing instead, so directives are applied and never stored.

use serde_json::{Map, Value};

use super::strategy_table::{self as table, Field, Ty};
use crate::apiserver::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Why a strategic merge patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum SmpError {
    /// The patch is malformed: Kubernetes answers its format errors with 400.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but impossible to apply (lists of lists): Kubernetes answers 422.
    #[error("{0}")]
    Unprocessable(String),
}

impl From<SmpError> for ApiError {
    fn from(e: SmpError) -> ApiError {
        match e {
            SmpError::BadRequest(msg) => ApiError::bad_request(msg),
            SmpError::Unprocessable(msg) => super::unprocessable(msg),
        }
    }
}

fn bad(msg: impl Into<String>) -> SmpError {
    SmpError::BadRequest(msg.into())
}

fn no_merge_key(item: &Value, key: &str) -> SmpError {
    bad(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

/// Applies `patch` (a JSON object) to `live` of kind `kind`.
pub(super) fn apply(
    kind: &str,
    live: &Value,
    patch: Map<String, Value>,
) -> Result<Value, SmpError> {
    let original = live.as_object().cloned().unwrap_or_default();
    merge_map(original, patch, table::root(kind)).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Ty,
) -> Result<Map<String, Value>, SmpError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            // The patch's map stands instead of the live one; merging it into nothing applies
            // any directives nested inside it.
            Some("replace") => merge_map(Map::new(), patch, ty),
            Some("delete") => Ok(Map::new()),
            _ => Err(bad(format!(
                "unknown patch type: {directive} in map: {}",
                Value::Object(patch)
            ))),
        };
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, ty)?;

    for (key, patch_value) in patch {
        let (name, deletion) = match parallel_key(&key, DELETE_FROM_PRIMITIVE_LIST)? {
            Some(name) => (name, true),
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&name);
            continue;
        }
        if deletion && !patch_value.is_array() {
            return Err(bad("invalid patch format of primitive list"));
        }
        let field = table::field(ty, &name);
        let Some(current) = original.get_mut(&name) else {
            // Deleting from a list that is not there leaves nothing to do (Kubernetes would store
            // the deletion list itself).
            if !deletion {
                original.insert(name, fresh(patch_value, field)?);
            }
            continue;
        };
        let merged = match (std::mem::take(current), patch_value) {
            (Value::Object(cur), Value::Object(p)) => Value::Object(merge_map(cur, p, field.ty)?),
            (Value::Array(cur), Value::Array(p)) => {
                Value::Array(merge_list(cur, p, field, deletion)?)
            }
            // Only a list has elements to delete.
            (cur, _) if deletion => cur,
            (_, p) => fresh(p, field)?,
        };
        *current = merged;
    }
    Ok(original)
}

/// `Some(list)` when `key` is `<prefix>/<list>`; an error when it starts with the prefix but is
/// not shaped so.
fn parallel_key(key: &str, prefix: &str) -> Result<Option<String>, SmpError> {
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    match key.split_once('/') {
        Some((head, name)) if head == prefix => Ok(Some(name.to_string())),
        _ if prefix == DELETE_FROM_PRIMITIVE_LIST => {
            Err(bad("invalid patch format of primitive list"))
        }
        _ => Err(bad("invalid patch format of setElementOrder list")),
    }
}

/// `$retainKeys`: clears every live key the list omits, after checking the patch sets nothing
/// outside it.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), SmpError> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(bad("invalid patch format of retainKeys"));
    };
    let retained = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    let outside = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !retained(k)
    });
    if outside {
        return Err(bad("invalid patch format of retainKeys"));
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// `$setElementOrder/<list>`: merges that list now and orders the result as the directive says,
/// server-only elements keeping their place relative to the live order.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: Ty,
) -> Result<(), SmpError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let order = patch.remove(&directive).unwrap_or_default();
        let Some(name) = parallel_key(&directive, SET_ELEMENT_ORDER)? else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad("invalid patch format of setElementOrder list"));
        };
        let field = table::field(ty, &name);
        let live = match original.get(&name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad(format!("expected a list, but received {other}"))),
        };
        let patched = match patch.remove(&name) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => return Err(bad(format!("expected a list, but received {other}"))),
        };
        let key = field.merge_key();
        if let Some(patched) = &patched {
            check_order(patched, &order, key)?;
        }
        let merged = match (live.clone(), patched) {
            (Some(live), None) => live,
            (None, Some(patched)) => fresh_list(patched, field)?,
            (Some(live), Some(patched)) => merge_list(live, patched, field, false)?,
            (None, None) => continue,
        };
        let ordered = order_by(merged, &order, live.as_deref().unwrap_or_default(), key);
        original.insert(name, Value::Array(ordered));
    }
    Ok(())
}

/// The patch list's elements must appear in the `$setElementOrder` list, in the same order.
fn check_order(patched: &[Value], order: &[Value], key: Option<&str>) -> Result<(), SmpError> {
    if patched.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::new();
    for item in patched {
        if key.is_some() {
            let Value::Object(m) = item else {
                return Err(bad(format!("expected a map, but received {item}")));
            };
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        if !has_directive(item) {
            items.push(item);
        }
    }
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if same_element(items[p], &order[o], key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(bad(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            Value::Array(patched.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn has_directive(item: &Value) -> bool {
    item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

fn same_element(a: &Value, b: &Value, key: Option<&str>) -> Result<bool, SmpError> {
    let Some(key) = key else {
        return Ok(a == b);
    };
    let ka = a.get(key).ok_or_else(|| no_merge_key(a, key))?;
    let kb = b.get(key).ok_or_else(|| no_merge_key(b, key))?;
    Ok(ka == kb)
}

/// Combines a live list with a patch list at a field.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    deletion: bool,
) -> Result<Vec<Value>, SmpError> {
    if deletion {
        return Ok(without(original, &patch));
    }
    if !field.smp_merges() {
        return fresh_list(patch, field);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if !elements_are_objects(&original, &patch)? {
        let mut merged = original.clone();
        for item in &patch {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        dedup(&mut merged);
        return Ok(order_by(merged, &patch, &original, None));
    }
    let Some(key) = field.merge_key() else {
        return Err(bad("cannot merge lists without merge key for type map"));
    };
    let (base, patch) = special_elements(original, patch, key, field.ty)?;
    let mut merged = base.clone();
    for item in &patch {
        let Value::Object(item) = item else {
            return Err(bad(format!("expected a map, but received {item}")));
        };
        let wanted = item
            .get(key)
            .ok_or_else(|| no_merge_key(&Value::Object(item.clone()), key))?;
        let found = merged.iter_mut().find_map(|live| match live {
            Value::Object(m) if m.get(key) == Some(wanted) => Some(m),
            _ => None,
        });
        match found {
            Some(live) => *live = merge_map(std::mem::take(live), item.clone(), field.ty)?,
            None => merged.push(Value::Object(merge_map(
                Map::new(),
                item.clone(),
                field.ty,
            )?)),
        }
    }
    Ok(order_by(merged, &patch, &base, Some(key)))
}

/// Whether both lists hold objects (rather than scalars); lists of lists are refused.
fn elements_are_objects(original: &[Value], patch: &[Value]) -> Result<bool, SmpError> {
    let mut kind = None;
    for item in original.iter().chain(patch) {
        if item.is_array() {
            return Err(SmpError::Unprocessable(
                "lists of lists are not supported".into(),
            ));
        }
        let this = std::mem::discriminant(item);
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(bad(format!(
                    "list element types are not identical: {} {}",
                    Value::Array(original.to_vec()),
                    Value::Array(patch.to_vec())
                )));
            }
            Some(_) => {}
        }
    }
    Ok(original.iter().chain(patch).any(Value::is_object))
}

/// Applies the list-level directives: `{$patch: delete, <key>: v}` removes the live elements with
/// that key, `{$patch: replace}` makes the rest of the patch list the whole list. Returns the
/// live list to merge into and the patch elements left to merge.
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    ty: Ty,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let wanted = item.get(key).ok_or_else(|| no_merge_key(&item, key))?;
                original.retain(|live| live.get(key) != Some(wanted));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(bad("merging lists cannot yet be specified in the patch"));
            }
            _ => {
                return Err(bad(format!(
                    "unknown patch type: {directive} in map: {item}"
                )));
            }
        }
    }
    if replace {
        let replacement = plain
            .into_iter()
            .map(|item| match item {
                Value::Object(m) => merge_map(Map::new(), m, ty).map(Value::Object),
                other => Ok(other),
            })
            .collect::<Result<_, _>>()?;
        return Ok((replacement, Vec::new()));
    }
    Ok((original, plain))
}

/// A patch value for a field the object lacks (or whose type changes): the value merged into
/// nothing, so its directives take effect.
fn fresh(value: Value, field: Field) -> Result<Value, SmpError> {
    Ok(match value {
        Value::Object(m) => Value::Object(merge_map(Map::new(), m, field.ty)?),
        Value::Array(list) => Value::Array(fresh_list(list, field)?),
        other => other,
    })
}

fn fresh_list(list: Vec<Value>, field: Field) -> Result<Vec<Value>, SmpError> {
    if field.smp_merges() {
        return merge_list(Vec::new(), list, field, false);
    }
    list.into_iter()
        .map(|item| match item {
            Value::Object(m) => merge_map(Map::new(), m, field.ty).map(Value::Object),
            other => Ok(other),
        })
        .collect()
}

fn without(mut list: Vec<Value>, removed: &[Value]) -> Vec<Value> {
    list.retain(|v| !removed.contains(v));
    list
}

fn dedup(list: &mut Vec<Value>) {
    let mut seen: Vec<Value> = Vec::with_capacity(list.len());
    list.retain(|v| {
        if seen.contains(v) {
            false
        } else {
            seen.push(v.clone());
            true
        }
    });
}

fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let wanted = item.get(k)?;
            list.iter().position(|v| v.get(k) == Some(wanted))
        }
        None => list.iter().position(|v| v == item),
    }
}

/// Orders a merged list the way Kubernetes does: the elements named in `wanted` in that order,
/// the others in their live order, the two interleaved so that an element keeps its place
/// before a later live element.
fn order_by(merged: Vec<Value>, wanted: &[Value], live: &[Value], key: Option<&str>) -> Vec<Value> {
    let (mut named, mut others): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(wanted, item, key).is_some());
    named.sort_by_key(|item| position(wanted, item, key).unwrap_or(usize::MAX));
    others.sort_by_key(|item| position(live, item, key).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(named.len() + others.len());
    let mut named = named.into_iter().peekable();
    let mut others = others.into_iter().peekable();
    loop {
        let take_other = match (others.peek(), named.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(o), Some(n)) => matches!(
                (position(live, o, key), position(live, n, key)),
                (Some(io), Some(in_)) if io < in_
            ),
        };
        let next = if take_other {
            others.next()
        } else {
            named.next()
        };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, live: Value, patch: Value) -> Result<Value, SmpError> {
        let Value::Object(patch) = patch else {
            panic!("test patches are objects");
        };
        apply(kind, &live, patch)
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn containers_merge_by_name_and_new_ones_are_appended() {
        let live = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
    }

    #[test]
    fn new_element_goes_after_the_last_patched_live_element() {
        let live = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{"name": "b", "image": "x"}, {"name": "d"}]}}),
        )
        .unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "d", "c"]);
    }

    #[test]
    fn nested_keyed_lists_merge_env_ports_and_mounts() {
        let live = pod(json!([{
            "name": "a",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"mountPath": "/data", "name": "d"}],
        }]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{
                "name": "a",
                "env": [{"name": "B", "value": "3"}],
                "ports": [{"containerPort": 443}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
            }]}}),
        )
        .unwrap();
        let c = &out["spec"]["containers"][0];
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        // As in Kubernetes: without `$setElementOrder`, a new element goes before live-only ones.
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 443}, {"containerPort": 80, "name": "http"}])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"mountPath": "/data", "name": "d", "readOnly": true}])
        );
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let live = pod(json!([{"name": "a", "args": ["x", "y"]}]));
        let mut live = live;
        live["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"tolerations": [{"key": "j", "operator": "Exists"}], "containers": [{"name": "a", "args": ["z"]}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "j", "operator": "Exists"}])
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn unknown_kind_replaces_lists_and_merges_maps() {
        let live = json!({"kind": "Widget", "spec": {"items": [{"name": "a"}], "m": {"x": 1}}});
        let out = smp(
            "Widget",
            live,
            json!({"spec": {"items": [{"name": "b"}], "m": {"y": 2}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["items"], json!([{"name": "b"}]));
        assert_eq!(out["spec"]["m"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        let out = smp(
            "ConfigMap",
            live,
            json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": null}),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let live = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            "ConfigMap",
            live.clone(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));

        let out = smp(
            "ConfigMap",
            live,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn patch_delete_removes_keyed_element() {
        let live = pod(json!([{"name": "a"}, {"name": "b"}]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn patch_replace_in_list_replaces_whole_list() {
        let live = pod(json!([{"name": "a", "image": "a"}, {"name": "b"}]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{"name": "c", "image": "c"}, {"$patch": "replace"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "c"}])
        );
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}});
        let out = smp(
            "ConfigMap",
            live,
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}, "annotations": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        assert_eq!(out["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn patch_merge_and_unknown_directives_are_rejected() {
        let live = pod(json!([{"name": "a"}]));
        let err = smp(
            "Pod",
            live.clone(),
            json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            bad("merging lists cannot yet be specified in the patch")
        );
        let err = smp("Pod", live, json!({"spec": {"$patch": "bogus"}})).unwrap_err();
        assert!(
            matches!(err, SmpError::BadRequest(m) if m.starts_with("unknown patch type: \"bogus\""))
        );
    }

    #[test]
    fn set_element_order_orders_merged_list() {
        let live = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let out = smp(
            "Pod",
            live,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "new"}],
            }}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c"}, {"name": "a", "image": "new"}, {"name": "b"}])
        );
    }

    #[test]
    fn set_element_order_orders_primitive_lists() {
        let live = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            "ConfigMap",
            live,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b", "a"]));
    }

    #[test]
    fn set_element_order_must_agree_with_patch_list() {
        let live = pod(json!([{"name": "a"}, {"name": "b"}]));
        let err = smp(
            "Pod",
            live,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "b", "image": "x"}],
            }}),
        )
        .unwrap_err();
        assert!(matches!(err, SmpError::BadRequest(m) if m.starts_with("The order in patch list")));
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let live = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            "Deployment",
            live,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_must_cover_the_patch() {
        let live = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        let err = smp(
            "Deployment",
            live,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        )
        .unwrap_err();
        assert_eq!(err, bad("invalid patch format of retainKeys"));
    }

    #[test]
    fn volumes_with_retain_keys_switch_source() {
        let mut live = pod(json!([{"name": "a"}]));
        live["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "configMap": {"name": "cm"}}])
        );
    }

    #[test]
    fn keys_of_other_kinds() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = smp(
            "Service",
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );

        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"}],
                                     "conditions": [{"type": "Ready", "status": "False"}]}});
        let out = smp(
            "Node",
            node,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}], "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(out["status"]["addresses"][0]["address"], "10.0.0.2");
        assert_eq!(out["status"]["addresses"][1]["type"], "Hostname");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );

        let owned = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}]}});
        let out = smp(
            "ReplicaSet",
            owned,
            json!({"metadata": {"ownerReferences": [{"uid": "2", "controller": true}]}}),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["ownerReferences"][1],
            json!({"uid": "2", "name": "b", "controller": true})
        );

        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}}}});
        let out = smp(
            "CronJob",
            cron,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn missing_merge_key_and_list_of_lists_are_errors() {
        let live = pod(json!([{"name": "a"}]));
        let err = smp(
            "Pod",
            live.clone(),
            json!({"spec": {"containers": [{"image": "x"}]}}),
        )
        .unwrap_err();
        assert!(
            matches!(err, SmpError::BadRequest(m) if m.ends_with("does not contain declared merge key: name"))
        );
        let err = smp(
            "ConfigMap",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SmpError::Unprocessable("lists of lists are not supported".into())
        );
    }

    #[test]
    fn directives_in_new_values_are_applied_not_stored() {
        let live = json!({"spec": {}});
        let out = smp(
            "Pod",
            live,
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}, {"name": "Y", "value": "1"}]}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "Y", "value": "1"}]}])
        );
    }

    #[test]
    fn type_change_replaces_value() {
        let live = json!({"data": {"k": "v"}});
        let out = smp("ConfigMap", live, json!({"data": "x"})).unwrap();
        assert_eq!(out["data"], "x");
    }
}
