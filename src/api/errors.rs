//! Field errors shaped like the API server's (`spec.containers[1].name: Required value`).

use std::fmt;

/// What is wrong with a field, worded as Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    /// A field the schema does not know (strict decoding).
    Unknown,
    TooLong,
    /// A reference to something that does not exist (a volume mount naming no volume).
    NotFound,
}

impl FieldErrorKind {
    fn as_str(&self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Unknown => "unknown field",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::NotFound => "Not found",
        }
    }
}

/// One invalid field: its path, what is wrong, the offending value if any, and a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub kind: FieldErrorKind,
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, kind: FieldErrorKind) -> Self {
        FieldError {
            path: path.into(),
            kind,
            value: None,
            detail: String::new(),
        }
    }
    pub fn required(path: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Required)
    }
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            value: Some(value.into()),
            detail: detail.into(),
            ..Self::new(path, FieldErrorKind::Invalid)
        }
    }
    pub fn duplicate(path: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Duplicate).with_value(value)
    }
    pub fn not_found(path: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::NotFound).with_value(value)
    }
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Forbidden).with_detail(detail)
    }
    /// A field the schema does not know; `path` is the full path of the field itself.
    pub fn unknown(path: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Unknown)
    }
    /// A value outside a fixed set; the detail lists the set as the API server does.
    pub fn not_supported(
        path: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|v| format!("{v:?}")).collect();
        Self::new(path, FieldErrorKind::NotSupported)
            .with_value(value)
            .with_detail(format!("supported values: {}", list.join(", ")))
    }
    pub fn too_long(path: impl Into<String>, max_bytes: usize) -> Self {
        Self::new(path, FieldErrorKind::TooLong)
            .with_detail(format!("may not be more than {max_bytes} bytes"))
    }
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Kubernetes' strict decoding names the whole path: `unknown field "spec.containers[0].foo"`.
        if self.kind == FieldErrorKind::Unknown {
            return write!(f, "unknown field \"{}\"", self.path);
        }
        write!(f, "{}: {}", self.path, self.kind.as_str())?;
        // Quoted and escaped like Go's %q, which the API server uses for values.
        if let Some(v) = &self.value {
            write!(f, ": {v:?}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every field error found in one object, reported together as the API server does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.0.extend(errors);
    }
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        if parts.len() == 1 {
            write!(f, "{}", parts[0])
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

/// A value could not be printed as YAML or JSON (for `-o yaml`/`-o json`).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("cannot encode as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why a manifest could not become objects. Every variant names the file; field errors also
/// name the object.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {kind} \"{name}\" is invalid: {errors}")]
    Invalid {
        file: String,
        kind: String,
        name: String,
        errors: FieldErrors,
    },
    #[error(
        "{file}: unsupported kind {kind:?} (apiVersion {api_version:?}); only v1 Pod is accepted here"
    )]
    UnsupportedKind {
        file: String,
        api_version: String,
        kind: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_read_like_the_api_server() {
        assert_eq!(
            FieldError::required("spec.containers[1].name").to_string(),
            "spec.containers[1].name: Required value"
        );
        assert_eq!(
            FieldError::not_found("spec.containers[0].volumeMounts[0].name", "data").to_string(),
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\""
        );
        assert_eq!(
            FieldError::unknown("spec.containers[0].imagee").to_string(),
            "unknown field \"spec.containers[0].imagee\""
        );
        assert_eq!(
            FieldError::invalid("metadata.labels", "a\"b", "bad").to_string(),
            "metadata.labels: Invalid value: \"a\\\"b\": bad"
        );
    }

    #[test]
    fn several_errors_are_bracketed() {
        let mut errs = FieldErrors::default();
        errs.push(FieldError::required("a"));
        errs.push(FieldError::duplicate("b", "x"));
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs.to_string(),
            "[a: Required value, b: Duplicate value: \"x\"]"
        );
    }
}
