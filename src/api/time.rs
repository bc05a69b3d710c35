//! Timestamps as the API writes them (RFC 3339, whole seconds, UTC): metav1.Time's format.
use jiff::{SignedDuration, Timestamp};

/// Now, as metav1.Time.
pub fn now() -> String {
    format(Timestamp::now())
}

/// `secs` from now (never before now), as metav1.Time: a graceful deletion's deadline.
pub fn after(secs: i64) -> String {
    let now = Timestamp::now();
    format(
        now.checked_add(SignedDuration::from_secs(secs.max(0)))
            .unwrap_or(now),
    )
}

pub fn format(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn deadlines_are_whole_seconds_in_utc() {
        let a = super::after(30);
        assert!(a.ends_with('Z') && a.len() == 20, "{a}");
        assert!(a.parse::<jiff::Timestamp>().unwrap() > jiff::Timestamp::now());
        assert!(super::after(-5) <= super::after(0));
    }
}
