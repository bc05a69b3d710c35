//! CronJob schedules: the standard five fields and the `@hourly`-style macros, as robfig/cron's
//! `ParseStandard` (which Kubernetes uses) reads them, evaluated in a time zone; and which
//! scheduled time is due, as the CronJob controller's `mostRecentScheduleTime` decides.
//!
//! Owns: schedule text and time-zone names. Used by admission (to reject what the controller
//! could not run) and by the controller. Must not touch: the store.
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed schedule: cron fields, or robfig/cron's `@every DURATION` (a fixed interval from
/// the previous run, in whole seconds).
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<Cron>),
    Every(jiff::SignedDuration),
}

/// More missed start times than this and the controller warns (`TooManyMissedTimes`).
pub const MAX_MISSED: i64 = 100;

impl Schedule {
    /// Parses five fields or a macro; the error reads like robfig/cron's where it can.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut text = text.trim();
        // robfig/cron takes a leading `TZ=`/`CRON_TZ=` zone; Kubernetes then refuses it in favour
        // of `spec.timeZone` (admission says so), so it is read here only to be checked.
        if let Some(rest) = text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            let (zone, schedule) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if time_zone(Some(zone)).is_err() {
                return Err(format!(
                    "provided bad location {zone}: unknown time zone {zone}"
                ));
            }
            text = schedule.trim();
        }
        if let Some(d) = text.strip_prefix("@every ") {
            let secs = go_duration_secs(d.trim()).ok_or_else(|| {
                format!(
                    "failed to parse duration {text}: time: invalid duration {:?}",
                    d.trim()
                )
            })?;
            return Ok(Schedule::Every(jiff::SignedDuration::from_secs(
                secs.max(1),
            )));
        }
        let expanded = if text.starts_with('@') {
            match text.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(format!("unrecognized descriptor: {text}")),
            }
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        // croner reads Quartz extensions robfig/cron does not: refuse them, so what is accepted
        // here means the same as in Kubernetes.
        let upper = |f: &str| f.to_ascii_uppercase();
        if expanded.contains(['#', '+'])
            || upper(fields[2]).contains(['L', 'W'])
            || upper(fields[4]).contains('L')
        {
            return Err(format!("unsupported syntax in schedule: {expanded}"));
        }
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            // robfig/cron reads `5/15` as `5-59/15`.
            .sloppy_ranges(true)
            .build()
            .parse(expanded)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| e.to_string())
    }

    /// The first scheduled time strictly after `t`, in `tz`.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c
                .find_next_occurrence(&t.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
            Schedule::Every(d) => Timestamp::from_second(t.as_second())
                .ok()?
                .checked_add(*d)
                .ok(),
        }
    }

    /// The latest scheduled time after `earliest` and not after `now`, and how many scheduled
    /// times fell in between (counted up to [`MAX_MISSED`], estimated past it as Kubernetes
    /// does, from the interval between the first two).
    pub fn most_recent(
        &self,
        earliest: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> (Option<Timestamp>, i64) {
        let Some(first) = self.next_after(earliest, tz).filter(|t| *t <= now) else {
            return (None, 0);
        };
        let (mut last, mut count) = (first, 1);
        while let Some(next) = self.next_after(last, tz).filter(|t| *t <= now) {
            if count > MAX_MISSED {
                let second = self.next_after(first, tz).unwrap_or(next);
                let interval = second.duration_since(first).as_secs().max(1);
                let estimate = now.duration_since(first).as_secs() / interval + 1;
                let recent = match self {
                    Schedule::Cron(c) => c
                        .find_previous_occurrence(&now.to_zoned(tz.clone()), true)
                        .map(|z| z.timestamp())
                        .unwrap_or(next),
                    Schedule::Every(d) => {
                        let step = d.as_secs().max(1);
                        let elapsed = now.duration_since(first).as_secs();
                        first
                            .checked_add(jiff::SignedDuration::from_secs(elapsed / step * step))
                            .unwrap_or(next)
                    }
                };
                return (Some(recent), estimate.max(count + 1));
            }
            (last, count) = (next, count + 1);
        }
        (Some(last), count)
    }
}

/// A Go duration of whole seconds or more (`90s`, `1h30m`, `2.5h`), as `@every` takes it.
fn go_duration_secs(text: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        total += value
            * match unit {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return None,
            };
        rest = tail;
    }
    (!text.is_empty() && total.is_finite()).then_some(total as i64)
}

/// The time zone a CronJob's schedule runs in: `spec.timeZone` from the system's tz database,
/// UTC when unset (the hub runs its controllers in UTC, as kube-controller-manager usually
/// does in its container). Errors read like Kubernetes' `validateTimeZone`.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(name) = name else {
        return Ok(TimeZone::UTC);
    };
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".into());
    }
    let part_ok = |p: &str| {
        !matches!(p, "." | "..")
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !name.split('/').all(part_ok) {
        return Err(format!("unknown time zone {name}"));
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    jiff::tz::db()
        .get(name)
        .map_err(|_| format!("unknown time zone {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_and_macros_parse_like_kubernetes() {
        for ok in [
            "*/1 * * * *",
            "0 0 * * *",
            "5/15 * * * *",
            "0 9 * * MON-FRI",
            "@hourly",
            "@midnight",
            "@Yearly",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Schedule::parse("foo").unwrap_err(),
            "expected exactly 5 fields, found 1: [foo]"
        );
        assert_eq!(
            Schedule::parse("@reboot").unwrap_err(),
            "unrecognized descriptor: @reboot"
        );
        assert!(Schedule::parse("@every 1x").is_err());
        let every = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(
            every.next_after(ts("2026-01-01T00:00:00.5Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T01:30:00Z"))
        );
        for bad in [
            "0 0 0 * * *",
            "61 * * * *",
            "0 0 L * *",
            "0 0 * * 5#3",
            "x * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_and_most_recent() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &utc),
            Some(ts("2026-01-01T00:05:00Z"))
        );
        let (t, n) = s.most_recent(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:17:00Z"), &utc);
        assert_eq!((t, n), (Some(ts("2026-01-01T00:15:00Z")), 3));
        let (t, n) = s.most_recent(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:04:59Z"), &utc);
        assert_eq!((t, n), (None, 0));
        // A day of missed minutes: more than 100, the latest still found.
        let m = Schedule::parse("* * * * *").unwrap();
        let (t, n) = m.most_recent(ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:30Z"), &utc);
        assert_eq!(t, Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(n, 1440);
    }

    #[test]
    fn time_zones() {
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 in Berlin in winter is 08:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &berlin),
            Some(ts("2026-01-01T08:00:00Z"))
        );
        assert_eq!(
            time_zone(Some("Mars/Olympus")).unwrap_err(),
            "unknown time zone Mars/Olympus"
        );
        assert!(time_zone(Some("local")).unwrap_err().contains("explicit"));
        assert!(time_zone(Some("")).is_err());
        assert!(time_zone(None).is_ok());
    }
}
