//! The VXLAN overlay for nodes that are not on this node's L2 segment (flannel's "vxlan with
//! direct routing"): a node whose address the kernel reaches without a gateway gets a plain
//! host-gw route (see [`super::routes`]); one behind a router is reached through the VXLAN
//! device [`DEVICE`], which wraps pod packets in UDP to the node's own address.
//!
//! Everything is derived from the [`crate::network::NetworkMap`], so no extra state travels:
//! each node's tunnel endpoint (VTEP) address is its pod CIDR's network address (10.42.3.0 for
//! 10.42.3.0/24) and its VTEP MAC is made of that address (`0e:70:0a:2a:03:00`). For a peer, a
//! route `CIDR via VTEP dev edgepod.1 onlink`, a permanent neighbour entry VTEP → MAC and a
//! forwarding entry MAC → peer address are all the kernel needs.
//!
//! Owns: the [`DEVICE`] link and its neighbour and forwarding entries. Must not touch: routes
//! (those are [`super::routes`]'), other links.
//!
//! The device's MTU is 1450 (50 bytes of VXLAN, UDP, IP and Ethernet headers inside a 1500-byte
//! link); pods keep 1500 and learn the smaller path MTU from the kernel's ICMP for traffic that
//! crosses the tunnel.
use std::net::Ipv4Addr;
use std::process::Command;

use super::CniError;

/// The overlay device (as flannel's `flannel.1`).
pub const DEVICE: &str = "edgepod.1";
/// VXLAN network identifier.
pub const VNI: &str = "1";
/// The UDP port: the Linux kernel's (and flannel's) VXLAN default, 8472.
pub const PORT: &str = "8472";
pub const MTU: &str = "1450";

/// A node's VTEP address: its pod CIDR's network address.
pub fn vtep_ip(pod_cidr: &str) -> Option<Ipv4Addr> {
    pod_cidr.split('/').next()?.parse().ok()
}

/// A node's VTEP MAC: locally administered, unicast, made of the VTEP address.
pub fn vtep_mac(pod_cidr: &str) -> Option<String> {
    let o = vtep_ip(pod_cidr)?.octets();
    Some(format!(
        "0e:70:{:02x}:{:02x}:{:02x}:{:02x}",
        o[0], o[1], o[2], o[3]
    ))
}

/// True when the kernel reaches `address` without a gateway: one L2 segment, host-gw works.
pub fn directly_reachable(address: &str) -> bool {
    match run("ip", &["-4", "-o", "route", "get", address]) {
        Ok(out) => !out.split_whitespace().any(|w| w == "via"),
        // Unroutable now: a plain route would not help either; the overlay is tried.
        Err(_) => false,
    }
}

/// Makes [`DEVICE`] exist for this node (VTEP of `own_cidr`, sending from `own_address`).
pub fn ensure_device(own_cidr: &str, own_address: &str) -> Result<(), CniError> {
    let err = |message: String| CniError::Route {
        cidr: own_cidr.to_string(),
        message,
    };
    let mac = vtep_mac(own_cidr).ok_or_else(|| err("not an IPv4 pod CIDR".into()))?;
    let vtep = vtep_ip(own_cidr).ok_or_else(|| err("not an IPv4 pod CIDR".into()))?;
    let details = run("ip", &["-d", "-o", "link", "show", DEVICE]).unwrap_or_default();
    let current = details.contains(&format!("local {own_address} "))
        && details.contains(&format!("link/ether {mac} "));
    if !current {
        let _ = run("ip", &["link", "del", DEVICE]);
        run(
            "ip",
            &[
                "link",
                "add",
                DEVICE,
                "address",
                &mac,
                "mtu",
                MTU,
                "type",
                "vxlan",
                "id",
                VNI,
                "local",
                own_address,
                "dstport",
                PORT,
                "nolearning",
            ],
        )
        .map_err(err)?;
    }
    run(
        "ip",
        &["addr", "replace", &format!("{vtep}/32"), "dev", DEVICE],
    )
    .map_err(err)?;
    run("ip", &["link", "set", DEVICE, "up"]).map_err(err)?;
    Ok(())
}

/// Removes [`DEVICE`] (no peer needs the overlay any more); its entries go with it.
pub fn remove_device() {
    let _ = run("ip", &["link", "del", DEVICE]);
}

/// The neighbour and forwarding entries that send `peer_cidr`'s VTEP to `peer_address`.
pub fn add_peer(peer_cidr: &str, peer_address: &str) -> Result<(), CniError> {
    let err = |message: String| CniError::Route {
        cidr: peer_cidr.to_string(),
        message,
    };
    let (Some(vtep), Some(mac)) = (vtep_ip(peer_cidr), vtep_mac(peer_cidr)) else {
        return Err(err("not an IPv4 pod CIDR".into()));
    };
    run(
        "ip",
        &[
            "neigh",
            "replace",
            &vtep.to_string(),
            "lladdr",
            &mac,
            "dev",
            DEVICE,
            "nud",
            "permanent",
        ],
    )
    .map_err(err)?;
    run(
        "bridge",
        &[
            "fdb",
            "replace",
            &mac,
            "dev",
            DEVICE,
            "dst",
            peer_address,
            "self",
            "permanent",
        ],
    )
    .map_err(err)?;
    Ok(())
}

/// Drops a former peer's entries (errors ignored: the device may be gone already).
pub fn remove_peer(peer_cidr: &str) {
    if let (Some(vtep), Some(mac)) = (vtep_ip(peer_cidr), vtep_mac(peer_cidr)) {
        let _ = run("ip", &["neigh", "del", &vtep.to_string(), "dev", DEVICE]);
        let _ = run("bridge", &["fdb", "del", &mac, "dev", DEVICE, "self"]);
    }
}

/// Runs `program` (`ip`, `bridge`) and returns its output; the error names the command and
/// carries its stderr. Shared with [`super::routes`].
pub(super) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vteps_are_derived_from_the_pod_cidr() {
        assert_eq!(vtep_ip("10.42.3.0/24"), Some(Ipv4Addr::new(10, 42, 3, 0)));
        assert_eq!(
            vtep_mac("10.42.3.0/24").as_deref(),
            Some("0e:70:0a:2a:03:00")
        );
        assert_eq!(
            vtep_mac("10.77.0.128/25").as_deref(),
            Some("0e:70:0a:4d:00:80")
        );
        assert_eq!(vtep_mac("fd00::/64"), None);
    }
}
