//! Who is on the other end of a loopback TCP connection.
//!
//! The kernel's `sock_diag` netlink interface (what `ss -e` uses) answers an
//! exact lookup of a TCP socket by its 4-tuple with the owning uid and inode,
//! as `SO_PEERCRED` does for Unix sockets. The client's socket is the one
//! whose source is the peer address and whose destination is our listener.
//! Netlink encoding comes from `netlink-packet-sock-diag` and the socket
//! from `netlink-sys`; only the question and the answer's two fields are ours.
//!
//! The lookup is one request/response with the kernel (tens of
//! microseconds), done once per connection, never per request; it blocks the
//! connection's task for that long, which is cheaper than a thread hop.

use std::io;
use std::net::SocketAddr;

/// The owner of a connection's client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Owning uid, as this network namespace's user namespace sees it.
    pub uid: u32,
    /// The client socket's inode (to find its process, for the audit log).
    pub inode: u32,
}

/// Look up the client of the connection `peer` → `local` (both as seen on
/// our side of it). `Ok(None)` when the kernel knows no such socket (the
/// client is gone, or lives in another network namespace).
///
/// Each thread keeps its netlink socket (opening one is four of the six
/// syscalls of a lookup). A failed exchange drops it and is tried once more
/// on a fresh one, so a stale answer left in an old socket can never turn
/// into a refusal.
#[cfg(target_os = "linux")]
pub fn lookup(local: SocketAddr, peer: SocketAddr) -> io::Result<Option<PeerCred>> {
    use std::cell::RefCell;
    thread_local! {
        static NETLINK: RefCell<Option<netlink_sys::Socket>> = const { RefCell::new(None) };
    }
    let request = encode_request(local, peer);
    NETLINK.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mut last = None;
        for _ in 0..2 {
            let socket = match slot.take() {
                Some(s) => s,
                None => open_sock_diag()?,
            };
            match ask(&socket, &request, peer) {
                Ok(answer) => {
                    *slot = Some(socket);
                    return Ok(answer);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("sock_diag lookup failed")))
    })
}

#[cfg(target_os = "linux")]
fn open_sock_diag() -> io::Result<netlink_sys::Socket> {
    use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    Ok(socket)
}

#[cfg(target_os = "linux")]
fn ask(
    socket: &netlink_sys::Socket,
    request: &[u8],
    peer: SocketAddr,
) -> io::Result<Option<PeerCred>> {
    socket.send(request, 0)?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    parse_response(&buf[..n.min(buf.len())], peer)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Not Linux: no lookup is possible.
#[cfg(not(target_os = "linux"))]
pub fn lookup(_local: SocketAddr, _peer: SocketAddr) -> io::Result<Option<PeerCred>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer lookup needs Linux (sock_diag)",
    ))
}

/// The netlink message asking for the client socket `peer` → `local`.
#[cfg(target_os = "linux")]
pub fn encode_request(local: SocketAddr, peer: SocketAddr) -> Vec<u8> {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: peer.port(),
                destination_port: local.port(),
                source_address: peer.ip(),
                destination_address: local.ip(),
                interface_id: 0,
                // All 0xff: "no cookie", match on the 4-tuple alone.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Read the kernel's answer: the socket's uid and inode, `None` for "no such
/// socket" (ENOENT), an error for anything malformed or unexpected. A
/// response about another socket (or address family) than the one asked for
/// is refused, so a stray message can never name the wrong owner; attributes
/// we did not ask for are ignored. Property-tested in `tests/properties.rs`.
#[cfg(target_os = "linux")]
pub fn parse_response(buf: &[u8], peer: SocketAddr) -> Result<Option<PeerCred>, String> {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
    let msg = NetlinkMessage::<SockDiagMessage>::deserialize(buf)
        .map_err(|e| format!("unreadable sock_diag answer: {e}"))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
            let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
            if r.header.family != family {
                return Err("sock_diag answered for another address family".into());
            }
            let id = &r.header.socket_id;
            if id.source_port != peer.port() || id.source_address != peer.ip() {
                return Err("sock_diag answered about another socket".into());
            }
            Ok(Some(PeerCred {
                uid: r.header.uid,
                inode: r.header.inode,
            }))
        }
        NetlinkPayload::Error(e) if e.raw_code() == -libc_enoent() => Ok(None),
        NetlinkPayload::Error(e) => Err(format!("sock_diag error {}", e.raw_code())),
        NetlinkPayload::Done(_) => Ok(None),
        _ => Err("unexpected sock_diag answer".into()),
    }
}

#[cfg(target_os = "linux")]
fn libc_enoent() -> i32 {
    2
}

/// Check that this process can learn who connects: look up a connection to
/// `addr` made by ourselves and expect our own uid. Used at start-up when
/// access is restricted by uid, so a sandbox without netlink fails loudly
/// instead of refusing (or, worse, serving) everyone.
pub async fn self_test(addr: SocketAddr) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to our own listener {addr}: {e}"))?;
    let mine = stream
        .local_addr()
        .map_err(|e| format!("cannot read our own address: {e}"))?;
    match lookup(addr, mine) {
        Ok(Some(p)) if p.uid == crate::fsutil::current_uid() => Ok(()),
        Ok(Some(p)) => Err(format!(
            "sock_diag says our own connection belongs to uid {}, not {}",
            p.uid,
            crate::fsutil::current_uid()
        )),
        Ok(None) => Err("sock_diag does not know our own connection".into()),
        Err(e) => Err(format!("sock_diag lookup failed: {e}")),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_of_ours_is_ours() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = tokio::net::TcpListener::bind(host).await else {
                continue; // no IPv6 loopback here
            };
            let addr = l.local_addr().unwrap();
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (_s, peer) = l.accept().await.unwrap();
            assert_eq!(peer, c.local_addr().unwrap());
            let got = lookup(addr, peer).unwrap().unwrap();
            assert_eq!(got.uid, crate::fsutil::current_uid());
            assert!(got.inode > 0);
            // A 4-tuple nobody has: no such socket.
            let nobody: SocketAddr = (peer.ip(), 1).into();
            assert_eq!(lookup(addr, nobody).unwrap(), None);
            self_test(addr).await.unwrap();
        }
    }

    #[test]
    fn malformed_answers_are_errors_not_owners() {
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        assert!(parse_response(&[], peer).is_err());
        assert!(parse_response(&[0xff; 7], peer).is_err());
        // Our own request is not an answer.
        let req = encode_request("127.0.0.1:80".parse().unwrap(), peer);
        assert!(parse_response(&req, peer).is_err());
        // Truncated at every length: never a panic, never an owner.
        for n in 0..req.len() {
            assert!(parse_response(&req[..n], peer).is_err());
        }
    }
}

/// Who may read credentials: `server.allowed_uids` (and a profile's own
/// `allowed_uids`, which narrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every local user (`"any"`): the behaviour of plain loopback.
    Any,
    /// Only these uids.
    Uids(Vec<u32>),
}

impl Access {
    /// May `uid` read?
    pub fn allows(&self, uid: u32) -> bool {
        match self {
            Access::Any => true,
            Access::Uids(u) => u.contains(&uid),
        }
    }

    /// Whether a lookup of the caller is needed at all.
    pub fn restricted(&self) -> bool {
        !matches!(self, Access::Any)
    }
}

/// The uid of a user name, from `/etc/passwd`.
///
/// Hand-written because the alternative, `getpwnam(3)`, needs `unsafe` (this
/// crate forbids it) or a crate built around it; users that only a directory
/// service (NSS) knows are not found, and numeric uids work for them.
pub fn uid_of(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}
