//! Writing JSON the way every Mesos client can read it: compact, no raw newlines, and ASCII
//! only. mesoshttp slices records by character count after decoding, so one raw UTF-8 byte in
//! a task name shifts every later record (pitfall 3); escaping non-ASCII as `\uXXXX` (with
//! surrogate pairs above the BMP) keeps byte and character counts equal.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use std::io;

/// Serializes `value` as compact, ASCII-only JSON.
pub fn to_ascii_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Same as [`to_ascii_vec`], as a `String` (ASCII is valid UTF-8).
pub fn to_ascii_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let bytes = to_ascii_vec(value)?;
    // The formatter writes only ASCII, so this cannot fail; map it anyway rather than unwrap.
    String::from_utf8(bytes).map_err(|e| serde_json::Error::io(io::Error::other(e)))
}

/// serde_json's compact formatter, except that string fragments are escaped to ASCII.
struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return CompactFormatter.write_string_fragment(writer, fragment);
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_ascii_is_escaped_and_round_trips() {
        let v = json!({"name": "π on a Pi 🥧", "n": 1});
        let s = to_ascii_string(&v).unwrap();
        assert!(s.is_ascii(), "{s}");
        assert_eq!(s, r#"{"n":1,"name":"\u03c0 on a Pi \ud83e\udd67"}"#);
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn output_is_compact_and_has_no_raw_newlines() {
        let v = json!({"message": "line one\nline two\r", "list": [1, 2]});
        let s = to_ascii_string(&v).unwrap();
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
        assert!(s.starts_with(r#"{"list":[1,2],"message":"#), "{s}");
        assert!(s.contains(r"line one\nline two\r"));
    }
}
