//! Generated object names (`generateName`): the prefix plus five random characters from the
//! alphabet Kubernetes uses (no vowels, no look-alikes), as the API server and controllers make
//! them.

/// Five random characters.
pub fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = random_bytes::<5>().unwrap_or_default();
    if bytes == [0; 5] {
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

/// `N` bytes from the kernel's random source (getrandom(2), which blocks only before the pool
/// is first seeded at boot).
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n.unsigned_abs();
    }
    Ok(buf)
}

/// A random (version 4) UUID in its canonical text form, as the API server assigns to `uid`.
pub fn uid() -> std::io::Result<String> {
    Ok(uuid_v4(random_bytes::<16>()?))
}

/// `b` as an RFC 4122 version 4 UUID.
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
