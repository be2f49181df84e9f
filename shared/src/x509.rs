//! The validity period of an X.509 certificate, read from its DER: enough to report when a
//! certificate ends (`tls_certificate_expiry_timestamp_seconds`), with no parser dependency.
//! Only the path to `tbsCertificate.validity` is walked (RFC 5280 §4.1); every length is
//! checked against what is left, so any byte string gives an answer or an error, never a panic.

/// Why a certificate's validity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    #[error("truncated DER")]
    Truncated,
    #[error("unexpected DER tag {found:#04x} where {wanted} was expected")]
    Tag { found: u8, wanted: &'static str },
    #[error("unsupported DER length encoding")]
    Length,
    #[error("malformed time {0:?}")]
    Time(String),
}

/// One DER element: its tag, and where its content lies in the buffer.
struct Tlv {
    tag: u8,
    start: usize,
    end: usize,
}

fn tlv(buf: &[u8], at: usize) -> Result<Tlv, X509Error> {
    let tag = *buf.get(at).ok_or(X509Error::Truncated)?;
    let first = *buf.get(at + 1).ok_or(X509Error::Truncated)?;
    let (len, header) = match first {
        n if n < 0x80 => (usize::from(n), 2),
        0x81..=0x84 => {
            let k = usize::from(first & 0x7f);
            let bytes = buf.get(at + 2..at + 2 + k).ok_or(X509Error::Truncated)?;
            let len = bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
            (len, 2 + k)
        }
        // 0x80 is BER's indefinite length (never DER); longer lengths are not a certificate.
        _ => return Err(X509Error::Length),
    };
    let start = at.checked_add(header).ok_or(X509Error::Length)?;
    let end = start.checked_add(len).ok_or(X509Error::Length)?;
    if end > buf.len() {
        return Err(X509Error::Truncated);
    }
    Ok(Tlv { tag, start, end })
}

fn expect(buf: &[u8], at: usize, tag: u8, wanted: &'static str) -> Result<Tlv, X509Error> {
    let t = tlv(buf, at)?;
    if t.tag != tag {
        return Err(X509Error::Tag {
            found: t.tag,
            wanted,
        });
    }
    Ok(t)
}

/// `(not_before, not_after)` of a DER certificate, in Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), X509Error> {
    const SEQUENCE: u8 = 0x30;
    let cert = expect(der, 0, SEQUENCE, "Certificate")?;
    let tbs = expect(der, cert.start, SEQUENCE, "tbsCertificate")?;
    let mut at = tbs.start;
    // version [0] EXPLICIT, absent for v1.
    let first = tlv(der, at)?;
    if first.tag == 0xa0 {
        at = first.end;
    }
    at = expect(der, at, 0x02, "serialNumber")?.end;
    at = expect(der, at, SEQUENCE, "signature")?.end;
    at = expect(der, at, SEQUENCE, "issuer")?.end;
    let validity = expect(der, at, SEQUENCE, "validity")?;
    if validity.end > tbs.end {
        return Err(X509Error::Truncated);
    }
    let before = tlv(der, validity.start)?;
    let after = tlv(der, before.end)?;
    Ok((time(der, &before)?, time(der, &after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(der: &[u8], t: &Tlv) -> Result<i64, X509Error> {
    let text = &der[t.start..t.end];
    let bad = || X509Error::Time(String::from_utf8_lossy(text).into_owned());
    let digits = match (t.tag, text.split_last()) {
        (0x17 | 0x18, Some((b'Z', d))) => d,
        (0x17 | 0x18, _) => return Err(bad()),
        (found, _) => {
            return Err(X509Error::Tag {
                found,
                wanted: "a time",
            });
        }
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let num = |s: &[u8]| s.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0'));
    let (year, rest) = match (t.tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return Err(bad()),
    };
    let (month, day) = (num(&rest[0..2]), num(&rest[2..4]));
    let (h, m, s) = (num(&rest[4..6]), num(&rest[6..8]), num(&rest[8..10]));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal certificate-shaped DER around one validity.
    fn cert(before: (u8, &str), after: (u8, &str), version: bool) -> Vec<u8> {
        fn el(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            if content.len() < 0x80 {
                v.push(content.len() as u8);
            } else {
                v.push(0x82);
                v.extend((content.len() as u16).to_be_bytes());
            }
            v.extend(content);
            v
        }
        let mut tbs = Vec::new();
        if version {
            tbs.extend(el(0xa0, &el(0x02, &[2])));
        }
        tbs.extend(el(0x02, &[1, 2, 3]));
        tbs.extend(el(0x30, &el(0x06, &[1, 2])));
        tbs.extend(el(0x30, &[0u8; 200]));
        let mut v = el(before.0, before.1.as_bytes());
        v.extend(el(after.0, after.1.as_bytes()));
        tbs.extend(el(0x30, &v));
        tbs.extend(el(0x30, &[]));
        el(0x30, &el(0x30, &tbs))
    }

    #[test]
    fn utc_and_generalized_times_read_as_unix_seconds() {
        let der = cert((0x17, "261207120000Z"), (0x18, "20271207120000Z"), true);
        assert_eq!(validity(&der), Ok((1_796_644_800, 1_828_180_800)));
        // v1 (no version field), and UTCTime's century rule: 50 and above are 19xx.
        let der = cert((0x17, "500101000000Z"), (0x17, "491231235959Z"), false);
        assert_eq!(validity(&der), Ok((-631_152_000, 2_524_607_999)));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn anything_else_is_an_error_not_a_panic() {
        let good = cert((0x17, "261207120000Z"), (0x18, "20271207120000Z"), true);
        for n in 0..good.len() {
            assert!(validity(&good[..n]).is_err(), "truncated at {n}");
        }
        for bad in [
            cert((0x17, "2612071200Z"), (0x18, "20271207120000Z"), true),
            cert((0x17, "261307120000Z"), (0x18, "20271207120000Z"), true),
            cert((0x17, "26120712000aZ"), (0x18, "20271207120000Z"), true),
            cert((0x17, "261207120000+"), (0x18, "20271207120000Z"), true),
            cert((0x0c, "261207120000Z"), (0x18, "20271207120000Z"), true),
        ] {
            assert!(validity(&bad).is_err());
        }
        assert_eq!(validity(&[0x30, 0x80, 0, 0]), Err(X509Error::Length));
        assert_eq!(
            validity(&[0x30, 0x88, 1, 1, 1, 1, 1, 1, 1, 1]),
            Err(X509Error::Length)
        );
        assert!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
