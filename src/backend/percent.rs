//! Percent-encoding for Service Management API parameters: every byte except RFC 3986's
//! unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` with upper-case hex, as
//! `ngx.escape_uri` does for a component. Spaces are `%20`, never `+`.

use crate::percent::escaped;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

pub fn encode_into(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.extend(escaped(b).map(char::from));
        }
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    encode_into(bytes, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn encodes_everything_rack_would_misread() {
        assert_eq!(encode(b"+&=%#; "), "%2B%26%3D%25%23%3B%20");
        assert_eq!(encode("é".as_bytes()), "%C3%A9");
        assert_eq!(encode(b"\xff\x00"), "%FF%00");
        assert_eq!(encode(b"usage[hits]"), "usage%5Bhits%5D");
        assert_eq!(encode(b"AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode(b""), "");
    }
}
