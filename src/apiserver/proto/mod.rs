//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into the
//! JSON object a JSON client would have sent for the same Go struct.
//!
//! kubectl's typed clients (`create namespace|configmap|secret|deployment|job|cronjob|service`,
//! `create token`, `autoscale`, `debug node/…`) send protobuf; everything else it sends is JSON.
//! Decoding to JSON at the edge lets every handler after `decode_body` stay JSON-only.
//!
//! Owns: the wire reader ([`wire`]), the field tables ([`schema`], `schema.txt`) and the JSON
//! mapping ([`decode`]). Must not touch: routing, content negotiation of responses (they stay
//! JSON, which kubectl accepts), defaulting and validation (the REST layer's, as for JSON).
//!
//! The JSON follows Go's `encoding/json` on the decoded struct: fields that Go would omit
//! (zero values of non-pointer `omitempty` fields) are dropped even though proto2 encoders
//! always write them, so `metadata.namespace: ""` never reaches the server; pointer fields keep
//! their zero values (`replicas: 0`); fields not on the wire are not invented.

pub mod decode;
pub mod schema;
pub mod wire;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::apiserver::ApiError;
use decode::{Decoder, Problem};

/// The media type this module decodes.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decodes a `application/vnd.kubernetes.protobuf` body (the 4-byte magic `k8s\0` then a
/// `runtime.Unknown` message: typeMeta{apiVersion, kind}, raw, contentEncoding, contentType)
/// into the JSON object a JSON client would have sent, apiVersion and kind included.
///
/// Malformed bytes are a 400; a well-formed body of a kind without a table is a 415 naming the
/// kind, so the client can fall back to JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let schema = schema::schema()
        .map_err(|e| ApiError::internal(format!("protobuf schema table is broken: {e}")))?;
    Decoder { schema }
        .envelope(body, 0)
        .map_err(|e| match e.problem {
            Problem::Unsupported(_) => ApiError::unsupported_media_type(e.to_string()),
            _ => ApiError::bad_request(format!("invalid protobuf body: {e}")),
        })
}
