//! Small formatters the table cells share: kubectl's short ages (`5s`, `3m20s`, `2d4h`), label
//! maps and label selectors as `k=v,k2 in (a,b)`, and JSON field access that never fails.
//!
//! Owns: text formatting only. Must not touch: which cell goes in which column (the printers).

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// The string at a JSON pointer, or `""`.
pub(super) fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, or `None` when absent or not an integer.
pub(super) fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// The array at a JSON pointer, or an empty slice.
pub(super) fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of entries of the object at a JSON pointer.
pub(super) fn len_of_map(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// A timestamp field, `None` when absent, empty or unparsable (all of which kubectl prints as
/// `<unknown>`, as it does Go's zero time).
pub(super) fn time(v: &Value, pointer: &str) -> Option<Timestamp> {
    text(v, pointer).parse::<Timestamp>().ok()
}

/// Kubernetes' `HumanDuration`: a short, coarsening rendering of a duration, more precise for
/// short ones (`45s`, `3m20s`, `15m`, `5h30m`, `20h`, `3d4h`, `30d`, `2y10d`). Up to a second in
/// the future counts as now, since clocks drift; further is `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// Age of a timestamp field as of `now`, `<unknown>` when it is not set.
pub(super) fn age(v: &Value, pointer: &str, now: Timestamp) -> String {
    since(time(v, pointer), now)
}

pub(super) fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".into(),
    }
}

/// A label map as `k=v,k2=v2`, sorted by key; `<none>` when empty.
pub(super) fn labels(v: &Value, pointer: &str) -> String {
    let Some(map) = v.pointer(pointer).and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

/// A `LabelSelector` (`matchLabels` and `matchExpressions`) as kubectl prints one:
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`. `None` when the
/// selector is absent, empty, or has an operator Kubernetes would reject.
pub(super) fn selector(v: &Value, pointer: &str) -> Option<String> {
    let sel = v.pointer(pointer)?.as_object()?;
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(map) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in map {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = text(expr, "/key");
        let mut values: Vec<&str> = items(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        values.dedup();
        let req = match text(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_string(), req));
    }
    if reqs.is_empty() {
        return None;
    }
    // A stable sort by key keeps a key's own requirements in the order they came.
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A selector for display, `<none>` when there is none.
pub(super) fn selector_or_none(v: &Value, pointer: &str) -> String {
    selector(v, pointer).unwrap_or_else(|| "<none>".into())
}

/// The containers of a pod template as two cells: names and images, comma-separated.
pub(super) fn containers(v: &Value, pointer: &str) -> (String, String) {
    let list = items(v, pointer);
    let names: Vec<&str> = list.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `value` unless empty, then `fallback`.
pub(super) fn or<'a>(value: &'a str, fallback: &'a str) -> &'a str {
    if value.is_empty() { fallback } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn durations_coarsen_as_kubectl_does() {
        assert_eq!(secs(-5), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(5), "5s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(120), "2m");
        assert_eq!(secs(200), "3m20s");
        assert_eq!(secs(599), "9m59s");
        assert_eq!(secs(600), "10m");
        assert_eq!(secs(179 * 60 + 59), "179m");
        assert_eq!(secs(3 * 3600), "3h");
        assert_eq!(secs(5 * 3600 + 30 * 60), "5h30m");
        assert_eq!(secs(8 * 3600 + 59 * 60), "8h");
        assert_eq!(secs(47 * 3600), "47h");
        assert_eq!(secs(48 * 3600), "2d");
        assert_eq!(secs(52 * 3600), "2d4h");
        assert_eq!(secs(8 * 86400), "8d");
        assert_eq!(secs(729 * 86400), "729d");
        assert_eq!(secs(730 * 86400), "2y");
        assert_eq!(secs(740 * 86400), "2y10d");
        assert_eq!(secs(9 * 365 * 86400), "9y");
    }

    #[test]
    fn ages_of_missing_or_bad_times_are_unknown() {
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().expect("time");
        let obj = json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}, "bad": "x"});
        assert_eq!(age(&obj, "/metadata/creationTimestamp", now), "10m");
        assert_eq!(age(&obj, "/missing", now), "<unknown>");
        assert_eq!(age(&obj, "/bad", now), "<unknown>");
    }

    #[test]
    fn selectors_print_sorted_requirements() {
        let obj = json!({"sel": {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists"}
            ]
        }, "empty": {}, "bad": {"matchExpressions": [{"key": "x", "operator": "Gt"}]}});
        assert_eq!(
            selector(&obj, "/sel").as_deref(),
            Some("a=1,app,b=2,!canary,env in (dev,prod),tier notin (db)")
        );
        assert_eq!(selector_or_none(&obj, "/empty"), "<none>");
        assert_eq!(selector(&obj, "/bad"), None);
        assert_eq!(selector(&obj, "/missing"), None);
    }

    #[test]
    fn label_maps_sort_and_default() {
        let obj = json!({"l": {"z": "1", "a": "2"}, "e": {}});
        assert_eq!(labels(&obj, "/l"), "a=2,z=1");
        assert_eq!(labels(&obj, "/e"), "<none>");
        assert_eq!(labels(&obj, "/missing"), "<none>");
    }
}
