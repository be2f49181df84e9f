//! PostgreSQL binary `COPY ... FROM STDIN (FORMAT binary)` encoding.
//!
//! Rows are written field by field into one buffer: the 19-byte header, then per row a field
//! count and each field as a 4-byte length (-1 for NULL) plus its binary value, then the
//! trailer. Only the types this project stores are supported.
//!
//! It must never emit a row whose field count differs from the one it was built for.

use bytes::{BufMut, BytesMut};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// JSON text with every `\u0000` escape (not an escaped backslash followed by `u0000`) and every
/// raw U+0000 replaced by `\ufffd`.
fn without_nul_escapes(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\0' => out.push_str("\\ufffd"),
            '\\' => match chars.next() {
                Some('u') => {
                    let hex: String = chars.clone().take(4).collect();
                    if hex == "0000" {
                        for _ in 0..4 {
                            chars.next();
                        }
                        out.push_str("\\ufffd");
                    } else {
                        out.push_str("\\u");
                    }
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

/// Builds one binary COPY payload.
#[derive(Debug)]
pub struct CopyEncoder {
    buf: BytesMut,
    fields_per_row: i16,
    rows: usize,
    in_row: i16,
}

impl CopyEncoder {
    pub fn new(fields_per_row: i16) -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        Self {
            buf,
            fields_per_row,
            rows: 0,
            in_row: fields_per_row,
        }
    }

    /// Starts a row; every row must then get exactly `fields_per_row` fields.
    pub fn row(&mut self) -> &mut Self {
        debug_assert_eq!(self.in_row, self.fields_per_row, "previous row incomplete");
        self.buf.put_i16(self.fields_per_row);
        self.rows += 1;
        self.in_row = 0;
        self
    }

    fn field(&mut self, len: i32) {
        self.in_row += 1;
        self.buf.put_i32(len);
    }

    pub fn null(&mut self) -> &mut Self {
        self.field(-1);
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.field(2);
        self.buf.put_i16(v);
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.field(4);
        self.buf.put_i32(v);
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.field(8);
        self.buf.put_i64(v);
        self
    }

    pub fn opt_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.field(1);
        self.buf.put_u8(u8::from(v));
        self
    }

    /// `text` / `varchar`. PostgreSQL cannot store U+0000 in text: it is written as U+FFFD
    /// (the replacement character) instead of failing the whole batch. Found by
    /// tests/tests/fuzz.rs (copy_round_trip).
    pub fn text(&mut self, v: &str) -> &mut Self {
        if v.contains('\0') {
            let clean = v.replace('\0', "\u{fffd}");
            return self.bytes(clean.as_bytes());
        }
        self.bytes(v.as_bytes())
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// `bytea`.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.field(i32::try_from(v.len()).unwrap_or(i32::MAX));
        self.buf.put_slice(v);
        self
    }

    /// `jsonb` from JSON text (binary format version 1). jsonb refuses the escape `\u0000`
    /// (and raw U+0000): such characters are written as `\ufffd`, as in [`Self::text`].
    pub fn jsonb(&mut self, json_text: &str) -> &mut Self {
        let clean;
        let json_text = if json_text.contains("\\u0000") || json_text.contains('\0') {
            clean = without_nul_escapes(json_text);
            clean.as_str()
        } else {
            json_text
        };
        self.field(i32::try_from(json_text.len() + 1).unwrap_or(i32::MAX));
        self.buf.put_u8(1);
        self.buf.put_slice(json_text.as_bytes());
        self
    }

    /// `json` from JSON text, kept exactly as given (the `json` type stores its input text:
    /// key order, spacing, escapes and number spellings survive, where `jsonb` normalises
    /// them). Its binary form is the text itself. A raw U+0000, which no valid JSON holds and
    /// PostgreSQL cannot store, is written as in [`Self::text`].
    pub fn json(&mut self, json_text: &str) -> &mut Self {
        self.text(json_text)
    }

    /// `timestamptz` from Unix milliseconds, exact from 4713 BC to the year 294247 (where
    /// microseconds stop fitting an i64; beyond, it saturates to PostgreSQL's `infinity`).
    pub fn timestamptz_ms(&mut self, unix_ms: i64) -> &mut Self {
        self.field(8);
        self.buf.put_i64(
            unix_ms
                .saturating_mul(1000)
                .saturating_sub(PG_EPOCH_OFFSET_US),
        );
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The complete payload with its trailer.
    pub fn finish(mut self) -> bytes::Bytes {
        debug_assert_eq!(self.in_row, self.fields_per_row, "last row incomplete");
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::without_nul_escapes;

    #[test]
    fn nul_escapes_become_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(
            without_nul_escapes(r#"{"a":"x\u0000y"}"#),
            r#"{"a":"x\ufffdy"}"#
        );
        // An escaped backslash followed by "u0000" is text, not an escape.
        assert_eq!(without_nul_escapes(r#"["\\u0000"]"#), r#"["\\u0000"]"#);
        assert_eq!(without_nul_escapes(r#"["\u00001"]"#), r#"["\ufffd1"]"#);
        assert_eq!(without_nul_escapes("[\"\u{0}\"]"), r#"["\ufffd"]"#);
        assert_eq!(
            without_nul_escapes(r#"{"\u0000k":"\"\u00e9"}"#),
            r#"{"\ufffdk":"\"\u00e9"}"#
        );
    }

    use super::*;

    #[test]
    fn encodes_header_rows_and_trailer() {
        let mut e = CopyEncoder::new(2);
        e.row().i64(7).text("ab");
        e.row().null().bool(true);
        assert_eq!(e.rows(), 2);
        let b = e.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[
            0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, b'a', b'b',
        ]);
        want.extend_from_slice(&[0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(b.as_ref(), want.as_slice());
    }

    #[test]
    fn timestamps_use_the_postgres_epoch() {
        let mut e = CopyEncoder::new(1);
        e.row().timestamptz_ms(946_684_800_000);
        let b = e.finish();
        assert_eq!(&b[19 + 2 + 4..19 + 2 + 4 + 8], &[0u8; 8]);
    }
}
