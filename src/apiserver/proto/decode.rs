//! From protobuf messages to the JSON a JSON client would have sent: the `runtime.Unknown`
//! envelope, messages by the schema's tables, and the types whose JSON form is not their wire
//! form (Time, MicroTime, Duration, Quantity, IntOrString, RawExtension, FieldsV1).
//!
//! Owns: the JSON shape of every decoded value and the limits that keep hostile input cheap
//! (nesting depth). Must not touch: HTTP, ApiError (mod.rs maps errors), defaulting or
//! validation of the result (the REST layer does both, exactly as for JSON bodies).

use base64::Engine;
use serde_json::{Map, Number, Value};
use thiserror::Error;

use super::schema::{Field, Kind, Schema, Shape, root};
use super::wire::{Reader, WireError, WireValue};

/// `k8s\0`: the prefix of every Kubernetes protobuf body, before the `runtime.Unknown`.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nested messages allowed in one body. Real objects stay below 15 (CronJob → … → pod affinity
/// → label selector); the limit stops a crafted body from recursing until the stack overflows.
pub const MAX_DEPTH: usize = 32;

/// Go's zero `time.Time` as Unix seconds (0001-01-01T00:00:00Z); Go prints it as `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Problem {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("nested deeper than {MAX_DEPTH} messages")]
    TooDeep,
    #[error("wire type {got} where {expected} was expected")]
    WireType {
        got: &'static str,
        expected: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    /// Valid protobuf we have no table for (kind, encoding): a 415, not a 400.
    #[error("{0}")]
    Unsupported(String),
}

/// A problem and where in the object it is (`spec.template.spec.containers[0].ports`).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{}{problem}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DecodeError {
    pub path: String,
    pub problem: Problem,
}

impl DecodeError {
    /// Prefixes the path with the enclosing field (errors are built innermost first).
    fn at(mut self, segment: &str) -> DecodeError {
        self.path = match (self.path.is_empty(), self.path.starts_with('[')) {
            (true, _) => segment.to_string(),
            (false, true) => format!("{segment}{}", self.path),
            (false, false) => format!("{segment}.{}", self.path),
        };
        self
    }
}

impl<T: Into<Problem>> From<T> for DecodeError {
    fn from(p: T) -> DecodeError {
        DecodeError {
            path: String::new(),
            problem: p.into(),
        }
    }
}

fn invalid(message: impl Into<String>) -> DecodeError {
    Problem::Invalid(message.into()).into()
}

fn wire_type(got: &WireValue<'_>, expected: &'static str) -> DecodeError {
    Problem::WireType {
        got: got.type_name(),
        expected,
    }
    .into()
}

fn bytes<'a>(v: WireValue<'a>) -> Result<&'a [u8], DecodeError> {
    match v {
        WireValue::Bytes(b) => Ok(b),
        other => Err(wire_type(&other, "length-delimited")),
    }
}

fn varint(v: WireValue<'_>) -> Result<u64, DecodeError> {
    match v {
        WireValue::Varint(n) => Ok(n),
        other => Err(wire_type(&other, "varint")),
    }
}

pub struct Decoder<'s> {
    pub schema: &'s Schema,
}

impl Decoder<'_> {
    /// A whole body: magic, then `runtime.Unknown{typeMeta{apiVersion, kind}, raw,
    /// contentEncoding, contentType}` whose `raw` is the object's own message.
    pub fn envelope(&self, body: &[u8], depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(Problem::TooDeep.into());
        }
        let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
            invalid("the body does not start with the Kubernetes protobuf prefix")
        })?;
        let (mut api_version, mut kind) = (String::new(), String::new());
        let (mut raw, mut encoding, mut content_type): (&[u8], String, String) =
            (&[], String::new(), String::new());
        let mut r = Reader::new(rest);
        while let Some((number, value)) = r.field()? {
            match number {
                1 => {
                    let mut tm = Reader::new(bytes(value)?);
                    while let Some((n, v)) = tm.field()? {
                        match n {
                            1 => api_version = string(v)?,
                            2 => kind = string(v)?,
                            _ => {}
                        }
                    }
                }
                2 => raw = bytes(value)?,
                3 => encoding = string(value)?,
                4 => content_type = string(value)?,
                _ => {}
            }
        }
        if !encoding.is_empty() {
            return Err(Problem::Unsupported(format!(
                "content encoding {encoding:?} is not supported"
            ))
            .into());
        }
        if kind.is_empty() {
            return Err(invalid("Object 'Kind' is missing in the protobuf envelope"));
        }
        let mut object = match content_type.as_str() {
            "" | "application/vnd.kubernetes.protobuf" => {
                let name = root(&api_version, &kind).ok_or_else(|| {
                    Problem::Unsupported(format!(
                        "no protobuf decoding for kind {kind:?} of {api_version:?}; send it as JSON"
                    ))
                })?;
                self.message(name, raw, depth + 1)?
            }
            // An envelope may carry JSON; Kubernetes accepts it, so do we.
            ct if ct.contains("json") => match serde_json::from_slice(raw) {
                Ok(Value::Object(m)) => m,
                _ => return Err(invalid("the envelope's JSON is not an object")),
            },
            other => {
                return Err(Problem::Unsupported(format!(
                    "envelope content type {other:?} is not supported"
                ))
                .into());
            }
        };
        object.insert("apiVersion".into(), Value::String(api_version));
        object.insert("kind".into(), Value::String(kind));
        Ok(Value::Object(object))
    }

    /// One message by its table. Field numbers the table lacks are skipped, as protobuf
    /// requires: a newer kubectl may send fields we do not know yet.
    pub fn message(
        &self,
        name: &str,
        data: &[u8],
        depth: usize,
    ) -> Result<Map<String, Value>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(Problem::TooDeep.into());
        }
        let fields = self
            .schema
            .message(name)
            .ok_or_else(|| invalid(format!("no table for message {name}")))?;
        let mut out = Map::new();
        let mut r = Reader::new(data);
        while let Some((number, value)) = r.field()? {
            let Some(field) = fields.iter().find(|f| f.number == number) else {
                continue;
            };
            let segment = if field.inline { name } else { field.json };
            self.field(field, value, depth, &mut out)
                .map_err(|e| e.at(segment))?;
        }
        Ok(out)
    }

    fn field(
        &self,
        field: &Field,
        value: WireValue<'_>,
        depth: usize,
        out: &mut Map<String, Value>,
    ) -> Result<(), DecodeError> {
        match field.shape {
            Shape::One if field.inline => {
                let Kind::Message(m) = field.kind else {
                    return Err(invalid("only messages can be inlined"));
                };
                // A repeated occurrence merges into what is there, as protobuf merges messages.
                out.extend(self.message(m, bytes(value)?, depth + 1)?);
            }
            Shape::One => {
                let v = self.value(field.kind, value, depth)?;
                // Go's encoder drops these; so must we, or `"namespace": ""` would reach code
                // written for JSON bodies where the field is simply absent.
                if field.omit_zero && is_zero(&v) {
                    out.remove(field.json);
                } else {
                    out.insert(field.json.to_string(), v);
                }
            }
            Shape::Repeated => {
                // Taken out and put back, so later occurrences append to earlier ones.
                let mut list = match out.remove(field.json) {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                match (field.kind, value) {
                    // Packed numbers: proto2 encoders don't pack by default, but a parser must
                    // accept both forms.
                    (Kind::Int | Kind::Bool, WireValue::Bytes(b)) => {
                        let mut r = Reader::new(b);
                        while !r.is_empty() {
                            let n = r.varint()?;
                            list.push(scalar(field.kind, WireValue::Varint(n))?);
                        }
                    }
                    (Kind::Double, WireValue::Bytes(b)) => {
                        for chunk in b.chunks(8) {
                            let mut a = [0u8; 8];
                            if chunk.len() != 8 {
                                return Err(WireError::Truncated.into());
                            }
                            a.copy_from_slice(chunk);
                            let n = u64::from_le_bytes(a);
                            list.push(scalar(Kind::Double, WireValue::Fixed64(n))?);
                        }
                    }
                    (kind, value) => {
                        let i = list.len();
                        let v = self
                            .value(kind, value, depth)
                            .map_err(|e| e.at(&format!("[{i}]")))?;
                        list.push(v);
                    }
                }
                out.insert(field.json.to_string(), Value::Array(list));
            }
            Shape::Map | Shape::MapOfLists => {
                let (key, v) = self.entry(field, bytes(value)?, depth)?;
                match out
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    Value::Object(m) => {
                        m.insert(key, v);
                    }
                    other => *other = Value::Object(Map::from_iter([(key, v)])),
                }
            }
        }
        Ok(())
    }

    /// A map entry message `{key = 1, value = 2}`; an absent value is the zero value.
    fn entry(
        &self,
        field: &Field,
        data: &[u8],
        depth: usize,
    ) -> Result<(String, Value), DecodeError> {
        let mut key = String::new();
        let mut value = None;
        let mut r = Reader::new(data);
        while let Some((n, v)) = r.field()? {
            match n {
                1 => key = string(v)?,
                2 => value = Some(v),
                _ => {}
            }
        }
        let decoded = self
            .entry_value(field, value, depth)
            .map_err(|e| e.at(&format!("[{key}]")))?;
        Ok((key, decoded))
    }

    fn entry_value(
        &self,
        field: &Field,
        value: Option<WireValue<'_>>,
        depth: usize,
    ) -> Result<Value, DecodeError> {
        match (field.shape, value) {
            (Shape::MapOfLists, None) => Ok(Value::Array(Vec::new())),
            (Shape::MapOfLists, Some(v)) => {
                let mut items = Vec::new();
                let mut r = Reader::new(bytes(v)?);
                while let Some((n, item)) = r.field()? {
                    if n == 1 {
                        items.push(self.value(field.kind, item, depth)?);
                    }
                }
                Ok(Value::Array(items))
            }
            (_, Some(v)) => self.value(field.kind, v, depth),
            (_, None) => self.value(field.kind, zero_wire(field.kind), depth),
        }
    }

    pub(super) fn value(
        &self,
        kind: Kind,
        v: WireValue<'_>,
        depth: usize,
    ) -> Result<Value, DecodeError> {
        match kind {
            Kind::Message(m) => Ok(Value::Object(self.message(m, bytes(v)?, depth + 1)?)),
            Kind::Time => time(bytes(v)?, false),
            Kind::MicroTime => time(bytes(v)?, true),
            Kind::Duration => {
                let nanos = only_field(bytes(v)?, 1)?.map(varint).transpose()?;
                Ok(Value::String(go_duration(nanos.unwrap_or(0) as i64)))
            }
            Kind::Quantity => {
                // The zero Quantity prints as "0" in Go.
                let s = only_field(bytes(v)?, 1)?.map(string).transpose()?;
                Ok(Value::String(
                    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "0".into()),
                ))
            }
            Kind::IntOrString => int_or_string(bytes(v)?),
            Kind::Raw | Kind::FieldsV1 => {
                let raw = only_field(bytes(v)?, 1)?.map(bytes).transpose()?;
                self.embedded(raw.unwrap_or_default(), depth)
            }
            _ => scalar(kind, v),
        }
    }

    /// RawExtension and FieldsV1 carry the embedded object's own bytes: JSON from every real
    /// client, though a nested protobuf envelope is decoded too.
    fn embedded(&self, raw: &[u8], depth: usize) -> Result<Value, DecodeError> {
        if raw.is_empty() {
            return Ok(Value::Null);
        }
        if raw.starts_with(MAGIC) {
            return self.envelope(raw, depth + 1);
        }
        serde_json::from_slice(raw)
            .map_err(|e| invalid(format!("embedded object is not JSON: {e}")))
    }
}

fn string(v: WireValue<'_>) -> Result<String, DecodeError> {
    // Go's JSON encoder replaces invalid UTF-8 with U+FFFD rather than failing; so do we.
    Ok(String::from_utf8_lossy(bytes(v)?).into_owned())
}

fn scalar(kind: Kind, v: WireValue<'_>) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Str => Value::String(string(v)?),
        // int32 negatives arrive sign-extended to 64 bits, so one cast serves both widths.
        Kind::Int => Value::Number(Number::from(varint(v)? as i64)),
        Kind::Bool => Value::Bool(varint(v)? != 0),
        Kind::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes(v)?)),
        Kind::Double => {
            match v {
                WireValue::Fixed64(bits) => Number::from_f64(f64::from_bits(bits))
                    .map(Value::Number)
                    .ok_or_else(|| invalid("a float that JSON cannot carry (NaN or infinite)"))?,
                other => return Err(wire_type(&other, "fixed64")),
            }
        }
        other => return Err(invalid(format!("{other:?} is not a scalar"))),
    })
}

/// The wire form of an absent map value, so it decodes to the kind's zero value.
fn zero_wire(kind: Kind) -> WireValue<'static> {
    match kind {
        Kind::Int | Kind::Bool => WireValue::Varint(0),
        Kind::Double => WireValue::Fixed64(0),
        _ => WireValue::Bytes(&[]),
    }
}

/// The last occurrence of field `number` in a small wrapper message, others skipped.
fn only_field(data: &[u8], number: u32) -> Result<Option<WireValue<'_>>, DecodeError> {
    let mut found = None;
    let mut r = Reader::new(data);
    while let Some((n, v)) = r.field()? {
        if n == number {
            found = Some(v);
        }
    }
    Ok(found)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// `metav1.Time` / `MicroTime`: `{seconds = 1, nanos = 2}`. An empty message is Go's zero time,
/// which Go prints as `null`. Time drops nanos, as Kubernetes' own Unmarshal does.
fn time(data: &[u8], micro: bool) -> Result<Value, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut r = Reader::new(data);
    let mut any = false;
    while let Some((n, v)) = r.field()? {
        match n {
            1 => seconds = varint(v)? as i64,
            2 => nanos = varint(v)? as i64,
            _ => continue,
        }
        any = true;
    }
    if !any || (seconds == GO_ZERO_TIME && nanos == 0) {
        return Ok(Value::Null);
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(invalid(format!("nanos {nanos} out of range")));
    }
    let ts = jiff::Timestamp::new(seconds, 0)
        .map_err(|_| invalid(format!("time {seconds}s is out of range")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(Value::String(if micro {
        format!("{base}.{:06}Z", nanos / 1000)
    } else {
        format!("{base}Z")
    }))
}

/// `intstr.IntOrString`: `{type = 1 (0 int, 1 string), intVal = 2, strVal = 3}`.
fn int_or_string(data: &[u8]) -> Result<Value, DecodeError> {
    let (mut ty, mut int, mut text) = (0u64, 0i64, String::new());
    let mut r = Reader::new(data);
    while let Some((n, v)) = r.field()? {
        match n {
            1 => ty = varint(v)?,
            // int32 on the wire: truncating matches Go's decoder for out-of-range input.
            2 => int = i64::from(varint(v)? as i32),
            3 => text = string(v)?,
            _ => {}
        }
    }
    match ty {
        0 => Ok(Value::Number(Number::from(int))),
        1 => Ok(Value::String(text)),
        other => Err(invalid(format!(
            "IntOrString type {other} is neither 0 nor 1"
        ))),
    }
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (unit, div) = match u {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        format!("{}{unit}", decimal(u, div))
    } else {
        let hours = u / 3_600_000_000_000;
        let minutes = u % 3_600_000_000_000 / 60_000_000_000;
        let seconds = decimal(u % 60_000_000_000, 1_000_000_000);
        match (hours, minutes) {
            (0, 0) => format!("{seconds}s"),
            (0, m) => format!("{m}m{seconds}s"),
            (h, m) => format!("{h}h{m}m{seconds}s"),
        }
    };
    format!("{sign}{body}")
}

/// `value / div` with the remainder as trailing-zero-free decimals (`1500, 1000` → `1.5`).
fn decimal(value: u64, div: u64) -> String {
    let (whole, frac) = (value / div, value % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}
