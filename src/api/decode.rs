//! Manifest decoding: YAML or JSON, multi-document, strict about unknown fields.
//!
//! Owns: turning manifest text into JSON documents (`kind: List` expanded, empty documents
//! skipped), and decoding a document into a k8s-openapi Pod the way the API server's strict
//! decoder does: every unknown field and every wrongly typed value is reported with its path.
//! Also the `-o yaml`/`-o json` encoders. Must not touch: defaults and validation, which run on
//! the decoded object.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::EncodeError;
use super::{FieldError, FieldErrors, ManifestError, Pod};

/// Splits a manifest into its documents as JSON values, skipping empty documents and expanding
/// `kind: List`. Text starting with `{` is read as JSON (a stream of objects), anything else as
/// YAML, as kubectl does.
pub fn documents(file: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw = if text.trim_start().starts_with('{') {
        json_documents(file, text)?
    } else {
        yaml_documents(file, text)?
    };
    let mut docs = Vec::new();
    for (i, doc) in raw.into_iter().enumerate() {
        expand(file, i + 1, doc, &mut docs)?;
    }
    Ok(docs)
}

fn syntax(file: &str, message: impl Into<String>) -> ManifestError {
    ManifestError::Syntax {
        file: file.to_string(),
        message: message.into(),
    }
}

fn json_documents(file: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|doc| doc.map_err(|e| syntax(file, format!("invalid JSON: {e}"))))
        .collect()
}

fn yaml_documents(file: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let mut value =
            serde_yaml_ng::Value::deserialize(de).map_err(|e| syntax(file, yaml_error(&e)))?;
        value
            .apply_merge()
            .map_err(|e| syntax(file, yaml_error(&e)))?;
        let mut json = yaml_to_json(value)
            .map_err(|msg| syntax(file, format!("document {}: {msg}", docs.len() + 1)))?;
        octal_file_modes(&mut json);
        docs.push(json);
    }
    Ok(docs)
}

fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    let message = format!("invalid YAML: {e}");
    match e.location() {
        Some(loc) if !message.contains("line") => {
            format!("{message} at line {} column {}", loc.line(), loc.column())
        }
        _ => message,
    }
}

/// Converts the YAML tree to JSON the way Kubernetes' YAML-to-JSON step does: scalar keys
/// become strings and tags are dropped.
fn yaml_to_json(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Yaml;
    Ok(match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("the number {n} cannot be represented in JSON"))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    other => return Err(format!("mapping keys must be strings, found {other:?}")),
                };
                map.insert(key, yaml_to_json(v)?);
            }
            Value::Object(map)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

/// Kubernetes reads YAML 1.1, where `defaultMode: 0644` is the octal number 420; YAML 1.2 (our
/// parser) reads it as the string "0644". File modes are the one place manifests rely on this.
fn octal_file_modes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if matches!(k.as_str(), "labels" | "annotations" | "nodeSelector") {
                    continue;
                }
                if matches!(k.as_str(), "defaultMode" | "mode")
                    && let Value::String(s) = child
                    && let Some(octal) = s.strip_prefix('0').filter(|d| !d.is_empty())
                    && let Ok(n) = i64::from_str_radix(octal, 8)
                {
                    *child = Value::from(n);
                }
                octal_file_modes(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(octal_file_modes),
        _ => {}
    }
}

/// Adds a document to `out`, expanding a v1 List into its items.
fn expand(file: &str, n: usize, doc: Value, out: &mut Vec<Value>) -> Result<(), ManifestError> {
    match doc {
        Value::Null => Ok(()),
        Value::Object(map)
            if map.get("kind") == Some(&Value::from("List"))
                && map.get("apiVersion") == Some(&Value::from("v1")) =>
        {
            match map.get("items") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Array(items)) => items
                    .iter()
                    .try_for_each(|item| expand(file, n, item.clone(), out)),
                Some(_) => Err(syntax(
                    file,
                    format!("document {n}: a List's items must be an array"),
                )),
            }
        }
        Value::Object(_) => {
            out.push(doc);
            Ok(())
        }
        other => Err(syntax(
            file,
            format!(
                "document {n}: expected an object with apiVersion and kind, found {}",
                json_type(&other)
            ),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes one document as a v1 Pod. Unknown fields and wrongly typed values are reported
/// together, each with its path (`spec.containers[0].imagee`).
pub fn pod(file: &str, doc: Value) -> Result<Pod, ManifestError> {
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let invalid = |errors: FieldErrors| ManifestError::Invalid {
        file: file.to_string(),
        kind: "Pod".to_string(),
        name: name.clone(),
        errors,
    };
    let mut errs = FieldErrors::default();
    let api_version = type_field(&doc, "apiVersion", &mut errs);
    let kind = type_field(&doc, "kind", &mut errs);
    if !errs.is_empty() {
        return Err(invalid(errs));
    }
    if api_version != "v1" || kind != "Pod" {
        return Err(ManifestError::UnsupportedKind {
            file: file.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        });
    }

    strict(doc).map_err(invalid)
}

/// Decodes `doc` as `T`, reporting unknown fields and wrongly typed values together, each with
/// its path. The caller has checked `apiVersion` and `kind`.
pub fn strict<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, FieldErrors> {
    match lenient(doc) {
        (Some(obj), errs) if errs.is_empty() => Ok(obj),
        (_, errs) => Err(errs),
    }
}

/// Decodes `doc` as `T` once, returning the value when its types are right (unknown fields are
/// skipped) together with every unknown field and type error found. One decoding serves both
/// strict and lenient callers, so each type's deserializer is compiled once.
pub fn lenient<T: serde::de::DeserializeOwned>(doc: Value) -> (Option<T>, FieldErrors) {
    let mut errs = FieldErrors::default();
    let mut unknown = Vec::new();
    let decoded = {
        let mut on_ignored =
            |path: serde_ignored::Path| unknown.push(render(&ignored_segments(&path)));
        serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
            &doc,
            &mut on_ignored,
        ))
    };
    errs.extend(unknown.into_iter().map(FieldError::unknown));
    match decoded {
        Ok(obj) => (Some(obj), errs),
        Err(e) => {
            errs.push(type_error(&doc, &e));
            (None, errs)
        }
    }
}

/// `apiVersion` or `kind`: required, and a string.
fn type_field<'a>(doc: &'a Value, field: &str, errs: &mut FieldErrors) -> &'a str {
    match doc.get(field) {
        None | Some(Value::Null) => {
            errs.push(FieldError::required(field));
            ""
        }
        Some(Value::String(s)) if s.is_empty() => {
            errs.push(FieldError::required(field));
            ""
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            errs.push(FieldError::invalid(
                field,
                other.to_string(),
                "must be a string",
            ));
            ""
        }
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Fields whose value is a map with user-chosen keys; Kubernetes writes their entries `[key]`.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "limits",
    "requests",
    "overhead",
];

fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    let mut parent: Option<&str> = None;
    for seg in segments {
        match seg {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(k) if parent.is_some_and(|p| MAP_FIELDS.contains(&p)) => {
                out.push_str(&format!("[{k}]"))
            }
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
        parent = match seg {
            Segment::Key(k) => Some(k),
            Segment::Index(_) => None,
        };
    }
    out
}

fn ignored_segments(path: &serde_ignored::Path) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut segments = Vec::new();
    let mut cur = path;
    loop {
        cur = match cur {
            Path::Root => break,
            Path::Seq { parent, index } => {
                segments.push(Segment::Index(*index));
                parent
            }
            Path::Map { parent, key } => {
                segments.push(Segment::Key(key.clone()));
                parent
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => parent,
        };
    }
    segments.reverse();
    segments
}

/// A wrongly typed value as a field error naming its path and the offending value.
fn type_error(doc: &Value, e: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    use serde_path_to_error::Segment as S;
    let segments: Vec<Segment> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            S::Seq { index } => Some(Segment::Index(*index)),
            S::Map { key } | S::Enum { variant: key } => Some(Segment::Key(key.clone())),
            S::Unknown => None,
        })
        .collect();
    let mut path = render(&segments);
    if path.is_empty() {
        path = "<root>".to_string();
    }
    let message = e.inner().to_string();
    let detail = message
        .split_once(", expected ")
        .map(|(_, expected)| format!("expected {}", expected_type(expected)))
        .unwrap_or(message);
    let mut value = Some(doc);
    for seg in &segments {
        value = value.and_then(|v| match seg {
            Segment::Key(k) => v.get(k),
            Segment::Index(i) => v.get(i),
        });
    }
    match value {
        Some(Value::String(s)) => FieldError::invalid(path, s, detail),
        Some(v) => FieldError::invalid(path, v.to_string(), detail),
        None => FieldError::new(path, super::FieldErrorKind::Invalid).with_detail(detail),
    }
}

/// Serde's name for the expected type, in the manifest's terms.
fn expected_type(expected: &str) -> String {
    match expected {
        "i32" | "u32" | "i64" | "u64" | "i16" | "u16" | "u8" | "i8" => {
            format!("an integer ({expected})")
        }
        "f64" | "f32" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "an object".to_string(),
        "a boolean" | "a string" => expected.to_string(),
        "IntOrString" => "an integer or a string".to_string(),
        "Quantity" => "a quantity (a number or a string such as 500m or 1Gi)".to_string(),
        other if other.chars().next().is_some_and(char::is_uppercase) => {
            format!("an object ({other})")
        }
        other => other.to_string(),
    }
}

/// Prints an object as YAML, as `-o yaml` shows it.
pub fn to_yaml<T: Serialize>(v: &T) -> Result<String, EncodeError> {
    Ok(serde_yaml_ng::to_string(v)?)
}

/// Prints an object as indented JSON, as `-o json` shows it.
pub fn to_json<T: Serialize>(v: &T) -> Result<String, EncodeError> {
    Ok(serde_json::to_string_pretty(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MC1: &str = "apiVersion: v1
kind: Pod
metadata:
  name: mc1
  labels:
    creation_method: manual
    env: prod
spec:
  containers:
  - name: web
    image: busybox
    ports:
    - containerPort: 8080
  - name: sidecar
    image: busybox
";

    fn invalid_errors(err: ManifestError) -> (String, Vec<String>) {
        match err {
            ManifestError::Invalid { name, errors, .. } => {
                (name, errors.iter().map(ToString::to_string).collect())
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn decodes_the_seed_pod() {
        let docs = documents("mc1.yaml", MC1).unwrap();
        assert_eq!(docs.len(), 1);
        let p = pod("mc1.yaml", docs.into_iter().next().unwrap()).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("mc1"));
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels["creation_method"], "manual");
        assert_eq!(labels["env"], "prod");
        let spec = p.spec.unwrap();
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].container_port,
            8080
        );
    }

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let text = format!(
            "---\n{MC1}---\n---\n# only a comment\n---\n{}",
            MC1.replace("mc1", "mc2")
        );
        let docs = documents("x.yaml", &text).unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["mc1", "mc2"]);
        assert!(documents("empty.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn lists_expand_to_their_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: b}\n";
        let docs = documents("list.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["metadata"]["name"], "b");
    }

    #[test]
    fn json_streams_are_read() {
        let text = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}} {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"}}"#;
        let docs = documents("pods.json", text).unwrap();
        assert_eq!(docs.len(), 2);
        let err = documents("bad.json", "{\"apiVersion\": \"v1\",\n \"kind\": }").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.json: invalid JSON"), "{msg}");
        assert!(msg.contains("line 2 column"), "{msg}");
    }

    #[test]
    fn yaml_syntax_errors_name_line_and_column() {
        let err = documents(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ManifestError::Syntax { .. }));
        assert!(msg.starts_with("bad.yaml: invalid YAML"), "{msg}");
        assert!(
            msg.contains("line 5 column") || msg.contains("line 4 column"),
            "{msg}"
        );
        let err = documents("scalar.yaml", "just text\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "scalar.yaml: document 1: expected an object with apiVersion and kind, found a string"
        );
    }

    #[test]
    fn unknown_fields_are_all_reported_with_their_paths() {
        let text = MC1
            .replace(
                "    image: busybox\n    ports:",
                "    imagee: busybox\n    ports:",
            )
            .replace(
                "  - name: sidecar\n",
                "  - name: sidecar\n    imagePullPolicyy: Always\n",
            )
            .replace("spec:\n", "spec:\n  restartPolicyy: Never\n");
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        let (name, errs) = invalid_errors(pod("mc1.yaml", doc).unwrap_err());
        assert_eq!(name, "mc1");
        assert_eq!(
            errs,
            [
                "unknown field \"spec.containers[0].imagee\"",
                "unknown field \"spec.containers[1].imagePullPolicyy\"",
                "unknown field \"spec.restartPolicyy\"",
            ]
        );
    }

    #[test]
    fn unknown_field_error_reads_like_kubernetes() {
        let text = MC1.replace(
            "    image: busybox\n    ports:",
            "    imagee: busybox\n    ports:",
        );
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        let err = pod("mc1.yaml", doc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mc1.yaml: Pod \"mc1\" is invalid: unknown field \"spec.containers[0].imagee\""
        );
    }

    #[test]
    fn wrong_types_name_the_path_and_value() {
        let text = MC1.replace("containerPort: 8080", "containerPort: abc");
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        let (_, errs) = invalid_errors(pod("mc1.yaml", doc).unwrap_err());
        assert_eq!(
            errs,
            [
                "spec.containers[0].ports[0].containerPort: Invalid value: \"abc\": expected an integer (i32)"
            ]
        );
        let text = MC1.replace("    env: prod\n", "    env: [prod]\n");
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        let (_, errs) = invalid_errors(pod("mc1.yaml", doc).unwrap_err());
        assert_eq!(
            errs,
            ["metadata.labels[env]: Invalid value: \"[\\\"prod\\\"]\": expected a string"]
        );
    }

    #[test]
    fn kind_and_api_version_are_checked() {
        let doc = documents("x.yaml", "metadata:\n  name: x\n")
            .unwrap()
            .remove(0);
        let (_, errs) = invalid_errors(pod("x.yaml", doc).unwrap_err());
        assert_eq!(errs, ["apiVersion: Required value", "kind: Required value"]);
        let doc = documents("x.yaml", "apiVersion: apps/v1\nkind: Deployment\n")
            .unwrap()
            .remove(0);
        match pod("x.yaml", doc).unwrap_err() {
            ManifestError::UnsupportedKind {
                api_version, kind, ..
            } => {
                assert_eq!(
                    (api_version.as_str(), kind.as_str()),
                    ("apps/v1", "Deployment")
                );
            }
            other => panic!("expected UnsupportedKind, got {other:?}"),
        }
    }

    #[test]
    fn yaml_1_1_octal_file_modes_are_read_as_kubernetes_does() {
        let text = format!(
            "{MC1}  volumes:\n  - name: s\n    secret:\n      secretName: s\n      defaultMode: 0400\n"
        );
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        let p = pod("mc1.yaml", doc).unwrap();
        let mode = p.spec.unwrap().volumes.unwrap()[0]
            .secret
            .as_ref()
            .unwrap()
            .default_mode;
        assert_eq!(mode, Some(0o400));
        let text = MC1.replace("    env: prod\n", "    env: prod\n    mode: '0644'\n");
        let doc = documents("mc1.yaml", &text).unwrap().remove(0);
        assert_eq!(
            pod("mc1.yaml", doc).unwrap().metadata.labels.unwrap()["mode"],
            "0644"
        );
    }

    #[test]
    fn yaml_merge_keys_and_numeric_keys() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: m\n  labels:\n    1: one\nspec:\n  containers:\n  - &base\n    name: a\n    image: busybox\n  - <<: *base\n    name: b\n";
        let doc = documents("m.yaml", text).unwrap().remove(0);
        let p = pod("m.yaml", doc).unwrap();
        assert_eq!(p.metadata.labels.unwrap()["1"], "one");
        let spec = p.spec.unwrap();
        assert_eq!(spec.containers[1].name, "b");
        assert_eq!(spec.containers[1].image.as_deref(), Some("busybox"));
    }

    #[test]
    fn yaml_round_trip() {
        let doc = documents("mc1.yaml", MC1).unwrap().remove(0);
        let p = pod("mc1.yaml", doc).unwrap();
        let yaml = to_yaml(&p).unwrap();
        assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\n"), "{yaml}");
        let again = pod(
            "again.yaml",
            documents("again.yaml", &yaml).unwrap().remove(0),
        )
        .unwrap();
        assert_eq!(again, p);
        let json = to_json(&p).unwrap();
        let again = pod(
            "again.json",
            documents("again.json", &json).unwrap().remove(0),
        )
        .unwrap();
        assert_eq!(again, p);
    }
}
