//! Container logs in the CRI format the kubelet reads (`TIMESTAMP STREAM P|F CONTENT`), written
//! by the shim and rotated by size so an SD card is not filled by one chatty container.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

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

#[derive(Clone, Copy)]
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

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    pub partial: bool,
    pub content: String,
}

pub fn parse_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?.to_string();
    let stream = parts.next()?.to_string();
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("").to_string();
    Some(LogLine {
        timestamp,
        stream,
        partial: tag.split(':').any(|t| t == "P"),
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

/// Reads every line of a container's log, oldest first.
pub fn read_all(path: &Path) -> io::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    for file in log_files(path) {
        let reader = BufReader::new(File::open(&file)?);
        for line in reader.lines() {
            if let Some(l) = parse_line(&line?) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// Renders lines as `kubectl logs` prints them: partial lines joined, optional timestamps.
pub fn render(lines: &[LogLine], timestamps: bool) -> String {
    let mut out = String::new();
    let mut continuing = false;
    for l in lines {
        if timestamps && !continuing {
            out.push_str(&l.timestamp);
            out.push(' ');
        }
        out.push_str(&l.content);
        if !l.partial {
            out.push('\n');
        }
        continuing = l.partial;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lines = read_all(&path).unwrap();
        let contents: Vec<_> = lines.iter().map(|l| l.content.as_str()).collect();
        assert_eq!(contents, ["hello", "oops", "world", "tail"]);
        assert_eq!(lines[1].stream, "stderr");
        assert!(lines[3].partial);
        assert_eq!(render(&lines, false), "hello\noops\nworld\ntail");
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
        let lines = read_all(&path).unwrap();
        assert_eq!(lines.last().unwrap().content, "line 39");
        let nums: Vec<u32> = lines
            .iter()
            .map(|l| l.content[5..].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    }
}
