//! Container logs in the CRI format the kubelet reads (`TIMESTAMP STREAM P|F CONTENT`), written
//! by the shim and rotated by size so an SD card is not filled by one chatty container; and read
//! back ([`LogCursor`], across rotations) and shown as `kubectl logs` shows them ([`copy`]), for
//! the agent's log streams and `edgepod logs` alike.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size-based rotation limits: `max_size` bytes per file, `max_files` files kept in all.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    /// Smaller than the kubelet's 10 MiB × 5: a 16 GB SD card hosts many containers.
    fn default() -> Self {
        Rotation {
            max_size: 4 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// Appends CRI log lines for both streams of one container to one file.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// Bytes of a line not yet terminated by `\n`, per stream, so lines keep their boundaries.
    pending: [Vec<u8>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Longest content kept in one log line before it is split into a partial (`P`) line.
const MAX_LINE: usize = 16 * 1024;

impl LogWriter {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Takes a chunk read from a stream and writes every complete line it closes.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[stream as usize]);
            line.extend_from_slice(&data[..pos]);
            self.emit(stream, &line, true)?;
            data = &data[pos + 1..];
        }
        self.pending[stream as usize].extend_from_slice(data);
        while self.pending[stream as usize].len() >= MAX_LINE {
            let rest = self.pending[stream as usize].split_off(MAX_LINE);
            let chunk = std::mem::replace(&mut self.pending[stream as usize], rest);
            self.emit(stream, &chunk, false)?;
        }
        Ok(())
    }

    /// Writes what is left of unterminated lines; called when the streams close.
    pub fn flush(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.pending[stream as usize]);
            if !line.is_empty() {
                self.emit(stream, &line, false)?;
            }
        }
        self.file.flush()
    }

    fn emit(&mut self, stream: Stream, content: &[u8], full: bool) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(now_rfc3339_nanos().as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.name().as_bytes());
        line.extend_from_slice(if full { b" F " } else { b" P " });
        line.extend_from_slice(content);
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        if self.size >= self.rotation.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        // N.log.(keep-1) is dropped; older generations shift up by one.
        let _ = fs::remove_file(rotated(&self.path, keep - 1));
        for i in (1..keep.saturating_sub(1)).rev() {
            let _ = fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        if keep > 1 {
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)?;
        if keep == 1 {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

pub fn now_rfc3339_nanos() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%9fZ")
        .to_string()
}

/// One record of a CRI log file: a whole line of output, or a piece of a longer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: String,
    pub stream: Stream,
    /// More of the same line follows in the next record of this stream.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one record (without its newline); anything not shaped like one is `None`.
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?.to_string();
    // A reader that lost its place (a log truncated under it) may land mid-record.
    if !timestamp.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"").to_vec();
    Some(LogRecord {
        timestamp,
        stream,
        // Tags are colon-separated; only P (partial) and F (full) are defined.
        partial: tag.split(|b| *b == b':').any(|t| t == b"P"),
        content,
    })
}

/// Every file of one container's log, oldest generation first.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..64)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Reads one container's log record by record, oldest first, and then whatever the shim
/// appends, across rotations: a reader of the rotated file finishes it before moving to the new
/// live file, as `tail -F` does.
pub struct LogCursor {
    path: PathBuf,
    /// Older generations not read yet, oldest first; opened together so a rotation while
    /// reading cannot shift them under us.
    queued: VecDeque<File>,
    /// The file being read; the live one once `queued` is empty. `None` until it exists.
    current: Option<BufReader<File>>,
    /// A record whose newline is not written yet.
    pending: Vec<u8>,
}

impl LogCursor {
    /// Starts at the oldest record kept.
    pub fn from_start(path: &Path) -> io::Result<LogCursor> {
        let mut queued = VecDeque::new();
        for file in log_files(path) {
            match File::open(&file) {
                Ok(f) => queued.push_back(f),
                // Rotated away between listing and opening: its records are in a later file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // The newest file is the live one, read through `current`.
        let current = queued.pop_back().map(BufReader::new);
        Ok(LogCursor {
            path: path.to_path_buf(),
            queued,
            current,
            pending: Vec::new(),
        })
    }

    /// Starts after the last record written so far: only new output is read.
    pub fn at_end(path: &Path) -> io::Result<LogCursor> {
        let current = match File::open(path) {
            Ok(mut f) => {
                f.seek(SeekFrom::End(0))?;
                Some(BufReader::new(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogCursor {
            path: path.to_path_buf(),
            queued: VecDeque::new(),
            current,
            pending: Vec::new(),
        })
    }

    /// The next complete record, or `None` when nothing more is written yet.
    pub fn next_record(&mut self) -> io::Result<Option<LogRecord>> {
        loop {
            let Some(reader) = self.current.as_mut() else {
                match File::open(&self.path) {
                    Ok(f) => {
                        self.current = Some(BufReader::new(f));
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
            };
            reader.read_until(b'\n', &mut self.pending)?;
            if self.pending.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.pending);
                match parse_record(&line[..line.len() - 1]) {
                    Some(record) => return Ok(Some(record)),
                    None => continue,
                }
            }
            // End of what is written. A file followed by another is complete, so what is
            // pending of it is a torn record that will never be finished.
            if let Some(next) = self.queued.pop_front() {
                self.pending.clear();
                self.current = Some(BufReader::new(next));
                continue;
            }
            if !self.check_rotation()? {
                return Ok(None);
            }
        }
    }

    /// Looks at the live path once `current` is at its end; true when reading should go on:
    /// the file was rotated away (drain it once more, then read the generations written
    /// since, oldest first, ending with the live file) or truncated in place.
    fn check_rotation(&mut self) -> io::Result<bool> {
        let Some(reader) = self.current.as_mut() else {
            return Ok(false);
        };
        let ours = reader.get_ref().metadata()?;
        let ours = (ours.dev(), ours.ino(), ours.len());
        let live = match fs::metadata(&self.path) {
            Ok(m) => m,
            // Renamed, the new file not created yet: look again next time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if (live.dev(), live.ino()) != (ours.0, ours.1) {
            // Writes to our file all happened before the rename just seen, so one more read
            // to its end gets them. Then come the files rotated after it (a fast writer may
            // have rotated more than once since we looked) and the live one.
            let mut newer = VecDeque::new();
            for file in log_files(&self.path) {
                let Ok(f) = File::open(&file) else { continue };
                let m = f.metadata()?;
                if (m.dev(), m.ino()) == (ours.0, ours.1) {
                    newer.clear();
                } else {
                    newer.push_back(f);
                }
            }
            if newer.is_empty() {
                return Ok(false);
            }
            self.queued = newer;
            return Ok(true);
        }
        // A single-file rotation truncates the live file instead of renaming it.
        let position = reader.stream_position()?;
        if ours.2 < position {
            reader.seek(SeekFrom::Start(0))?;
            self.pending.clear();
            return Ok(true);
        }
        Ok(false)
    }
}

/// `kubectl logs` options, already validated.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N lines (whole lines: the pieces of a long line count once).
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this instant.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each line with the time it was written.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// How often a follower looks for new records and asks whether to go on.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Writes a container's log to `out` as `kubectl logs` shows it: the payload of each line,
/// pieces of long lines joined. With `follow`, then keeps writing what is appended for as long
/// as `follow` returns true; once it returns false the log is read to its end one last time,
/// so the caller answers "has the container exited" and gets every line it wrote.
pub fn copy(
    path: &Path,
    opts: &LogOptions,
    out: &mut dyn Write,
    follow: Option<&mut dyn FnMut() -> bool>,
) -> io::Result<()> {
    let mut cursor = LogCursor::from_start(path)?;
    let mut lines = LineWriter::new(opts, out);
    match opts.tail_lines {
        Some(n) => {
            let mut last = LastLines::new(n);
            while let Some(r) = cursor.next_record()? {
                last.push(r);
            }
            for r in last.into_records() {
                if !lines.write(&r)? {
                    return lines.flush();
                }
            }
        }
        None => {
            while let Some(r) = cursor.next_record()? {
                if !lines.write(&r)? {
                    return lines.flush();
                }
            }
        }
    }
    lines.flush()?;
    let Some(go_on) = follow else {
        return Ok(());
    };
    loop {
        // Asked before reading: an exited container's log is complete, so this read is the
        // last one needed.
        let more = go_on();
        while let Some(r) = cursor.next_record()? {
            if !lines.write(&r)? {
                return lines.flush();
            }
        }
        lines.flush()?;
        if !more {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// The records of the last N lines, whole lines counted.
struct LastLines {
    keep: u64,
    /// Complete lines, each the records it was written as.
    lines: VecDeque<Vec<LogRecord>>,
    /// Pieces of a line not ended yet, per stream (the streams interleave).
    open: [Vec<LogRecord>; 2],
}

impl LastLines {
    fn new(keep: u64) -> Self {
        LastLines {
            keep,
            lines: VecDeque::new(),
            open: [Vec::new(), Vec::new()],
        }
    }

    fn push(&mut self, r: LogRecord) {
        let stream = r.stream as usize;
        let partial = r.partial;
        self.open[stream].push(r);
        if !partial {
            let line = std::mem::take(&mut self.open[stream]);
            self.lines.push_back(line);
            if self.lines.len() as u64 > self.keep {
                self.lines.pop_front();
            }
        }
    }

    /// In log order; an unfinished line at the end counts as a line.
    fn into_records(mut self) -> Vec<LogRecord> {
        for open in std::mem::take(&mut self.open) {
            if !open.is_empty() {
                self.lines.push_back(open);
            }
        }
        let mut lines: Vec<Vec<LogRecord>> = self.lines.into();
        // Unfinished lines were appended last; put everything back in time order.
        lines.sort_by(|a, b| a[0].timestamp.cmp(&b[0].timestamp));
        let skip = lines.len().saturating_sub(self.keep as usize);
        lines.into_iter().skip(skip).flatten().collect()
    }
}

/// Turns records into output lines: joins pieces, applies `since`, timestamps and the limit.
struct LineWriter<'a> {
    opts: &'a LogOptions,
    out: &'a mut dyn Write,
    /// Per stream: inside a line whose first piece was written (or skipped).
    continuing: [bool; 2],
    skipping: [bool; 2],
    written: u64,
}

impl<'a> LineWriter<'a> {
    fn new(opts: &'a LogOptions, out: &'a mut dyn Write) -> Self {
        LineWriter {
            opts,
            out,
            continuing: [false; 2],
            skipping: [false; 2],
            written: 0,
        }
    }

    /// False once the byte limit is reached.
    fn write(&mut self, r: &LogRecord) -> io::Result<bool> {
        let s = r.stream as usize;
        if !self.continuing[s] {
            self.skipping[s] = self.opts.since.is_some_and(|since| {
                r.timestamp
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t < since)
            });
            if !self.skipping[s] && self.opts.timestamps {
                let mut prefix = kubectl_timestamp(&r.timestamp).into_bytes();
                prefix.push(b' ');
                if !self.put(&prefix)? {
                    return Ok(false);
                }
            }
        }
        self.continuing[s] = r.partial;
        if self.skipping[s] {
            return Ok(true);
        }
        if !self.put(&r.content)? {
            return Ok(false);
        }
        if !r.partial {
            return self.put(b"\n");
        }
        Ok(true)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let room = self
            .opts
            .limit_bytes
            .map_or(u64::MAX, |l| l.saturating_sub(self.written));
        let n = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.out.write_all(&bytes[..n])?;
        self.written += n as u64;
        Ok(n == bytes.len() && self.opts.limit_bytes != Some(self.written))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A CRI timestamp as kubectl prints it: Go's RFC3339Nano, whose fraction drops trailing
/// zeros (and its dot when nothing is left).
pub fn kubectl_timestamp(cri: &str) -> String {
    let Some(dot) = cri.find('.') else {
        return cri.to_string();
    };
    let zone = cri[dot..]
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or(cri.len(), |i| dot + i);
    let digits = cri[dot + 1..zone].trim_end_matches('0');
    if digits.is_empty() {
        format!("{}{}", &cri[..dot], &cri[zone..])
    } else {
        format!("{}.{digits}{}", &cri[..dot], &cri[zone..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<LogRecord> {
        let mut cursor = LogCursor::from_start(path).unwrap();
        std::iter::from_fn(|| cursor.next_record().unwrap()).collect()
    }

    fn shown(path: &Path, opts: &LogOptions) -> String {
        let mut out = Vec::new();
        copy(path, opts, &mut out, None).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_split_and_partials_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n").unwrap();
        w.write(Stream::Stdout, b"tail").unwrap();
        w.flush().unwrap();
        let lines = records(&path);
        let contents: Vec<_> = lines.iter().map(|l| l.content.as_slice()).collect();
        assert_eq!(contents, [&b"hello"[..], b"oops", b"world", b"tail"]);
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert!(lines[3].partial);
        assert_eq!(
            shown(&path, &LogOptions::default()),
            "hello\noops\nworld\ntail"
        );
    }

    #[test]
    fn long_lines_come_back_whole_with_one_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\nshort\n").unwrap();
        w.flush().unwrap();
        assert_eq!(records(&path).len(), 4, "two pieces, the end, one line");
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        let text = shown(&path, &opts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (ts, rest) = lines[0].split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert_eq!(rest.len(), long.len());
        assert!(lines[1].ends_with(" short"));
        // --tail counts the long line once.
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(shown(&path, &tail).lines().count(), 2);
    }

    #[test]
    fn tail_since_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:01.000000000Z stdout F one\n\
             2024-01-01T00:00:02.500000000Z stderr F two\n\
             2024-01-01T00:00:03.123456789Z stdout P thr\n\
             2024-01-01T00:00:03.200000000Z stdout F ee\n\
             garbage line\n\
             2024-01-01T00:00:04.000000000Z stdout F four\n",
        )
        .unwrap();
        let all = LogOptions::default();
        assert_eq!(shown(&path, &all), "one\ntwo\nthree\nfour\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(shown(&path, &tail), "three\nfour\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(shown(&path, &none), "");
        let since = LogOptions {
            since: Some("2024-01-01T00:00:02.5Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(shown(&path, &since), "two\nthree\nfour\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(shown(&path, &limit), "one\ntw");
        let stamped = LogOptions {
            timestamps: true,
            tail_lines: Some(3),
            ..Default::default()
        };
        assert_eq!(
            shown(&path, &stamped),
            "2024-01-01T00:00:02.5Z two\n2024-01-01T00:00:03.123456789Z three\n\
             2024-01-01T00:00:04Z four\n"
        );
    }

    #[test]
    fn timestamps_read_as_kubectl_prints_them() {
        assert_eq!(
            kubectl_timestamp("2024-05-06T07:08:09.120000000Z"),
            "2024-05-06T07:08:09.12Z"
        );
        assert_eq!(
            kubectl_timestamp("2024-05-06T07:08:09.000000000Z"),
            "2024-05-06T07:08:09Z"
        );
        assert_eq!(
            kubectl_timestamp("2024-05-06T07:08:09.000000001+02:00"),
            "2024-05-06T07:08:09.000000001+02:00"
        );
        assert_eq!(
            kubectl_timestamp("2024-05-06T07:08:09Z"),
            "2024-05-06T07:08:09Z"
        );
    }

    #[test]
    fn rotation_keeps_bounded_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rotation = Rotation {
            max_size: 200,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
        let files = log_files(&path);
        assert_eq!(files.len(), 3);
        let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(total <= 3 * 200 + 100, "{total}");
        let lines = records(&path);
        assert_eq!(lines.last().unwrap().content, b"line 39");
        let nums: Vec<u32> = lines
            .iter()
            .map(|l| {
                std::str::from_utf8(&l.content[5..])
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    }

    /// A follower sees every line once, in order, while the writer rotates under it. With a
    /// single file, rotation truncates it and whatever was not read yet is gone; what is read
    /// is still in order, once, and ends with the last line.
    #[test]
    fn follow_crosses_rotations() {
        for max_files in [3, 1] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.log");
            let rotation = Rotation {
                max_size: 300,
                max_files,
            };
            let mut w = LogWriter::open(&path, rotation).unwrap();
            w.write(Stream::Stdout, b"line 0\n").unwrap();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer_done = std::sync::Arc::clone(&done);
            // The writer writes a burst each time the follower looks, so that between two
            // looks there are at most two bursts, three rotations: the follower's file is
            // gone, the next two are not (any more would be lost, as for any reader that
            // falls that far behind). A rendezvous channel, so looks cannot queue up while the
            // follower is descheduled and release several bursts at once: test load cannot
            // change that.
            let (look, looked) = std::sync::mpsc::sync_channel::<()>(0);
            let writer = std::thread::spawn(move || {
                let mut i = 1;
                while i < 120 {
                    if looked.recv().is_err() {
                        return;
                    }
                    for _ in 0..8 {
                        w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                            .unwrap();
                        i += 1;
                    }
                }
                writer_done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut out = Vec::new();
            let mut go_on = || {
                let _ = look.send(());
                !done.load(std::sync::atomic::Ordering::SeqCst)
            };
            copy(&path, &LogOptions::default(), &mut out, Some(&mut go_on)).unwrap();
            writer.join().unwrap();
            let text = String::from_utf8(out).unwrap();
            let nums: Vec<u32> = text
                .lines()
                .map(|l| l.trim_start_matches("line ").parse().unwrap())
                .collect();
            assert_eq!(nums.first(), Some(&0), "max_files {max_files}");
            assert_eq!(nums.last(), Some(&120), "max_files {max_files}");
            let in_order = if max_files > 1 {
                nums.windows(2).all(|w| w[1] == w[0] + 1)
            } else {
                nums.windows(2).all(|w| w[1] > w[0])
            };
            assert!(in_order, "max_files {max_files}: {nums:?}");
        }
    }

    #[test]
    fn a_cursor_at_the_end_reads_only_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"old\n").unwrap();
        let mut cursor = LogCursor::at_end(&path).unwrap();
        assert_eq!(cursor.next_record().unwrap(), None);
        w.write(Stream::Stderr, b"new\n").unwrap();
        let r = cursor.next_record().unwrap().unwrap();
        assert_eq!(
            (r.stream, r.content.as_slice()),
            (Stream::Stderr, &b"new"[..])
        );
        // A log that does not exist yet is read from its start once it does.
        let later = dir.path().join("1.log");
        let mut cursor = LogCursor::at_end(&later).unwrap();
        assert_eq!(cursor.next_record().unwrap(), None);
        let mut w = LogWriter::open(&later, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"first\n").unwrap();
        assert_eq!(cursor.next_record().unwrap().unwrap().content, b"first");
    }
}
