//! The authkey challenge of TCP connections, both ways.
//!
//! CPython's `multiprocessing.connection` proves that both ends hold the
//! authkey without sending it: each side sends random bytes and checks the
//! other's HMAC of them. The same here, with HMAC-SHA256 and a label per
//! direction (so an answer cannot be reflected back as a challenge):
//!
//! 1. server → client: `MAGIC` + 32 random bytes `s`;
//! 2. client → server: `HMAC(key, "client" ‖ s)` + 32 random bytes `c`;
//! 3. server → client: `1` + `HMAC(key, "server" ‖ c)` when step 2 was
//!    right, else `0` and the connection closes.
//!
//! MACs are compared in constant time. Every step has a deadline, so a
//! silent peer holds nothing for long.

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ManagerError;

/// The greeting and protocol version of a TCP manager.
const MAGIC: &[u8; 8] = b"mprocmg1";
const NONCE: usize = 32;
const MAC: usize = 32;

fn mac(key: &[u8], label: &[u8], nonce: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(label);
    m.update(nonce);
    m
}

/// Random bytes from the system.
pub(crate) fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

fn failed(what: &str, e: io::Error) -> ManagerError {
    ManagerError::Auth(format!("{what}: {e}"))
}

/// The server's side; `Ok` once the client proved the key and got the
/// server's proof.
pub(crate) fn serve<S: Read + Write>(stream: &mut S, key: &[u8]) -> Result<(), ManagerError> {
    let s = random::<NONCE>()?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&s);
    stream.write_all(&hello).map_err(|e| failed("send", e))?;
    let mut answer = [0u8; MAC + NONCE];
    stream
        .read_exact(&mut answer)
        .map_err(|e| failed("read the answer", e))?;
    if mac(key, b"client", &s)
        .verify_slice(&answer[..MAC])
        .is_err()
    {
        let _ = stream.write_all(&[0]);
        return Err(ManagerError::Auth(
            "the client's authkey is not ours".into(),
        ));
    }
    let mut proof = vec![1u8];
    proof.extend_from_slice(&mac(key, b"server", &answer[MAC..]).finalize().into_bytes());
    stream.write_all(&proof).map_err(|e| failed("send", e))
}

/// The client's side; `Ok` once both proofs are checked.
pub(crate) fn answer<S: Read + Write>(stream: &mut S, key: &[u8]) -> Result<(), ManagerError> {
    let mut hello = [0u8; MAGIC.len() + NONCE];
    stream
        .read_exact(&mut hello)
        .map_err(|e| failed("read the challenge", e))?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(ManagerError::Auth(
            "the peer is not an mproc manager".into(),
        ));
    }
    let c = random::<NONCE>()?;
    let mut reply = mac(key, b"client", &hello[MAGIC.len()..])
        .finalize()
        .into_bytes()
        .to_vec();
    reply.extend_from_slice(&c);
    stream.write_all(&reply).map_err(|e| failed("send", e))?;
    let mut verdict = [0u8; 1];
    stream
        .read_exact(&mut verdict)
        .map_err(|e| failed("read the verdict", e))?;
    if verdict[0] != 1 {
        return Err(ManagerError::Auth("the server refused our authkey".into()));
    }
    let mut proof = [0u8; MAC];
    stream
        .read_exact(&mut proof)
        .map_err(|e| failed("read the server's proof", e))?;
    mac(key, b"server", &c)
        .verify_slice(&proof)
        .map_err(|_| ManagerError::Auth("the server does not hold our authkey".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn both(server_key: &'static [u8], client_key: &'static [u8]) -> (bool, bool) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(&mut a, server_key).is_ok());
        let client = answer(&mut b, client_key).is_ok();
        drop(b);
        (t.join().unwrap(), client)
    }

    #[test]
    fn the_same_key_passes_both_ways() {
        assert_eq!(both(b"secret", b"secret"), (true, true));
    }

    #[test]
    fn a_wrong_key_fails_both_ways() {
        assert_eq!(both(b"secret", b"guess"), (false, false));
    }

    #[test]
    fn a_peer_that_is_not_a_manager_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[b'x'; 40]).unwrap();
        let e = answer(&mut b, b"k").unwrap_err();
        assert!(e.to_string().contains("not an mproc manager"), "{e}");
    }
}
