//! `edgepod image pull REF…`: a pull on the device itself, with the agent's registry settings,
//! drawing a progress bar per layer (bytes, rate, ETA) on a terminal and writing plain lines
//! otherwise (a log or a pipe gets no control characters).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::image::{Digest, ImageStore, Platform, ProgressEvent, PullProgress, Puller, Reference};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Images to pull (`busybox`, `nginx:1.25`, `host:5000/app@sha256:…`).
    #[arg(required = true)]
    pub references: Vec<String>,
    /// registries.yaml (mirrors, rewrites, TLS, auth), as the agent reads it.
    #[arg(long, value_name = "FILE", default_value = crate::agent::image_pull::DEFAULT_PRIVATE_REGISTRY)]
    pub private_registry: PathBuf,
    /// Registry credentials in Docker's config.json shape, as the agent reads them.
    #[arg(long, value_name = "FILE", default_value = crate::agent::image_pull::DEFAULT_IMAGE_CREDENTIALS)]
    pub image_credentials: PathBuf,
    /// USER:PASSWORD for the images' registry, tried before the files above.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        hide_env_values = true,
        env = "EDGEPOD_REGISTRY_CREDS"
    )]
    pub creds: Option<String>,
    /// The platform to pick from a multi-platform image (`linux/arm/v7`); the host's by default.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

pub fn run(images: ImageStore, args: PullArgs) -> anyhow::Result<()> {
    let mut cfg =
        crate::agent::image_pull::pull_config(&args.private_registry, &args.image_credentials)
            .map_err(anyhow::Error::msg)?;
    if let Some(p) = &args.platform {
        cfg.platform = parse_platform(p)?;
    }
    let puller = Puller::new(Arc::new(images), cfg);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let display = Display::new(std::io::stderr().is_terminal());
    for reference in &args.references {
        let mut secrets = crate::image::credentials::Keyring::default();
        if let Some(creds) = &args.creds {
            let (user, password) = creds
                .split_once(':')
                .context("--creds: expected USER:PASSWORD")?;
            let registry = Reference::parse(reference)?.domain;
            let json =
                serde_json::json!({"auths": {registry: {"username": user, "password": password}}});
            secrets
                .add(json.to_string().as_bytes(), false, "--creds")
                .map_err(anyhow::Error::msg)?;
        }
        display.start(reference);
        let pulled = runtime
            .block_on(puller.pull(reference, &secrets, &display))
            .with_context(|| format!("pulling {reference}"))?;
        display.finish();
        println!(
            "pulled {} ({}) size {} downloaded {} in {:.2}s",
            pulled.record.reference,
            pulled.record.digest.as_str(),
            pulled.size,
            pulled.downloaded,
            pulled.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn parse_platform(text: &str) -> anyhow::Result<Platform> {
    let mut parts = text.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
            Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            })
        }
        _ => anyhow::bail!("--platform {text:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm/v7"),
    }
}

struct Layer {
    done: u64,
    total: u64,
    /// Bytes and time at the first report of this pull, for the rate (a resumed layer's
    /// earlier bytes do not count as speed).
    first: Option<(u64, Instant)>,
    finished: bool,
}

#[derive(Default)]
struct State {
    layers: BTreeMap<Digest, Layer>,
    order: Vec<Digest>,
    /// Lines drawn last time (terminal mode), to move the cursor back over them.
    drawn: usize,
    last_draw: Option<Instant>,
}

struct Display {
    tty: bool,
    state: Mutex<State>,
}

impl Display {
    fn new(tty: bool) -> Display {
        Display {
            tty,
            state: Mutex::new(State::default()),
        }
    }

    fn start(&self, reference: &str) {
        if let Ok(mut s) = self.state.lock() {
            *s = State::default();
        }
        eprintln!("pulling {reference}");
    }

    fn finish(&self) {
        if self.tty
            && let Ok(mut s) = self.state.lock()
        {
            draw(&mut s, true);
        }
    }
}

impl PullProgress for Display {
    fn event(&self, event: ProgressEvent) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match event {
            ProgressEvent::Resolved { manifest, layers } => {
                let fetch: u64 = layers.iter().filter(|l| !l.2).map(|l| l.1).sum();
                eprintln!(
                    "manifest {}: {} layers, {} to download",
                    short(&manifest),
                    layers.len(),
                    human(fetch)
                );
                for (digest, total, stored) in layers {
                    s.order.push(digest.clone());
                    s.layers.insert(
                        digest,
                        Layer {
                            done: if stored { total } else { 0 },
                            total,
                            first: None,
                            finished: stored,
                        },
                    );
                }
            }
            ProgressEvent::Layer {
                digest,
                done,
                total,
            } => {
                let layer = s.layers.entry(digest.clone()).or_insert(Layer {
                    done: 0,
                    total,
                    first: None,
                    finished: false,
                });
                layer.first.get_or_insert((done, Instant::now()));
                layer.done = done;
                layer.total = total;
                if !s.order.contains(&digest) {
                    s.order.push(digest);
                }
            }
            ProgressEvent::LayerDone { digest } => {
                if let Some(layer) = s.layers.get_mut(&digest) {
                    layer.finished = true;
                    layer.done = layer.total;
                    if !self.tty {
                        eprintln!(
                            "layer {} {} done ({})",
                            short(&digest),
                            human(layer.total),
                            rate(layer)
                        );
                    }
                }
            }
            ProgressEvent::Retry {
                digest,
                attempt,
                reason,
            } => {
                if self.tty {
                    // Leave the bars where they are; the message goes above the next draw.
                    clear(&mut s);
                }
                eprintln!("layer {}: retry {attempt}: {reason}", short(&digest));
            }
        }
        if self.tty {
            draw(&mut s, false);
        }
    }
}

fn clear(s: &mut State) {
    let mut err = std::io::stderr().lock();
    for _ in 0..s.drawn {
        let _ = write!(err, "\x1b[1A\x1b[2K");
    }
    s.drawn = 0;
}

/// Redraws the bars, at most five times a second unless `force`.
fn draw(s: &mut State, force: bool) {
    let now = Instant::now();
    if !force
        && s.last_draw
            .is_some_and(|t| now - t < Duration::from_millis(200))
    {
        return;
    }
    s.last_draw = Some(now);
    clear(s);
    let mut err = std::io::stderr().lock();
    let mut lines = 0;
    for digest in &s.order {
        let Some(layer) = s.layers.get(digest) else {
            continue;
        };
        let width = 24usize;
        let filled = if layer.total == 0 {
            width
        } else {
            (layer.done.min(layer.total) as f64 / layer.total as f64 * width as f64) as usize
        };
        let _ = writeln!(
            err,
            "{} [{}{}] {:>9}/{:<9} {}",
            short(digest),
            "#".repeat(filled),
            "-".repeat(width - filled),
            human(layer.done),
            human(layer.total),
            if layer.finished {
                "done".to_string()
            } else {
                format!("{} ETA {}", rate(layer), eta(layer))
            }
        );
        lines += 1;
    }
    s.drawn = lines;
}

fn speed(layer: &Layer) -> Option<f64> {
    let (start, at) = layer.first?;
    let secs = at.elapsed().as_secs_f64();
    (secs > 0.05).then(|| layer.done.saturating_sub(start) as f64 / secs)
}

fn rate(layer: &Layer) -> String {
    match speed(layer) {
        Some(bps) => format!("{}/s", human(bps as u64)),
        None => "-".to_string(),
    }
}

fn eta(layer: &Layer) -> String {
    match speed(layer) {
        Some(bps) if bps > 0.0 => {
            let left = layer.total.saturating_sub(layer.done) as f64 / bps;
            format!("{}s", left.ceil() as u64)
        }
        _ => "-".to_string(),
    }
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

fn human(bytes: u64) -> String {
    super::image::human_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_and_without_variant() {
        let p = parse_platform("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!(parse_platform("linux/amd64").unwrap().variant, None);
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
    }
}
