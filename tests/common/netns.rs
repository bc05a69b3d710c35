//! A network namespace of its own for a whole `edgepod up` (or agent) process, so tests that
//! give pods real networks (bridges, veths, iptables rules, routes) never touch the host's
//! namespace or each other. Deleted on drop, also when the test fails.
use std::process::Command;

/// `--pod-network none` unless `args` choose a pod network: the fixtures' agents run in the
/// host's namespace side by side and must not make bridges there.
pub fn default_pod_network<S: AsRef<str>>(args: &[S]) -> Vec<&'static str> {
    if args.iter().any(|a| a.as_ref() == "--pod-network") {
        Vec::new()
    } else {
        vec!["--pod-network", "none"]
    }
}

/// `ip netns add edgepod-<test>-<pid>` with loopback up and an "uplink" carrying
/// [`NetNs::HOST_IP`], which the agent inside reports as the node's address.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// The node's address inside the namespace.
    pub const HOST_IP: &'static str = "192.168.77.1";
    /// The name of the namespace's uplink interface (what a hostNetwork pod must see).
    pub const UPLINK: &'static str = "uplink0";

    pub fn new(test: &str) -> NetNs {
        let name = format!("edgepod-{test}-{}", std::process::id());
        // A namespace left by a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // A veth pair with both ends inside (this kernel has no dummy driver).
        let peer = format!("{}p", Self::UPLINK);
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            Self::UPLINK,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", Self::HOST_IP),
            "dev",
            Self::UPLINK,
        ]);
        ns.exec_ok(&["ip", "link", "set", Self::UPLINK, "up"]);
        ns
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs `cmd` inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap()
    }

    /// Runs `cmd` inside the namespace, asserting success; returns stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the veth interfaces in the namespace (pods' host ends; the uplink not counted).
    pub fn veths(&self) -> Vec<String> {
        self.exec_ok(&["ip", "-o", "link", "show", "type", "veth"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| !n.is_empty() && !n.starts_with(Self::UPLINK))
            .collect()
    }
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace takes its bridge, veths and iptables rules with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
