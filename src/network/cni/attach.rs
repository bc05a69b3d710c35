//! ADD, DEL and CHECK of a whole configuration list for one pod, as libcni chains them: each
//! plugin gets its own configuration with the list's `name` and `cniVersion`, the previous
//! plugin's result as `prevResult`, and `runtimeConfig` for the capabilities it declares; DEL
//! runs the plugins in reverse order with the result the ADD returned.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cache::{Attachment, Cache};
use super::config::{self, ConfList};
use super::exec::{self, Invocation, Op};
use super::result::CniResult;
use super::{CniError, POD_IFNAME};

/// The pod an attachment is for, as the kubelet names it to plugins.
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The sandbox incarnation (see [`Attachment::sandbox_id`]).
    pub sandbox_id: &'a str,
}

/// One hostPort, as the `portMappings` capability carries it to the portmap plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`, lower case as the kubelet passes it.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Plugins of one node: where they are and where attachments are recorded.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    cache: Cache,
}

impl Cni {
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            bin_dirs,
            cache: Cache::new(cache_dir),
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Attaches the pod's network namespace `netns` to network `conf`; records and returns the
    /// attachment. On failure what the plugins already did is undone.
    pub fn add(
        &self,
        conf: &ConfList,
        pod: &PodRef<'_>,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Attachment, CniError> {
        let mut a = Attachment {
            pod_uid: pod.uid.to_string(),
            pod_namespace: pod.namespace.to_string(),
            pod_name: pod.name.to_string(),
            container_id: pod.uid.to_string(),
            netns: netns.display().to_string(),
            ifname: POD_IFNAME.to_string(),
            sandbox_id: pod.sandbox_id.to_string(),
            config: conf.raw.clone(),
            result: Value::Null,
            port_mappings: ports.to_vec(),
            pod_ips: Vec::new(),
        };
        // Recorded before the first plugin runs: an agent killed mid-ADD still finds what to
        // DEL (an IP taken from host-local, a veth) on its next start.
        self.cache.put(&a)?;
        let pod_name = format!("{}/{}", pod.namespace, pod.name);
        let args = cni_args(&a);
        let mut prev: Option<Value> = None;
        let mut last = CniResult::default();
        for i in 0..conf.plugins.len() {
            let plugin = conf.plugin_type(i);
            let inv = Invocation {
                op: Op::Add,
                container_id: &a.container_id,
                netns: &a.netns,
                ifname: &a.ifname,
                args: &args,
                pod: &pod_name,
            };
            let stdin = plugin_stdin(conf, i, prev.as_ref(), ports);
            let outcome = exec::invoke(&self.bin_dirs, plugin, &inv, &stdin).and_then(|out| {
                let parsed = CniResult::parse(&pod_name, plugin, &out)?;
                let raw: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
                Ok((parsed, raw))
            });
            match outcome {
                Ok((parsed, raw)) => {
                    last = parsed;
                    prev = Some(raw);
                }
                Err(e) => {
                    a.result = prev.unwrap_or(Value::Null);
                    if let Err(undo) = self.del(&a) {
                        tracing::warn!(pod = %pod_name, "undoing a failed CNI ADD: {undo}");
                    }
                    return Err(e);
                }
            }
        }
        a.result = prev.unwrap_or(Value::Null);
        a.pod_ips = last.pod_ips().iter().map(|ip| ip.to_string()).collect();
        self.cache.put(&a)?;
        Ok(a)
    }

    /// Detaches `a` with the configuration it was added with, plugins in reverse order, and
    /// forgets it. A network namespace that is already gone (a reboot, a crash) is passed as
    /// empty, so plugins release what lives outside it (IPs, host veths, port mappings).
    /// Every plugin runs even when one fails; the record stays until all succeeded.
    pub fn del(&self, a: &Attachment) -> Result<(), CniError> {
        let conf = config::from_raw(
            &self.cache.dir().join(format!("{}.json", a.pod_uid)),
            &a.config,
        )?;
        let pod_name = format!("{}/{}", a.pod_namespace, a.pod_name);
        let args = cni_args(a);
        let netns = if is_netns(Path::new(&a.netns)) {
            a.netns.as_str()
        } else {
            ""
        };
        let prev = (conf.at_least_040() && !a.result.is_null()).then_some(&a.result);
        let mut first_error = None;
        for i in (0..conf.plugins.len()).rev() {
            let plugin = conf.plugin_type(i);
            let inv = Invocation {
                op: Op::Del,
                container_id: &a.container_id,
                netns,
                ifname: &a.ifname,
                args: &args,
                pod: &pod_name,
            };
            let stdin = plugin_stdin(&conf, i, prev, &a.port_mappings);
            if let Err(e) = exec::invoke(&self.bin_dirs, plugin, &inv, &stdin) {
                tracing::warn!(pod = %pod_name, "{e}");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => self.cache.remove(&a.pod_uid),
        }
    }

    /// DEL of pod `uid`'s recorded attachment; false when there was none.
    pub fn del_cached(&self, uid: &str) -> Result<bool, CniError> {
        match self.cache.get(uid)? {
            Some(a) => self.del(&a).map(|()| true),
            None => Ok(false),
        }
    }

    /// CHECK of a recorded attachment (CNI 0.4.0 and later; a no-op for older lists and for
    /// lists with `disableCheck`).
    pub fn check(&self, a: &Attachment) -> Result<(), CniError> {
        let conf = config::from_raw(
            &self.cache.dir().join(format!("{}.json", a.pod_uid)),
            &a.config,
        )?;
        if !conf.at_least_040() || conf.disable_check || a.result.is_null() {
            return Ok(());
        }
        let pod_name = format!("{}/{}", a.pod_namespace, a.pod_name);
        let args = cni_args(a);
        for i in 0..conf.plugins.len() {
            let inv = Invocation {
                op: Op::Check,
                container_id: &a.container_id,
                netns: &a.netns,
                ifname: &a.ifname,
                args: &args,
                pod: &pod_name,
            };
            let stdin = plugin_stdin(&conf, i, Some(&a.result), &a.port_mappings);
            exec::invoke(&self.bin_dirs, conf.plugin_type(i), &inv, &stdin)?;
        }
        Ok(())
    }
}

/// `CNI_ARGS` as the kubelet passes them (`IgnoreUnknown` so plugins that know none of the
/// `K8S_*` keys accept them).
fn cni_args(a: &Attachment) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        a.pod_namespace, a.pod_name, a.container_id, a.pod_uid
    )
}

/// Plugin `i`'s stdin: its own configuration with the list's name and version, the previous
/// result, and the runtime configuration of the capabilities it declares.
pub fn plugin_stdin(
    conf: &ConfList,
    i: usize,
    prev: Option<&Value>,
    ports: &[PortMapping],
) -> Vec<u8> {
    let mut obj = match conf.plugins.get(i) {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    obj.insert("name".into(), Value::String(conf.name.clone()));
    obj.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    match prev {
        Some(p) => {
            obj.insert("prevResult".into(), p.clone());
        }
        None => {
            obj.remove("prevResult");
        }
    }
    obj.remove("runtimeConfig");
    if conf.has_capability(i, "portMappings") {
        let mut rc = Map::new();
        rc.insert(
            "portMappings".into(),
            serde_json::to_value(ports).unwrap_or(Value::Array(vec![])),
        );
        obj.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// True when `path` is a bind-mounted network namespace (the nsfs filesystem), not a leftover
/// empty file.
fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    match nix::sys::statfs::statfs(path) {
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => s.filesystem_type().0 as i64 == NSFS_MAGIC,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> ConfList {
        config::parse(
            Path::new("x.conflist"),
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"bridge","bridge":"b0","runtimeConfig":{"stale":1}},
                {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#,
            true,
        )
        .unwrap()
    }

    #[test]
    fn each_plugin_gets_name_version_prev_result_and_its_capabilities() {
        let c = conf();
        let ports = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let first: Value = serde_json::from_slice(&plugin_stdin(&c, 0, None, &ports)).unwrap();
        assert_eq!(first["name"], "net");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "b0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "{first}");
        let prev = serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]});
        let second: Value =
            serde_json::from_slice(&plugin_stdin(&c, 1, Some(&prev), &ports)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"]["portMappings"],
            serde_json::json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp"}])
        );
    }

    #[test]
    fn add_chains_results_and_del_runs_in_reverse_with_the_cached_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        // A plugin that logs its command and whether it saw a prevResult, and answers with a
        // fixed result of its own.
        for (name, ip) in [("first", "10.0.0.2/24"), ("second", "10.0.0.2/24")] {
            let p = bin.join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\nconf=$(cat)\ncase \"$conf\" in *prevResult*) prev=prev;; *) prev=none;; esac\necho \"$CNI_COMMAND {name} $prev\" >> {log}\nprintf '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"eth0\",\"sandbox\":\"%s\"}}],\"ips\":[{{\"interface\":0,\"address\":\"{ip}\"}}]}}' \"$CNI_NETNS\"\n",
                    log = log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let c = config::parse(
            Path::new("x.conflist"),
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"first"},{"type":"second"}]}"#,
            true,
        )
        .unwrap();
        let cni = Cni::new(vec![bin], dir.path().join("cache"));
        let pod = PodRef {
            uid: "u1",
            namespace: "default",
            name: "web",
            sandbox_id: "s1",
        };
        let a = cni
            .add(&c, &pod, Path::new("/nonexistent/net"), &[])
            .unwrap();
        assert_eq!(a.pod_ips, ["10.0.0.2"]);
        assert_eq!(cni.cache().get("u1").unwrap().unwrap(), a);
        assert!(cni.del_cached("u1").unwrap());
        assert!(!cni.del_cached("u1").unwrap());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "ADD first none\nADD second prev\nDEL second prev\nDEL first prev\n"
        );
    }
}
