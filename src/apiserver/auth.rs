//! Bearer-token authentication and the one authorization rule the hub has: read-only tokens.
//!
//! Tokens live in `DATA_DIR/tokens.csv`, kube-apiserver's static token file format
//! (`token,user,uid,"group1,group2"`), so the file can also be handed to a real kube-apiserver.
//! The first start writes one admin token (user `admin`, group `system:masters`). A token whose
//! groups include [`READ_ONLY_GROUP`] may only get, list and watch; everything else
//! authenticated may do anything (no RBAC yet; node tokens in `system:nodes` are full clients
//! until node authorization exists).
//!
//! Owns: `DATA_DIR/tokens.csv`, the `Authorization` header, the [`User`] request extension, 401
//! and 403 answers. Must not touch: what handlers do with the user, nor anything TLS.

mod middleware;
mod request;
mod tokens;

use std::path::PathBuf;

pub use middleware::middleware;
pub use tokens::Tokens;

/// Tokens in this group may only read: get, list and watch (and the self-review POSTs that
/// `kubectl auth can-i` / `kubectl auth whoami` send). Exec, attach and port-forward count as
/// writes, whatever method they arrive with.
pub const READ_ONLY_GROUP: &str = "edgepod:read-only";
/// Kubernetes' superuser group, which the admin token carries.
pub const ADMIN_GROUP: &str = "system:masters";
/// The group node tokens carry.
pub const NODES_GROUP: &str = "system:nodes";
/// The name requests without credentials get on the anonymous paths, as in Kubernetes.
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Who made a request; the middleware puts it into the request's extensions, so a handler can
/// take `Extension<User>` (every request that reaches a handler has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: ANONYMOUS_USER.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Read-only tokens and anonymous requests may only read.
    pub fn is_read_only(&self) -> bool {
        self.in_group(READ_ONLY_GROUP) || self.in_group(UNAUTHENTICATED_GROUP)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    InvalidInput(String),
    #[error("the operating system's random number generator failed")]
    Random,
}
