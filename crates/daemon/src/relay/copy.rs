//! The byte relay both ways, for all three relays: bounded buffers that
//! grow with the traffic, no half-close, and an optional idle bound.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::activity::Activity;
use crate::limits::{RELAY_BUFFER_BYTES, RELAY_BUFFER_START_BYTES};

/// The byte relay: `client_early` goes to the guest side and `guest_early`
/// to the client before anything else; ends when the guest side closes (its
/// last bytes flushed) or the client goes away, or with an error of kind
/// `TimedOut` when no byte has moved either way for `idle`. Never
/// half-closes.
pub(crate) async fn copy_both_ways<C, G>(
    client: C,
    client_early: &[u8],
    guest: G,
    guest_early: &[u8],
    idle: Option<Duration>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    G: AsyncRead + AsyncWrite,
{
    let (client_read, mut client_write) = tokio::io::split(client);
    let (guest_read, mut guest_write) = tokio::io::split(guest);
    let activity = Activity::default();
    let up = async {
        guest_write.write_all(client_early).await?;
        guest_write.flush().await?;
        copy_growing(client_read, &mut guest_write, &activity).await
    };
    let down = async {
        client_write.write_all(guest_early).await?;
        client_write.flush().await?;
        let n = copy_growing(guest_read, &mut client_write, &activity).await?;
        client_write.flush().await?;
        Ok::<u64, std::io::Error>(n)
    };
    tokio::select! {
        r = down => r.map(drop),
        r = up => r.map(drop),
        stalled = activity.stalled(idle) => Err(stalled),
    }
}

/// Copies `from` to `to` until the end of `from`, through a buffer that
/// starts at [`RELAY_BUFFER_START_BYTES`] and doubles while reads fill it,
/// up to [`RELAY_BUFFER_BYTES`]: an exec of `true` moves a few hundred
/// bytes and should not pay for zeroing a bulk copy's buffer.
async fn copy_growing<R, W>(mut from: R, to: &mut W, activity: &Activity) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; RELAY_BUFFER_START_BYTES];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        activity.touch();
        total += n as u64;
        if n == buf.len() && buf.len() < RELAY_BUFFER_BYTES {
            buf.resize((buf.len() * 2).min(RELAY_BUFFER_BYTES), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_growing_relay_buffer_loses_and_reorders_nothing() {
        let data: Vec<u8> = (0..3 * RELAY_BUFFER_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut feed, from) = tokio::io::duplex(64 * 1024);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            feed.write_all(&sent).await.unwrap();
        });
        let mut out = Vec::new();
        let n = copy_growing(from, &mut out, &Activity::default())
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(n as usize, data.len());
        assert_eq!(out, data);
    }
}
