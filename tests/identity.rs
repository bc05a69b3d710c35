//! Node identities for the fleet link against a real `edgepod hub`: join tokens, the join
//! (CA pinned by fingerprint, client certificate issued), refusals (wrong fingerprint, expired,
//! deleted, revoked), and a real Mosquitto run from `edgepod hub mosquitto-config` enforcing the
//! generated ACL with `mosquitto_sub`/`mosquitto_pub` as the nodes' and the hub's clients.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, stop};
use common::node::bin;
use edgepod::fleet::identity::{JoinToken, NodeIdentity, fleet_signing_key};

/// `edgepod hub` alone (no agent), on a free loopback port.
struct Hub {
    dir: tempfile::TempDir,
    child: Child,
}

impl Hub {
    fn start() -> Hub {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-identity")
            .tempdir_in("/var/tmp")
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("hub.log")).unwrap();
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["hub", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--broker-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let hub = Hub { dir, child };
        wait_for("the hub's API", 60, || {
            (hub.dir.path().join("kubeconfig").exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            .then_some(())
        });
        hub
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn edgepod(&self, args: &[&str]) -> Output {
        edgepod(self.path(), args)
    }

    /// `hub token create ARGS`, asserting success; the token.
    fn token(&self, args: &[&str]) -> String {
        let mut full = vec!["hub", "token", "create"];
        full.extend_from_slice(args);
        let out = self.edgepod(&full);
        assert!(out.status.success(), "token create: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("hub.log")).unwrap_or_default()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn edgepod(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `edgepod internal join` into `node_dir`.
fn join(node_dir: &Path, token: &str, name: &str) -> Output {
    edgepod(
        node_dir,
        &["internal", "join", "--token", token, "--node-name", name],
    )
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn join_tokens_issue_identities_and_refuse_what_they_must() {
    let hub = Hub::start();
    let token = hub.token(&["--description", "test fleet"]);
    let decoded = JoinToken::decode(&token).expect("the printed token decodes");
    assert!(token.starts_with("EP1."), "{token}");
    assert!(decoded.api.starts_with("https://127.0.0.1:"), "{decoded:?}");
    assert_eq!(decoded.broker, "mqtts://127.0.0.1:8883");
    assert_eq!(decoded.cluster, "default");
    // The hub keeps a hash, never the secret.
    let stored = std::fs::read_to_string(hub.path().join("fleet/join-tokens.json")).unwrap();
    assert!(!stored.contains(&decoded.secret));
    assert_eq!(mode(&hub.path().join("fleet/join-tokens.json")), 0o600);

    // A good join.
    let node = tempfile::tempdir().unwrap();
    let out = join(node.path(), &token, "pi-2");
    assert!(
        out.status.success(),
        "join: {}\n{}",
        stderr(&out),
        hub.log()
    );
    let idir = node.path().join("identity");
    assert_eq!(mode(&idir), 0o700);
    for f in ["node.crt", "node.key", "ca.crt", "identity.json"] {
        assert_eq!(mode(&idir.join(f)), 0o600, "{f}");
    }
    let id = NodeIdentity::load(node.path())
        .expect("load")
        .expect("an identity");
    assert_eq!(id.node_name, "pi-2");
    assert_eq!(id.cluster, "default");
    assert_eq!(id.broker_url, "mqtts://127.0.0.1:8883");
    assert_eq!(id.api_url, decoded.api);
    assert_eq!(
        std::fs::read_to_string(hub.path().join("pki/ca.crt")).unwrap(),
        id.ca_pem
    );
    let signing = fleet_signing_key(hub.path()).expect("the hub's signing key");
    assert_eq!(
        id.hub_signing_key,
        ring::signature::KeyPair::public_key(&signing).as_ref()
    );
    assert_eq!(mode(&hub.path().join("pki/fleet-signing.pk8")), 0o600);
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(id.cert_pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .expect("a PEM certificate");
    assert!(contains(&der, b"system:nodes") && contains(&der, b"pi-2"));
    id.client_tls_config()
        .expect("a usable TLS client identity");

    // /cacerts needs no credentials (as k3s serves it); the rest of the API still does.
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .arg(format!("{}{path}", decoded.api))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        curl("/cacerts").starts_with(&id.ca_pem),
        "{}",
        curl("/cacerts")
    );
    assert!(curl("/cacerts").ends_with("\n200"));
    assert!(curl("/api/v1/nodes").ends_with("\n401"));
    assert!(
        curl("/v1-edgepod/join").ends_with("\n405"),
        "{}",
        curl("/v1-edgepod/join")
    );

    // A token whose fingerprint is not the hub's CA: refused before anything is sent.
    let mut forged = decoded.clone();
    forged.ca = "0".repeat(64);
    let other = tempfile::tempdir().unwrap();
    let out = join(other.path(), &forged.encode(), "pi-3");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("fingerprint"), "{}", stderr(&out));
    assert!(!other.path().join("identity").exists());

    // An expired token.
    let short = hub.token(&["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = join(other.path(), &short, "pi-3");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // A wrong secret and a bad name.
    let mut wrong = decoded.clone();
    wrong.secret = "not-the-secret".into();
    let out = join(other.path(), &wrong.encode(), "pi-3");
    assert!(stderr(&out).contains("not known"), "{}", stderr(&out));
    let out = join(other.path(), &token, "Not_A_Name");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Not_A_Name"), "{}", stderr(&out));

    // Revoked: the name cannot join again; other names still can.
    let out = hub.edgepod(&["hub", "node", "revoke", "pi-2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = tempfile::tempdir().unwrap();
    let out = join(again.path(), &token, "pi-2");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    let out = join(other.path(), &token, "pi-3");
    assert!(out.status.success(), "{}", stderr(&out));

    let out = hub.edgepod(&["hub", "node", "list"]);
    let nodes = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |n: &str| nodes.lines().find(|l| l.starts_with(n)).map(str::to_string);
    assert!(line("pi-2 ").is_some_and(|l| !l.ends_with(" -")), "{nodes}");
    assert!(line("pi-3 ").is_some_and(|l| l.ends_with(" -")), "{nodes}");

    // List and delete.
    let out = hub.edgepod(&["hub", "token", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.contains("test fleet"), "{listing}");
    assert!(
        listing.contains("(expired)") || !listing.contains("never"),
        "{listing}"
    );
    let id_of_token = listing
        .lines()
        .find(|l| l.contains("test fleet"))
        .and_then(|l| l.split_whitespace().next())
        .expect("an id")
        .to_string();
    let out = hub.edgepod(&["hub", "token", "delete", &id_of_token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = join(again.path(), &token, "pi-4");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not known"), "{}", stderr(&out));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Mosquitto in the foreground, stopped on drop. It writes the pid file the hub signals.
struct Mosquitto {
    dir: PathBuf,
    child: Child,
}

impl Mosquitto {
    fn pid_file(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("mosquitto.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A client's TLS flags for mosquitto_sub/mosquitto_pub.
fn tls_args(port: u16, ca: &Path, crt: &Path, key: &Path) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        ca.display().to_string(),
        "--cert".into(),
        crt.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "-q".into(),
        "1".into(),
    ]
}

/// `mosquitto_sub -v` on `topic`, printing into `out`.
fn subscribe(tls: &[String], topic: &str, out: &Path) -> Child {
    Command::new("mosquitto_sub")
        .args(tls)
        .args(["-v", "-t", topic])
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn publish(tls: &[String], topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(tls)
        .args(["-t", topic, "-m", message])
        .output()
        .unwrap()
}

/// Beside, not inside, the directory Mosquitto owns.
fn work_dir_log(mdir: &Path) -> PathBuf {
    mdir.with_file_name("mosquitto.log")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

struct Killed(Vec<Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn mosquitto_enforces_the_generated_acl_and_revocation() {
    let hub = Hub::start();
    // Mosquitto drops to its own user: the files must be reachable from /.
    std::fs::set_permissions(hub.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mdir = hub.path().join("mosquitto");
    let port = free_port();
    let out = hub.edgepod(&[
        "hub",
        "mosquitto-config",
        "--out",
        mdir.to_str().unwrap(),
        "--listen",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster",
        "c1",
    ]);
    assert!(out.status.success(), "mosquitto-config: {}", stderr(&out));
    let conf = read(&mdir.join("mosquitto.conf"));
    for line in [
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line} missing:\n{conf}");
    }

    let token = hub.token(&["--cluster", "c1"]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (dir, name) in [(&a, "pi-a"), (&b, "pi-b")] {
        let out = join(dir.path(), &token, name);
        assert!(out.status.success(), "join {name}: {}", stderr(&out));
    }
    // The hub rewrote the ACL on each join.
    let acl = read(&mdir.join("acl"));
    assert!(
        acl.contains("user pi-a\n") && acl.contains("user pi-b\n"),
        "{acl}"
    );
    assert!(
        acl.contains("user edgepod:hub\ntopic readwrite edgepod/v1/c1/#"),
        "{acl}"
    );

    // The broker, with its log beside its files for failures.
    let blog = std::fs::File::create(work_dir_log(&mdir)).unwrap();
    let child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(mdir.join("mosquitto.conf"))
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(blog)
        .spawn()
        .unwrap();
    let broker = Mosquitto {
        dir: mdir.clone(),
        child,
    };
    wait_for("mosquitto's pid file and port", 20, || {
        (broker.pid_file() == Some(broker.child.id() as i32)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        .then_some(())
    });

    let hub_id = edgepod::fleet::identity::hub_client_identity(hub.path()).expect("hub identity");
    let pki = hub.path().join("pki");
    let hub_tls = tls_args(
        port,
        &mdir.join("ca.crt"),
        &pki.join("fleet-hub.crt"),
        &pki.join("fleet-hub.key"),
    );
    assert!(!hub_id.cert_pem.is_empty());
    let node_tls = |dir: &Path| {
        let i = dir.join("identity");
        tls_args(
            port,
            &i.join("ca.crt"),
            &i.join("node.crt"),
            &i.join("node.key"),
        )
    };
    let (a_tls, b_tls) = (node_tls(a.path()), node_tls(b.path()));
    let work = tempfile::tempdir().unwrap();
    let hub_seen = work.path().join("hub.out");
    let a_seen = work.path().join("a.out");
    let b_seen = work.path().join("b.out");
    let _subs = Killed(vec![
        subscribe(&hub_tls, "edgepod/v1/c1/#", &hub_seen),
        // pi-a asks for everything; the ACL decides what it gets.
        subscribe(&a_tls, "edgepod/v1/c1/#", &a_seen),
        subscribe(&b_tls, "edgepod/v1/c1/nodes/pi-b/in/#", &b_seen),
    ]);
    let log = || read(&work_dir_log(&mdir));
    // Subscribed once a hub broadcast reaches both the hub's and pi-a's subscriber.
    let mut n = 0;
    wait_for("both subscribers", 20, || {
        n += 1;
        let ping = format!("ping-{n}");
        publish(&hub_tls, "edgepod/v1/c1/hub/ping", &ping);
        (read(&hub_seen).contains(&ping) && read(&a_seen).contains(&ping)).then_some(())
    });

    // Desired state: pi-a reads its own `in`, not pi-b's.
    publish(&hub_tls, "edgepod/v1/c1/nodes/pi-b/in/desired", "for-b");
    publish(&hub_tls, "edgepod/v1/c1/nodes/pi-a/in/desired", "for-a");
    wait_for("pi-a's own desired state", 20, || {
        read(&a_seen).contains("for-a").then_some(())
    });
    assert!(
        !read(&a_seen).contains("for-b"),
        "pi-a read pi-b's topic\n{}",
        log()
    );
    wait_for("pi-b's desired state", 20, || {
        read(&b_seen).contains("for-b").then_some(())
    });

    // Status: pi-a writes its own `out`, not pi-b's.
    publish(&a_tls, "edgepod/v1/c1/nodes/pi-b/out/status", "forged");
    publish(&a_tls, "edgepod/v1/c1/nodes/pi-a/out/status", "genuine");
    wait_for("pi-a's own status at the hub", 20, || {
        read(&hub_seen).contains("genuine").then_some(())
    });
    assert!(
        !read(&hub_seen).contains("forged"),
        "pi-a wrote pi-b's topic\n{}",
        log()
    );
    // Nor may a node write desired state (anyone's `in`).
    publish(&a_tls, "edgepod/v1/c1/nodes/pi-a/in/desired", "self-made");

    // Revoke pi-a: the ACL loses its block and the hub signals Mosquitto.
    let out = hub.edgepod(&["hub", "node", "revoke", "pi-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let acl = read(&mdir.join("acl"));
    assert!(
        !acl.contains("pi-a") && acl.contains("user pi-b\n"),
        "{acl}"
    );
    wait_for("mosquitto to reload", 20, || {
        log().contains("Reloading config").then_some(())
    });

    publish(
        &hub_tls,
        "edgepod/v1/c1/nodes/pi-a/in/desired",
        "after-revoke",
    );
    publish(&hub_tls, "edgepod/v1/c1/nodes/pi-b/in/desired", "b-after");
    publish(
        &a_tls,
        "edgepod/v1/c1/nodes/pi-a/out/status",
        "revoked-status",
    );
    publish(&b_tls, "edgepod/v1/c1/nodes/pi-b/out/status", "b-status");
    wait_for("pi-b still served", 20, || {
        (read(&b_seen).contains("b-after") && read(&hub_seen).contains("b-status")).then_some(())
    });
    assert!(
        !read(&a_seen).contains("after-revoke"),
        "revoked pi-a still reads\n{}",
        log()
    );
    assert!(
        !read(&hub_seen).contains("revoked-status"),
        "revoked pi-a still writes\n{}",
        log()
    );
    assert!(
        !read(&hub_seen).contains("self-made"),
        "a node wrote its own desired state"
    );
}
