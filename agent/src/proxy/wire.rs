//! The data-plane tunnel protocol between two agents, the same on a QUIC stream and on a
//! TLS connection.
//!
//! The client agent opens a stream and sends a [`Request`]: `version (1 byte) | body length
//! (u16, big endian) | body`, where the body is the destination namespace, service name
//! and instance id, each as `length (1 byte) | UTF-8`. The server agent answers with a
//! [`Response`] of two bytes, `version | status`, once it has decided and, if allowed,
//! connected to the local instance. Only after `Status::Connected` do application bytes
//! flow, so a client may fail over to another instance on any other status without having
//! sent a byte. A connection cut later (rule change, idle timeout, shutdown) is signalled by
//! a QUIC stream reset carrying a [`ResetCode`].

use std::fmt;

/// Protocol version carried first in both directions.
pub const VERSION: u8 = 1;

/// Longest request body: three strings of at most 255 bytes and their lengths.
pub const MAX_BODY: usize = 3 * 256;

/// ALPN of the QUIC transport.
pub const ALPN_QUIC: &[u8] = b"rhizome-quic/1";

/// ALPN of the TLS-over-TCP transport on the data port.
pub const ALPN_TLS: &[u8] = b"rhizome-tls/1";

/// What the client agent asks for: one instance of one destination service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Destination namespace.
    pub namespace: String,
    /// Destination service name.
    pub service: String,
    /// Instance id on the server agent's node.
    pub instance: String,
}

/// A request or response that cannot be decoded (the peer's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The peer speaks another protocol version.
    #[error("unsupported tunnel protocol version {0}")]
    Version(u8),
    /// The body length is beyond [`MAX_BODY`].
    #[error("request body of {0} bytes is too long")]
    TooLong(usize),
    /// The body ended inside a field, or has bytes after the last one.
    #[error("malformed request body")]
    Malformed,
    /// A field is not UTF-8.
    #[error("request field is not UTF-8")]
    NotUtf8,
    /// A field is longer than 255 bytes (our own fault when encoding).
    #[error("request field of {0} bytes is too long")]
    FieldTooLong(usize),
    /// An unknown status byte.
    #[error("unknown response status {0}")]
    Status(u8),
}

impl Request {
    /// The encoded request (header and body).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let fields = [&self.namespace, &self.service, &self.instance];
        let body_len: usize = fields.iter().map(|f| f.len() + 1).sum();
        let mut out = Vec::with_capacity(3 + body_len);
        out.push(VERSION);
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        for f in fields {
            let len = u8::try_from(f.len()).map_err(|_| WireError::FieldTooLong(f.len()))?;
            out.push(len);
            out.extend_from_slice(f.as_bytes());
        }
        Ok(out)
    }

    /// Checks the 3-byte prefix and returns the body length to read next.
    pub fn body_len(prefix: [u8; 3]) -> Result<usize, WireError> {
        if prefix[0] != VERSION {
            return Err(WireError::Version(prefix[0]));
        }
        let len = usize::from(u16::from_be_bytes([prefix[1], prefix[2]]));
        if len > MAX_BODY {
            return Err(WireError::TooLong(len));
        }
        Ok(len)
    }

    /// Decodes a body whose length [`Request::body_len`] gave.
    pub fn decode_body(body: &[u8]) -> Result<Request, WireError> {
        let mut rest = body;
        let mut next = || -> Result<String, WireError> {
            let (&len, tail) = rest.split_first().ok_or(WireError::Malformed)?;
            let len = usize::from(len);
            if tail.len() < len {
                return Err(WireError::Malformed);
            }
            let (field, tail) = tail.split_at(len);
            rest = tail;
            String::from_utf8(field.to_vec()).map_err(|_| WireError::NotUtf8)
        };
        let namespace = next()?;
        let service = next()?;
        let instance = next()?;
        if !rest.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(Request {
            namespace,
            service,
            instance,
        })
    }
}

/// The server agent's answer to a [`Request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Allowed and connected to the instance: bytes flow from now on.
    Connected = 0,
    /// The intentions deny the source this destination.
    Denied = 1,
    /// No such instance on this node (stale catalog): try another.
    NoInstance = 2,
    /// The instance did not accept the connection: try another.
    Unreachable = 3,
    /// The request did not decode.
    BadRequest = 4,
    /// The agent is shutting down: try another.
    Draining = 5,
}

impl Status {
    /// Decodes the 2-byte response.
    pub fn decode(bytes: [u8; 2]) -> Result<Status, WireError> {
        if bytes[0] != VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        Ok(match bytes[1] {
            0 => Status::Connected,
            1 => Status::Denied,
            2 => Status::NoInstance,
            3 => Status::Unreachable,
            4 => Status::BadRequest,
            5 => Status::Draining,
            other => return Err(WireError::Status(other)),
        })
    }

    /// The 2-byte response.
    pub fn encode(self) -> [u8; 2] {
        [VERSION, self as u8]
    }

    /// Whether another instance may be tried (nothing was sent to this one).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Status::NoInstance | Status::Unreachable | Status::Draining
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Connected => "connected",
            Status::Denied => "denied",
            Status::NoInstance => "no_instance",
            Status::Unreachable => "unreachable",
            Status::BadRequest => "bad_request",
            Status::Draining => "draining",
        })
    }
}

/// Why a stream was reset or stopped after it was established (QUIC application error
/// codes on `reset`/`stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCode {
    /// One side's TCP connection failed or was reset.
    Aborted = 1,
    /// The intentions now deny this connection.
    Denied = 2,
    /// No bytes either way for the idle timeout.
    Idle = 3,
    /// The agent shut down before the connection finished.
    Shutdown = 4,
}

impl ResetCode {
    /// As a QUIC error code.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code from a QUIC error code, if it is one of ours.
    pub fn from_varint(code: quinn::VarInt) -> Option<ResetCode> {
        match code.into_inner() {
            1 => Some(ResetCode::Aborted),
            2 => Some(ResetCode::Denied),
            3 => Some(ResetCode::Idle),
            4 => Some(ResetCode::Shutdown),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            namespace: "default".into(),
            service: "db".into(),
            instance: "db-1".into(),
        }
    }

    fn roundtrip(r: &Request) -> Result<Request, WireError> {
        let bytes = r.encode()?;
        let len = Request::body_len([bytes[0], bytes[1], bytes[2]])?;
        assert_eq!(len, bytes.len() - 3);
        Request::decode_body(&bytes[3..])
    }

    #[test]
    fn request_roundtrips() {
        assert_eq!(roundtrip(&req()).unwrap(), req());
        let long = Request {
            namespace: "n".repeat(255),
            service: "s".repeat(255),
            instance: "i".repeat(255),
        };
        assert_eq!(roundtrip(&long).unwrap(), long);
        let empty = Request {
            namespace: String::new(),
            service: String::new(),
            instance: String::new(),
        };
        assert_eq!(roundtrip(&empty).unwrap(), empty);
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(Request::body_len([2, 0, 3]), Err(WireError::Version(2)));
        assert_eq!(
            Request::body_len([VERSION, 0xff, 0xff]),
            Err(WireError::TooLong(0xffff))
        );
        let bytes = req().encode().unwrap();
        let body = &bytes[3..];
        for cut in 0..body.len() {
            assert!(Request::decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = body.to_vec();
        extra.push(0);
        assert_eq!(Request::decode_body(&extra), Err(WireError::Malformed));
        assert_eq!(
            Request::decode_body(&[1, 0xff, 0, 0]),
            Err(WireError::NotUtf8)
        );
        let too_long = Request {
            service: "s".repeat(256),
            ..req()
        };
        assert_eq!(too_long.encode(), Err(WireError::FieldTooLong(256)));
    }

    #[test]
    fn short_bodies_decode_only_when_they_reencode_identically() {
        // A cheap sweep over short bodies (the fuzz target's little sibling): whatever
        // decodes must be exactly what encoding the result gives back.
        let alphabet = [0u8, 1, 2, 0x61, 0xff];
        let mut decoded = 0;
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        let body = [a, b, c, d];
                        if let Ok(r) = Request::decode_body(&body) {
                            decoded += 1;
                            assert_eq!(&r.encode().unwrap()[3..], &body[..]);
                        }
                    }
                }
            }
        }
        assert!(decoded > 0, "some 4-byte bodies are valid (e.g. 0,0,2,aa)");
    }

    #[test]
    fn statuses_roundtrip() {
        for s in [
            Status::Connected,
            Status::Denied,
            Status::NoInstance,
            Status::Unreachable,
            Status::BadRequest,
            Status::Draining,
        ] {
            assert_eq!(Status::decode(s.encode()), Ok(s));
        }
        assert_eq!(Status::decode([VERSION, 9]), Err(WireError::Status(9)));
        assert_eq!(Status::decode([7, 0]), Err(WireError::Version(7)));
        assert!(Status::Unreachable.is_retryable());
        assert!(!Status::Denied.is_retryable());
        for c in [
            ResetCode::Aborted,
            ResetCode::Denied,
            ResetCode::Idle,
            ResetCode::Shutdown,
        ] {
            assert_eq!(ResetCode::from_varint(c.varint()), Some(c));
        }
        assert_eq!(ResetCode::from_varint(quinn::VarInt::from_u32(99)), None);
    }
}
