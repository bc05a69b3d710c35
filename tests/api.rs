//! The hub's HTTP API without kubectl: authentication, optimistic concurrency, watch resume and
//! 410, validation causes, malformed and oversized bodies, each patch type, deletecollection.
//! The client is curl over HTTPS with the hub's CA.
mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::bin;
use serde_json::{Value, json};

const ADMIN: &str = "admintoken0123456789abcdef";
const VIEWER: &str = "viewertoken0123456789abcdef";

struct Hub {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    code: u16,
    body: Value,
    text: String,
}

impl Hub {
    fn start() -> Hub {
        let dir = tempfile::Builder::new()
            .prefix("edgepod-api")
            .tempdir_in("/var/tmp")
            .unwrap();
        // A tokens file with an admin and a read-only user, in kube-apiserver's format.
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{ADMIN},admin,admin,\"system:masters\"\n{VIEWER},viewer,viewer,\"edgepod:read-only\"\n"),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["hub", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--broker-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("hub.log")).unwrap())
            .spawn()
            .unwrap();
        let hub = Hub { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.call("GET", "/readyz", None, &[]).code != 200 {
            assert!(Instant::now() < deadline, "hub did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        hub
    }

    fn curl(&self, args: &[&str]) -> Reply {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(self.dir.path().join("pki").join("ca.crt"))
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs (tests/run-all.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Reply {
            code: code.trim().parse().unwrap_or(0),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            text: body.to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A request as admin unless `extra` carries another Authorization.
    fn call(&self, method: &str, path: &str, body: Option<&str>, extra: &[&str]) -> Reply {
        let url = self.url(path);
        let auth = format!("Authorization: Bearer {ADMIN}");
        let mut args: Vec<&str> = vec!["-X", method];
        if !extra.iter().any(|a| a.starts_with("Authorization")) {
            args.extend(["-H", &auth]);
        }
        args.extend_from_slice(extra);
        if let Some(b) = body {
            args.extend(["--data-binary", b]);
        }
        args.push(&url);
        self.curl(&args)
    }

    fn json(&self, method: &str, path: &str, body: &Value, content_type: &str) -> Reply {
        let ct = format!("Content-Type: {content_type}");
        self.call(method, path, Some(&body.to_string()), &["-H", &ct])
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "busybox",
                    "env": [{"name": "A", "value": "1"}]}]}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[test]
fn authentication_and_read_only_tokens() {
    let hub = Hub::start();
    assert_eq!(hub.call("GET", "/healthz", None, &[]).code, 200);
    assert_eq!(
        hub.call("GET", "/version", None, &["-H", "Authorization: Bearer x"])
            .code,
        401
    );
    let none = hub.curl(&[&hub.url(PODS)]);
    assert_eq!(none.code, 401);
    assert_eq!(none.body["kind"], "Status");
    assert_eq!(none.body["reason"], "Unauthorized");
    let viewer = format!("Authorization: Bearer {VIEWER}");
    assert_eq!(hub.call("GET", PODS, None, &["-H", &viewer]).code, 200);
    let denied = hub.call(
        "POST",
        PODS,
        Some(&pod("x", json!({})).to_string()),
        // Over HTTP/2 a refusal sent before the body is read resets the upload's stream.
        &[
            "-H",
            &viewer,
            "-H",
            "Content-Type: application/json",
            "--http1.1",
        ],
    );
    assert_eq!(denied.code, 403, "{}", denied.text);
    assert_eq!(denied.body["reason"], "Forbidden");
}

#[test]
fn optimistic_concurrency_validation_and_bad_bodies() {
    let hub = Hub::start();
    let created = hub.json(
        "POST",
        PODS,
        &pod("web", json!({"app": "web"})),
        "application/json",
    );
    assert_eq!(created.code, 201, "{}", created.text);
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created.body["metadata"]["generation"], 1);

    // A write based on a stale resourceVersion is a 409 Conflict. The scheduler and the node
    // write the pod while it starts, so the first update is a read-modify-write retried on a
    // conflict, as clients do.
    let mut updated = false;
    for _ in 0..20 {
        let mut first = hub.call("GET", &format!("{PODS}/web"), None, &[]).body;
        first["metadata"]["labels"]["v"] = json!("1");
        let put = hub.json("PUT", &format!("{PODS}/web"), &first, "application/json");
        if put.code == 200 {
            updated = true;
            break;
        }
        assert_eq!(put.code, 409, "{}", put.text);
    }
    assert!(updated, "the read-modify-write never got through");
    let mut stale = created.body.clone();
    stale["metadata"]["labels"]["v"] = json!("2");
    stale["metadata"]["resourceVersion"] = json!(rv);
    let conflict = hub.json("PUT", &format!("{PODS}/web"), &stale, "application/json");
    assert_eq!(conflict.code, 409, "{}", conflict.text);
    assert_eq!(conflict.body["reason"], "Conflict");

    // Creating again: AlreadyExists.
    let again = hub.json("POST", PODS, &pod("web", json!({})), "application/json");
    assert_eq!(
        (again.code, again.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    // Invalid: 422 with one cause per field.
    let mut bad = pod("Bad_Name", json!({"bad key!": "x"}));
    bad["spec"]["containers"][0]["name"] = json!("");
    let invalid = hub.json("POST", PODS, &bad, "application/json");
    assert_eq!(invalid.code, 422, "{}", invalid.text);
    let fields: Vec<&str> = invalid.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    for f in [
        "metadata.name",
        "metadata.labels",
        "spec.containers[0].name",
    ] {
        assert!(fields.contains(&f), "{fields:?}");
    }
    assert_eq!(
        hub.call("GET", &format!("{PODS}/Bad_Name"), None, &[]).code,
        404
    );

    // Malformed JSON → 400; an unknown field under strict validation → 400; too large → 413.
    let malformed = hub.call(
        "POST",
        PODS,
        Some("{not json"),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(malformed.code, 400, "{}", malformed.text);
    let mut unknown = pod("u", json!({}));
    unknown["spec"]["containers"][0]["imagee"] = json!("x");
    let strict = hub.json(
        "POST",
        &format!("{PODS}?fieldValidation=Strict"),
        &unknown,
        "application/json",
    );
    assert_eq!(strict.code, 400);
    assert!(
        strict.text.contains("spec.containers[0].imagee"),
        "{}",
        strict.text
    );
    let big = hub.dir.path().join("big.json");
    let mut huge = pod("huge", json!({}));
    huge["metadata"]["annotations"] = json!({"a": "x".repeat(4 * 1024 * 1024)});
    std::fs::write(&big, huge.to_string()).unwrap();
    let too_large = hub.call(
        "POST",
        PODS,
        Some(&format!("@{}", big.display())),
        // Over HTTP/2 the server's early 413 resets the stream curl is still uploading on.
        &["-H", "Content-Type: application/json", "--http1.1"],
    );
    assert_eq!(too_large.code, 413, "{}", too_large.text);
    // Nothing was stored by the rejected requests.
    let list = hub.call("GET", PODS, None, &[]);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["web"]);
    // Into a namespace that does not exist: NotFound naming it.
    let nowhere = hub.json(
        "POST",
        "/api/v1/namespaces/nope/pods",
        &pod("x", json!({})),
        "application/json",
    );
    assert_eq!(nowhere.code, 404);
    assert_eq!(nowhere.body["message"], "namespaces \"nope\" not found");
}

#[test]
fn watch_resumes_from_a_resource_version_and_410_when_too_old() {
    let hub = Hub::start();
    let a = hub.json("POST", PODS, &pod("a", json!({})), "application/json");
    let rv_a: u64 = a.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    hub.json("POST", PODS, &pod("b", json!({})), "application/json");
    hub.call("DELETE", &format!("{PODS}/a"), None, &[]);
    let w = hub.call(
        "GET",
        &format!("{PODS}?watch=true&resourceVersion={rv_a}&timeoutSeconds=1"),
        None,
        &["-N"],
    );
    assert_eq!(w.code, 200);
    // The binder's MODIFIED writes (no node to bind to) interleave; creations and deletions
    // after rv_a are what the watch must show, in order.
    let events: Vec<(String, String)> = w
        .text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] != "MODIFIED")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![("ADDED".into(), "b".into()), ("DELETED".into(), "a".into())],
        "{}",
        w.text
    );
    // Push the change log past its window, then ask for the start again.
    let mut obj = hub.call("GET", &format!("{PODS}/b"), None, &[]).body;
    for i in 0..(edgepod::store::CHANGE_WINDOW + 300) {
        obj["metadata"]["labels"] = json!({"i": i.to_string()});
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let r = hub.json("PUT", &format!("{PODS}/b"), &obj, "application/json");
        assert_eq!(r.code, 200, "{}", r.text);
    }
    let old = hub.call(
        "GET",
        &format!("{PODS}?watch=true&resourceVersion={rv_a}&timeoutSeconds=1"),
        None,
        &["-N"],
    );
    let first: Value = serde_json::from_str(old.text.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(first["type"], "ERROR", "{}", old.text);
    assert_eq!(first["object"]["code"], 410);
}

#[test]
fn every_patch_type_and_deletecollection() {
    let hub = Hub::start();
    hub.json(
        "POST",
        PODS,
        &pod("p", json!({"app": "x"})),
        "application/json",
    );
    let path = format!("{PODS}/p");
    let merge = hub.json(
        "PATCH",
        &path,
        &json!({"metadata": {"labels": {"tier": "web"}}}),
        "application/merge-patch+json",
    );
    assert_eq!(merge.code, 200, "{}", merge.text);
    assert_eq!(merge.body["metadata"]["labels"]["tier"], "web");
    let jp = hub.json(
        "PATCH",
        &path,
        &json!([{"op": "replace", "path": "/metadata/labels/app", "value": "y"}]),
        "application/json-patch+json",
    );
    assert_eq!(jp.code, 200, "{}", jp.text);
    assert_eq!(jp.body["metadata"]["labels"]["app"], "y");
    let smp = hub.json(
        "PATCH",
        &path,
        &json!({"spec": {"containers": [{"name": "app", "image": "busybox:2"}]}}),
        "application/strategic-merge-patch+json",
    );
    assert_eq!(smp.code, 200, "{}", smp.text);
    // Strategic merge keeps the container's other fields (merge by name).
    assert_eq!(smp.body["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(smp.body["spec"]["containers"][0]["env"][0]["name"], "A");
    let apply = hub.call(
        "PATCH",
        &format!("{path}?fieldManager=test"),
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    owner: me\n"),
        &["-H", "Content-Type: application/apply-patch+yaml"],
    );
    assert_eq!(apply.code, 200, "{}", apply.text);
    assert_eq!(apply.body["metadata"]["annotations"]["owner"], "me");
    let unsupported = hub.json("PATCH", &path, &json!({}), "text/plain");
    assert_eq!(unsupported.code, 415);

    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        hub.json(
            "POST",
            PODS,
            &pod(name, json!({"tier": tier})),
            "application/json",
        );
    }
    let deleted = hub.call(
        "DELETE",
        &format!("{PODS}?labelSelector=tier%3Dweb"),
        None,
        &[],
    );
    assert_eq!(deleted.code, 200, "{}", deleted.text);
    let left = hub.call("GET", PODS, None, &[]);
    let mut names: Vec<&str> = left.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["c"]);
}
