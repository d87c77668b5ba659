//! Request headers as the host hands them over, read in place.
//!
//! proxy-wasm passes a header map as one buffer: a little-endian `u32` count, then a
//! `(name length, value length)` pair of `u32`s per header, then each name and value
//! followed by a NUL byte. The SDK turns that into a `String` and a `Vec` per header (two
//! allocations each, on every request); [`HeaderMap`] keeps the buffer and an index into it.

use std::ops::Range;

/// Headers of one request: lower-case names, raw byte values, in the order received.
#[derive(Clone, Default)]
pub struct HeaderMap {
    buf: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

/// A serialized header map that does not follow the proxy-wasm layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedHeaderMap;

impl std::fmt::Display for MalformedHeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the host passed a header map that is not in the proxy-wasm layout"
        )
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<usize> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    let word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    usize::try_from(word).ok()
}

impl HeaderMap {
    /// Indexes a buffer in the proxy-wasm layout (an empty buffer is an empty map).
    pub fn from_serialized(buf: Vec<u8>) -> Result<HeaderMap, MalformedHeaderMap> {
        if buf.is_empty() {
            return Ok(HeaderMap::default());
        }
        let count = read_u32(&buf, 0).ok_or(MalformedHeaderMap)?;
        // Every header takes at least 8 bytes of lengths and 2 NULs.
        if count > buf.len() / 10 {
            return Err(MalformedHeaderMap);
        }
        let mut entries = Vec::with_capacity(count);
        let mut data = 4 + 8 * count;
        for i in 0..count {
            let name_len = read_u32(&buf, 4 + 8 * i).ok_or(MalformedHeaderMap)?;
            let value_len = read_u32(&buf, 8 + 8 * i).ok_or(MalformedHeaderMap)?;
            let name = data..data.checked_add(name_len).ok_or(MalformedHeaderMap)?;
            let value_start = name.end.checked_add(1).ok_or(MalformedHeaderMap)?;
            let value = value_start
                ..value_start
                    .checked_add(value_len)
                    .ok_or(MalformedHeaderMap)?;
            if buf.get(name.end) != Some(&0) || buf.get(value.end) != Some(&0) {
                return Err(MalformedHeaderMap);
            }
            data = value.end + 1;
            entries.push((name, value));
        }
        Ok(HeaderMap { buf, entries })
    }

    /// `GET /` at `api.test` with `Authorization: Bearer <token>` (the engine's tests).
    #[cfg(test)]
    pub(crate) fn get_with_bearer(token: &str) -> HeaderMap {
        HeaderMap::from_pairs([
            (":method", "GET".to_owned()),
            (":path", "/".to_owned()),
            (":authority", "api.test".to_owned()),
            ("authorization", format!("Bearer {}", token)),
        ])
    }

    /// Builds a map from name/value pairs (tests, the CLI).
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> HeaderMap {
        let mut map = HeaderMap::default();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let name_at = map.buf.len();
            map.buf.extend_from_slice(name);
            map.buf.push(0);
            let value_at = map.buf.len();
            map.buf.extend_from_slice(value);
            map.buf.push(0);
            map.entries.push((
                name_at..name_at + name.len(),
                value_at..value_at + value.len(),
            ));
        }
        map
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All headers as (name, value) bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// The values of every header called `name` (lower case), in order.
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.iter()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The first value of the header called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may carry tokens and cookies.
        f.debug_list()
            .entries(self.iter().map(|(n, _)| String::from_utf8_lossy(n)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(n.as_bytes());
            out.push(0);
            out.extend(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_the_proxy_wasm_layout_in_order() {
        let pairs = [
            (":path", "/a"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-empty", ""),
        ];
        let map = HeaderMap::from_serialized(serialize(&pairs)).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(":path"), Some(&b"/a"[..]));
        assert_eq!(
            map.get_all("cookie").collect::<Vec<_>>(),
            vec![&b"a=1"[..], &b"b=2"[..]]
        );
        assert_eq!(map.get("x-empty"), Some(&b""[..]));
        assert!(!map.contains("authorization"));
        let built = HeaderMap::from_pairs(pairs);
        assert!(built.iter().eq(map.iter()));
    }

    #[test]
    fn an_empty_buffer_is_an_empty_map() {
        assert!(HeaderMap::from_serialized(Vec::new()).unwrap().is_empty());
        assert!(HeaderMap::from_serialized(serialize(&[]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refuses_buffers_that_do_not_add_up() {
        let good = serialize(&[("a", "bc"), ("d", "e")]);
        for cut in 1..good.len() {
            assert_eq!(
                HeaderMap::from_serialized(good[..cut].to_vec()).unwrap_err(),
                MalformedHeaderMap,
                "cut at {}",
                cut
            );
        }
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert!(HeaderMap::from_serialized(no_nul).is_err());
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::from_serialized(huge_count).is_err());
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::from_serialized(huge_len).is_err());
    }
}
