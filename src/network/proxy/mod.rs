//! (placeholder: filled by the proxy work)
