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
    pub fn invalid(path: impl Into<String>, value: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            value: Some(value.into()),
            detail: detail.into(),
            ..Self::new(path, FieldErrorKind::Invalid)
        }
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
        if self.kind == FieldErrorKind::Unknown {
            return write!(f, "{}: unknown field \"{}\"", parent(&self.path), leaf(&self.path));
        }
        write!(f, "{}: {}", self.path, self.kind.as_str())?;
        if let Some(v) = &self.value {
            write!(f, ": \"{v}\"")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "<root>",
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
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
    #[error("{file}: unsupported kind {kind:?} (apiVersion {api_version:?}); only v1 Pod is accepted here")]
    UnsupportedKind {
        file: String,
        api_version: String,
        kind: String,
    },
}
