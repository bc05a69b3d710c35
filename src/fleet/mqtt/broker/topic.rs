//! MQTT 3.1.1 topic names and filters: validity, matching a topic against a filter, and whether
//! one filter only ever matches topics another filter allows (how the ACL judges a subscription
//! that carries wildcards).
//!
//! Owns no state; used by the router, the subscription tree and the ACL.

/// A topic name a client may publish to: non-empty, no wildcard characters, no NUL (MQTT
/// 3.1.1 §4.7.3, §1.5.3), at most 65,535 bytes (the codec's length prefix).
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= usize::from(u16::MAX) && !topic.contains(['+', '#', '\0'])
}

/// A topic filter a client may subscribe to: `+` occupies a whole level, `#` only as the whole
/// last level (MQTT 3.1.1 §4.7.1).
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > usize::from(u16::MAX) || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid filter). Topics beginning with
/// `$` are not matched by a filter beginning with a wildcard (§4.7.2).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            // `a/#` matches `a` too: `#` includes the parent level.
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether every topic `filter` can match is also matched by `allowed` (both valid filters):
/// a node allowed `a/N/#` may subscribe `a/N/x/+` but not `a/+/#` nor `#`.
pub fn covered_by(filter: &str, allowed: &str) -> bool {
    let mut f_levels = filter.split('/');
    let mut a_levels = allowed.split('/');
    loop {
        match (f_levels.next(), a_levels.next()) {
            // `#` covers the rest, and its parent level (`a/#` matches `a`).
            (_, Some("#")) => return true,
            (None, None) => return true,
            // `#` in the filter spans levels the allowed filter does not end with `#` for.
            (Some("#"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(f), Some(a)) if f == a => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "sport/tennis/+",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "##", "a/\0"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn topics_are_validated() {
        assert!(valid_topic("a/b"));
        assert!(valid_topic("/"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a/+"));
        assert!(!valid_topic("a/#"));
    }

    #[test]
    fn topic_matching_follows_the_spec() {
        let yes = [
            ("a/b/c", "a/b/c"),
            ("a/b/c", "a/+/c"),
            ("a/b/c", "a/#"),
            ("a", "a/#"),
            ("a/b/c", "#"),
            ("a/", "a/+"),
            ("/a", "+/a"),
            ("a/b", "+/+"),
            ("$SYS/x", "$SYS/#"),
            ("sport/tennis/player1/ranking", "sport/tennis/player1/#"),
        ];
        for (t, f) in yes {
            assert!(matches(t, f), "{t} ~ {f}");
        }
        let no = [
            ("a/b/c", "a/b"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/+"),
            ("a", "a/+"),
            ("b/a", "a/#"),
            ("$SYS/x", "#"),
            ("$SYS/x", "+/x"),
            ("a/b", "a/c"),
        ];
        for (t, f) in no {
            assert!(!matches(t, f), "{t} !~ {f}");
        }
    }

    #[test]
    fn coverage_of_filters_by_an_allowed_filter() {
        let allowed = "edgepod/v1/c/nodes/n1/in/#";
        for ok in [
            "edgepod/v1/c/nodes/n1/in/#",
            "edgepod/v1/c/nodes/n1/in/desired",
            "edgepod/v1/c/nodes/n1/in/+",
            "edgepod/v1/c/nodes/n1/in/+/x/#",
            "edgepod/v1/c/nodes/n1/in",
        ] {
            assert!(covered_by(ok, allowed), "{ok}");
        }
        for bad in [
            "#",
            "edgepod/#",
            "edgepod/v1/c/nodes/+/in/#",
            "edgepod/v1/c/nodes/n2/in/#",
            "edgepod/v1/c/nodes/n1/#",
            "edgepod/v1/c/nodes/n1/+/#",
            "edgepod/v1/c/nodes/n1/out/x",
            "edgepod/v1/c/nodes/n1",
        ] {
            assert!(!covered_by(bad, allowed), "{bad}");
        }
        // `+` in the allowed filter covers one level, never `#`.
        assert!(covered_by("a/x/b", "a/+/b"));
        assert!(covered_by("a/+/b", "a/+/b"));
        assert!(!covered_by("a/#", "a/+"));
        assert!(covered_by("a/b", "a/+"));
        assert!(!covered_by("a/b/c", "a/+"));
    }
}
