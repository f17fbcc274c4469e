//! Small facts of the WebAssembly binary format that several crates need.

/// `module` with a custom section `name` holding `payload` appended: still a valid module or
/// component, of a digest of its own (benchmarks and tests use it to make distinct modules).
pub fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0);
    leb128(&mut out, body.len());
    out.extend(body);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_length_prefixed() {
        let base = b"\0asm\x01\0\0\0";
        for (payload_len, size_bytes) in [(0usize, vec![2u8]), (200, vec![0xca, 0x01])] {
            let out = with_custom_section(base, "a", &vec![7; payload_len]);
            assert_eq!(&out[..8], base);
            assert_eq!(out[8], 0, "a custom section");
            assert_eq!(&out[9..9 + size_bytes.len()], &size_bytes[..]);
            assert_eq!(out.len(), 8 + 1 + size_bytes.len() + 2 + payload_len);
        }
    }
}
