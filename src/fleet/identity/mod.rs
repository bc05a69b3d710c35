//! Node identities: join tokens, client certificates from the hub's CA, revocation (in progress).
