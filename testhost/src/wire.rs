//! Byte formats of the ABI: header-map pairs and property paths.

/// A header map as Envoy holds it: names (lower-case) and values, in order, duplicates kept.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Envoy's limits for a serialized map handed to the host (`limits.h`).
const MAX_PAIRS_BYTES: usize = 1 << 20;
const MAX_PAIRS: usize = 1024;

/// `u32 count`, `count × (u32 key_len, u32 value_len)`, then `key\0value\0` for each pair.
pub fn serialize_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    usize::try_from(u32::from_le_bytes(a)).ok()
}

/// Parses pairs as Envoy does: anything malformed or over the limits is an empty map.
pub fn parse_pairs(bytes: &[u8]) -> Pairs {
    parse_pairs_strict(bytes).unwrap_or_default()
}

fn parse_pairs_strict(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    if bytes.len() > MAX_PAIRS_BYTES {
        return None;
    }
    let count = u32_at(bytes, 0)?;
    if count > MAX_PAIRS {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        let at = 4 + i * 8;
        sizes.push((u32_at(bytes, at)?, u32_at(bytes, at + 4)?));
    }
    let mut pos = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (kl, vl) in sizes {
        let key = bytes.get(pos..pos.checked_add(kl)?)?.to_vec();
        pos += kl;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos += 1;
        let value = bytes.get(pos..pos.checked_add(vl)?)?.to_vec();
        pos += vl;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos += 1;
        pairs.push((key, value));
    }
    (pos == bytes.len()).then_some(pairs)
}

/// Property path segments are joined by NUL, with no trailing NUL.
pub fn property_path(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_sdk_layout() {
        let pairs: Pairs = vec![
            (b":method".to_vec(), b"GET".to_vec()),
            (b"x".to_vec(), b"\xff".to_vec()),
        ];
        let bytes = serialize_pairs(&pairs);
        assert_eq!(
            bytes.get(..12),
            Some(&[2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0][..])
        );
        assert_eq!(parse_pairs(&bytes), pairs);
        assert_eq!(parse_pairs(&[0, 0, 0, 0]), Vec::new());
        assert_eq!(parse_pairs(&[]), Vec::new());
    }

    #[test]
    fn malformed_pairs_are_empty() {
        let mut bytes = serialize_pairs(&[(b"k".to_vec(), b"v".to_vec())]);
        bytes.push(1);
        assert!(parse_pairs(&bytes).is_empty());
        assert!(parse_pairs(&[1, 0, 0, 0, 9, 9]).is_empty());
        let too_many = 2000u32.to_le_bytes();
        assert!(parse_pairs(&too_many).is_empty());
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(property_path(b"node\0id"), vec!["node", "id"]);
    }
}
