//! Generated object names (`generateName`): the prefix plus five random characters from the
//! alphabet Kubernetes uses (no vowels, no look-alikes), as the API server and controllers make
//! them.

/// Five random characters.
pub fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    if fill_random(&mut bytes).is_err() {
        // No /dev/urandom: the clock still makes a collision unlikely, and callers retry on one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> (i * 5)) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `prefix` plus a suffix, the prefix cut so the whole stays a valid 63-character name.
pub fn generate(prefix: &str) -> String {
    const MAX_PREFIX: usize = 63 - 5;
    let cut = prefix
        .char_indices()
        .nth(MAX_PREFIX)
        .map_or(prefix, |(i, _)| &prefix[..i]);
    format!("{cut}{}", suffix())
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
