//! Resource quantities (`500m`, `1.5Gi`, `1e3`) parsed and printed as Kubernetes does.
//!
//! Owns: the quantity grammar, exact fixed-point values (nano precision, like the API server),
//! comparison, rounding and the canonical string form. Must not touch: which resources a pod may
//! name or how they are enforced; validation and the runtime decide that.

use std::cmp::Ordering;
use std::fmt;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Kubernetes caps quantities at 2^63-1 units in magnitude.
const MAX_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;

/// The suffix family a quantity was written in; it decides how the value is printed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... `Ei`.
    BinarySI,
    /// `n`, `u`, `m`, none, `k`, `M`, ... `E`.
    DecimalSI,
    /// `e3`, `E-2`.
    DecimalExponent,
}

/// An exact quantity: the value in billionths of a unit, rounded up beyond that precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// The same wording as the API server's `ErrFormatWrong`.
pub const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

impl Quantity {
    /// The value in billionths of a unit.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value in thousandths of a unit, rounded up (away from zero), as CPU shares want it.
    pub fn millis_ceil(&self) -> i64 {
        saturate(div_away_from_zero(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (away from zero), as byte counts want it.
    pub fn units_ceil(&self) -> i64 {
        saturate(div_away_from_zero(self.nanos, NANOS_PER_UNIT))
    }

    /// Rounds up to millis, as the API server does to every resource list it defaults.
    pub fn round_up_to_millis(self) -> Quantity {
        Quantity {
            nanos: div_away_from_zero(self.nanos, 1_000_000) * 1_000_000,
            format: self.format,
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::str::FromStr for Quantity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_quantity(s)
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn div_away_from_zero(v: i128, d: i128) -> i128 {
    let q = v / d;
    if v % d == 0 {
        q
    } else if v < 0 {
        q - 1
    } else {
        q + 1
    }
}

/// Parses a quantity in any of Kubernetes' forms; errors use the API server's wording.
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(FORMAT_ERROR.to_string());
    }
    // The suffix's shape: letters from the set, an optional sign, then digits only.
    let letters = suffix.trim_start_matches(|c| "eEinumkKMGTP".contains(c));
    let exponent = letters.strip_prefix(['+', '-']).unwrap_or(letters);
    if !exponent.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FORMAT_ERROR.to_string());
    }
    let (format, exp10, pow2) = parse_suffix(suffix)?;

    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    for _ in 0..pow2 / 10 {
        multiply(&mut digits, 1024);
    }
    // digits * 10^shift is the value in nanos.
    let shift = i64::from(exp10) + 9 - frac_part.len() as i64;
    let magnitude = shift_to_integer(&digits, shift);
    let nanos = if negative { -magnitude } else { magnitude };
    Ok(Quantity { nanos, format })
}

/// The suffix's family, its power of ten and its power of two.
fn parse_suffix(suffix: &str) -> Result<(Format, i32, u32), String> {
    let decimal = |e: i32| Ok((Format::DecimalSI, e, 0));
    let binary = |p: u32| Ok((Format::BinarySI, 0, p));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty() && e != &"+" && e != &"-")
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or_else(|| "unable to parse quantity's suffix".to_string())?;
            Ok((Format::DecimalExponent, exponent, 0))
        }
    }
}

/// Multiplies a big-endian decimal digit string in place.
fn multiply(digits: &mut Vec<u8>, by: u32) {
    let mut carry = 0u32;
    for d in digits.iter_mut().rev() {
        let v = u32::from(*d) * by + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

/// `digits * 10^shift`, rounded up to an integer and capped at the largest quantity.
fn shift_to_integer(digits: &[u8], shift: i64) -> i128 {
    let first = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
    let digits = &digits[first..];
    if digits.is_empty() {
        return 0;
    }
    let int_len = digits.len() as i64 + shift;
    // MAX_NANOS has 28 digits; anything longer is over the cap.
    if int_len > 28 {
        return MAX_NANOS;
    }
    if int_len <= 0 {
        return 1;
    }
    let int_len = int_len as usize;
    let mut value: i128 = 0;
    for i in 0..int_len {
        value = value * 10 + i128::from(digits.get(i).copied().unwrap_or(0));
    }
    let has_fraction = digits
        .get(int_len..)
        .is_some_and(|rest| rest.iter().any(|&d| d != 0));
    if has_fraction {
        value += 1;
    }
    value.min(MAX_NANOS)
}

/// Parses a CPU quantity into millicores, rounding up (`100m` → 100, `0.5` → 500, `1n` → 1).
pub fn cpu_millis(s: &str) -> Result<i64, String> {
    parse_quantity(s).map(|q| q.millis_ceil())
}

/// Parses a memory or storage quantity into bytes, rounding up (`1Ki` → 1024, `1.5` → 2).
pub fn bytes(s: &str) -> Result<i64, String> {
    parse_quantity(s).map(|q| q.units_ceil())
}

impl fmt::Display for Quantity {
    /// The canonical form the API server prints: `1500m`, `1536Mi`, `2k`, `1e3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let whole_units = magnitude % NANOS_PER_UNIT as u128 == 0;
        if self.format == Format::BinarySI
            && magnitude >= 1024 * NANOS_PER_UNIT as u128
            && whole_units
        {
            let mut units = magnitude / NANOS_PER_UNIT as u128;
            let mut power = 0;
            while power < 6 && units % 1024 == 0 {
                units /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{sign}{units}{suffix}");
        }
        let mut mantissa = magnitude;
        let mut exponent: i32 = -9;
        while exponent < 18 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            exponent += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exponent {
                0 => write!(f, "{sign}{mantissa}"),
                e => write!(f, "{sign}{mantissa}e{e}"),
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        parse_quantity(s).unwrap().to_string()
    }

    #[test]
    fn cpu_forms_become_millicores_rounded_up() {
        assert_eq!(cpu_millis("100m"), Ok(100));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("1"), Ok(1000));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1n"), Ok(1));
        assert_eq!(cpu_millis("0.0001"), Ok(1));
        assert_eq!(cpu_millis("250u"), Ok(1));
        assert_eq!(cpu_millis("1e3"), Ok(1_000_000));
        assert_eq!(cpu_millis("+1.5"), Ok(1500));
    }

    #[test]
    fn memory_forms_become_bytes_rounded_up() {
        assert_eq!(bytes("128974848"), Ok(128_974_848));
        assert_eq!(bytes("129e6"), Ok(129_000_000));
        assert_eq!(bytes("129M"), Ok(129_000_000));
        assert_eq!(bytes("123Mi"), Ok(128_974_848));
        assert_eq!(bytes("1Ki"), Ok(1024));
        assert_eq!(bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(bytes("1k"), Ok(1000));
        assert_eq!(bytes("1.5"), Ok(2));
        assert_eq!(bytes("100m"), Ok(1));
        assert_eq!(bytes("1Ei"), Ok(1 << 60));
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes(".5Ki"), Ok(512));
        assert_eq!(bytes("5."), Ok(5));
    }

    #[test]
    fn huge_quantities_are_capped_not_overflowed() {
        assert_eq!(bytes("100Ei"), Ok(i64::MAX));
        assert_eq!(bytes("1e400"), Ok(i64::MAX));
        assert_eq!(
            bytes("99999999999999999999999999999999999999999"),
            Ok(i64::MAX)
        );
        assert_eq!(bytes("-100Ei"), Ok(-i64::MAX));
    }

    #[test]
    fn malformed_quantities_are_rejected_with_kubernetes_wording() {
        for bad in [
            "", "abc", "1.2.3", "-", ".", "1 Gi", "Gi", "1gi", "1e3e", "1Mi5x",
        ] {
            assert_eq!(
                parse_quantity(bad),
                Err(FORMAT_ERROR.to_string()),
                "{bad:?}"
            );
        }
        for bad in ["1K", "1mi", "1e", "1e+", "1kk", "1Kii", "1Mi5"] {
            assert_eq!(
                parse_quantity(bad),
                Err("unable to parse quantity's suffix".to_string()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn canonical_form_matches_the_api_server() {
        assert_eq!(canonical("0.5"), "500m");
        assert_eq!(canonical("1.5"), "1500m");
        assert_eq!(canonical("1000m"), "1");
        assert_eq!(canonical("2000"), "2k");
        assert_eq!(canonical("1.5Gi"), "1536Mi");
        assert_eq!(canonical("1024Mi"), "1Gi");
        assert_eq!(canonical("0.5Ki"), "512");
        assert_eq!(canonical("1025"), "1025");
        assert_eq!(canonical("1e3"), "1e3");
        assert_eq!(canonical("1000e-3"), "1");
        assert_eq!(canonical("0"), "0");
        assert_eq!(canonical("0Gi"), "0");
        assert_eq!(canonical("-1.5"), "-1500m");
        assert_eq!(canonical("100n"), "100n");
    }

    #[test]
    fn comparison_is_exact_across_suffixes() {
        let q = |s| parse_quantity(s).unwrap();
        assert!(q("1") > q("999m"));
        assert_eq!(q("1Ki").cmp(&q("1024")), Ordering::Equal);
        assert!(q("1G") < q("1Gi"));
        assert!(q("-1").is_negative());
        assert!(q("0m").is_zero());
    }

    #[test]
    fn rounding_up_to_millis_keeps_the_format() {
        let q = parse_quantity("100n").unwrap().round_up_to_millis();
        assert_eq!(q.to_string(), "1m");
        let q = parse_quantity("1.5Gi").unwrap().round_up_to_millis();
        assert_eq!(q.to_string(), "1536Mi");
    }
}
