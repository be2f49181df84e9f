//! Just enough DER to read and write SubjectPublicKeyInfo (the PEM public keys Kalshi and the
//! simulator exchange).
//!
//! It must never accept a structure it did not read to the end of its declared length, nor
//! read past the input.

pub const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// What is wrong with a DER structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DerError(&'static str);

fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("truncated DER"))?;
    let (&first, rest) = rest.split_first().ok_or(DerError("truncated DER length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DerError("unsupported DER length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(DerError("truncated DER value"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Returns the algorithm OID and the subjectPublicKey bits of an SPKI.
pub fn parse_spki(input: &[u8]) -> Result<(&[u8], &[u8]), DerError> {
    let (tag, spki, _) = read_tlv(input)?;
    if tag != 0x30 {
        return Err(DerError("SPKI is not a SEQUENCE"));
    }
    let (tag, alg, rest) = read_tlv(spki)?;
    if tag != 0x30 {
        return Err(DerError("AlgorithmIdentifier is not a SEQUENCE"));
    }
    let (tag, oid, _) = read_tlv(alg)?;
    if tag != 0x06 {
        return Err(DerError("algorithm is not an OID"));
    }
    let (tag, bits, _) = read_tlv(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return Err(DerError("subjectPublicKey is not a BIT STRING"));
    }
    Ok((oid, &bits[1..]))
}

fn write_tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

pub fn spki(oid: &[u8], null_params: bool, key: &[u8]) -> Vec<u8> {
    let mut alg = Vec::new();
    write_tlv(0x06, oid, &mut alg);
    if null_params {
        write_tlv(0x05, &[], &mut alg);
    }
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    let mut body = Vec::new();
    write_tlv(0x30, &alg, &mut body);
    write_tlv(0x03, &bits, &mut body);
    let mut out = Vec::new();
    write_tlv(0x30, &body, &mut out);
    out
}
