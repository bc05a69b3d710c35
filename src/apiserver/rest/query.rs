//! Query parameters of list, watch, write and delete requests, as `metav1.ListOptions`,
//! `CreateOptions`, `DeleteOptions` name them.
//!
//! Owns: parsing and checking them, field selectors included. Must not touch: acting on them.
use serde_json::Value;

use crate::api::LabelSelector;
use crate::apiserver::ApiError;

#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query {
            pairs: form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("{key}: invalid value {v:?}: not an integer"))
                })
            })
            .transpose()
    }

    pub fn label_selector(&self) -> Result<Option<LabelSelector>, ApiError> {
        self.get("labelSelector")
            .map(|s| {
                LabelSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
            })
            .transpose()
    }

    pub fn field_selector(&self, kind: &str) -> Result<FieldSelector, ApiError> {
        FieldSelector::parse(kind, self.get("fieldSelector").unwrap_or_default())
    }

    /// `dryRun=All`: validate and answer, store nothing.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`: terms ANDed, on the fields each kind supports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<Term>,
}

/// The fields Kubernetes lets each kind be selected by, beyond metadata.name and
/// metadata.namespace.
fn supported(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "ReplicaSet" => &["status.replicas"],
        "Job" => &["status.successful"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(kind: &str, s: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !supported(kind).contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push(Term {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The name `metadata.name=X` pins, if any (a get-by-watch such as `kubectl get pod x -w`).
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == "metadata.name")
            .map(|t| t.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let mut cur = Some(obj);
            for key in t.field.split('.') {
                cur = cur.and_then(|v| v.get(key));
            }
            // Go's field sets render absent strings as "" and booleans/numbers as text.
            let actual = match cur {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == t.value) == t.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_selectors_match_like_kubernetes() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"},
                         "spec": {"nodeName": "pi"}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("Pod", "status.phase=Running,spec.nodeName!=x").unwrap();
        assert!(s.matches(&pod));
        let s = FieldSelector::parse("Pod", "status.phase==Pending").unwrap();
        assert!(!s.matches(&pod));
        let s = FieldSelector::parse("Pod", "spec.nodeName=").unwrap();
        assert!(!s.matches(&pod));
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name=a")
                .unwrap()
                .name(),
            Some("a")
        );
        let e = FieldSelector::parse("Pod", "spec.image=x").unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.image");
        assert_eq!(
            FieldSelector::parse("Pod", "nonsense").unwrap_err().code,
            400
        );
    }

    #[test]
    fn repeated_keys_and_flags() {
        let q = Query::parse(Some("command=sh&command=-c&command=echo%20hi&stdin=true"));
        assert_eq!(q.all("command"), vec!["sh", "-c", "echo hi"]);
        assert!(q.flag("stdin"));
        assert!(!q.flag("tty"));
        assert_eq!(
            Query::parse(Some("limit=x")).int("limit").unwrap_err().code,
            400
        );
    }
}
