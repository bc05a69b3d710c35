//! Tests of the protobuf decoder: real kubectl 1.37 bodies against the JSON kubectl prints for
//! the same command with `--dry-run=client -o json` (nulls removed: Go prints `null` for nil
//! slices that protobuf does not carry), the special types on hand-built bytes, and hostile
//! input (truncation, corruption, nesting).
//!
//! Owns: nothing but tests and `fixtures/` (kubectl's bodies for our own inputs; see each
//! test for the command). Must not touch: production code paths.

use serde_json::{Value, json};

use super::decode::{Decoder, MAGIC, MAX_DEPTH, Problem, go_duration};
use super::schema::{Kind, schema};
use super::*;

/// A captured kubectl body and the JSON the JSON path receives for the same command.
fn fixture(name: &str) -> (Vec<u8>, Option<Value>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/apiserver/proto/fixtures");
    let pb = std::fs::read(format!("{dir}/{name}.pb")).unwrap_or_default();
    assert!(!pb.is_empty(), "fixture {name}.pb is missing");
    let json = std::fs::read(format!("{dir}/{name}.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (pb, json)
}

fn decoded(name: &str) -> Value {
    let (pb, _) = fixture(name);
    match decode(&pb) {
        Ok(v) => v,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// `kubectl create …` bodies whose `--dry-run=client -o json` output is the expected JSON:
/// namespace x; configmap c --from-literal=a=b --from-literal=k2=v2; secret generic s
/// --from-literal=a=b; secret docker-registry reg --docker-username=u --docker-password=p
/// --docker-server=r.example; deployment d --image=busybox --replicas=2 --port=80; job j
/// --image=busybox -- echo hi; cronjob cj --image=busybox --schedule='*/1 * * * *' -- sh -c
/// date; service clusterip svc --tcp=80:8080; service nodeport np --tcp=81:8081
/// --node-port=30001; service externalname en --external-name=example.com; and
/// `kubectl autoscale deploy d2 --min=1 --max=3 --cpu-percent=50`.
#[test]
fn kubectl_bodies_decode_to_the_json_kubectl_would_send() {
    for name in [
        "namespace",
        "configmap",
        "secret",
        "secret-docker",
        "deployment",
        "job",
        "cronjob",
        "service-clusterip",
        "service-nodeport",
        "service-externalname",
        "hpa",
    ] {
        let (_, expected) = fixture(name);
        assert_eq!(Some(decoded(name)), expected, "{name}");
    }
}

/// `kubectl create token default`: an empty TokenRequest; Go prints the non-omitempty status
/// fields, the zero Time as null.
#[test]
fn create_token_body() {
    assert_eq!(
        decoded("token"),
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {}, "spec": {},
            "status": {"token": "", "expirationTimestamp": null},
        })
    );
}

/// `kubectl debug node/n1 --image=busybox`: a Pod through the typed client, with host
/// namespaces, a hostPath volume and tolerations.
#[test]
fn debug_node_pod_body() {
    let pod = decoded("debug-node");
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["kind"], "Pod");
    let spec = &pod["spec"];
    assert_eq!(spec["nodeName"], "n1");
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostIPC"], true);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        spec["volumes"],
        json!([{"name": "host-root", "hostPath": {"path": "/"}}])
    );
    let c = &spec["containers"][0];
    assert_eq!(c["name"], "debugger");
    assert_eq!(c["image"], "busybox");
    // No -it: stdin and tty are false, which Go (and so we) leave out.
    assert!(c.get("stdin").is_none() && c.get("tty").is_none());
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "host-root", "mountPath": "/host"}])
    );
    assert_eq!(c["terminationMessagePolicy"], "File");
    // proto2 wrote every non-pointer field; Go's JSON (and so ours) leaves the empty ones out.
    assert!(pod["metadata"].get("namespace").is_none());
    assert!(c.get("workingDir").is_none());
}

/// `kubectl debug p3 --image=busybox --copy-to=p3copy --container=dbg`: a copy of a pod
/// read back from the hub (so server-set fields) plus the debug container.
#[test]
fn debug_copy_pod_body() {
    let pod = decoded("debug-copy");
    assert_eq!(pod["metadata"]["name"], "p3copy");
    let names: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().map(|c| &c["name"]).collect())
        .unwrap_or_default();
    assert_eq!(names, [&json!("p3"), &json!("dbg")]);
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        json!(["sleep", "100"])
    );
}

// ---- hand-built bytes ----

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field.
fn fv(number: u32, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3, &mut out);
    varint(v, &mut out);
    out
}

/// A length-delimited field.
fn fb(number: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((u64::from(number) << 3) | 2, &mut out);
    varint(data.len() as u64, &mut out);
    out.extend_from_slice(data);
    out
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [fb(1, api_version.as_bytes()), fb(2, kind.as_bytes())].concat();
    [MAGIC.to_vec(), fb(1, &type_meta), fb(2, raw)].concat()
}

fn value(kind: Kind, data: &[u8]) -> Result<Value, decode::DecodeError> {
    let schema = schema().map_err(|e| decode::DecodeError {
        path: String::new(),
        problem: Problem::Invalid(e.into()),
    })?;
    Decoder { schema }.value(kind, wire::WireValue::Bytes(data), 0)
}

#[test]
fn times_are_rfc3339_and_zero_is_null() {
    let t = [fv(1, 1_767_323_045), fv(2, 123_456_789)].concat();
    assert_eq!(value(Kind::Time, &t), Ok(json!("2026-01-02T03:04:05Z")));
    assert_eq!(
        value(Kind::MicroTime, &t),
        Ok(json!("2026-01-02T03:04:05.123456Z"))
    );
    assert_eq!(value(Kind::Time, &[]), Ok(Value::Null));
    // Go's zero time written by a marshaller that does not special-case it.
    let go_zero = fv(1, (-62_135_596_800i64) as u64);
    assert_eq!(value(Kind::Time, &go_zero), Ok(Value::Null));
    assert!(value(Kind::Time, &fv(1, i64::MAX as u64)).is_err());
}

#[test]
fn quantities_int_or_strings_and_durations() {
    assert_eq!(value(Kind::Quantity, &fb(1, b"500m")), Ok(json!("500m")));
    assert_eq!(value(Kind::Quantity, &[]), Ok(json!("0")));
    assert_eq!(value(Kind::IntOrString, &fv(2, 8080)), Ok(json!(8080)));
    let s = [fv(1, 1), fb(3, b"http")].concat();
    assert_eq!(value(Kind::IntOrString, &s), Ok(json!("http")));
    let neg = fv(2, (-1i64) as u64);
    assert_eq!(value(Kind::IntOrString, &neg), Ok(json!(-1)));
    assert!(value(Kind::IntOrString, &fv(1, 7)).is_err());
    assert_eq!(
        value(Kind::Duration, &fv(1, 90_000_000_000)),
        Ok(json!("1m30s"))
    );
    for (nanos, text) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (1_500_000_000, "1.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (-5_000_000_000, "-5s"),
        (3_723_000_000_001, "1h2m3.000000001s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}

#[test]
fn raw_extensions_carry_json_or_a_nested_envelope() {
    assert_eq!(value(Kind::Raw, &fb(1, br#"{"a":1}"#)), Ok(json!({"a": 1})));
    assert_eq!(value(Kind::Raw, &[]), Ok(Value::Null));
    let ns = envelope("v1", "Namespace", &fb(1, &fb(1, b"x")));
    assert_eq!(
        value(Kind::Raw, &fb(1, &ns)),
        Ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}))
    );
    assert!(value(Kind::Raw, &fb(1, b"\x01\x02")).is_err());
}

/// The tables are not recursive, so only the nesting of real types bounds a body; the limit
/// is the backstop if one ever becomes recursive (RawExtension holding an envelope).
#[test]
fn nesting_stops_at_the_depth_limit() {
    let Ok(schema) = schema() else {
        panic!("schema")
    };
    let d = Decoder { schema };
    let ns = envelope("v1", "Namespace", &[]);
    let raw = fb(1, &ns);
    let at = |depth| {
        d.value(Kind::Raw, wire::WireValue::Bytes(&raw), depth)
            .err()
            .map(|e| e.problem)
    };
    assert_eq!(at(MAX_DEPTH - 2), None);
    assert_eq!(at(MAX_DEPTH), Some(Problem::TooDeep));
    let deep = d.message("core.Pod", &[], MAX_DEPTH + 1);
    assert_eq!(deep.err().map(|e| e.problem), Some(Problem::TooDeep));
}

#[test]
fn zero_values_follow_go_json_pointer_zeroes_stay() {
    // Deployment spec: replicas is *int32 (0 kept), minReadySeconds int32 omitempty (0 dropped),
    // paused bool omitempty (false dropped); metadata.namespace "" dropped.
    let spec = [fv(1, 0), fv(5, 0), fv(7, 0)].concat();
    let raw = [fb(1, &[fb(1, b"d"), fb(3, b"")].concat()), fb(2, &spec)].concat();
    let body = envelope("apps/v1", "Deployment", &raw);
    assert_eq!(
        decode(&body).ok(),
        Some(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 0},
        }))
    );
}

#[test]
fn unknown_fields_are_skipped_and_negative_ints_survive() {
    // ServicePort: unknown field 99 (varint and bytes), port -1 as a sign-extended int32,
    // and packed repeated ints elsewhere are accepted.
    let port = [fv(99, 5), fb(98, b"zz"), fv(3, (-1i64) as u64)].concat();
    let raw = fb(2, &fb(1, &port));
    let v = decode(&envelope("v1", "Service", &raw)).ok();
    assert_eq!(
        v.map(|v| v["spec"]["ports"][0].clone()),
        Some(json!({"port": -1}))
    );
    // PodSecurityContext.supplementalGroups (field 4), packed.
    let packed = fb(4, &[1, 2, 0x80, 0x01]);
    let pod = fb(2, &fb(14, &packed));
    let v = decode(&envelope("v1", "Pod", &pod)).ok();
    assert_eq!(
        v.map(|v| v["spec"]["securityContext"]["supplementalGroups"].clone()),
        Some(json!([1, 2, 128]))
    );
}

#[test]
fn maps_bytes_and_inlined_structs() {
    // Secret.data: map<string, bytes>, base64 in JSON; an entry without value is "".
    let data = [
        fb(2, &[fb(1, b"k"), fb(2, b"\x00\xff")].concat()),
        fb(2, &fb(1, b"e")),
    ]
    .concat();
    let v = decode(&envelope("v1", "Secret", &data)).ok();
    assert_eq!(
        v.map(|v| v["data"].clone()),
        Some(json!({"k": "AP8=", "e": ""}))
    );
    // Volume: name plus the inlined VolumeSource (field 2) carrying emptyDir (field 2).
    let volume = [fb(1, b"cache"), fb(2, &fb(2, &[]))].concat();
    let pod = fb(2, &fb(1, &volume));
    let v = decode(&envelope("v1", "Pod", &pod)).ok();
    assert_eq!(
        v.map(|v| v["spec"]["volumes"].clone()),
        Some(json!([{"name": "cache", "emptyDir": {}}]))
    );
}

#[test]
fn scale_and_delete_options() {
    let scale = [fb(1, &fb(1, b"d")), fb(2, &fv(1, 3))].concat();
    assert_eq!(
        decode(&envelope("autoscaling/v1", "Scale", &scale)).ok(),
        Some(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "d"}, "spec": {"replicas": 3}}))
    );
    let opts = [fv(1, 0), fb(4, b"Foreground"), fb(5, b"All")].concat();
    assert_eq!(
        decode(&envelope("v1", "DeleteOptions", &opts)).ok(),
        Some(
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                    "propagationPolicy": "Foreground", "dryRun": ["All"]})
        )
    );
}

#[test]
fn errors_are_400_or_415_naming_the_kind() {
    let e = decode(b"{\"kind\":\"Pod\"}").err();
    assert_eq!(e.map(|e| e.code), Some(400));
    let e = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &[])).err();
    assert_eq!(e.as_ref().map(|e| e.code), Some(415));
    assert!(e.is_some_and(|e| e.message.contains("Role")));
    let e = decode(&envelope("v1", "", &[])).err();
    assert_eq!(e.map(|e| e.code), Some(400));
    // A string where a message belongs names the field.
    let bad = fb(2, &fv(1, 1));
    let e = decode(&envelope("v1", "Pod", &[fb(1, &fb(1, b"x")), bad].concat())).err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.code == 400 && e.message.contains("spec")),
        "{e:?}"
    );
    let bad = fb(2, &fb(2, &fb(6, &fv(1, 1))));
    let e = decode(&envelope("v1", "Pod", &bad)).err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.message.contains("spec.containers[0].ports[0]")),
        "{e:?}"
    );
}

/// Every prefix and many single-byte corruptions of every fixture: an error or a value, never
/// a panic.
#[test]
fn truncated_and_corrupted_bodies_never_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/apiserver/proto/fixtures");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let entries = std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>());
    for entry in entries.unwrap_or_default() {
        if entry.path().extension().is_none_or(|e| e != "pb") {
            continue;
        }
        let body = std::fs::read(entry.path()).unwrap_or_default();
        for end in 0..body.len() {
            let _ = decode(&body[..end]);
        }
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = body.clone();
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
            let _ = decode(&b);
        }
    }
}
