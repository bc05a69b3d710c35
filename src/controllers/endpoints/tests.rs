use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("hub.db")).expect("store");
    (dir, s)
}

fn pod(name: &str, app: &str, ip: Option<&str>, ready: bool) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" },
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    if let Some(ip) = ip {
        p["status"]["podIP"] = json!(ip);
    }
    p
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"team": "a"}}, "spec": spec})
}

#[test]
fn ready_pods_are_addresses_and_the_rest_not_ready_with_named_ports_resolved() {
    let (_d, store) = store();
    store
        .create("Pod", &pod("a", "web", Some("10.42.0.5"), true))
        .expect("a");
    store
        .create("Pod", &pod("b", "web", Some("10.42.0.4"), false))
        .expect("b");
    store
        .create("Pod", &pod("c", "web", None, false))
        .expect("c");
    store
        .create("Pod", &pod("d", "db", Some("10.42.0.9"), true))
        .expect("d");
    store
        .create(
            "Service",
            &svc(
                "web",
                json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.20",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}),
            ),
        )
        .expect("svc");
    pass(&store).expect("pass");
    let ep = store
        .get("Endpoints", "default", "web")
        .expect("get")
        .expect("endpoints");
    assert_eq!(ep["metadata"]["labels"]["team"], "a");
    assert_eq!(ep["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
    let s = &ep["subsets"][0];
    assert_eq!(s["addresses"][0]["ip"], "10.42.0.5");
    assert_eq!(s["addresses"][0]["targetRef"]["name"], "a");
    assert_eq!(s["addresses"][0]["nodeName"], "n1");
    assert_eq!(s["notReadyAddresses"][0]["ip"], "10.42.0.4");
    assert_eq!(
        s["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );

    // A readiness flip moves the address; a relabelled pod leaves.
    store
        .update_with("Pod", "default", "b", |p| {
            p["status"]["conditions"][0]["status"] = json!("True");
            Ok::<_, StoreError>(())
        })
        .expect("ready");
    store
        .update_with("Pod", "default", "a", |p| {
            p["metadata"]["labels"]["app"] = json!("other");
            Ok::<_, StoreError>(())
        })
        .expect("relabel");
    pass(&store).expect("pass");
    let ep = store
        .get("Endpoints", "default", "web")
        .expect("get")
        .expect("endpoints");
    assert_eq!(
        ep["subsets"][0]["addresses"],
        json!([ep["subsets"][0]["addresses"][0]])
    );
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.42.0.4");
    assert!(ep["subsets"][0].get("notReadyAddresses").is_none());

    // The Service goes: so do its Endpoints.
    store.delete("Service", "default", "web").expect("delete");
    pass(&store).expect("pass");
    assert!(
        store
            .get("Endpoints", "default", "web")
            .expect("get")
            .is_none()
    );
}

#[test]
fn services_without_selector_keep_their_own_endpoints_and_headless_get_hostnames() {
    let (_d, store) = store();
    store
        .create("Service", &svc("ext", json!({"ports": [{"port": 5432}]})))
        .expect("svc");
    let mine = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "ext", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.168.1.9"}], "ports": [{"port": 5432}]}]});
    store.create("Endpoints", &mine).expect("ep");
    let mut p = pod("db-0", "db", Some("10.42.0.7"), false);
    p["spec"]["hostname"] = json!("db-0");
    p["spec"]["subdomain"] = json!("db");
    store.create("Pod", &p).expect("pod");
    store
        .create(
            "Service",
            &svc(
                "db",
                json!({"clusterIP": "None", "publishNotReadyAddresses": true,
                "selector": {"app": "db"}}),
            ),
        )
        .expect("headless");
    pass(&store).expect("pass");
    let ext = store
        .get("Endpoints", "default", "ext")
        .expect("get")
        .expect("ext");
    assert_eq!(ext["subsets"], mine["subsets"]);
    let db = store
        .get("Endpoints", "default", "db")
        .expect("get")
        .expect("db");
    assert_eq!(db["subsets"][0]["addresses"][0]["hostname"], "db-0");
    assert_eq!(
        db["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    assert!(db["subsets"][0].get("ports").is_none());
}
