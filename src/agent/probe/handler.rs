//! The actions probes and lifecycle hooks take (exec, tcpSocket, httpGet, grpc, sleep), run
//! asynchronously against one container.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::AsyncReadExt;

use crate::runtime::Runtime;
use crate::runtime::exec::ExecResult;

use super::{grpc, http, netns};

/// What one run of a probe or hook found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
    /// The check itself could not be made (a probe then counts neither way).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Tcp {
        host: Option<String>,
        port: IntOrString,
    },
    Http {
        host: Option<String>,
        port: IntOrString,
        path: String,
        scheme: String,
        headers: Vec<(String, String)>,
    },
    Grpc {
        port: i32,
        service: String,
    },
    Sleep(Duration),
}

impl Action {
    pub fn from_probe(p: &Probe) -> Option<Action> {
        if let Some(e) = &p.exec {
            return Some(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        if let Some(t) = &p.tcp_socket {
            return Some(Action::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: t.port.clone(),
            });
        }
        if let Some(h) = &p.http_get {
            return Some(http_action(h));
        }
        p.grpc.as_ref().map(|g| Action::Grpc {
            port: g.port,
            service: g.service.clone().unwrap_or_default(),
        })
    }

    pub fn from_handler(h: &LifecycleHandler) -> Option<Action> {
        if let Some(e) = &h.exec {
            return Some(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        if let Some(g) = &h.http_get {
            return Some(http_action(g));
        }
        if let Some(t) = &h.tcp_socket {
            return Some(Action::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: t.port.clone(),
            });
        }
        h.sleep
            .as_ref()
            .map(|s| Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)))
    }

    /// A short name for events: "exec", "http-get", …
    pub fn describe(&self) -> String {
        match self {
            Action::Exec(cmd) => format!("exec {cmd:?}"),
            Action::Tcp { port, .. } => format!("tcp-socket :{}", port_text(port)),
            Action::Http {
                path, port, scheme, ..
            } => {
                format!(
                    "http-get {}://:{}{path}",
                    scheme.to_lowercase(),
                    port_text(port)
                )
            }
            Action::Grpc { port, .. } => format!("grpc :{port}"),
            Action::Sleep(d) => format!("sleep {}s", d.as_secs()),
        }
    }
}

fn http_action(h: &k8s_openapi::api::core::v1::HTTPGetAction) -> Action {
    Action::Http {
        host: h.host.clone().filter(|h| !h.is_empty()),
        port: h.port.clone(),
        path: h.path.clone().unwrap_or_else(|| "/".into()),
        scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
    }
}

fn port_text(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// The container an action runs against.
#[derive(Debug, Clone)]
pub struct Target {
    pub runtime: Runtime,
    pub container_id: String,
    /// The pod's network namespace (`None`: hostNetwork).
    pub netns: Option<PathBuf>,
    pub ports: Vec<ContainerPort>,
}

impl Target {
    /// Hooks and probes of container `id` in pod `pod_uid` connect through the pod's network
    /// namespace, or the host's for hostNetwork pods.
    pub fn new(
        runtime: &Runtime,
        pod_uid: &str,
        host_network: bool,
        id: &str,
        ports: Vec<ContainerPort>,
    ) -> Target {
        Target {
            runtime: runtime.clone(),
            container_id: id.to_string(),
            netns: (!host_network).then(|| runtime.sandbox(pod_uid, false, false).ns_path("net")),
            ports,
        }
    }

    fn port(&self, p: &IntOrString) -> Result<u16, String> {
        let n = match p {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("port \"{name}\" is not a named port of the container"))?,
        };
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {n}"))
    }

    async fn connect(
        &self,
        host: Option<&str>,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, String> {
        let ip: IpAddr = match host {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(h) => h.parse().map_err(|_| {
                format!("host \"{h}\": only IP addresses can be probed from this node yet")
            })?,
        };
        let std_stream = netns::tcp_socket(self.netns.as_deref(), ip.is_ipv6())
            .map_err(|e| format!("socket: {e}"))?;
        let socket = tokio::net::TcpSocket::from_std_stream(std_stream);
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        }
    }
}

/// Runs `action` once against `target`, bounded by `timeout`.
pub async fn run(action: &Action, target: &Target, timeout: Duration) -> Outcome {
    match action {
        Action::Exec(cmd) => exec(cmd, target, timeout).await,
        Action::Tcp { host, port } => {
            let port = match target.port(port) {
                Ok(p) => p,
                Err(e) => return Outcome::Unknown(e),
            };
            match target.connect(host.as_deref(), port, timeout).await {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Failure(e),
            }
        }
        Action::Http {
            host,
            port,
            path,
            scheme,
            headers,
        } => {
            if !scheme.eq_ignore_ascii_case("HTTP") {
                return Outcome::Unknown(format!(
                    "scheme {scheme} is not supported by this agent yet (HTTP is)"
                ));
            }
            let port = match target.port(port) {
                Ok(p) => p,
                Err(e) => return Outcome::Unknown(e),
            };
            let stream = match target.connect(host.as_deref(), port, timeout).await {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Failure(format!(
                        "Get \"http://{}:{port}{path}\": {e}",
                        host.as_deref().unwrap_or("127.0.0.1")
                    ));
                }
            };
            let req = http::Request {
                host: host.as_deref().unwrap_or("127.0.0.1"),
                port,
                path,
                headers,
            };
            match http::get(stream, &req, timeout).await {
                Ok((code, _)) if (200..400).contains(&code) => Outcome::Success,
                Ok((code, body)) => Outcome::Failure(
                    format!("HTTP probe failed with statuscode: {code} {}", body.trim())
                        .trim_end()
                        .to_string(),
                ),
                Err(e) => Outcome::Failure(e),
            }
        }
        Action::Grpc { port, service } => {
            let Some(port) = u16::try_from(*port).ok().filter(|p| *p > 0) else {
                return Outcome::Unknown(format!("invalid port {port}"));
            };
            match target.connect(None, port, timeout).await {
                Ok(stream) => {
                    match grpc::check(stream, &format!("127.0.0.1:{port}"), service, timeout).await
                    {
                        Ok(()) => Outcome::Success,
                        Err(e) => Outcome::Failure(e),
                    }
                }
                Err(e) => Outcome::Failure(format!(
                    "failed to connect service \"127.0.0.1:{port}\" within {}s: {e}",
                    timeout.as_secs()
                )),
            }
        }
        Action::Sleep(d) => {
            tokio::time::sleep((*d).min(timeout)).await;
            Outcome::Success
        }
    }
}

async fn exec(cmd: &[String], target: &Target, timeout: Duration) -> Outcome {
    if cmd.is_empty() {
        return Outcome::Unknown("exec: no command".into());
    }
    let std_cmd = target
        .runtime
        .exec_command(&target.container_id, cmd, timeout);
    let mut child = match tokio::process::Command::from(std_cmd).spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Unknown(format!("exec helper: {e}")),
    };
    let Some(mut stdout) = child.stdout.take() else {
        return Outcome::Unknown("exec helper has no stdout".into());
    };
    let mut out = Vec::new();
    // The helper enforces `timeout` on the command; this bound only guards against the helper.
    let read = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        stdout.read_to_end(&mut out),
    )
    .await;
    if read.is_err() {
        let _ = child.start_kill();
        return Outcome::Unknown("exec helper did not answer".into());
    }
    let result = ExecResult::from_reply(&out);
    if let Some(e) = result.error {
        return Outcome::Unknown(e);
    }
    if result.timed_out {
        return Outcome::Failure(format!(
            "command {cmd:?} timed out after {}s",
            timeout.as_secs_f64()
        ));
    }
    if result.exit_code == 0 {
        Outcome::Success
    } else {
        let output = result.output.trim();
        Outcome::Failure(if output.is_empty() {
            format!("command {cmd:?} exited with {}", result.exit_code)
        } else {
            output.to_string()
        })
    }
}
