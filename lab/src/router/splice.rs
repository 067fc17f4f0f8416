//! Zero-copy forwarding between two TCP connections with splice(2) through a pipe, the way
//! HAProxy forwards passthrough TLS. A user-space copy moved every byte of a transfer
//! through the lab process twice (1.4 CPU-s per 2 GiB, measured), on the same two cores
//! the transfer pods' rsync and stunnel need; the real router is another machine.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (the default limit for unprivileged pipes, `pipe-max-size`).
const PIPE_SIZE: i32 = 1 << 20;

fn pipe() -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // On failure the default size (64 KiB) stays.
    let size = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)).map_or(64 * 1024, |n| n as usize);
    Ok((r, w, size))
}

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(nix::fcntl::splice(from, None, to, None, len, SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK)?)
}

/// Moves bytes from `from` to `to` until `from` reaches end of stream, then shuts down the
/// writing half of `to` (so the peer sees the same end). Returns the bytes moved.
async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (r, w, size) = pipe()?;
    let mut total = 0u64;
    loop {
        // The pipe is empty here, so EAGAIN can only mean "nothing to read yet".
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || splice(from, &w, size)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            return Ok(total);
        }
        let mut in_pipe = n;
        while in_pipe > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(&r, to, in_pipe)) {
                Ok(m) => {
                    in_pipe -= m;
                    total += m as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Forwards both ways until both directions have ended (or one fails).
pub async fn bidirectional(a: &TcpStream, b: &TcpStream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b), one_way(b, a))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// client ⇄ [router: splice] ⇄ echo-ish server that uppercases and reports its count.
    #[tokio::test]
    async fn moves_every_byte_both_ways_and_passes_the_end_of_stream_on() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (baddr, faddr) = (backend.local_addr().unwrap(), front.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // ends only when the client's end arrives
            s.write_all(format!("{} bytes", got.len()).as_bytes()).await.unwrap();
            got
        });
        let router = tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            let u = TcpStream::connect(baddr).await.unwrap();
            super::bidirectional(&c, &u).await.unwrap()
        });
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = TcpStream::connect(faddr).await.unwrap();
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "5000000 bytes");
        assert_eq!(server.await.unwrap(), data, "every byte, in order");
        assert_eq!(router.await.unwrap(), (5_000_000, 13));
    }
}
