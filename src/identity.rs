//! A node's identity: a long-term Ed25519 key pair, and the id derived from
//! its public key.
//!
//! As a libp2p peer id is, a node id is a hash of the node's public key: the
//! first 16 bytes of SHA-256(`"tcpnet node id v1"` || public key), as 32
//! hex digits. Nobody can link, or sign a message, under an id without the
//! private key it was derived from: every link's handshake proves it (see
//! [`crate::wire::noise`]). [`Identity::sign`] and [`NodeId::verify`] let a
//! node vouch for bytes that other nodes pass on.
//!
//! The key pair is ring's Ed25519; a key file holds it as a PKCS#8 v2
//! document (the standard DER form, readable by OpenSSL).

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::id::NodeId;

/// Bytes in an Ed25519 public key ([`Identity::public_key`]).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes in an Ed25519 signature ([`Identity::sign`]).
pub const SIGNATURE_LEN: usize = 64;

/// A node's long-term key pair. Its [`id`](Self::id) is derived from the
/// public key, so a node that keeps its key (in a [key
/// file](crate::Settings::key_file)) keeps its id across restarts.
/// Clones share the key.
///
/// ```
/// let a = tcpnet::Identity::generate();
/// let b = tcpnet::Identity::from_pkcs8(&a.to_pkcs8())?;
/// assert_eq!(a.id(), b.id());
/// assert_eq!(a.id().as_str().len(), 32);
/// # Ok::<(), tcpnet::Error>(())
/// ```
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    pair: Ed25519KeyPair,
    /// The key pair as PKCS#8, to store it.
    pkcs8: Vec<u8>,
    id: NodeId,
}

impl Identity {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Identity {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("the system random source works");
        Identity::from_pkcs8(doc.as_ref()).expect("a key ring just made is valid")
    }

    /// A key pair from its PKCS#8 v2 document (as [`to_pkcs8`](Self::to_pkcs8)
    /// gives, or `openssl genpkey -algorithm ed25519` makes in DER form).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Identity, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| Error::Key {
            key: "PKCS#8 document".into(),
            reason: format!("not an Ed25519 key pair: {e}"),
        })?;
        let id = NodeId::of_key(pair.public_key().as_ref());
        Ok(Identity {
            inner: Arc::new(Inner {
                pair,
                pkcs8: pkcs8.to_vec(),
                id,
            }),
        })
    }

    /// The key pair in the file at `path`, which is created (readable by its
    /// owner only) with a fresh key pair if there is none.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Identity, Error> {
        let path = path.as_ref();
        let err = |reason: String| Error::Key {
            key: format!("key file {}", path.display()),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                return Identity::from_pkcs8(&bytes).map_err(|e| match e {
                    Error::Key { reason, .. } => err(reason),
                    other => other,
                })
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e.to_string())),
            Err(_) => {}
        }
        let fresh = Identity::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(&fresh.inner.pkcs8)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(format!("writing a new key: {e}")))?;
                Ok(fresh)
            }
            // Another process made it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Identity::load_or_create(path)
            }
            Err(e) => Err(err(format!("creating it: {e}"))),
        }
    }

    /// The id derived from the public key.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut k = [0u8; PUBLIC_KEY_LEN];
        k.copy_from_slice(self.inner.pair.public_key().as_ref());
        k
    }

    /// The key pair as a PKCS#8 v2 document: the private key, to store
    /// where only this node can read it.
    pub fn to_pkcs8(&self) -> Vec<u8> {
        self.inner.pkcs8.clone()
    }

    /// Signs `msg` with the private key (Ed25519, deterministic: the same
    /// message gives the same signature). Anyone holding the
    /// [`public_key`](Self::public_key) checks it with
    /// [`NodeId::verify`], which also checks that the key is the id's.
    ///
    /// Sign only messages of one purpose with a context of their own in
    /// front (as the handshake does with `"tcpnet-noise-static-key:"`), so
    /// a signature made for one use is never valid for another.
    ///
    /// ```
    /// let me = tcpnet::Identity::generate();
    /// let sig = me.sign(b"example: hello");
    /// assert!(me.id().verify(&me.public_key(), b"example: hello", &sig));
    /// assert!(!me.id().verify(&me.public_key(), b"example: other", &sig));
    /// ```
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(self.inner.pair.sign(msg).as_ref());
        s
    }
}

/// True if `sig` is `key`'s signature of `msg`.
pub(crate) fn verify(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key)
        .verify(msg, sig)
        .is_ok()
}

/// The id of the node whose public key is `key`.
pub(crate) fn id_of(key: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"tcpnet node id v1");
    h.update(key);
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Shows the id, never the key.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.inner.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_keys() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), &NodeId::of_key(&a.public_key()));
        let again = Identity::from_pkcs8(&a.to_pkcs8()).unwrap();
        assert_eq!(again.id(), a.id());
        assert!(Identity::from_pkcs8(b"not a key").is_err());
    }

    #[test]
    fn signatures_verify_only_with_their_key_and_message() {
        let a = Identity::generate();
        let b = Identity::generate();
        let sig = a.sign(b"m");
        assert!(verify(&a.public_key(), b"m", &sig));
        assert!(!verify(&a.public_key(), b"n", &sig));
        assert!(!verify(&b.public_key(), b"m", &sig));
    }

    #[test]
    fn a_key_file_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("tcpnet-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("node.key");
        let first = Identity::load_or_create(&path).unwrap();
        let second = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"garbage").unwrap();
        match Identity::load_or_create(&path) {
            Err(Error::Key { key, .. }) => assert!(key.contains("node.key")),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
