//! `edgepod bench pull`: a cold pull of one image over loopback by edgepod's puller next to
//! `skopeo copy` of the same image from the same registry, in the same run, printed as
//! `figure | edgepod | skopeo`.
//!
//! How: Debian's docker-registry (distribution 2.x) serves plain HTTP on a free loopback port
//! from a temporary directory. The image (random bytes in `--layers` layers adding up to
//! `--size-mb` MB, gzip without compression: random data does not shrink, so the level would only
//! cost build time) is written here as an OCI layout and pushed with skopeo. Each run pulls it
//! cold into a fresh directory twice, alternating which tool goes first so a noisy neighbour
//! falls on both: `edgepod image pull REF --private-registry FILE` (or, with `--via library`,
//! the Puller alone in `edgepod bench pull-child`, as the agent runs it) — a child process, so
//! its peak RSS (`ru_maxrss` from wait4) is the pull's own — and `skopeo copy docker://REF
//! oci:DIR`.
//! Both receive the same compressed bytes, verify the same digests and write the same blobs;
//! neither unpacks a layer.
//!
//! Owns nothing but its temporary directory and child processes.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::bench_api::proc_kib;
use super::bench_fleet::{Proc, free_port};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const REPOSITORY: &str = "bench/pull";
/// The figures the issue asks for: time ≤ 1.2 × skopeo's, peak RSS ≤ 40 MiB.
const TARGET_RATIO: f64 = 1.2;
const TARGET_RSS_KIB: u64 = 40 * 1024;

pub fn run(size_mb: usize, layers: usize, runs: usize, library: bool) -> anyhow::Result<()> {
    if size_mb == 0 || layers == 0 || runs == 0 {
        bail!("--size-mb, --layers and --runs must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("edgepod-bench-pull-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let result = run_in(&dir, size_mb, layers, runs, library);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(
    dir: &Path,
    size_mb: usize,
    layers: usize,
    runs: usize,
    library: bool,
) -> anyhow::Result<()> {
    let (registry, port) = registry(dir)?;
    let host = format!("127.0.0.1:{port}");
    let layout = dir.join("layout");
    let t = Instant::now();
    let image_bytes = write_layout(&layout, size_mb * 1_000_000, layers)?;
    let built = t.elapsed();
    let reference = format!("{host}/{REPOSITORY}:v1");
    let t = Instant::now();
    status(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bench", layout.display()))
            .arg(format!("docker://{reference}")),
    )
    .context("pushing the image with skopeo")?;
    let pushed = t.elapsed();
    let registries = dir.join("registries.yaml");
    fs::write(
        &registries,
        format!("mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"),
    )?;
    let exe = std::env::current_exe()?;
    let what = if library {
        "the Puller in a child process (bench pull-child)"
    } else {
        "edgepod image pull"
    };
    println!(
        "edgepod bench pull: {reference}, {} bytes in {layers} gzip layers of random data, \
         {runs} cold pulls each over loopback (registry: docker-registry {}, {}; \
         image built in {:.1} s, pushed in {:.1} s); edgepod pulls through {what}",
        image_bytes,
        version(REGISTRY_BIN, "--version"),
        version("skopeo", "--version"),
        built.as_secs_f64(),
        pushed.as_secs_f64(),
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..runs {
        let run_dir = dir.join(format!("run{i}"));
        let edgepod = || -> anyhow::Result<Measured> {
            let data = run_dir.join("edgepod");
            let stderr = run_dir.join("edgepod.stderr");
            fs::create_dir_all(&data)?;
            let mut cmd = Command::new(&exe);
            if library {
                cmd.args(["bench", "pull-child", &reference, "--store"])
                    .arg(data.join("images"))
                    .arg("--registries");
            } else {
                cmd.arg("--data-dir").arg(&data).args([
                    "image",
                    "pull",
                    &reference,
                    "--private-registry",
                ]);
            }
            let child = cmd
                .arg(&registries)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr)?)
                .spawn()
                .context("starting edgepod")?;
            measure(child, what, &stderr)
        };
        let skopeo = || -> anyhow::Result<Measured> {
            let stderr = run_dir.join("skopeo.stderr");
            fs::create_dir_all(&run_dir)?;
            let child = Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:bench", run_dir.join("skopeo").display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr)?)
                .spawn()
                .context("starting skopeo copy")?;
            measure(child, "skopeo copy", &stderr)
        };
        if i % 2 == 0 {
            ours.push(edgepod()?);
            theirs.push(skopeo()?);
        } else {
            theirs.push(skopeo()?);
            ours.push(edgepod()?);
        }
        // Cold means cold: the next run starts from empty directories.
        let _ = fs::remove_dir_all(&run_dir);
    }
    drop(registry);

    let ms = |m: &[Measured]| median(m.iter().map(|m| m.elapsed.as_secs_f64() * 1000.0));
    let min_ms = |m: &[Measured]| {
        m.iter()
            .map(|m| m.elapsed.as_secs_f64() * 1000.0)
            .fold(f64::INFINITY, f64::min)
    };
    let rss = |m: &[Measured]| m.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
    let (ours_ms, theirs_ms) = (ms(&ours), ms(&theirs));
    row("figure", "edgepod", "skopeo");
    row(
        "cold pull, median (ms)",
        &format!("{ours_ms:.0}"),
        &format!("{theirs_ms:.0}"),
    );
    row(
        "cold pull, fastest (ms)",
        &format!("{:.0}", min_ms(&ours)),
        &format!("{:.0}", min_ms(&theirs)),
    );
    let rate = |ms: f64| image_bytes as f64 / 1e6 / (ms / 1000.0);
    row(
        "throughput at the median (MB/s)",
        &format!("{:.0}", rate(ours_ms)),
        &format!("{:.0}", rate(theirs_ms)),
    );
    row(
        "peak RSS of the pulling process (KiB)",
        &rss(&ours).to_string(),
        &rss(&theirs).to_string(),
    );
    let anon = |m: &[Measured]| m.iter().map(|m| m.peak_anon_kib).max().unwrap_or(0);
    row(
        "  private (RssAnon, sampled) (KiB)",
        &anon(&ours).to_string(),
        &anon(&theirs).to_string(),
    );
    let file = |m: &[Measured]| m.iter().map(|m| m.peak_file_kib).max().unwrap_or(0);
    row(
        "  mapped files, the binary's code (RssFile) (KiB)",
        &file(&ours).to_string(),
        &file(&theirs).to_string(),
    );
    let ratio = ours_ms / theirs_ms;
    println!(
        "time ratio edgepod / skopeo: {ratio:.2} (target <= {TARGET_RATIO}: {}); \
         edgepod peak RSS {} KiB (target <= {TARGET_RSS_KIB} KiB: {})",
        verdict(ratio <= TARGET_RATIO),
        rss(&ours),
        verdict(rss(&ours) <= TARGET_RSS_KIB),
    );
    if cfg!(debug_assertions) {
        println!(
            "note: a debug build of edgepod: sha2 unoptimised unless built with \
             --config 'profile.dev.package.sha2.opt-level=3' (release has it at 3), and \
             RssFile is the debug binary's pages (a release binary is under 12 MiB in all)"
        );
    }
    Ok(())
}

/// `bench pull-child`: one pull into the store at `store_root` through the Puller, on a
/// two-worker runtime as the agent's, printing nothing.
pub fn child(reference: &str, store_root: &Path, registries: &Path) -> anyhow::Result<()> {
    use crate::image::credentials::Keyring;
    use crate::image::registries::Registries;
    use crate::image::{ImageStore, PullConfig, Puller};
    let store = std::sync::Arc::new(ImageStore::open(store_root)?);
    let cfg = PullConfig {
        registries: Registries::load(registries)?,
        ..PullConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let puller = Puller::new(store, cfg);
    runtime.block_on(puller.pull(reference, &Keyring::default(), &()))?;
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn row(figure: &str, ours: &str, theirs: &str) {
    println!("{figure:<48} | {ours:>10} | {theirs:>10}");
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Measured {
    elapsed: Duration,
    max_rss_kib: u64,
    /// The highest RssAnon and RssFile seen, sampled every 10 ms.
    peak_anon_kib: u64,
    peak_file_kib: u64,
}

/// Waits for `child` with wait4(2): its wall time from here and its own peak RSS (the kernel
/// keeps `ru_maxrss` per process; /proc's VmHWM is gone once it exits).
fn measure(child: Child, what: &str, stderr: &Path) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let pid = child.id() as libc::pid_t;
    // The kernel keeps no peak of private memory alone; a debug binary's code pages swell
    // ru_maxrss, so RssAnon (heap, stacks, buffers) and RssFile (mapped files) are sampled.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut anon, mut file) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                anon = anon.max(proc_kib(pid as u32, "status", "RssAnon:"));
                file = file.max(proc_kib(pid as u32, "status", "RssFile:"));
                std::thread::sleep(Duration::from_millis(10));
            }
            (anon, file)
        })
    };
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; `pid` is our child, not yet reaped (std's Child only
    // reaps in wait/try_wait, which are never called on it).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let (peak_anon_kib, peak_file_kib) = sampler.join().unwrap_or((0, 0));
    if r != pid {
        bail!("{what}: wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{what} failed (wait status {status:#x}): {}",
            fs::read_to_string(stderr).unwrap_or_default().trim()
        );
    }
    Ok(Measured {
        elapsed,
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
        peak_anon_kib,
        peak_file_kib,
    })
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn version(bin: &str, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .and_then(|s| s.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| "unknown version".into())
}

/// docker-registry on a free loopback port, storage under `dir`; returns once `/v2/` answers.
fn registry(dir: &Path) -> anyhow::Result<(Proc, u16)> {
    if !Path::new(REGISTRY_BIN).exists() {
        bail!("{REGISTRY_BIN} not found (Debian package docker-registry)");
    }
    let port = free_port()?;
    let config = dir.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: edgepod-bench\n",
            dir.join("registry").display()
        ),
    )?;
    let log = dir.join("registry.log");
    let mut proc = Proc {
        child: Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BIN}"))?,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if answers(port) {
            return Ok((proc, port));
        }
        if proc.child.try_wait()?.is_some() || Instant::now() > deadline {
            bail!(
                "docker-registry did not come up on port {port}: {}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `GET /v2/` on the port gets a 200.
fn answers(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Writes an OCI layout at `dir` with one image (`bench`) for this host's platform: `layers`
/// layers of random bytes adding up to about `bytes`. Returns the compressed layer bytes.
fn write_layout(dir: &Path, bytes: usize, layers: usize) -> anyhow::Result<u64> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut rng = Noise::new()?;
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut total = 0;
    for i in 0..layers {
        let size = bytes / layers;
        let (digest, compressed, diff_id) = noise_layer(&blobs, i, size, &mut rng)?;
        total += compressed;
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": compressed,
        }));
        diff_ids.push(diff_id);
    }
    let host = crate::image::Platform::host();
    let mut config = json!({
        "architecture": host.architecture, "os": host.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = host.variant {
        config["variant"] = json!(v);
    }
    let config = blob(&blobs, &serde_json::to_vec(&config)?)?;
    let manifest = blob(
        &blobs,
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.0, "size": config.1},
            "layers": descriptors,
        }))?,
    )?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest.0, "size": manifest.1,
                           "annotations": {"org.opencontainers.image.ref.name": "bench"}}],
        }))?,
    )?;
    Ok(total)
}

fn blob(blobs: &Path, bytes: &[u8]) -> anyhow::Result<(String, u64)> {
    let hex = hex::encode(Sha256::digest(bytes));
    fs::write(blobs.join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

/// One layer: a tar holding `size` random bytes as `/noise-N`, gzip-framed without
/// compression, streamed to a blob file while both digests are computed.
/// Returns (digest, compressed size, diff_id).
fn noise_layer(
    blobs: &Path,
    index: usize,
    size: usize,
    rng: &mut Noise,
) -> anyhow::Result<(String, u64, String)> {
    let partial = blobs.join(format!(".layer-{index}"));
    let file = HashingWriter::new(BufWriter::new(File::create(&partial)?));
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::none());
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    tar.append_data(&mut header, format!("noise-{index}"), rng.reader(size))?;
    let uncompressed = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(uncompressed.hasher.finalize()));
    let mut compressed = uncompressed.inner.finish()?;
    compressed.inner.flush()?;
    let written = compressed.written;
    let hex = hex::encode(compressed.hasher.finalize());
    fs::rename(&partial, blobs.join(&hex))?;
    Ok((format!("sha256:{hex}"), written, diff_id))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// xorshift64 noise seeded from the OS: incompressible, and different in every run so no
/// cache anywhere (the registry's, skopeo's blob-info cache) knows the blobs.
struct Noise(u64);

impl Noise {
    fn new() -> anyhow::Result<Noise> {
        let mut seed = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| anyhow::anyhow!("the OS random generator failed"))?;
        Ok(Noise(u64::from_le_bytes(seed) | 1))
    }

    fn reader(&mut self, len: usize) -> NoiseReader<'_> {
        NoiseReader { noise: self, len }
    }
}

struct NoiseReader<'a> {
    noise: &'a mut Noise,
    len: usize,
}

impl std::io::Read for NoiseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.len) & !7;
        let n = if n == 0 { buf.len().min(self.len) } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            let x = &mut self.noise.0;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        self.len -= n;
        Ok(n)
    }
}
