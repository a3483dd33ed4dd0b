//! permessage-deflate negotiation (RFC 7692 section 7.1): which of a
//! client's `Sec-WebSocket-Extensions` offers the server accepts, and the
//! answer it gives.
//!
//! The server compresses each message on its own and asks the client to do
//! the same (`server_no_context_takeover; client_no_context_takeover`), so
//! no connection keeps a compression context between messages.

use http::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};

/// The extension's token.
const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// An accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The offer's `server_max_window_bits`, if it had one: the server
    /// accepts it by answering it (RFC 7692 7.1.2.1).
    server_max_window_bits: Option<u8>,
}

impl Accepted {
    /// The LZ77 window the server may use, as `2^window_bits` bytes.
    pub(crate) fn window_bits(self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The `Sec-WebSocket-Extensions` value answering the offer.
    pub(crate) fn response(self) -> HeaderValue {
        let mut value = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        HeaderValue::from_str(&value).expect("an ASCII header value")
    }
}

/// The first permessage-deflate offer in `headers` the server can accept,
/// in the client's order of preference; `None` when there is none (the
/// connection then goes uncompressed).
pub(crate) fn accept(headers: &HeaderMap) -> Option<Accepted> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(offer)
}

/// One offer (`name; param; param=value`), if it is a permessage-deflate
/// offer with valid parameters, each at most once.
fn offer(text: &str) -> Option<Accepted> {
    let mut parts = text.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut seen = Vec::new();
    let mut server_max_window_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_max_window_bits = Some(bits(v)?),
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(Accepted {
        server_max_window_bits,
    })
}

/// A window size in bits: 8 to 15, digits only.
fn bits(value: &str) -> Option<u8> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(values: &[&'static str]) -> Option<Accepted> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(v));
        }
        accept(&headers)
    }

    #[test]
    fn offers_are_accepted_in_order_when_their_parameters_are_valid() {
        let plain = Some(Accepted {
            server_max_window_bits: None,
        });
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["x-webkit-deflate-frame"]), None);
        assert_eq!(offered(&["permessage-deflate"]), plain);
        // What browsers send.
        assert_eq!(
            offered(&["permessage-deflate; client_max_window_bits"]),
            plain
        );
        let ten = offered(&["permessage-deflate; server_max_window_bits=10"]).unwrap();
        assert_eq!(ten.window_bits(), 10);
        assert_eq!(offered(&["permessage-deflate"]).unwrap().window_bits(), 15);
        // A bad first offer falls back to the next one.
        assert_eq!(
            offered(&["permessage-deflate; server_max_window_bits=7, permessage-deflate"]),
            plain
        );
        assert_eq!(
            offered(&["foo", "permessage-deflate; client_no_context_takeover"]),
            plain
        );
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert_eq!(offered(&[bad]), None, "{bad}");
        }
    }

    #[test]
    fn the_answer_asks_for_no_context_takeover_both_ways() {
        let answer = |bits| {
            Accepted {
                server_max_window_bits: bits,
            }
            .response()
        };
        assert_eq!(
            answer(None),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            answer(Some(9)),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        );
        // Offered, it is answered, even at its largest.
        assert_eq!(
            answer(Some(15)),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
        );
    }
}
