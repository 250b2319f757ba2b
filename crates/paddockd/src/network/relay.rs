//! Moving bytes between the sandbox's connection and the upstream one, both
//! ways, with splice(2) through a pipe: the data stays in the kernel (no copy
//! into the daemon and out again), which is what keeps a bulk download through
//! the proxy near the speed of a direct one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes moved per splice call (and the pipe's size, where allowed).
const CHUNK: usize = 1 << 20;

/// Relays until both directions have ended; each side's end of input becomes
/// a shutdown of writing on the other.
pub async fn relay(a: TcpStream, b: TcpStream) -> io::Result<()> {
    tokio::try_join!(one_way(&a, &b), one_way(&b, &a)).map(|_| ())
}

async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe()?;
    loop {
        let mut in_pipe = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || splice(src.as_raw_fd(), pipe_w.as_raw_fd(), CHUNK)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r?,
            }
        };
        if in_pipe == 0 {
            unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || splice(pipe_r.as_raw_fd(), dst.as_raw_fd(), in_pipe)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => in_pipe -= r?,
            }
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // A bigger pipe moves more per call; the default (64 KiB) is fine too.
    unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
