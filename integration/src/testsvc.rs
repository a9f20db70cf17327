//! What the harness and the `rhizome-testsvc` binary agree on: the byte pattern the client
//! sends and verifies, the line a server prints once it listens, and the client's exit codes.

/// First line a server prints on stdout once its socket is bound: `listening <addr>`.
pub const READY_PREFIX: &str = "listening ";

/// Client exit code: every byte came back exactly.
pub const EXIT_OK: i32 = 0;
/// Exit code for bad arguments or an internal error.
pub const EXIT_USAGE: i32 = 1;
/// Client exit code: could not connect, or the connection failed or timed out.
pub const EXIT_UNREACHABLE: i32 = 2;
/// Client exit code: connected, but the bytes that came back differ from those sent.
pub const EXIT_CORRUPT: i32 = 3;
/// `get` exit code: the server answered with a status other than 2xx.
pub const EXIT_HTTP_STATUS: i32 = 4;

/// Byte `i` of the stream the client sends: not periodic over short spans, so a dropped,
/// duplicated or reordered chunk shows as a mismatch.
pub fn pattern_byte(i: u64) -> u8 {
    let mixed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 7);
    (mixed >> 56) as u8
}

#[cfg(test)]
mod tests {
    use super::pattern_byte;

    #[test]
    fn pattern_shifted_by_a_chunk_differs() {
        let a: Vec<u8> = (0..4096).map(pattern_byte).collect();
        let b: Vec<u8> = (1024..5120).map(pattern_byte).collect();
        assert_ne!(a, b);
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "pattern uses {} byte values",
            distinct.len()
        );
    }
}
