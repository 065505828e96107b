//! Reading and writing MQTT 3.1.1 packets on any async byte stream (a TLS half or a QUIC
//! stream) with rumqttc's codec.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest packet the load tools read or write.
pub const MAX_PACKET: usize = 1 << 20;

/// Reads MQTT packets from a byte stream.
pub struct Reader<R> {
    r: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader whose buffer starts at `capacity` bytes (it grows to `MAX_PACKET` at most).
    pub fn new(r: R, capacity: usize) -> Self {
        Reader {
            r,
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// The next packet; an error at end of stream or on a malformed packet.
    pub async fn next(&mut self) -> std::io::Result<Packet> {
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            if self.r.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Encodes `p` and writes it.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, p: Packet) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    p.write(&mut b, MAX_PACKET)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    w.write_all(&b).await
}
