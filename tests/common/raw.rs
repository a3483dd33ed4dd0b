//! A WebSocket client written by hand on a raw TCP socket, for what a
//! well-behaved client library will not do: break the protocol, offer
//! permessage-deflate and look at the bits of each frame the server sends.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Kb;

/// Upgrades a raw TCP connection as session `id`, with `extra` request
/// headers (`Name: value\r\n` each); returns the socket and the 101's head.
pub async fn raw_connect_with(kb: &Kb, id: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(kb.addr).await.unwrap();
    let req = format!(
        "GET /connect?session={id} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        kb.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head)
}

/// Upgrades a raw TCP connection as session `id`.
pub async fn raw_connect(kb: &Kb, id: &str) -> TcpStream {
    raw_connect_with(kb, id, "").await.0
}

/// One frame as a client writes it (`masked` true for a valid client
/// frame); `rsv` is RSV1-3 as three bits (0b100: RSV1).
pub fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x11, 0x22, 0x33, 0x44];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A frame the server sent.
#[derive(Debug)]
pub struct ServerFrame {
    /// The first byte: FIN, RSV1-3, opcode.
    pub first: u8,
    /// Header and payload, as they came on the wire.
    pub wire_len: usize,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn rsv1(&self) -> bool {
        self.first & 0x40 != 0
    }

    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
}

/// The next frame from the server, or `None` when the connection ends.
pub async fn read_frame(s: &mut TcpStream) -> Option<ServerFrame> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.ok()?;
    let (len, extra) = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.ok()?;
            (u16::from_be_bytes(b) as usize, 2)
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.ok()?;
            (u64::from_be_bytes(b) as usize, 8)
        }
        n => (n as usize, 0),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(ServerFrame {
        first: head[0],
        wire_len: 2 + extra + len,
        payload,
    })
}

/// Reads server frames until a close frame; its code, or `None` when the
/// connection ends without one.
pub async fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let frame = read_frame(s).await?;
        if frame.opcode() == 0x8 {
            let p = &frame.payload;
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
    }
}
