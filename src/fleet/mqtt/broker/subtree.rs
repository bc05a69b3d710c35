//! Subscriptions as a tree of topic levels, so routing a publish walks the topic's levels
//! instead of testing every filter of every client (a hub with a thousand nodes holds thousands
//! of filters). `+` and `#` are children like any other level, visited as wildcards.
//!
//! Owns only the filter → client mapping; sessions keep their own list for unsubscribing.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::mqttbytes::QoS;

#[derive(Default)]
pub(super) struct SubTree {
    root: Node,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Clients whose filter ends at this node, with their granted QoS.
    clients: HashMap<Arc<str>, QoS>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.clients.is_empty()
    }
}

impl SubTree {
    pub fn insert(&mut self, filter: &str, client: &Arc<str>, qos: QoS) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        node.clients.insert(client.clone(), qos);
    }

    pub fn remove(&mut self, filter: &str, client: &str) {
        let levels: Vec<&str> = filter.split('/').collect();
        remove_at(&mut self.root, &levels, client);
    }

    /// Adds every client with a filter matching `topic` to `out`, with the highest QoS of its
    /// matching filters (MQTT 3.1.1 §3.3.5: one copy per client, at the maximum QoS).
    pub fn collect(&self, topic: &str, out: &mut HashMap<Arc<str>, QoS>) {
        let levels: Vec<&str> = topic.split('/').collect();
        // Wildcards at the first level do not match `$` topics (§4.7.2).
        collect_at(&self.root, &levels, !topic.starts_with('$'), out);
    }
}

fn add(out: &mut HashMap<Arc<str>, QoS>, clients: &HashMap<Arc<str>, QoS>) {
    for (client, qos) in clients {
        let entry = out.entry(client.clone()).or_insert(*qos);
        if (*qos as u8) > (*entry as u8) {
            *entry = *qos;
        }
    }
}

fn collect_at(node: &Node, levels: &[&str], wildcards: bool, out: &mut HashMap<Arc<str>, QoS>) {
    if wildcards {
        // `#` matches the rest, and the parent level itself (`a/#` matches `a`).
        if let Some(hash) = node.children.get("#") {
            add(out, &hash.clients);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        add(out, &node.clients);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect_at(child, rest, true, out);
    }
    if wildcards {
        if let Some(plus) = node.children.get("+") {
            collect_at(plus, rest, true, out);
        }
    }
}

/// Removes the client from the filter's node and prunes the branch that became empty.
fn remove_at(node: &mut Node, levels: &[&str], client: &str) {
    let Some((level, rest)) = levels.split_first() else {
        node.clients.remove(client);
        return;
    };
    if let Some(child) = node.children.get_mut(*level) {
        remove_at(child, rest, client);
        if child.is_empty() {
            node.children.remove(*level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::topic;
    use super::*;

    fn matched(tree: &SubTree, topic: &str) -> Vec<(String, u8)> {
        let mut out = HashMap::new();
        tree.collect(topic, &mut out);
        let mut v: Vec<_> = out
            .into_iter()
            .map(|(c, q)| (c.to_string(), q as u8))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_tree_agrees_with_plain_matching() {
        let filters = [
            "#", "+", "+/+", "a", "a/#", "a/+", "a/b", "a/b/#", "a/+/c", "+/b/c", "a//c", "/#",
            "$SYS/#", "$SYS/+", "+/x",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/x/c", "a//c", "/", "/a", "b", "$SYS/x", "$SYS", "a/b/c/d",
            "x/x",
        ];
        let mut tree = SubTree::default();
        for f in filters {
            tree.insert(f, &Arc::from(f), QoS::AtMostOnce);
        }
        for t in topics {
            let mut want: Vec<(String, u8)> = filters
                .iter()
                .filter(|f| topic::matches(t, f))
                .map(|f| (f.to_string(), 0))
                .collect();
            want.sort();
            assert_eq!(matched(&tree, t), want, "topic {t}");
        }
    }

    #[test]
    fn one_copy_per_client_at_the_highest_qos() {
        let mut tree = SubTree::default();
        let c: Arc<str> = Arc::from("c");
        tree.insert("a/#", &c, QoS::AtMostOnce);
        tree.insert("a/b", &c, QoS::AtLeastOnce);
        assert_eq!(matched(&tree, "a/b"), [("c".to_string(), 1)]);
    }

    #[test]
    fn removal_prunes_empty_branches() {
        let mut tree = SubTree::default();
        let c: Arc<str> = Arc::from("c");
        let d: Arc<str> = Arc::from("d");
        tree.insert("a/b/c", &c, QoS::AtMostOnce);
        tree.insert("a/b", &d, QoS::AtMostOnce);
        tree.remove("a/b/c", "c");
        assert!(matched(&tree, "a/b/c").is_empty());
        assert_eq!(matched(&tree, "a/b").len(), 1);
        tree.remove("a/b", "d");
        tree.remove("not/there", "d");
        assert!(tree.root.is_empty());
    }
}
