//! Decoding a binary `google.protobuf.Struct` into JSON.
//!
//! Istio hands the filter its `pluginConfig` as JSON text, but Envoy 1.40 passes a plugin
//! `configuration` of type `google.protobuf.Struct` as the serialized protobuf. Accepting it
//! lets Envoy users write the configuration as YAML, comments included.

use serde_json::{Map, Number, Value};

const MAX_DEPTH: usize = 64;

/// Decodes the wire bytes of a `google.protobuf.Struct`; `None` if they are not one.
pub fn decode_struct(bytes: &[u8]) -> Option<Value> {
    decode_struct_at(bytes, 0).map(Value::Object)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn fixed64(&mut self) -> Option<u64> {
        let raw = self.bytes.get(self.pos..self.pos.checked_add(8)?)?;
        self.pos += 8;
        Some(u64::from_le_bytes(raw.try_into().ok()?))
    }

    fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    /// Field number and wire type of the next tag.
    fn tag(&mut self) -> Option<(u64, u8)> {
        let tag = self.varint()?;
        Some((tag >> 3, (tag & 7) as u8))
    }

    fn skip(&mut self, wire_type: u8) -> Option<()> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.fixed64().map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => {
                self.pos = self.pos.checked_add(4).filter(|p| *p <= self.bytes.len())?;
                Some(())
            }
            _ => None,
        }
    }
}

fn decode_struct_at(bytes: &[u8], depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut map = Map::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                let (key, value) = decode_entry(r.len_delimited()?, depth)?;
                map.insert(key, value);
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Some(map)
}

fn decode_entry(bytes: &[u8], depth: usize) -> Option<(String, Value)> {
    let mut r = Reader { bytes, pos: 0 };
    let mut key = String::new();
    let mut value = Value::Null;
    while !r.done() {
        match r.tag()? {
            (1, 2) => key = String::from_utf8(r.len_delimited()?.to_vec()).ok()?,
            (2, 2) => value = decode_value(r.len_delimited()?, depth + 1)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Some((key, value))
}

fn decode_value(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut value = Value::Null;
    while !r.done() {
        value = match r.tag()? {
            (1, 0) => {
                r.varint()?;
                Value::Null
            }
            (2, 1) => number(f64::from_bits(r.fixed64()?))?,
            (3, 2) => Value::String(String::from_utf8(r.len_delimited()?.to_vec()).ok()?),
            (4, 0) => Value::Bool(r.varint()? != 0),
            (5, 2) => Value::Object(decode_struct_at(r.len_delimited()?, depth + 1)?),
            (6, 2) => decode_list(r.len_delimited()?, depth + 1)?,
            (_, wire) => {
                r.skip(wire)?;
                continue;
            }
        };
    }
    Some(value)
}

fn decode_list(bytes: &[u8], depth: usize) -> Option<Value> {
    let mut r = Reader { bytes, pos: 0 };
    let mut items = Vec::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => items.push(decode_value(r.len_delimited()?, depth + 1)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Some(Value::Array(items))
}

/// Struct numbers are doubles; whole numbers become JSON integers so that counts and
/// seconds read as integers.
fn number(f: f64) -> Option<Value> {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Some(Value::from(f as i64))
    } else {
        Number::from_f64(f).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn len_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// A minimal encoder mirroring protobuf's, for round trips.
    fn encode_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => out.extend_from_slice(&[8, 0]),
            Value::Bool(b) => out.extend_from_slice(&[32, u8::from(*b)]),
            Value::Number(n) => {
                out.push(17);
                out.extend_from_slice(&n.as_f64().unwrap().to_bits().to_le_bytes());
            }
            Value::String(s) => len_field(3, s.as_bytes(), &mut out),
            Value::Array(items) => {
                let mut list = Vec::new();
                for i in items {
                    len_field(1, &encode_value(i), &mut list);
                }
                len_field(6, &list, &mut out);
            }
            Value::Object(_) => len_field(5, &encode_struct(v), &mut out),
        }
        out
    }

    fn encode_struct(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, val) in v.as_object().unwrap() {
            let mut entry = Vec::new();
            len_field(1, k.as_bytes(), &mut entry);
            len_field(2, &encode_value(val), &mut entry);
            len_field(1, &entry, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_a_configuration() {
        let config = json!({
            "providers": {"main": {"issuer": "https://i", "clock_skew_seconds": 60, "audiences": ["a", "b"]}},
            "dry_run": false,
            "ratio": 0.5,
            "nothing": null,
            "rules": [{"match": {"path": {"prefix": "/"}}}]
        });
        assert_eq!(decode_struct(&encode_struct(&config)), Some(config));
    }

    #[test]
    fn whole_numbers_become_integers() {
        assert_eq!(number(60.0), Some(json!(60)));
        assert_eq!(number(-3.0), Some(json!(-3)));
        assert_eq!(number(1.5), Some(json!(1.5)));
    }

    #[test]
    fn garbage_is_not_a_struct() {
        assert_eq!(decode_struct(b"{\"providers\": 1}"), None);
        assert_eq!(decode_struct(&[10, 200]), None);
        assert_eq!(decode_struct(&[10, 2, 10]), None);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = json!(1);
        for _ in 0..100 {
            v = json!({"a": v});
        }
        assert_eq!(decode_struct(&encode_struct(&v)), None);
    }
}
