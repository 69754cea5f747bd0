#![cfg(not(target_arch = "wasm32"))]
//! Property tests for the header-map wire format the filter reads every request's headers
//! through: any bytes a host hands over are either refused or served back exactly, and what we
//! serialize reads back as written.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::collection::vec;
use proptest::prelude::*;

use tollgate::pairs::{encode, HeaderMap};

fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (vec(any::<u8>(), 0..24), vec(any::<u8>(), 0..48))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encoded_maps_read_back_exactly(pairs in vec(pair(), 0..40)) {
        let mut bytes = Vec::new();
        encode(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), &mut bytes);
        let map = HeaderMap::parse(bytes).unwrap();
        let read: Vec<(Vec<u8>, Vec<u8>)> =
            map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(read, pairs.clone());
        prop_assert_eq!(map.len(), pairs.len());
        if let Some((k, _)) = pairs.first() {
            // The first pair whose name matches, ignoring ASCII case.
            let expected = pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v);
            prop_assert_eq!(map.get(k), expected.map(|v| v.as_slice()));
        }
    }

    #[test]
    fn any_bytes_are_refused_or_served_within_bounds(bytes in vec(any::<u8>(), 0..256)) {
        let len = bytes.len();
        if let Ok(map) = HeaderMap::parse(bytes) {
            let total: usize = map.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
            prop_assert!(total + 4 <= len.max(4));
        }
    }

    #[test]
    fn corrupted_maps_never_panic(pairs in vec(pair(), 1..8), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = Vec::new();
        encode(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), &mut bytes);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(map) = HeaderMap::parse(bytes) {
            prop_assert_eq!(map.iter().count(), map.len());
        }
    }
}
