//! Listing objects by kind, namespace and label selector.
//!
//! Owns: turning a [`LabelSelector`] into a query on the `labels` index. Must not touch: selector
//! semantics, which stay in [`crate::api::selector`]: every candidate row is re-checked with
//! [`LabelSelector::matches`], so SQL only ever narrows the candidates.
use rusqlite::params_from_iter;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{StoreError, Tx, meta};
use crate::api::LabelSelector;
use crate::api::selector::Operator;

impl Tx<'_> {
    /// Objects of `kind` ordered by namespace then name; `namespace: None` means all namespaces.
    pub fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, StoreError> {
        let (sql, args) = query(kind, namespace, selector);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            let obj: Value = serde_json::from_str(&body?)?;
            if selector.is_none_or(|s| meta::labels(&obj).is_ok_and(|labels| s.matches(&labels))) {
                out.push(obj);
            }
        }
        Ok(out)
    }

    /// The stored JSON text of every object of `kind` (in `namespace`), unparsed: what a list
    /// without selectors sends as is, so the hub need not decode and re-encode each object.
    pub fn list_raw(&self, kind: &str, namespace: Option<&str>) -> Result<Vec<String>, StoreError> {
        let (sql, args) = query(kind, namespace, None);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, String>(0))?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    pub fn list_as<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<T>, StoreError> {
        self.list(kind, namespace, selector)?
            .into_iter()
            .map(|obj| serde_json::from_value(obj).map_err(StoreError::from))
            .collect()
    }
}

/// The SQL and its positional arguments. Equals, In and Exists narrow through the label index;
/// the negative and numeric operators cannot use it and are left to the Rust-side filter.
fn query(
    kind: &str,
    namespace: Option<&str>,
    selector: Option<&LabelSelector>,
) -> (String, Vec<String>) {
    let mut sql = String::from("SELECT body FROM objects WHERE kind = ?");
    let mut args = vec![kind.to_string()];
    if let Some(ns) = namespace {
        sql.push_str(" AND namespace = ?");
        args.push(ns.to_string());
    }
    for req in selector
        .map(|s| s.requirements.as_slice())
        .unwrap_or_default()
    {
        match req.operator {
            Operator::Equals | Operator::In if !req.values.is_empty() => {
                let marks = vec!["?"; req.values.len()].join(", ");
                sql.push_str(&format!(
                    " AND id IN (SELECT object_id FROM labels WHERE key = ? AND value IN ({marks}))"
                ));
                args.push(req.key.clone());
                args.extend(req.values.iter().cloned());
            }
            Operator::Exists => {
                sql.push_str(" AND id IN (SELECT object_id FROM labels WHERE key = ?)");
                args.push(req.key.clone());
            }
            _ => {}
        }
    }
    sql.push_str(" ORDER BY namespace, name");
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selector::Requirement;

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn only_index_friendly_operators_reach_sql() {
        let selector = LabelSelector {
            requirements: vec![
                req("app", Operator::In, &["web", "db"]),
                req("tier", Operator::Exists, &[]),
                req("env", Operator::NotIn, &["prod"]),
                req("gen", Operator::Gt, &["3"]),
            ],
        };
        let (sql, args) = query("Pod", Some("default"), Some(&selector));
        assert_eq!(sql.matches("SELECT object_id FROM labels").count(), 2);
        assert_eq!(args, ["Pod", "default", "app", "web", "db", "tier"]);
        assert_eq!(sql.matches('?').count(), args.len());
        assert!(sql.ends_with("ORDER BY namespace, name"));
    }

    #[test]
    fn no_namespace_lists_all_namespaces() {
        let (sql, args) = query("Pod", None, None);
        assert!(!sql.contains("namespace ="));
        assert_eq!(args, ["Pod"]);
    }
}
