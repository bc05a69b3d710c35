//! `DATA_DIR/tokens.csv`: reading, creating and adding tokens, and looking one up.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::{ADMIN_GROUP, AuthError, User};
use crate::apiserver::tls::files::{PRIVATE, readable_by_others, write_atomic};

/// The token file, in memory. Lookups compare SHA-256 digests of tokens in constant time, all of
/// them every time, so the answer's timing says nothing about how close a guess was.
pub struct Tokens {
    path: PathBuf,
    entries: RwLock<Vec<Entry>>,
}

#[derive(Clone)]
struct Entry {
    /// Kept to rewrite the file when a token is added.
    token: String,
    digest: [u8; 32],
    user: User,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<String> = self.read().iter().map(|e| e.user.name.clone()).collect();
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .field("users", &users)
            .finish()
    }
}

impl Tokens {
    /// Reads `data_dir/tokens.csv`, or creates it holding one new admin token.
    pub fn load_or_create(data_dir: &Path) -> Result<Tokens, AuthError> {
        let path = data_dir.join("tokens.csv");
        if path.exists() {
            return Tokens::load(&path);
        }
        let tokens = Tokens {
            path,
            entries: RwLock::new(Vec::new()),
        };
        tokens.add("admin", &[ADMIN_GROUP])?;
        tracing::info!(path = %tokens.path.display(), "created the admin token");
        Ok(tokens)
    }

    /// Reads a token file as kube-apiserver does: at least three columns, the optional fourth a
    /// comma-separated group list; a record with an empty token is skipped; of duplicate tokens
    /// the last wins.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if readable_by_others(path) {
            tracing::warn!(path = %path.display(), "the token file is readable by other users; chmod 600 it");
        }
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let parse_error = |reason: String| AuthError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let fields = split_csv(line).map_err(parse_error)?;
            if fields.len() < 3 {
                return Err(parse_error(format!(
                    "must have at least 3 columns (token, user name, user uid), found {}",
                    fields.len()
                )));
            }
            if fields[0].is_empty() {
                tracing::warn!(path = %path.display(), line = i + 1, "skipping a record with an empty token");
                continue;
            }
            let groups = match fields.get(3) {
                Some(g) if !g.is_empty() => g.split(',').map(str::to_string).collect(),
                _ => Vec::new(),
            };
            let entry = Entry::new(
                fields[0].clone(),
                User {
                    name: fields[1].clone(),
                    uid: fields[2].clone(),
                    groups,
                },
            );
            if let Some(old) = entries.iter_mut().find(|e| e.token == entry.token) {
                tracing::warn!(path = %path.display(), line = i + 1, "duplicate token; the later record wins");
                *old = entry;
            } else {
                entries.push(entry);
            }
        }
        Ok(Tokens {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // No early return: every entry is compared, whatever matched.
        for entry in self.read().iter() {
            if constant_time_eq(&entry.digest, &digest) {
                found = Some(entry.user.clone());
            }
        }
        found
    }

    /// Makes a token for `user` in `groups`, saves the file, and returns the token (64 hex
    /// digits: 32 bytes from the OS RNG). The uid is random too, so a name used again later is a
    /// different user to anything that recorded the uid.
    pub fn add(&self, user: &str, groups: &[&str]) -> Result<String, AuthError> {
        check_field("user name", user)?;
        for group in groups {
            check_field("group", group)?;
            if group.contains(',') {
                return Err(AuthError::InvalidInput(format!(
                    "group {group:?} contains a comma, which the token file uses between groups"
                )));
            }
        }
        let token = hex::encode(random_bytes::<32>()?);
        let uid = crate::api::names::uuid_v4(random_bytes::<16>()?);
        let entry = Entry::new(
            token.clone(),
            User {
                name: user.to_string(),
                uid,
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        );
        // Held across the write so two adds cannot each save a file missing the other's token.
        let mut entries = self.write();
        let mut updated = entries.clone();
        updated.push(entry);
        let text: String = updated.iter().map(Entry::to_csv).collect();
        write_atomic(&self.path, text.as_bytes(), PRIVATE).map_err(|source| AuthError::Io {
            path: self.path.clone(),
            source,
        })?;
        *entries = updated;
        Ok(token)
    }

    /// The first token of a `system:masters` user that is not read-only: what the admin
    /// kubeconfig carries.
    pub fn admin_token(&self) -> Option<String> {
        self.read()
            .iter()
            .find(|e| e.user.in_group(ADMIN_GROUP) && !e.user.is_read_only())
            .map(|e| e.token.clone())
    }

    /// A lock poisoned by a panicking writer still holds a consistent list (the writer replaces
    /// it only after saving), so its contents are used as they are.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Entry {
    fn new(token: String, user: User) -> Entry {
        Entry {
            digest: Sha256::digest(token.as_bytes()).into(),
            token,
            user,
        }
    }

    fn to_csv(&self) -> String {
        format!(
            "{},{},{},{}\n",
            csv_field(&self.token),
            csv_field(&self.user.name),
            csv_field(&self.user.uid),
            csv_field(&self.user.groups.join(","))
        )
    }
}

fn check_field(what: &str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(AuthError::InvalidInput(format!(
            "{what} {value:?} is empty or has control characters"
        )));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the compiler from turning the loop back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(bytes)
}

/// Quotes a field when CSV needs it (Go's encoding/csv reads it back the same).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) || value.starts_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// One CSV record on one line (RFC 4180 quoting; a quoted field may not span lines).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed on its line".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn csv_round_trips_kube_format() {
        assert_eq!(
            split_csv(r#"tok,alice,uid1,"system:masters,dev""#),
            Ok(vec![
                "tok".into(),
                "alice".into(),
                "uid1".into(),
                "system:masters,dev".into()
            ])
        );
        assert_eq!(
            split_csv("tok,bob,uid2"),
            Ok(vec!["tok".into(), "bob".into(), "uid2".into()])
        );
        assert_eq!(
            split_csv(r#""a""b",,"#),
            Ok(vec!["a\"b".into(), String::new(), String::new()])
        );
        assert!(split_csv(r#"tok,"open"#).is_err());
        assert!(split_csv(r#"t"ok,a,b"#).is_err());
        for value in ["plain", "a,b", "say \"hi\"", ""] {
            let line = csv_field(value);
            assert_eq!(split_csv(&line), Ok(vec![value.to_string()]), "{line}");
        }
    }

    #[test]
    fn creates_admin_then_reloads_and_adds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load_or_create(dir.path()).expect("create");
        let admin = tokens.admin_token().expect("admin token");
        assert_eq!(admin.len(), 64);
        assert!(admin.bytes().all(|b| b.is_ascii_hexdigit()));
        let path = dir.path().join("tokens.csv");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&format!("{admin},admin,")), "{text}");
        assert!(text.trim_end().ends_with(",system:masters"), "{text}");

        let user = tokens.authenticate(&admin).expect("admin authenticates");
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters"]);
        assert_eq!(user.uid.len(), 36);
        assert!(tokens.authenticate("nope").is_none());
        assert!(tokens.authenticate("").is_none());

        let viewer = tokens
            .add("viewer", &[super::super::READ_ONLY_GROUP, "team"])
            .expect("add");
        // A second start reads the same file and knows both.
        let again = Tokens::load_or_create(dir.path()).expect("reload");
        assert_eq!(again.admin_token().as_deref(), Some(admin.as_str()));
        let v = again.authenticate(&viewer).expect("viewer");
        assert_eq!(v.groups, vec!["edgepod:read-only", "team"]);
        assert!(v.is_read_only());
        assert!(!again.authenticate(&admin).expect("admin").is_read_only());
        assert!(tokens.add("", &[]).is_err());
        assert!(tokens.add("x", &["a,b"]).is_err());
        assert!(!format!("{tokens:?}").contains(&admin));
    }

    #[test]
    fn reads_hand_written_files_like_kube_apiserver() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(
            &path,
            "t1,alice,u1\n\n,skipped,u0\nt2,bob,u2,\"system:nodes,x\"\nt1,carol,u3,\n",
        )
        .expect("write");
        let tokens = Tokens::load(&path).expect("load");
        let carol = tokens.authenticate("t1").expect("t1");
        assert_eq!((carol.name.as_str(), carol.groups.len()), ("carol", 0));
        assert_eq!(
            tokens.authenticate("t2").expect("t2").groups,
            vec!["system:nodes", "x"]
        );
        assert!(tokens.admin_token().is_none());

        std::fs::write(&path, "t1,alice\n").expect("write");
        let err = Tokens::load(&path).expect_err("two columns");
        assert!(
            err.to_string()
                .contains("tokens.csv:1: must have at least 3 columns"),
            "{err}"
        );
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = crate::api::names::uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
