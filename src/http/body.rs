//! Request bodies, read whole. The server wraps every request body in
//! `http_body_util::Limited` at `max_message_size` (`batch.max_bytes` on the
//! batch path); here a body over it becomes a 413 reply and one that cannot
//! be read a 400.
//!
//! Owns reading and its errors; what a body means is the handler's.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use http_body_util::LengthLimitError;
use warp::{Buf, Filter, Rejection};

use super::reply::{self, Body};

/// A request body that could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the limit (in bytes) of this key.
    TooLarge(usize, &'static str),
    Read,
}

impl BodyError {
    pub(crate) fn reply(&self) -> Response<Body> {
        match self {
            BodyError::TooLarge(limit, key) => reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {key} ({limit} bytes)"),
            ),
            BodyError::Read => {
                reply::error(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        }
    }
}

/// The whole body; a bad one is handed to the handler, which answers with
/// [`BodyError::reply`]. `limit` is the server's `Limited` bound and `key`
/// the config key that sets it, for the message.
pub(crate) fn body(
    limit: usize,
    key: &'static str,
) -> impl Filter<Extract = (Result<Bytes, BodyError>,), Error = Rejection> + Clone {
    warp::body::stream().then(move |stream| read(stream, limit, key))
}

async fn read<S, B>(stream: S, limit: usize, key: &'static str) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    futures_util::pin_mut!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => buf.put(chunk),
            Err(e) if over_limit(&e) => return Err(BodyError::TooLarge(limit, key)),
            Err(_) => return Err(BodyError::Read),
        }
    }
    Ok(buf.freeze())
}

/// Whether `Limited` stopped the body.
fn over_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
