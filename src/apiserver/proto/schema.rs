//! The field tables: which protobuf field number of which Kubernetes message carries which JSON
//! field, and of what type.
//!
//! Owns: parsing `schema.txt` (once, on first use) and the mapping from a body's
//! `apiVersion`/`kind` to its root message. Must not touch: the wire format or JSON building
//! (`wire.rs`, `decode.rs`).
//!
//! The table is text rather than Rust literals because it is data: ~270 messages, one line
//! each, reviewable and extendable without recompiling macros; a test proves it parses and that
//! every referenced message exists, so the parse cannot fail at run time in a tested build.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("schema.txt");

/// What one value (one element, for repeated fields and maps) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// `[]byte` in Go: base64 in JSON.
    Bytes,
    Double,
    /// `metav1.Time`: `{seconds, nanos}` on the wire, RFC 3339 to the second in JSON.
    Time,
    /// `metav1.MicroTime`: as Time, with six fractional digits in JSON.
    MicroTime,
    /// `metav1.Duration`: nanoseconds on the wire, Go's `1h2m3s` in JSON.
    Duration,
    /// `resource.Quantity`: a message holding the string form.
    Quantity,
    /// `intstr.IntOrString`: `{type, intVal, strVal}` on the wire, a number or string in JSON.
    IntOrString,
    /// `runtime.RawExtension`: embedded bytes, which are JSON (or a nested protobuf envelope).
    Raw,
    /// `metav1.FieldsV1`: embedded JSON bytes.
    FieldsV1,
    Message(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One,
    Repeated,
    /// `map<string, kind>`: repeated entry messages `{key = 1, value = 2}`.
    Map,
    /// `map<string, Wrapper>` where Wrapper is `{repeated kind items = 1}`, a JSON array in JSON
    /// (Go's named slice types such as `AttestationValue`).
    MapOfLists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub number: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub shape: Shape,
    /// Drop the value when it is the zero value: Go's encoder would (omitempty on a
    /// non-pointer field), so the JSON path never sees it either.
    pub omit_zero: bool,
    /// An embedded Go struct: its fields are the parent's in JSON.
    pub inline: bool,
}

pub struct Schema {
    messages: HashMap<&'static str, Vec<Field>>,
}

impl Schema {
    /// The fields of a message, or None if the table has no such message.
    pub fn message(&self, name: &str) -> Option<&[Field]> {
        self.messages.get(name).map(Vec::as_slice)
    }
}

/// The parsed table; an `Err` only if `schema.txt` itself is broken, which tests rule out.
pub fn schema() -> Result<&'static Schema, &'static str> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| parse(TABLE))
        .as_ref()
        .map_err(String::as_str)
}

/// The package prefix of the table's messages for each `apiVersion` we decode.
const GROUP_VERSIONS: &[(&str, &str)] = &[
    ("v1", "core"),
    ("apps/v1", "apps"),
    ("batch/v1", "batch"),
    ("autoscaling/v1", "asv1"),
    ("autoscaling/v2", "asv2"),
    ("policy/v1", "policy"),
    ("authentication.k8s.io/v1", "authn"),
    ("meta.k8s.io/v1", "meta"),
];

/// Kinds decoded as a body in their own right. The table also holds everything reachable from
/// them; a kind outside this list is refused even if a message of that name exists, so a
/// sub-message (say `core.PodSpec`) cannot pose as a top-level object.
const ROOTS: &[&str] = &[
    "core.Namespace",
    "core.Pod",
    "core.Node",
    "core.Event",
    "core.ConfigMap",
    "core.Secret",
    "core.Service",
    "core.ServiceAccount",
    "core.Binding",
    "apps.Deployment",
    "apps.ReplicaSet",
    "apps.DaemonSet",
    "apps.StatefulSet",
    "batch.Job",
    "batch.CronJob",
    "asv1.Scale",
    "asv1.HorizontalPodAutoscaler",
    "asv2.HorizontalPodAutoscaler",
    "policy.Eviction",
    "authn.TokenRequest",
    "meta.DeleteOptions",
];

/// Meta kinds that Kubernetes registers in every group-version (a typed client may label a
/// `DeleteOptions` body `v1` or `apps/v1` as well as `meta.k8s.io/v1`).
const META_EVERYWHERE: &[&str] = &["DeleteOptions"];

/// The root message for a body's `apiVersion` and `kind`.
pub fn root(api_version: &str, kind: &str) -> Option<&'static str> {
    if META_EVERYWHERE.contains(&kind) {
        return ROOTS.iter().copied().find(|r| *r == format!("meta.{kind}"));
    }
    let (_, prefix) = GROUP_VERSIONS.iter().find(|(gv, _)| *gv == api_version)?;
    let name = format!("{prefix}.{kind}");
    ROOTS.iter().copied().find(|r| *r == name)
}

fn parse(text: &'static str) -> Result<Schema, String> {
    let mut messages = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let fields = words
            .map(parse_field)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("schema.txt line {}: {name}: {e}", i + 1))?;
        if messages.insert(name, fields).is_some() {
            return Err(format!("schema.txt line {}: {name} twice", i + 1));
        }
    }
    // Every message a field names must exist, so decoding never meets a dangling reference.
    for (name, fields) in &messages {
        for f in fields {
            if let Kind::Message(m) = f.kind {
                if !messages.contains_key(m) {
                    return Err(format!("{name}.{} names unknown message {m}", f.json));
                }
            }
        }
    }
    for r in ROOTS {
        if !messages.contains_key(r) {
            return Err(format!("root {r} has no table"));
        }
    }
    Ok(Schema { messages })
}

fn parse_field(word: &'static str) -> Result<Field, String> {
    let mut parts = word.splitn(3, ':');
    let (Some(number), Some(json), Some(mut ty)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("field `{word}` is not number:name:type"));
    };
    let number: u32 = number
        .parse()
        .map_err(|_| format!("field `{word}`: bad number"))?;
    let mut omit_zero = false;
    let mut inline = false;
    loop {
        if let Some(rest) = ty.strip_suffix('?') {
            omit_zero = true;
            ty = rest;
        } else if let Some(rest) = ty.strip_suffix('^') {
            inline = true;
            ty = rest;
        } else {
            break;
        }
    }
    let (shape, base) = if let Some(rest) = ty.strip_prefix("{}*") {
        (Shape::MapOfLists, rest)
    } else if let Some(rest) = ty.strip_prefix("{}") {
        (Shape::Map, rest)
    } else if let Some(rest) = ty.strip_prefix('*') {
        (Shape::Repeated, rest)
    } else {
        (Shape::One, ty)
    };
    let kind = match base {
        "s" => Kind::Str,
        "i" => Kind::Int,
        "b" => Kind::Bool,
        "y" => Kind::Bytes,
        "f" => Kind::Double,
        "time" => Kind::Time,
        "mtime" => Kind::MicroTime,
        "dur" => Kind::Duration,
        "qty" => Kind::Quantity,
        "ios" => Kind::IntOrString,
        "raw" => Kind::Raw,
        "fields" => Kind::FieldsV1,
        m if m.contains('.') => Kind::Message(m),
        other => return Err(format!("field `{word}`: unknown type `{other}`")),
    };
    if inline && (shape != Shape::One || !matches!(kind, Kind::Message(_))) {
        return Err(format!(
            "field `{word}`: only a single message can be inlined"
        ));
    }
    Ok(Field {
        number,
        json,
        kind,
        shape,
        omit_zero,
        inline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_message_exists() {
        let s = schema().map_err(str::to_string);
        assert!(s.is_ok(), "{:?}", s.err());
    }

    #[test]
    fn fields_parse_with_shapes_and_flags() {
        let f = parse_field("11:labels:{}s").ok();
        assert_eq!(f.map(|f| (f.shape, f.kind)), Some((Shape::Map, Kind::Str)));
        let f = parse_field("2:_:core.VolumeSource^").ok();
        assert_eq!(
            f.map(|f| (f.inline, f.kind)),
            Some((true, Kind::Message("core.VolumeSource")))
        );
        let f = parse_field("7:generation:i?").ok();
        assert_eq!(f.map(|f| f.omit_zero), Some(true));
        assert!(parse_field("x:y:s").is_err());
        assert!(parse_field("1:y:nope").is_err());
        assert!(parse_field("1:_:*core.Pod^").is_err());
    }

    #[test]
    fn roots_by_api_version_and_kind() {
        assert_eq!(root("apps/v1", "Deployment"), Some("apps.Deployment"));
        assert_eq!(root("v1", "DeleteOptions"), Some("meta.DeleteOptions"));
        assert_eq!(root("autoscaling/v1", "Scale"), Some("asv1.Scale"));
        assert_eq!(root("v1", "PodSpec"), None);
        assert_eq!(root("apps/v1beta1", "Deployment"), None);
    }
}
