//! Inflating a client's compressed message (RFC 7692 section 7.2.2), its
//! size bounded while it inflates.
//!
//! Each message inflates on its own (the server answered
//! `client_no_context_takeover`), with one decompressor per thread reset
//! for each message: no connection keeps one.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the size limit.
    TooBig,
    /// It is not valid deflate data.
    Invalid,
}

/// The bytes every message's deflate stream ends with; the sender leaves
/// them off (RFC 7692 section 7.2.2).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Output grows by at least this much at a time.
const STEP: usize = 16 * 1024;

thread_local! {
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Inflates `data`, a message's payload, into at most `limit` bytes.
pub(crate) fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    DECOMPRESSOR.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        // One byte past the limit is enough to know it is too big.
        let most = limit.saturating_add(1);
        let mut out = Vec::with_capacity((data.len() * 4).clamp(64, STEP).min(most));
        for input in [data, &TAIL] {
            let start = d.total_in();
            loop {
                if out.len() == out.capacity() {
                    // Doubling, up to one byte past the limit.
                    out.reserve_exact(out.capacity().max(STEP).min(most - out.len()));
                }
                let (read, wrote) = (d.total_in(), out.len());
                let consumed = (read - start) as usize;
                let status = d
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    return Ok(fit(out));
                }
                let all_in = (d.total_in() - start) as usize == input.len();
                // Done with this input once it is all in and the output
                // had room to spare (nothing more is waiting to come out).
                if all_in && out.len() < out.capacity() {
                    break;
                }
                if d.total_in() == read && out.len() == wrote {
                    if all_in {
                        break;
                    }
                    return Err(InflateError::Invalid);
                }
            }
        }
        Ok(fit(out))
    })
}

/// `out` without more than a little room to spare: the message may wait a
/// while for the app, and the doubling can leave almost as much unused.
fn fit(mut out: Vec<u8>) -> Vec<u8> {
    if out.capacity() - out.len() > STEP {
        out.shrink_to_fit();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn inflates_within_the_limit() {
        let text = "a JSON update, a JSON update, a JSON update".repeat(100);
        let compressed = deflate(text.as_bytes());
        assert!(compressed.len() < text.len() / 10);
        assert_eq!(inflate(&compressed, text.len()).unwrap(), text.as_bytes());
        // Twice on one thread: the decompressor is reset between messages.
        assert_eq!(inflate(&compressed, text.len()).unwrap(), text.as_bytes());
        assert_eq!(inflate(&deflate(b""), 0).unwrap(), b"");
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_bad_data_is_invalid() {
        let zeros = vec![0u8; 50 << 20];
        let bomb = deflate(&zeros);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 1 << 20),
            Err(InflateError::Invalid)
        );
    }
}
