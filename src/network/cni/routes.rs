//! Host-gw routing between nodes: each other node's pod CIDR is routed via that node's address
//! (`ip route replace 10.42.3.0/24 via 192.168.1.23`), so a packet from a pod leaves through
//! the node's own interface and arrives at the right node unchanged.
//!
//! Why host-gw is the default: edge devices of one site share an L2 segment (one switch, one
//! Wi-Fi), where a plain route is all it takes. No encapsulation (no MTU loss, no per-packet
//! work, which matters on a Pi's CPU), no kernel module beyond what every kernel has, nothing to
//! configure. Its limit: the next hop must be directly reachable. A node behind a router (another
//! segment, another site) is reached through the VXLAN overlay instead ([`super::vxlan`]), chosen
//! per peer by asking the kernel whether the peer's address needs a gateway.
//!
//! Every route this module makes carries [`ROUTE_PROTOCOL`], so routes to nodes that left the
//! map are found and removed without touching anyone else's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{CniError, vxlan};
use crate::network::NetworkMap;

/// edgepod's route protocol number (`proto 237` in `ip route`), free in iproute2's rt_protos.
pub const ROUTE_PROTOCOL: u8 = 237;

/// What [`sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub set: Vec<String>,
    pub removed: Vec<String>,
}

/// The routes `map` asks of node `own`: pod CIDR → gateway, for every other node with both.
pub fn wanted(map: &NetworkMap, own: &str) -> BTreeMap<String, String> {
    // Nodes at this node's own address (`edgepod up --extra-node`) share its network namespace
    // and its bridge: their pods are reached directly, and a route via ourselves would replace
    // the bridge's own route to their subnet.
    let own_address = map.node(own).map(|n| n.address.as_str());
    map.nodes
        .iter()
        .filter(|n| n.name != own && !n.pod_cidr.is_empty())
        .filter(|n| Some(n.address.as_str()) != own_address)
        .filter(|n| n.address.parse::<IpAddr>().is_ok())
        .map(|n| (n.pod_cidr.clone(), n.address.clone()))
        .collect()
}

/// Makes the kernel's routes tagged [`ROUTE_PROTOCOL`] exactly [`wanted`], and turns on IPv4
/// forwarding when there is another node to route to (a node routes its pods' packets; the
/// bridge plugin turns it on too once a pod is attached).
pub fn sync(map: &NetworkMap, own: &str) -> Result<RouteChanges, CniError> {
    let peers = wanted(map, own);
    if !peers.is_empty() {
        enable_forwarding()?;
    }
    // A peer the kernel reaches without a gateway gets a plain route; one behind a router is
    // reached through the VXLAN overlay, via its VTEP (see [`super::vxlan`]).
    let mut want: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for (cidr, address) in &peers {
        if vxlan::directly_reachable(address) {
            want.insert(cidr.clone(), (address.clone(), false));
        } else if let Some(vtep) = vxlan::vtep_ip(cidr) {
            want.insert(cidr.clone(), (vtep.to_string(), true));
        }
    }
    let overlay = want.values().any(|(_, tunnel)| *tunnel);
    if overlay {
        let own_node = map.node(own).ok_or_else(|| CniError::Route {
            cidr: "(overlay)".into(),
            message: format!("node {own} is not in the network map"),
        })?;
        vxlan::ensure_device(&own_node.pod_cidr, &own_node.address)?;
        for (cidr, (_, tunnel)) in &want {
            if *tunnel {
                vxlan::add_peer(cidr, &peers[cidr])?;
            }
        }
    }
    let have = ours()?;
    let mut changes = RouteChanges::default();
    for (cidr, (via, tunnel)) in &want {
        if have.get(cidr) == Some(via) {
            continue;
        }
        let proto = ROUTE_PROTOCOL.to_string();
        let mut args = vec!["route", "replace", cidr.as_str(), "via", via.as_str()];
        if *tunnel {
            args.extend(["dev", vxlan::DEVICE, "onlink"]);
        }
        args.extend(["proto", proto.as_str()]);
        ip(&args).map_err(|message| CniError::Route {
            cidr: cidr.clone(),
            message,
        })?;
        changes.set.push(cidr.clone());
    }
    for cidr in have.keys().filter(|c| !want.contains_key(*c)) {
        ip(&["route", "del", cidr, "proto", &ROUTE_PROTOCOL.to_string()]).map_err(|message| {
            CniError::Route {
                cidr: cidr.clone(),
                message,
            }
        })?;
        vxlan::remove_peer(cidr);
        changes.removed.push(cidr.clone());
    }
    if !overlay {
        vxlan::remove_device();
    }
    Ok(changes)
}

/// The routes edgepod made: destination → gateway.
pub fn ours() -> Result<BTreeMap<String, String>, CniError> {
    let out = ip(&[
        "-4",
        "-o",
        "route",
        "show",
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ])
    .map_err(|message| CniError::Route {
        cidr: "(listing)".into(),
        message,
    })?;
    Ok(parse_routes(&out))
}

/// `ip -o route show` lines (`10.42.3.0/24 via 192.168.1.23 dev eth0 …`) as dst → via.
pub fn parse_routes(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let dst = (*words.first()?).to_string();
            let via = words
                .windows(2)
                .find(|w| w[0] == "via")
                .map(|w| w[1].to_string())?;
            Some((dst, via))
        })
        .collect()
}

fn enable_forwarding() -> Result<(), CniError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, b"1").map_err(|e| CniError::Route {
        cidr: "(all)".into(),
        message: format!("enabling {path}: {e}"),
    })
}

fn ip(args: &[&str]) -> Result<String, String> {
    vxlan::run("ip", args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NodeRoute;

    #[test]
    fn every_other_node_with_a_cidr_and_an_address_is_routed() {
        let node = |name: &str, cidr: &str, addr: &str| NodeRoute {
            name: name.into(),
            pod_cidr: cidr.into(),
            address: addr.into(),
        };
        let map = NetworkMap {
            nodes: vec![
                node("pi-1", "10.42.0.0/24", "192.168.1.10"),
                node("pi-2", "10.42.1.0/24", "192.168.1.11"),
                node("pi-3", "", "192.168.1.12"),
                node("pi-4", "10.42.3.0/24", "not-an-ip"),
            ],
            ..Default::default()
        };
        let w = wanted(&map, "pi-1");
        assert_eq!(w.len(), 1);
        assert_eq!(
            w.get("10.42.1.0/24").map(String::as_str),
            Some("192.168.1.11")
        );
    }

    #[test]
    fn ip_route_output_is_read() {
        let text = "10.42.1.0/24 via 192.168.1.11 dev eth0 proto 237 \n10.42.2.0/24 via 192.168.1.12 dev eth0 proto 237 onlink \n";
        let r = parse_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r["10.42.2.0/24"], "192.168.1.12");
    }

    /// Runs `f` on a thread of its own inside a fresh network namespace (the thread's only:
    /// the host's stays untouched), with a veth pair up on 192.168.50.1/24.
    fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            for args in [
                &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
                &["addr", "add", "192.168.50.1/24", "dev", "v0"],
                &["link", "set", "v0", "up"],
                &["link", "set", "v1", "up"],
            ] {
                ip(args).unwrap();
            }
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn routes_follow_the_map_and_only_ours_are_removed() {
        let node = |name: &str, cidr: &str, addr: &str| NodeRoute {
            name: name.into(),
            pod_cidr: cidr.into(),
            address: addr.into(),
        };
        let (first, second, routes, foreign, forwarding) = in_netns(move || {
            ip(&["route", "add", "10.50.0.0/24", "via", "192.168.50.3"]).unwrap();
            let mut map = NetworkMap {
                nodes: vec![
                    node("pi-1", "10.42.0.0/24", "192.168.50.1"),
                    node("pi-2", "10.42.1.0/24", "192.168.50.2"),
                    node("pi-3", "10.42.2.0/24", "192.168.50.3"),
                ],
                ..Default::default()
            };
            let first = sync(&map, "pi-1").unwrap();
            let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
            map.nodes.retain(|n| n.name != "pi-3");
            map.nodes[1].address = "192.168.50.4".into();
            let second = sync(&map, "pi-1").unwrap();
            let foreign = ip(&["-o", "route", "show", "10.50.0.0/24"]).unwrap();
            (first, second, ours().unwrap(), foreign, forwarding)
        });
        assert_eq!(first.set, ["10.42.1.0/24", "10.42.2.0/24"]);
        assert_eq!(second.set, ["10.42.1.0/24"]);
        assert_eq!(second.removed, ["10.42.2.0/24"]);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes["10.42.1.0/24"], "192.168.50.4");
        assert!(foreign.contains("via 192.168.50.3"), "{foreign}");
        assert_eq!(forwarding.trim(), "1");
    }
}
