//! Passing a file descriptor over a Unix socket as Plasma does: one `sendmsg` per descriptor, a
//! one-byte payload and one `SCM_RIGHTS` control message (Ray's `fling.cc` protocol).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// Sends `fd` over `socket`.
///
/// # Errors
/// The `sendmsg` error (EINTR and EAGAIN are retried).
pub fn send_fd(socket: &impl AsRawFd, fd: RawFd) -> std::io::Result<()> {
    let fds = [fd];
    let byte = [0u8];
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(&byte)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(_) => return Ok(()),
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one descriptor sent by [`send_fd`] (or Ray's `send_fd`).
///
/// # Errors
/// `UnexpectedEof` if the peer hung up; `InvalidData` if the message carried no descriptor or
/// more than one (all of them are closed then).
pub fn recv_fd(socket: &impl AsRawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        };
        if msg.bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut received = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed these descriptors in our table for us; nobody
                // else owns them.
                received.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        return match received.len() {
            1 => Ok(received.remove(0)),
            n => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected one file descriptor, got {n}"),
            )),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_crosses_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"plasma").unwrap();
        send_fd(&a, file.as_raw_fd()).unwrap();
        let got = recv_fd(&b).unwrap();
        let mut f = std::fs::File::from(got);
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "plasma");
        drop(a);
        assert_eq!(
            recv_fd(&b).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
