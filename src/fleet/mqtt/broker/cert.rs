//! The subject Common Name of a client certificate, read straight from its DER: the identity a
//! TLS client gets when the broker requires certificates (Mosquitto's
//! `use_identity_as_username`). rustls has already verified the certificate; this walks just
//! enough of X.509 (RFC 5280 §4.1) to reach `tbsCertificate.subject`, with no parser crate.
//!
//! Owns nothing else: no verification, no other fields.

/// DER of the attribute type id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// `[0] EXPLICIT Version` in front of the serial number.
const TAG_VERSION: u8 = 0xa0;

/// The first Common Name of the certificate's subject, or None when the DER is malformed, the
/// subject has none, or it is not text.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let (certificate, _) = read_tlv(cert_der, TAG_SEQUENCE)?;
    let (mut tbs, _) = read_tlv(certificate, TAG_SEQUENCE)?;
    if tbs.first() == Some(&TAG_VERSION) {
        tbs = skip_any(tbs)?;
    }
    // serialNumber, signature AlgorithmIdentifier, issuer Name, validity: then the subject.
    for _ in 0..4 {
        tbs = skip_any(tbs)?;
    }
    let (mut subject, _) = read_tlv(tbs, TAG_SEQUENCE)?;
    while !subject.is_empty() {
        let (mut rdn, rest) = read_tlv(subject, TAG_SET)?;
        subject = rest;
        while !rdn.is_empty() {
            let (attribute, rest) = read_tlv(rdn, TAG_SEQUENCE)?;
            rdn = rest;
            let (oid, value) = read_tlv(attribute, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, content, _) = read_any(value)?;
                return decode_string(tag, content);
            }
        }
    }
    None
}

/// The directory string types a CN may use (RFC 5280 §4.1.2.4); BMPString is UTF-16BE.
fn decode_string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, TeletexString (ASCII in practice), IA5String.
        0x0c | 0x13 | 0x14 | 0x16 => String::from_utf8(content.to_vec()).ok(),
        0x1e => {
            if content.len() % 2 != 0 {
                return None;
            }
            let units = content
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// One TLV with the expected tag: its content and what follows it.
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = read_any(input)?;
    (found == tag).then_some((content, rest))
}

fn skip_any(input: &[u8]) -> Option<&[u8]> {
    read_any(input).map(|(_, _, rest)| rest)
}

/// One TLV of any (single-byte) tag: (tag, content, rest). Definite lengths only, as DER says.
fn read_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    // Multi-byte tags (low bits all set) never occur on the path to the subject.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        // 0x80 is the indefinite form (BER only); more than 4 length bytes is no certificate.
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (content, rest) = input.split_at(len);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: DistinguishedName) -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec!["node.example".to_string()]).expect("params");
        params.distinguished_name = dn;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_the_common_name_of_an_rcgen_certificate() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "edgepod");
        dn.push(DnType::CommonName, "pi-kitchen-01");
        dn.push(DnType::CountryName, "DE");
        let der = cert_with(dn);
        assert_eq!(subject_common_name(&der).as_deref(), Some("pi-kitchen-01"));
    }

    #[test]
    fn a_subject_without_a_common_name_has_none() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "edgepod");
        assert_eq!(subject_common_name(&cert_with(dn)), None);
    }

    #[test]
    fn the_issuer_common_name_is_not_taken_for_the_subject() {
        // Self-signed: issuer == subject, so build a chain where they differ.
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ca = CertificateParams::default();
        let mut ca_dn = DistinguishedName::new();
        ca_dn.push(DnType::CommonName, "edgepod-ca");
        ca.distinguished_name = ca_dn;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut leaf = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "node-7");
        leaf.distinguished_name = dn;
        let der = leaf.signed_by(&key, &issuer).expect("leaf").der().to_vec();
        assert_eq!(subject_common_name(&der).as_deref(), Some("node-7"));
    }

    #[test]
    fn malformed_der_is_none_not_a_panic() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "x");
        let der = cert_with(dn);
        for cut in 0..der.len() {
            assert_eq!(subject_common_name(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x30, 0x80, 0x00, 0x00]), None);
        let mut flipped = der.clone();
        flipped[1] ^= 0x55;
        let _ = subject_common_name(&flipped);
    }

    #[test]
    fn bmp_string_is_utf16() {
        let s: Vec<u8> = "nöde".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode_string(0x1e, &s).as_deref(), Some("nöde"));
        assert_eq!(decode_string(0x1e, &[0x00]), None);
        assert_eq!(decode_string(0x04, b"x"), None);
    }
}
