//! Defaults the API server applies on create.
// STUB: replaced by the api helper.
use super::Pod;

pub fn pod(pod: &mut Pod) {
    let _ = pod;
}
