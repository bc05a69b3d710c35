//! The node's streaming API (`kubectl logs`, `exec`, `attach`, `port-forward`) against real
//! pods run by a real agent, through `NodeStreams` built on the test's data dir.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::node::{NODE, Node, bin};
use edgepod::agent::streams::NodeStreams;
use edgepod::fleet::{
    ByteReader, ExecExit, ExecRequest, ExecSession, LinkError, LogRequest, PodRef, TerminalSize,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

fn streams(node: &Node) -> NodeStreams {
    let store = edgepod::store::Store::open_in(node.data()).unwrap();
    let runtime = edgepod::runtime::Runtime::new(node.data(), Default::default())
        .unwrap()
        .with_executable(Path::new(bin()));
    NodeStreams::new(runtime, Arc::new(store), NODE)
}

fn pod_ref(node: &Node, pod: &str) -> PodRef {
    let p = node.pod(pod).unwrap();
    PodRef {
        namespace: "default".into(),
        name: format!("{pod}-{NODE}"),
        uid: p["metadata"]["uid"].as_str().unwrap().to_string(),
    }
}

async fn read_to_end(r: Option<ByteReader>) -> String {
    let Some(mut r) = r else {
        return String::new();
    };
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, r.read_to_end(&mut out))
        .await
        .expect("stream did not end")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `needle` shows up; returns everything read.
async fn read_until(r: &mut ByteReader, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout_at(deadline, r.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} in {:?}",
                    String::from_utf8_lossy(&out).into_owned()
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn logs(s: &NodeStreams, req: LogRequest) -> String {
    read_to_end(Some(s.logs(req).await.unwrap())).await
}

async fn exit_of(session: ExecSession) -> ExecExit {
    tokio::time::timeout(LIMIT, session.exit)
        .await
        .expect("no exit")
        .unwrap()
}

fn exec_req(pod: &PodRef, cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        pod: pod.clone(),
        container: "c".into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    }
}

/// Runs a command without stdin; returns stdout, stderr and how it ended.
async fn run(s: &NodeStreams, pod: &PodRef, cmd: &[&str]) -> (String, String, ExecExit) {
    let mut session = s.exec(exec_req(pod, cmd)).await.unwrap();
    let (out, err) = tokio::join!(
        read_to_end(session.stdout.take()),
        read_to_end(session.stderr.take())
    );
    (out, err, exit_of(session).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_timestamps_follow_and_previous_of_a_restarting_container() {
    let node = Node::start();
    node.put_manifest(
        "talk.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talk\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo attempt; seq 1 5; sleep 4; echo bye >&2; exit 3']\n",
    );
    node.wait_running("talk");
    node.wait_logs("talk", "c", "5");
    let s = streams(&node);
    let pod = pod_ref(&node, "talk");
    let req = LogRequest {
        pod: pod.clone(),
        container: "c".into(),
        ..Default::default()
    };

    assert_eq!(logs(&s, req.clone()).await, "attempt\n1\n2\n3\n4\n5\n");
    let tail = LogRequest {
        tail_lines: Some(2),
        ..req.clone()
    };
    assert_eq!(logs(&s, tail).await, "4\n5\n");
    let limited = LogRequest {
        limit_bytes: Some(3),
        ..req.clone()
    };
    assert_eq!(logs(&s, limited).await, "att");
    let stamped = LogRequest {
        timestamps: true,
        tail_lines: Some(1),
        ..req.clone()
    };
    let line = logs(&s, stamped).await;
    let (ts, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "5\n");
    assert!(ts.ends_with('Z') && !ts.ends_with("0Z"), "{ts}");
    let ts: jiff::Timestamp = ts.parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(ts).as_secs() < 60);
    let future = LogRequest {
        since_time: Some("2999-01-01T00:00:00Z".into()),
        ..req.clone()
    };
    assert_eq!(logs(&s, future).await, "");

    let previous = LogRequest {
        previous: true,
        ..req.clone()
    };
    match s.logs(previous.clone()).await {
        Err(LinkError::BadRequest(m)) => assert_eq!(
            m,
            format!("previous terminated container \"c\" in pod \"talk-{NODE}\" not found")
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a previous log before any restart"),
    }
    let missing = LogRequest {
        container: "nope".into(),
        ..req.clone()
    };
    assert!(matches!(
        s.logs(missing).await,
        Err(LinkError::ContainerNotFound { .. })
    ));
    let no_pod = LogRequest {
        pod: PodRef {
            name: "ghost".into(),
            ..Default::default()
        },
        ..req.clone()
    };
    assert!(matches!(
        s.logs(no_pod).await,
        Err(LinkError::PodNotFound { .. })
    ));

    // Follow streams until the container exits, then ends by itself.
    let follow = LogRequest {
        follow: true,
        ..req.clone()
    };
    let started = std::time::Instant::now();
    let followed = logs(&s, follow).await;
    assert_eq!(followed, "attempt\n1\n2\n3\n4\n5\nbye\n");
    assert!(started.elapsed() >= Duration::from_millis(500));

    // Restarted: the previous log is the first instance's, the current one starts afresh.
    node.wait_for("a restart", 60, || {
        let st = node.container_state("talk", "c")?;
        (st["restartCount"].as_i64()? >= 1 && !st["state"]["running"].is_null()).then_some(())
    });
    assert_eq!(logs(&s, previous).await, "attempt\n1\n2\n3\n4\n5\nbye\n");
    let deadline = std::time::Instant::now() + LIMIT;
    let current = loop {
        let text = logs(&s, req.clone()).await;
        if text.contains('5') {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        current.starts_with("attempt\n1\n2\n3\n4\n5\n"),
        "{current:?}"
    );
    // The CLI shares the mechanism.
    let cli = node.logs("talk", "c", &["--previous", "--tail", "1"]);
    assert_eq!(cli, "bye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_pipes_exit_codes_stdin_tty_resize_and_attach() {
    let node = Node::start();
    node.put_manifest(
        "box.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: c\n    image: busybox\n    workingDir: /tmp\n    env:\n    - {name: FOO, value: bar}\n    command: [sh, -c, 'i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done']\n",
    );
    node.put_manifest(
        "done.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'exit 0']\n",
    );
    node.wait_running("box");
    let s = streams(&node);
    let pod = pod_ref(&node, "box");

    let (out, err, exit) = run(&s, &pod, &["echo", "hello"]).await;
    assert_eq!(
        (out.as_str(), err.as_str(), exit),
        ("hello\n", "", ExecExit::Code(0))
    );
    let (out, err, exit) = run(&s, &pod, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await;
    assert_eq!(
        (out.as_str(), err.as_str(), exit),
        ("out\n", "err\n", ExecExit::Code(3))
    );
    // The container's own environment and working directory.
    let (out, _, _) = run(&s, &pod, &["sh", "-c", "echo $FOO $(pwd)"]).await;
    assert_eq!(out, "bar /tmp\n");
    // Killed by a signal: 128 + signal, as runtimes report it.
    let (_, _, exit) = run(&s, &pod, &["sh", "-c", "kill -9 $$"]).await;
    assert_eq!(exit, ExecExit::Code(137));
    let (_, _, exit) = run(&s, &pod, &["no-such-command"]).await;
    assert!(
        matches!(exit, ExecExit::Error(ref m) if m.contains("no-such-command")),
        "{exit:?}"
    );
    // A background child holding stdout does not keep the session open.
    let started = std::time::Instant::now();
    let (out, _, exit) = run(&s, &pod, &["sh", "-c", "sleep 30 & echo parent"]).await;
    assert_eq!((out.as_str(), exit), ("parent\n", ExecExit::Code(0)));
    assert!(started.elapsed() < Duration::from_secs(10));

    // stdin: closing it ends `cat`.
    let mut req = exec_req(&pod, &["cat"]);
    req.stdin = true;
    let mut session = s.exec(req).await.unwrap();
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(b"ping\npong").await.unwrap();
    drop(stdin);
    assert_eq!(read_to_end(session.stdout.take()).await, "ping\npong");
    assert_eq!(exit_of(session).await, ExecExit::Code(0));

    // A terminal: a /dev/pts device, resizes reach it, stderr is merged.
    let mut req = exec_req(&pod, &["sh"]);
    req.stdin = true;
    req.tty = true;
    let mut session = s.exec(req).await.unwrap();
    assert!(session.stderr.is_none());
    let resize = session.resize.take().unwrap();
    let mut stdin = session.stdin.take().unwrap();
    let mut stdout = session.stdout.take().unwrap();
    resize
        .send(TerminalSize {
            width: 100,
            height: 30,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin
        .write_all(b"tty; stty size; echo to-stderr >&2\n")
        .await
        .unwrap();
    let shown = read_until(&mut stdout, "to-stderr\r\n").await;
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    assert!(shown.contains("30 100"), "{shown:?}");
    resize
        .send(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(b"stty size; exit 7\n").await.unwrap();
    let rest = read_to_end(Some(stdout)).await;
    assert!(rest.contains("40 120"), "{rest:?}");
    assert_eq!(exit_of(session).await, ExecExit::Code(7));

    // Closing stdin on a terminal types end-of-file.
    let mut req = exec_req(&pod, &["cat"]);
    req.stdin = true;
    req.tty = true;
    let mut session = s.exec(req).await.unwrap();
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(b"typed\n").await.unwrap();
    drop(stdin);
    let out = read_to_end(session.stdout.take()).await;
    assert!(out.contains("typed"), "{out:?}");
    assert_eq!(exit_of(session).await, ExecExit::Code(0));

    // Dropping a session kills its command.
    let session = s.exec(exec_req(&pod, &["sleep", "4242"])).await.unwrap();
    let sleeping = |s: NodeStreams, pod: PodRef| async move {
        let (ps, _, _) = run(&s, &pod, &["ps", "-o", "args"]).await;
        ps.contains("sleep 4242")
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while !sleeping(s.clone(), pod.clone()).await {
        assert!(std::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(session);
    while sleeping(s.clone(), pod.clone()).await {
        assert!(std::time::Instant::now() < deadline, "still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No console or notify sockets, process files or links left behind (the last exec's
    // notify socket is removed by the next one).
    let leftovers: Vec<String> = walk(node.data())
        .into_iter()
        .filter(|p| p.contains("exec-") || p.contains("tenant-"))
        .collect();
    assert!(leftovers.len() <= 1, "{leftovers:?}");
    let _ = run(&s, &pod, &["true"]).await;
    let leftovers: Vec<String> = walk(node.data())
        .into_iter()
        .filter(|p| p.contains("exec-") || p.contains("tenant-tty-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Attach: the main process's output from now on, both streams.
    let mut session = s.exec(exec_req(&pod, &[])).await.unwrap();
    assert!(session.stdin.is_none() && session.resize.is_none());
    let mut out = session.stdout.take().unwrap();
    let mut err = session.stderr.take().unwrap();
    let first = read_until(&mut out, "\n").await;
    let n: u32 = first.trim().trim_start_matches("tick ").parse().unwrap();
    let next = format!("tick {}\n", n + 1);
    assert!(
        read_until(&mut out, &next).await.starts_with(&next),
        "consecutive lines"
    );
    read_until(&mut err, &format!("tock {}\n", n + 2)).await;
    drop((out, err));
    // Dropping the readers stops the attach, not the container.
    let exit = exit_of(session).await;
    assert_eq!(exit, ExecExit::Code(0));
    assert!(node.container_state("box", "c").unwrap()["state"]["running"].is_object());

    // Exec needs a running container; names are checked.
    node.wait_for("done terminated", 60, || {
        let st = node.container_state("done", "c")?;
        (!st["state"]["terminated"].is_null()).then_some(())
    });
    let done = pod_ref(&node, "done");
    match s.exec(exec_req(&done, &["true"])).await {
        Err(LinkError::BadRequest(m)) => assert_eq!(m, "container not found (\"c\")"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("exec in an exited container"),
    }
    let mut req = exec_req(&pod, &["true"]);
    req.container = "nope".into();
    assert!(matches!(
        s.exec(req).await,
        Err(LinkError::ContainerNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_ends_when_the_container_exits() {
    let node = Node::start();
    node.put_manifest(
        "count.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: count\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'sleep 2; for i in 1 2 3; do echo out $i; echo err $i >&2; done; sleep 1; echo last']\n",
    );
    node.wait_running("count");
    let s = streams(&node);
    let pod = pod_ref(&node, "count");
    let mut session = s.exec(exec_req(&pod, &[])).await.unwrap();
    let (out, err) = tokio::join!(
        read_to_end(session.stdout.take()),
        read_to_end(session.stderr.take())
    );
    assert_eq!(out, "out 1\nout 2\nout 3\nlast\n");
    assert_eq!(err, "err 1\nerr 2\nerr 3\n");
    assert_eq!(exit_of(session).await, ExecExit::Code(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_pods_loopback() {
    let node = Node::start();
    node.put_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www']\n",
    );
    node.wait_running("web");
    let s = streams(&node);
    let pod = pod_ref(&node, "web");
    let deadline = std::time::Instant::now() + LIMIT;
    let mut conn = loop {
        match s.port_forward(pod.clone(), 8080).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(LIMIT, conn.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains("hello-from-pod"),
        "{reply}"
    );
    // Only inside the pod: the host's loopback has no such server.
    assert!(
        tokio::net::TcpStream::connect("127.0.0.1:8080")
            .await
            .is_err(),
        "the host has a server on 8080; the test cannot tell namespaces apart"
    );
    match s.port_forward(pod.clone(), 8081).await {
        Err(LinkError::Failed(m)) => assert!(
            m.starts_with("failed to connect to localhost:8081 inside namespace")
                && m.contains("connection refused"),
            "{m}"
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    let ghost = PodRef {
        name: "ghost".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.port_forward(ghost, 8080).await,
        Err(LinkError::PodNotFound { .. })
    ));
}

/// Every path under `dir`, as strings.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) && !p.ends_with("rootfs") {
                stack.push(p.clone());
            }
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}
