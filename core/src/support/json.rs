//! Strict JSON for untrusted token parts: RFC 8259 syntax (serde_json), and no duplicate
//! object keys at any depth. Duplicate keys are how parser-differential attacks hide a second
//! `iss` or `aud` from one of two parsers; we refuse them instead of picking one.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `bytes` as one JSON value, rejecting duplicate object keys.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses `bytes` as a JSON object (duplicate keys rejected).
pub fn object_from_slice_strict(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match from_slice_strict(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("is not a JSON object".to_string()),
        Err(e) => Err(format!("is not valid JSON ({})", e)),
    }
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(StrictValue)?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {:?}", key)));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json_with_whitespace() {
        let v =
            from_slice_strict(b"{\r\n \"a\": [1, 2.5, \"x\", null, true], \"b\": {\"c\": {}}}\n")
                .unwrap();
        assert_eq!(v["a"][1], 2.5);
        assert_eq!(v["b"]["c"], serde_json::json!({}));
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert!(from_slice_strict(br#"{"iss":"a","iss":"b"}"#).is_err());
        assert!(from_slice_strict(br#"{"x":{"r":1,"r":2}}"#).is_err());
        assert!(from_slice_strict(br#"[{"r":1,"r":1}]"#).is_err());
    }

    #[test]
    fn rejects_lenient_syntax() {
        for bad in [
            &br#"{"a":1,}"#[..],
            br#"{a:1}"#,
            br#"{'a':1}"#,
            br#"{"a":1} x"#,
            br#"{"a":NaN}"#,
        ] {
            assert!(
                from_slice_strict(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_very_deep_nesting() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(from_slice_strict(deep.as_bytes()).is_err());
    }
}
