//! `%XX` escapes, both ways: shared by the path normaliser, the argument readers and the
//! control-service request builder, which differ only in which bytes they escape.

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The value of one hex digit, either case.
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` for `b`, with upper-case hex digits (as NGINX and APIcast write them).
pub fn escaped(b: u8) -> [u8; 3] {
    let digit = |n: u8| HEX_UPPER.get(usize::from(n)).copied().unwrap_or(b'0');
    [b'%', digit(b >> 4), digit(b & 0xf)]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trip() {
        for b in 0..=255u8 {
            let [p, h, l] = escaped(b);
            assert_eq!(p, b'%');
            assert_eq!(hex_value(h).unwrap() << 4 | hex_value(l).unwrap(), b);
        }
        assert_eq!(&escaped(0xc3), b"%C3");
        assert_eq!(hex_value(b'g'), None);
    }
}
