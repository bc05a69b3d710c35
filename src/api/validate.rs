//! Validation as the API server does it, errors naming the field path.
// STUB: replaced by the api helper.
use super::{FieldErrors, Pod};

pub fn pod(pod: &Pod) -> Result<(), FieldErrors> {
    let _ = pod;
    Ok(())
}
