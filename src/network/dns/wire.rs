//! DNS messages on the wire, through `simple-dns`: reading a query's question, encoding a
//! [`zone::Answer`](super::zone::Answer) (truncated to what the transport carries) and the error
//! replies (SERVFAIL, FORMERR, REFUSED).
//!
//! Owns: the translation between bytes and the zone's records. Must not touch: sockets, the
//! map (answers come in ready-made).

use simple_dns::rdata::{A, AAAA, CNAME, NS, OPT, PTR, RData, SOA, SRV};
use simple_dns::{CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord};

use super::DnsError;
use super::zone::{Answer, QueryType, Rcode, Record, RecordData};

/// A UDP answer fits in 512 bytes unless the client announced more with EDNS.
pub const CLASSIC_UDP_SIZE: usize = 512;
/// What we answer over UDP at most even when a client offers more: the DNS flag day 2020
/// figure, under every path's MTU, so no answer of ours is ever fragmented.
pub const MAX_UDP_SIZE: usize = 1232;
/// A TCP message's two-byte length prefix caps it.
pub const MAX_TCP_SIZE: usize = 65535;

/// The part of a query the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// As the client spelled it, without the trailing dot.
    pub name: String,
    pub qtype: QueryType,
    /// The largest UDP answer the client takes (EDNS), at least 512.
    pub udp_size: usize,
    pub edns: bool,
}

/// Reads a query. A message with no question, more than one, or another opcode than QUERY is
/// an error (answered with [`error_reply`]).
pub fn parse_query(bytes: &[u8]) -> Result<Query, DnsError> {
    let packet = Packet::parse(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Err(DnsError::Malformed("a response, not a query".into()));
    }
    if packet.opcode() != OPCODE::StandardQuery {
        return Err(DnsError::Malformed(format!(
            "opcode {:?} is not supported",
            packet.opcode()
        )));
    }
    let [question] = packet.questions.as_slice() else {
        return Err(DnsError::Malformed(format!(
            "{} questions (one expected)",
            packet.questions.len()
        )));
    };
    let udp_size = packet
        .opt()
        .map(|o| usize::from(o.udp_packet_size))
        .unwrap_or(CLASSIC_UDP_SIZE)
        .clamp(CLASSIC_UDP_SIZE, MAX_UDP_SIZE);
    Ok(Query {
        id: packet.id(),
        name: question.qname.to_string(),
        qtype: QueryType::from_code(question.qtype.into()),
        udp_size,
        edns: packet.opt().is_some(),
    })
}

/// The id of a message too broken to parse, so it can still get a FORMERR.
pub fn message_id(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Encodes `answer` to the query `raw` (re-read, so the question goes back exactly as asked).
/// Past `max_len`, the records are dropped and TC set: the client retries over TCP.
pub fn encode_answer(raw: &[u8], answer: &Answer, max_len: usize) -> Result<Vec<u8>, DnsError> {
    let query = Packet::parse(raw).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let rcode = match answer.rcode {
        Rcode::NoError => RCODE::NoError,
        Rcode::NxDomain => RCODE::NameError,
    };
    let mut reply = reply_to(&query, rcode);
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    reply.answers = answer.answers.iter().map(to_rr).collect();
    reply.name_servers = answer.authority.iter().map(to_rr).collect();
    reply.additional_records = answer.additional.iter().map(to_rr).collect();
    let bytes = build(&reply)?;
    if bytes.len() <= max_len {
        return Ok(bytes);
    }
    reply.answers.clear();
    reply.name_servers.clear();
    reply.additional_records.clear();
    reply.set_flags(PacketFlag::TRUNCATION);
    build(&reply)
}

/// An answer without records: SERVFAIL when no upstream answered, REFUSED, FORMERR.
pub fn error_reply(raw: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    match Packet::parse(raw) {
        Ok(query) => build(&reply_to(&query, rcode)).ok(),
        Err(_) => {
            // Header only: the id, QR, opcode QUERY, RA and the rcode.
            let id = message_id(raw)?;
            let mut header = [0u8; 12];
            header[..2].copy_from_slice(&id.to_be_bytes());
            header[2] = 0x80;
            header[3] = 0x80 | (rcode as u8 & 0x0f);
            Some(header.to_vec())
        }
    }
}

/// The A, AAAA and CNAME records of an upstream (or our own) answer, for chasing an
/// ExternalName's target.
pub fn address_records(bytes: &[u8]) -> Vec<Record> {
    let Ok(packet) = Packet::parse(bytes) else {
        return Vec::new();
    };
    packet
        .answers
        .iter()
        .filter_map(|rr| {
            let data = match &rr.rdata {
                RData::A(a) => RecordData::A(a.address.into()),
                RData::AAAA(a) => RecordData::Aaaa(a.address.into()),
                RData::CNAME(c) => RecordData::Cname(c.0.to_string()),
                _ => return None,
            };
            Some(Record {
                name: rr.name.to_string(),
                ttl: rr.ttl,
                data,
            })
        })
        .collect()
}

/// A query for `name` (tests, and chasing an ExternalName through ourselves).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qtype = QTYPE::try_from(qtype).map_err(|e| DnsError::Encode(e.to_string()))?;
    packet.questions.push(simple_dns::Question::new(
        Name::new(name).map_err(|e| DnsError::Encode(e.to_string()))?,
        qtype,
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    build(&packet)
}

fn reply_to<'a>(query: &Packet<'a>, rcode: RCODE) -> Packet<'a> {
    let mut reply = Packet::new_reply(query.id());
    reply.questions = query.questions.clone();
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    *reply.rcode_mut() = rcode;
    if query.opt().is_some() {
        *reply.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: MAX_UDP_SIZE as u16,
            version: 0,
        });
    }
    reply
}

fn build(packet: &Packet<'_>) -> Result<Vec<u8>, DnsError> {
    packet
        .build_bytes_vec_compressed()
        .map_err(|e| DnsError::Encode(e.to_string()))
}

fn to_rr(r: &Record) -> ResourceRecord<'_> {
    let data = match &r.data {
        RecordData::A(ip) => RData::A(A {
            address: u32::from(*ip),
        }),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA {
            address: u128::from(*ip),
        }),
        RecordData::Cname(target) => RData::CNAME(CNAME(Name::new_unchecked(target))),
        RecordData::Ns(target) => RData::NS(NS(Name::new_unchecked(target))),
        RecordData::Ptr(target) => RData::PTR(PTR(Name::new_unchecked(target))),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV {
            priority: *priority,
            weight: *weight,
            port: *port,
            target: Name::new_unchecked(target),
        }),
        RecordData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => RData::SOA(SOA {
            mname: Name::new_unchecked(mname),
            rname: Name::new_unchecked(rname),
            serial: *serial,
            refresh: *refresh,
            retry: *retry,
            expire: *expire,
            minimum: *minimum,
        }),
    };
    ResourceRecord::new(Name::new_unchecked(&r.name), CLASS::IN, r.ttl, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::dns::zone::TTL;

    fn a(name: &str, ip: &str) -> Record {
        Record {
            name: name.into(),
            ttl: TTL,
            data: RecordData::A(ip.parse().unwrap()),
        }
    }

    #[test]
    fn query_round_trip() {
        let raw = build_query(7, "myservice.default.svc.cluster.local", 28).unwrap();
        let q = parse_query(&raw).unwrap();
        assert_eq!(q.id, 7);
        assert_eq!(q.name, "myservice.default.svc.cluster.local");
        assert_eq!(q.qtype, QueryType::Aaaa);
        assert_eq!(q.udp_size, 512);
        assert!(!q.edns);
    }

    #[test]
    fn answers_encode_and_big_ones_truncate() {
        let raw = build_query(9, "pg.db.svc.cluster.local", 1).unwrap();
        let answer = Answer {
            rcode: Rcode::NoError,
            answers: (0..100)
                .map(|i| a("pg.db.svc.cluster.local", &format!("10.42.0.{i}")))
                .collect(),
            authority: Vec::new(),
            additional: Vec::new(),
            chase: None,
        };
        let full = encode_answer(&raw, &answer, MAX_TCP_SIZE).unwrap();
        let records = address_records(&full);
        assert_eq!(records.len(), 100);
        assert_eq!(records[3], a("pg.db.svc.cluster.local", "10.42.0.3"));
        let short = encode_answer(&raw, &answer, CLASSIC_UDP_SIZE).unwrap();
        let packet = Packet::parse(&short).unwrap();
        assert!(packet.has_flags(PacketFlag::TRUNCATION));
        assert!(packet.answers.is_empty());
        assert_eq!(packet.id(), 9);
    }

    #[test]
    fn garbage_gets_formerr_with_its_id() {
        let reply = error_reply(&[0x12, 0x34, 0xff], RCODE::FormatError).unwrap();
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[3] & 0x0f, 1);
        assert!(parse_query(&[0x12, 0x34, 0xff]).is_err());
    }
}
