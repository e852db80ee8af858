//! The handshake every link runs after the hellos: Noise XX, with the
//! cluster's pre-shared key when it has one (XXpsk3), through `snow`. Each
//! end proves its identity in it, in every mode.
//!
//! ```text
//! dialer -> acceptor   msg 1: e
//! acceptor -> dialer   msg 2: e, ee, s, es   + the acceptor's proof
//! dialer -> acceptor   msg 3: s, se (, psk)  + the dialer's proof
//! ```
//!
//! The static key `s` of Noise is an X25519 key made per process. A
//! *proof* binds it to the node's identity, as libp2p's Noise handshake
//! does: the identity's Ed25519 public key and its signature of
//! `"tcpnet-noise-static-key:" || s`. Noise proves the sender holds `s`
//! (the `es`/`se` exchanges), the signature that the identity vouches for
//! `s`, and the id is the identity key's hash: so the proven id is the one
//! of a node holding that identity's private key, live in this handshake.
//! Both hellos are the prologue: the incarnation and everything else a
//! hello says is authenticated by the same handshake.
//!
//! Every message is at most [`MAX_MSG`] bytes (about 200 are used).

use crate::id::NodeId;
use crate::identity::{self, Identity, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::wire::secure::{Keys, Psk, Suite};

/// Bound on a handshake message, checked from its length prefix.
pub(crate) const MAX_MSG: usize = 256;
/// What an identity signs: its static key, after this.
const PROOF_CONTEXT: &[u8] = b"tcpnet-noise-static-key:";
/// A proof: the identity's public key and its signature.
const PROOF_LEN: usize = PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// How a link is protected.
pub(crate) enum Mode<'a> {
    /// No cluster secret: the handshake proves identities, then the link
    /// runs in the clear.
    Open,
    /// A cluster secret: the handshake also proves both ends hold it, and
    /// the link is sealed with `suite`.
    Secret { psk: &'a Psk, suite: Suite },
}

impl Mode<'_> {
    fn params(&self) -> snow::params::NoiseParams {
        match self {
            Mode::Open => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            Mode::Secret {
                suite: Suite::AesGcm,
                ..
            } => "Noise_XXpsk3_25519_AESGCM_BLAKE2s",
            Mode::Secret {
                suite: Suite::ChaChaPoly,
                ..
            } => "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s",
        }
        .parse()
        .expect("a valid Noise pattern")
    }
}

/// The Noise prologue of a link: both hellos, the dialer's first, each
/// after its length, so that the handshake fails if either was altered.
pub(crate) fn prologue(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + first.len() + second.len());
    for h in [first, second] {
        p.extend_from_slice(&(h.len() as u16).to_be_bytes());
        p.extend_from_slice(h);
    }
    p
}

/// A node's Noise static key pair: made once per process, vouched for by
/// its identity in every handshake.
pub(crate) struct StaticKey {
    private: Vec<u8>,
    /// The identity's proof for this key.
    proof: [u8; PROOF_LEN],
}

impl StaticKey {
    pub(crate) fn new(identity: &Identity) -> StaticKey {
        let kp = snow::Builder::new(Mode::Open.params())
            .generate_keypair()
            .expect("the system random source works");
        let mut proof = [0u8; PROOF_LEN];
        proof[..PUBLIC_KEY_LEN].copy_from_slice(&identity.public_key());
        proof[PUBLIC_KEY_LEN..].copy_from_slice(&identity.sign(&signed(&kp.public)));
        StaticKey {
            private: kp.private,
            proof,
        }
    }
}

fn signed(static_key: &[u8]) -> Vec<u8> {
    [PROOF_CONTEXT, static_key].concat()
}

/// What a verified proof says: the peer's id and identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proven {
    pub id: NodeId,
    pub key: [u8; PUBLIC_KEY_LEN],
}

/// Why a handshake message carrying a proof of identity was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    /// It did not open: another secret, or altered on the way.
    Message(String),
    /// It opened, and the proof in it is wrong.
    Proof(String),
}

impl From<Bad> for String {
    fn from(b: Bad) -> String {
        match b {
            Bad::Message(s) | Bad::Proof(s) => s,
        }
    }
}

/// Checks a proof against the static key Noise proved.
fn verify(proof: &[u8], remote_static: Option<&[u8]>) -> Result<Proven, Bad> {
    let Some(s) = remote_static else {
        return Err(Bad::Proof("no static key in the handshake".into()));
    };
    if proof.len() != PROOF_LEN {
        return Err(Bad::Proof(format!(
            "identity proof of {} bytes",
            proof.len()
        )));
    }
    let (key, sig) = proof.split_at(PUBLIC_KEY_LEN);
    if !identity::verify(key, &signed(s), sig) {
        return Err(Bad::Proof(
            "the identity's signature of the handshake key is wrong".into(),
        ));
    }
    let mut k = [0u8; PUBLIC_KEY_LEN];
    k.copy_from_slice(key);
    Ok(Proven {
        id: NodeId::of_key(key),
        key: k,
    })
}

/// One end of a handshake in progress. The messages are taken and given
/// in order: the dialer calls [`first`](Self::first),
/// [`read_second`](Self::read_second), [`third`](Self::third); the acceptor
/// [`read_first`](Self::read_first), [`second`](Self::second),
/// [`read_third`](Self::read_third). Then [`finish`](Self::finish).
pub(crate) struct Handshake<'k> {
    hs: snow::HandshakeState,
    key: &'k StaticKey,
    secret: bool,
}

impl<'k> Handshake<'k> {
    pub(crate) fn new(
        mode: &Mode<'_>,
        dialer: bool,
        prologue: &[u8],
        key: &'k StaticKey,
    ) -> Result<Self, String> {
        let setup = |e: snow::Error| format!("noise setup: {e}");
        let mut b = snow::Builder::new(mode.params())
            .local_private_key(&key.private)
            .and_then(|b| b.prologue(prologue))
            .map_err(setup)?;
        if let Mode::Secret { psk, .. } = mode {
            b = b.psk(3, psk.bytes()).map_err(setup)?;
        }
        let hs = if dialer {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(setup)?;
        Ok(Handshake {
            hs,
            key,
            secret: matches!(mode, Mode::Secret { .. }),
        })
    }

    fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; MAX_MSG];
        let n = self
            .hs
            .write_message(payload, &mut buf)
            .map_err(|e| format!("noise: {e}"))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn read(&mut self, msg: &[u8], refused: &str) -> Result<Vec<u8>, String> {
        let mut payload = vec![0u8; MAX_MSG];
        let n = self
            .hs
            .read_message(msg, &mut payload)
            .map_err(|_| refused.to_string())?;
        payload.truncate(n);
        Ok(payload)
    }

    /// Dialer: message 1.
    pub(crate) fn first(&mut self) -> Result<Vec<u8>, String> {
        self.write(&[])
    }

    /// Acceptor: reads message 1.
    pub(crate) fn read_first(&mut self, msg: &[u8]) -> Result<(), String> {
        // With a pre-shared key, `e` is mixed into the key already, so
        // message 1 is authenticated, and bound to the hellos.
        let refused = if self.secret {
            "a bad first handshake message: the peer holds another cluster secret \
             (or the hellos were altered)"
        } else {
            "a bad first handshake message"
        };
        let payload = self.read(msg, refused)?;
        if !payload.is_empty() {
            return Err("a first handshake message with a payload".into());
        }
        Ok(())
    }

    /// Acceptor: message 2, with our proof.
    pub(crate) fn second(&mut self) -> Result<Vec<u8>, String> {
        let proof = self.key.proof;
        self.write(&proof)
    }

    /// Dialer: reads message 2; the acceptor's proven identity.
    pub(crate) fn read_second(&mut self, msg: &[u8]) -> Result<Proven, Bad> {
        let payload = self
            .read(
                msg,
                "a bad second handshake message (the hellos were altered?)",
            )
            .map_err(Bad::Message)?;
        verify(&payload, self.hs.get_remote_static())
    }

    /// Dialer: message 3, with our proof.
    pub(crate) fn third(&mut self) -> Result<Vec<u8>, String> {
        let proof = self.key.proof;
        self.write(&proof)
    }

    /// Acceptor: reads message 3; the dialer's proven identity.
    pub(crate) fn read_third(&mut self, msg: &[u8]) -> Result<Proven, Bad> {
        let refused = if self.secret {
            "the peer holds another cluster secret (or the hellos were altered)"
        } else {
            "a bad third handshake message (the hellos were altered?)"
        };
        let payload = self.read(msg, refused).map_err(Bad::Message)?;
        verify(&payload, self.hs.get_remote_static())
    }

    /// The link's keys, with a secret; `None` for an open link.
    pub(crate) fn finish(self) -> Result<Option<Keys>, String> {
        if !self.secret {
            return Ok(None);
        }
        let t = self
            .hs
            .into_stateless_transport_mode()
            .map_err(|e| format!("noise: {e}"))?;
        Ok(Some(Keys::new(t)))
    }
}

/// The keys of both ends of an XXpsk3 handshake run in memory (for the
/// record codecs' tests and fuzz targets): the dialer's first.
#[cfg(any(test, fuzzing))]
pub(crate) fn keys_pair(suite: Suite) -> (Keys, Keys) {
    let psk = Psk::derive(b"0123456789abcdef0123456789abcdef", "c");
    let mode = Mode::Secret { psk: &psk, suite };
    let (dk, ak) = (
        StaticKey::new(&Identity::generate()),
        StaticKey::new(&Identity::generate()),
    );
    let mut d = Handshake::new(&mode, true, b"p", &dk).expect("dialer");
    let mut a = Handshake::new(&mode, false, b"p", &ak).expect("acceptor");
    a.read_first(&d.first().expect("msg 1")).expect("msg 1");
    d.read_second(&a.second().expect("msg 2")).expect("msg 2");
    a.read_third(&d.third().expect("msg 3")).expect("msg 3");
    let keys = |h: Handshake<'_>| h.finish().expect("transport").expect("sealed");
    (keys(d), keys(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct End {
        identity: Identity,
        key: StaticKey,
    }

    fn end() -> End {
        let identity = Identity::generate();
        let key = StaticKey::new(&identity);
        End { identity, key }
    }

    /// Runs a whole handshake in memory; the ids each end proved.
    fn run(
        d: &End,
        a: &End,
        dmode: &Mode<'_>,
        amode: &Mode<'_>,
        tamper: impl Fn(usize, &mut Vec<u8>),
    ) -> Result<(Proven, Proven), String> {
        let mut hd = Handshake::new(dmode, true, b"p", &d.key)?;
        let mut ha = Handshake::new(amode, false, b"p", &a.key)?;
        let mut m1 = hd.first()?;
        tamper(1, &mut m1);
        ha.read_first(&m1)?;
        let mut m2 = ha.second()?;
        tamper(2, &mut m2);
        let acceptor = hd.read_second(&m2)?;
        let mut m3 = hd.third()?;
        tamper(3, &mut m3);
        let dialer = ha.read_third(&m3)?;
        for m in [&m1, &m2, &m3] {
            assert!(m.len() <= MAX_MSG);
        }
        Ok((acceptor, dialer))
    }

    #[test]
    fn both_ends_prove_their_ids_open_and_secret() {
        let (d, a) = (end(), end());
        let psk = Psk::derive(b"0123456789abcdef0123456789abcdef", "c");
        for mode in [
            Mode::Open,
            Mode::Secret {
                psk: &psk,
                suite: Suite::ChaChaPoly,
            },
            Mode::Secret {
                psk: &psk,
                suite: Suite::AesGcm,
            },
        ] {
            let (acceptor, dialer) = run(&d, &a, &mode, &mode, |_, _| {}).unwrap();
            assert_eq!(&acceptor.id, a.identity.id());
            assert_eq!(&dialer.id, d.identity.id());
        }
    }

    #[test]
    fn another_secret_or_a_tampered_message_fails() {
        let (d, a) = (end(), end());
        let p = Psk::derive(b"0123456789abcdef0123456789abcdef", "c");
        let q = Psk::derive(b"fedcba9876543210fedcba9876543210", "c");
        let (pm, qm) = (
            Mode::Secret {
                psk: &p,
                suite: Suite::ChaChaPoly,
            },
            Mode::Secret {
                psk: &q,
                suite: Suite::ChaChaPoly,
            },
        );
        assert!(run(&d, &a, &pm, &qm, |_, _| {}).is_err());
        for at in 1..=3 {
            let flip = |n: usize, m: &mut Vec<u8>| {
                if n == at {
                    let last = m.len() - 1;
                    m[last] ^= 1;
                }
            };
            assert!(
                run(&d, &a, &Mode::Open, &Mode::Open, flip).is_err(),
                "msg {at}"
            );
        }
    }

    /// A proof copied from another node's handshake does not carry over:
    /// the signature names that node's static key, not ours.
    #[test]
    fn a_copied_proof_fails() {
        let (d, a, victim) = (end(), end(), end());
        let thief = StaticKey {
            proof: victim.key.proof,
            ..StaticKey::new(&a.identity)
        };
        let a_thief = End {
            identity: a.identity.clone(),
            key: thief,
        };
        let (mut hd, mut ha) = (
            Handshake::new(&Mode::Open, true, b"p", &d.key).unwrap(),
            Handshake::new(&Mode::Open, false, b"p", &a_thief.key).unwrap(),
        );
        ha.read_first(&hd.first().unwrap()).unwrap();
        let err = hd.read_second(&ha.second().unwrap()).unwrap_err();
        assert!(
            matches!(&err, Bad::Proof(why) if why.contains("signature")),
            "{err:?}"
        );
    }

    #[test]
    fn different_prologues_fail() {
        let (d, a) = (end(), end());
        let mut hd = Handshake::new(&Mode::Open, true, b"p", &d.key).unwrap();
        let mut ha = Handshake::new(&Mode::Open, false, b"q", &a.key).unwrap();
        let m1 = hd.first().unwrap();
        ha.read_first(&m1).unwrap();
        let m2 = ha.second().unwrap();
        assert!(hd.read_second(&m2).is_err());
    }
}
