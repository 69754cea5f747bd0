//! proxy-wasm's serialized header maps: the bytes a host hands over for
//! `proxy_get_header_map_pairs` and takes for local replies and calls.
//!
//! The layout (all integers little-endian u32): the pair count; then a key size and a value
//! size per pair; then, per pair, the key, a NUL, the value and a NUL. An empty map is either
//! no bytes at all or a zero count.
//!
//! [`HeaderMap`] checks a buffer once and then serves borrowed names and values without
//! allocating, so a binding reads a whole map with one host call and one buffer.

use crate::request::Headers;

/// Why a buffer is not a serialized map (a host bug, never a client's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairsError {
    #[error("the header map ends before its size table")]
    Truncated,
    #[error("header pair {0} does not fit in the buffer or is not NUL-terminated")]
    BadPair(u32),
    #[error("the header map has {0} bytes after its last pair")]
    TrailingBytes(usize),
}

impl PairsError {
    /// Maps come from the host, never straight from a client.
    pub fn fault(&self) -> crate::Fault {
        crate::Fault::Internal
    }
}

/// A checked, serialized header map. Names and values are bytes (they need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    count: u32,
}

const WORD: usize = 4;

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(WORD)?)?;
    let mut w = [0u8; WORD];
    w.copy_from_slice(b);
    Some(u32::from_le_bytes(w))
}

impl HeaderMap {
    /// Checks `bytes` and keeps them.
    pub fn parse(bytes: Vec<u8>) -> Result<HeaderMap, PairsError> {
        if bytes.is_empty() {
            return Ok(HeaderMap::default());
        }
        let count = word(&bytes, 0).ok_or(PairsError::Truncated)?;
        let table_end = (count as usize)
            .checked_mul(2 * WORD)
            .and_then(|t| t.checked_add(WORD))
            .filter(|&end| end <= bytes.len())
            .ok_or(PairsError::Truncated)?;
        let mut data = table_end;
        for i in 0..count {
            let at = WORD + i as usize * 2 * WORD;
            let (Some(k), Some(v)) = (word(&bytes, at), word(&bytes, at + WORD)) else {
                return Err(PairsError::Truncated);
            };
            let key_nul = data.checked_add(k as usize).ok_or(PairsError::BadPair(i))?;
            let value_nul = key_nul
                .checked_add(1)
                .and_then(|s| s.checked_add(v as usize))
                .ok_or(PairsError::BadPair(i))?;
            if bytes.get(key_nul) != Some(&0) || bytes.get(value_nul) != Some(&0) {
                return Err(PairsError::BadPair(i));
            }
            data = value_nul + 1;
        }
        if data != bytes.len() {
            return Err(PairsError::TrailingBytes(bytes.len() - data));
        }
        Ok(HeaderMap { bytes, count })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in order.
    pub fn iter(&self) -> Pairs<'_> {
        let data = WORD + self.count as usize * 2 * WORD;
        Pairs {
            bytes: &self.bytes,
            index: 0,
            count: self.count,
            data,
        }
    }

    /// The first value of `name`, compared case-insensitively (hosts lower-case names, but a
    /// test or another host may not).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Iterator over a [`HeaderMap`]'s pairs.
pub struct Pairs<'a> {
    bytes: &'a [u8],
    index: u32,
    count: u32,
    data: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        // Checked by `parse`; `get` keeps a bug from ever becoming a panic.
        let at = WORD + self.index as usize * 2 * WORD;
        let k = word(self.bytes, at)? as usize;
        let v = word(self.bytes, at + WORD)? as usize;
        let key = self.bytes.get(self.data..self.data + k)?;
        let value_start = self.data + k + 1;
        let value = self.bytes.get(value_start..value_start + v)?;
        self.data = value_start + v + 1;
        self.index += 1;
        Some((key, value))
    }
}

impl Headers for HeaderMap {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool) {
        for (name, value) in self.iter() {
            if !f(name, value) {
                break;
            }
        }
    }
}

/// Serializes `pairs` into `out` (cleared first), for a local reply's or a call's headers.
/// Hosts ignore a map larger than 1 MiB or with more than 1,024 pairs; ours are a handful.
pub fn encode<'p>(pairs: impl Iterator<Item = (&'p [u8], &'p [u8])> + Clone, out: &mut Vec<u8>) {
    out.clear();
    let mut count: u32 = 0;
    out.extend_from_slice(&[0; WORD]);
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&len32(k).to_le_bytes());
        out.extend_from_slice(&len32(v).to_le_bytes());
        count += 1;
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    if let Some(head) = out.get_mut(..WORD) {
        head.copy_from_slice(&count.to_le_bytes());
    }
}

fn len32(b: &[u8]) -> u32 {
    // A name or value longer than 4 GiB cannot exist in a 32-bit guest.
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn encoded(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            &mut out,
        );
        out
    }

    #[test]
    fn the_sdk_example_round_trips() {
        let bytes = encoded(&[(":method", "GET"), (":path", "/a?b"), ("x", "")]);
        assert_eq!(
            bytes.get(..12),
            Some(&[3, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0][..])
        );
        let map = HeaderMap::parse(bytes).unwrap();
        let pairs: Vec<_> = map.iter().collect();
        assert_eq!(
            pairs,
            vec![
                (&b":method"[..], &b"GET"[..]),
                (b":path", b"/a?b"),
                (b"x", b"")
            ]
        );
        assert_eq!(map.get(b":PATH"), Some(&b"/a?b"[..]));
        assert_eq!(map.get(b"y"), None);
    }

    #[test]
    fn empty_maps_come_in_two_shapes() {
        assert!(HeaderMap::parse(Vec::new()).unwrap().is_empty());
        assert!(HeaderMap::parse(vec![0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn malformed_buffers_are_refused() {
        assert_eq!(HeaderMap::parse(vec![1, 0]), Err(PairsError::Truncated));
        assert_eq!(
            HeaderMap::parse(vec![1, 0, 0, 0, 1, 0, 0, 0]),
            Err(PairsError::Truncated)
        );
        let mut bytes = encoded(&[("a", "b")]);
        if let Some(last) = bytes.last_mut() {
            *last = b'x';
        }
        assert_eq!(HeaderMap::parse(bytes), Err(PairsError::BadPair(0)));
        let mut bytes = encoded(&[("a", "b")]);
        bytes.push(0);
        assert_eq!(HeaderMap::parse(bytes), Err(PairsError::TrailingBytes(1)));
        let huge = [255u8, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0].to_vec();
        assert_eq!(HeaderMap::parse(huge), Err(PairsError::Truncated));
    }
}
