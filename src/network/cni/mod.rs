//! (placeholder: filled by the cni work)
