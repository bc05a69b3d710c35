//! Sets of field paths, as server-side apply records ownership: a trie whose nodes are path
//! elements (`f:name`, `k:{"name":"x"}`, `v:"value"`, `i:0`), each either owned itself (a
//! member) or only a prefix of owned paths. Encoded as `fieldsV1` and printed as Kubernetes
//! prints paths in conflicts (`.spec.containers[name="x"].image`).
//!
//! Owns: the set algebra and both encodings. Must not touch: objects; [`super::walk`] derives
//! sets from them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One step of a path. The derived order (fields, then keys, then values, then indexes) is
/// structured-merge-diff's, so conflicts list in the order Kubernetes lists them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum PathElement {
    /// A field of a struct or a key of a map.
    Field(String),
    /// An element of an associative list, by its key fields: their compact JSON object (keys
    /// sorted), as `fieldsV1` writes it.
    Key(String),
    /// An element of a set, by its compact JSON value.
    Value(String),
    /// An element of an atomic list by position (read from other writers; never produced here).
    Index(u64),
}

impl PathElement {
    pub fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    pub fn key(fields: Map<String, Value>) -> PathElement {
        PathElement::Key(Value::Object(fields).to_string())
    }

    pub fn value(v: &Value) -> PathElement {
        PathElement::Value(v.to_string())
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<PathElement> {
        let (prefix, rest) = s.split_at_checked(2)?;
        Some(match prefix {
            "f:" => PathElement::Field(rest.to_string()),
            // Re-encoding makes keys comparable whatever spacing the writer used.
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(fields) => PathElement::key(fields),
                _ => return None,
            },
            "v:" => PathElement::value(&serde_json::from_str::<Value>(rest).ok()?),
            "i:" => PathElement::Index(rest.parse().ok()?),
            _ => return None,
        })
    }

    fn display(&self) -> String {
        match self {
            PathElement::Field(name) => format!(".{name}"),
            PathElement::Key(json) => {
                let fields = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(fields)) => fields,
                    _ => return format!("[{json}]"),
                };
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", display_value(v)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(json) => match serde_json::from_str::<Value>(json) {
                Ok(v) => format!("[={}]", display_value(&v)),
                Err(_) => format!("[={json}]"),
            },
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// Scalars as structured-merge-diff prints them: strings quoted, the rest bare.
fn display_value(v: &Value) -> String {
    v.to_string()
}

/// A path as Kubernetes prints it: `.spec.containers[name="x"].image`.
pub(super) fn display_path(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A set of paths. The root node's own `member` flag is never set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The node at `pe`, created as a bare prefix if absent.
    pub fn child(&mut self, pe: PathElement) -> &mut FieldSet {
        self.children.entry(pe).or_default()
    }

    pub fn get(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn contains(&self, pe: &PathElement) -> bool {
        self.children.contains_key(pe)
    }

    pub fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub fn is_member(&self) -> bool {
        self.member
    }

    pub fn set_member(&mut self) {
        self.member = true;
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        let mut node = self;
        for pe in path {
            node = node.child(pe.clone());
        }
        if !path.is_empty() {
            node.member = true;
        }
    }

    /// Whether `path` itself is a member.
    #[cfg(test)]
    pub fn has(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for pe in path {
            match node.children.get(pe) {
                Some(child) => node = child,
                None => return false,
            }
        }
        !path.is_empty() && node.member
    }

    /// Stops owning `path` itself; paths under it stay.
    pub fn remove_member(&mut self, path: &[PathElement]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = &mut *self;
        for pe in parents {
            match node.children.get_mut(pe) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(target) = node.children.get_mut(last) {
            target.member = false;
        }
        self.prune();
    }

    /// True when no path is a member.
    pub fn is_empty(&self) -> bool {
        self.children.values().all(|c| !c.member && c.is_empty())
    }

    /// Drops nodes that own nothing and lead to nothing owned.
    pub fn prune(&mut self) {
        self.children.retain(|_, child| {
            child.prune();
            child.member || !child.children.is_empty()
        });
    }

    pub fn union(&mut self, other: &FieldSet) {
        for (pe, theirs) in &other.children {
            let mine = self.child(pe.clone());
            mine.member |= theirs.member;
            mine.union(theirs);
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (pe, mine) in &self.children {
            let node = match other.children.get(pe) {
                Some(theirs) => FieldSet {
                    member: mine.member && !theirs.member,
                    children: mine.difference(theirs).children,
                },
                None => mine.clone(),
            };
            if node.member || !node.children.is_empty() {
                out.children.insert(pe.clone(), node);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (pe, mine) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let node = FieldSet {
                    member: mine.member && theirs.member,
                    children: mine.intersection(theirs).children,
                };
                if node.member || !node.children.is_empty() {
                    out.children.insert(pe.clone(), node);
                }
            }
        }
        out
    }

    /// Every member path, in structured-merge-diff's iteration order: at each level the
    /// members first, then the paths below each child.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, child) in &self.children {
            if child.member {
                let mut path = prefix.clone();
                path.push(pe.clone());
                out.push(path);
            }
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` encoding: `{}` for an owned leaf, `".": {}` inside an owned node that
    /// also has owned paths below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (pe, child) in &self.children {
            let mut encoded = child.to_fields_v1();
            if child.member && !child.children.is_empty() {
                if let Value::Object(m) = &mut encoded {
                    m.insert(".".into(), Value::Object(Map::new()));
                }
            }
            map.insert(pe.encode(), encoded);
        }
        Value::Object(map)
    }

    /// Reads `fieldsV1`; `None` when it is not that encoding.
    pub fn from_fields_v1(v: &Value) -> Option<FieldSet> {
        let mut set = FieldSet::default();
        for (k, child) in v.as_object()? {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let obj = child.as_object()?;
            let mut node = FieldSet::from_fields_v1(child)?;
            node.member = obj.is_empty() || obj.contains_key(".");
            set.children.insert(pe, node);
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::field(name)
    }

    fn k(name: &str) -> PathElement {
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        PathElement::key(m)
    }

    #[test]
    fn fields_v1_round_trips_with_dot_markers() {
        let encoded = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:finalizers": {"v:\"a\"": {}},
        });
        let set = FieldSet::from_fields_v1(&encoded).unwrap();
        assert!(set.has(&[f("metadata"), f("labels")]));
        assert!(!set.has(&[f("metadata")]));
        assert!(set.has(&[f("spec"), f("containers"), k("web"), f("image")]));
        assert!(set.has(&[f("spec"), f("containers"), k("web")]));
        assert_eq!(set.to_fields_v1(), encoded);
    }

    #[test]
    fn rejects_what_is_not_fields_v1() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_none());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_none());
        assert!(FieldSet::from_fields_v1(&json!([])).is_none());
    }

    #[test]
    fn keys_are_canonical_whatever_the_spacing() {
        let a = FieldSet::from_fields_v1(&json!({"k:{ \"name\" : \"x\" }": {}})).unwrap();
        let b = FieldSet::from_fields_v1(&json!({"k:{\"name\":\"x\"}": {}})).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn algebra_is_member_wise() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("x")]);

        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("spec"), f("replicas")]]);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        let mut u = a.clone();
        u.union(&b);
        assert_eq!(u.paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn removing_a_member_keeps_paths_below() {
        let mut s = FieldSet::default();
        s.insert(&[f("metadata")]);
        s.insert(&[f("metadata"), f("labels"), f("a")]);
        s.remove_member(&[f("metadata")]);
        assert!(!s.has(&[f("metadata")]));
        assert!(s.has(&[f("metadata"), f("labels"), f("a")]));
        s.remove_member(&[f("metadata"), f("labels"), f("a")]);
        assert!(s.is_empty());
        assert_eq!(s, FieldSet::default());
    }

    #[test]
    fn paths_print_as_kubernetes_prints_them() {
        let mut ports = Map::new();
        ports.insert("containerPort".into(), json!(80));
        ports.insert("protocol".into(), json!("TCP"));
        let path = [
            f("spec"),
            f("containers"),
            k("x"),
            f("ports"),
            PathElement::key(ports),
        ];
        assert_eq!(
            display_path(&path),
            ".spec.containers[name=\"x\"].ports[containerPort=80,protocol=\"TCP\"]"
        );
        assert_eq!(
            display_path(&[
                f("metadata"),
                f("finalizers"),
                PathElement::value(&json!("a"))
            ]),
            ".metadata.finalizers[=\"a\"]"
        );
    }

    #[test]
    fn paths_list_members_before_deeper_paths() {
        let mut s = FieldSet::default();
        s.insert(&[f("spec"), f("template"), f("x")]);
        s.insert(&[f("spec"), f("replicas")]);
        let printed: Vec<String> = s.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(printed, [".spec.replicas", ".spec.template.x"]);
    }
}
