//! `edgepod bench broker` runs both brokers (the embedded one through `edgepod internal broker`,
//! Debian's Mosquitto) and prints every figure for each. Checks the table, not the speed: the
//! figures themselves are for people to read.

use std::process::Command;

/// The two figures of the row starting with `label`, as numbers.
fn figures(out: &str, label: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: &str| -> f64 {
        w.parse()
            .unwrap_or_else(|_| panic!("{w:?} is not a number in {line:?}"))
    };
    (
        number(words[words.len() - 2]),
        number(words[words.len() - 1]),
    )
}

#[test]
fn bench_broker_prints_embedded_and_mosquitto_figures_side_by_side() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgepod"))
        .args(["bench", "broker", "--clients", "50", "--messages", "2000"])
        .output()
        .expect("edgepod runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench broker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("figure"))
        .unwrap_or_else(|| panic!("no header in:\n{stdout}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(columns, ["figure", "embedded", "mosquitto"]);

    // Figures that are positive for any broker that did the work.
    for label in [
        "idle broker process RSS (KiB)",
        "of which private (RssAnon) (KiB)",
        "50 clients connected + subscribed (ms)",
        "broker RSS with 50 clients (KiB)",
        "one 4 KiB QoS 1 publish -> 50 wildcard subs (ms)",
        "retained 4 KiB -> 50 new subscriptions (ms)",
        "QoS 1 1 pub -> 1 sub, received (msg/s)",
        "QoS 0 1 pub -> 1 sub, received (msg/s)",
        "broker peak RSS, whole run (KiB)",
    ] {
        let (embedded, mosquitto) = figures(&stdout, label);
        assert!(
            embedded > 0.0 && mosquitto > 0.0,
            "{label}: {embedded} | {mosquitto}\n{stdout}"
        );
    }
    let (embedded, mosquitto) = figures(&stdout, "per connection (KiB)");
    assert!(embedded >= 0.0 && mosquitto >= 0.0, "{stdout}");
    // QoS 0 may lose messages, never invent them; some must arrive.
    let (embedded, mosquitto) = figures(&stdout, "messages received of 2000");
    for got in [embedded, mosquitto] {
        assert!(got > 0.0 && got <= 2000.0, "{stdout}");
    }
    // Two CPU rows (QoS 1, QoS 0): numbers, possibly 0.00 when a run took under a clock tick.
    let cpu_rows = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("broker CPU during that (s)"))
        .count();
    assert_eq!(cpu_rows, 2, "{stdout}");
    let (embedded, mosquitto) = figures(&stdout, "broker CPU during that (s)");
    assert!(embedded >= 0.0 && mosquitto >= 0.0, "{stdout}");
}
