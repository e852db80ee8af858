//! snow's own crypto, but for the node's Noise static key, whose public
//! half is known: snow's X25519 derives a static key's public half from
//! its private half in every handshake that uses it (a base-point
//! multiplication, ~14 µs here, at both ends of every link), though the
//! key is made once per process. The ephemeral keys, the hashes and the
//! ciphers are snow's, untouched; the static key's Diffie-Hellman is
//! curve25519-dalek's X25519, as snow's is.

use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// An X25519 key pair whose public half was derived when it was made.
#[derive(Clone, Copy)]
pub(crate) struct KeyPair {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

/// The resolver of `snow::Builder::new` (ring's ciphers and hashes, snow's
/// own X25519), with `key` known: the static key set to it is not
/// derived again.
pub(crate) struct Resolver {
    snow: FallbackResolver,
    key: KeyPair,
}

impl Resolver {
    pub(crate) fn new(key: KeyPair) -> Resolver {
        Resolver {
            snow: FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)),
            key,
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.snow.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        let snow = self.snow.resolve_dh(choice)?;
        // Only X25519 keys are ours to know.
        if !matches!(choice, DHChoice::Curve25519) {
            return Some(snow);
        }
        Some(Box::new(KnownDh {
            snow,
            key: self.key,
            known: false,
        }))
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.snow.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.snow.resolve_cipher(choice)
    }
}

/// snow's X25519, but for the known key: set to it, it holds the key pair
/// as made; set to any other private key, or generated, it is snow's.
struct KnownDh {
    snow: Box<dyn Dh>,
    key: KeyPair,
    /// Set to the known key (else `snow` holds the key).
    known: bool,
}

impl Dh for KnownDh {
    fn name(&self) -> &'static str {
        self.snow.name()
    }

    fn pub_len(&self) -> usize {
        self.snow.pub_len()
    }

    fn priv_len(&self) -> usize {
        self.snow.priv_len()
    }

    fn set(&mut self, privkey: &[u8]) {
        self.known = privkey == self.key.private;
        if !self.known {
            self.snow.set(privkey);
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.known = false;
        self.snow.generate(rng)
    }

    fn pubkey(&self) -> &[u8] {
        match self.known {
            true => &self.key.public,
            false => self.snow.pubkey(),
        }
    }

    fn privkey(&self) -> &[u8] {
        match self.known {
            true => &self.key.private,
            false => self.snow.privkey(),
        }
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if !self.known {
            return self.snow.dh(pubkey, out);
        }
        // What snow's X25519 computes, with the key it would have set.
        let mut theirs = [0u8; 32];
        theirs.copy_from_slice(pubkey.get(..32).ok_or(snow::Error::Dh)?);
        let shared = MontgomeryPoint(theirs).mul_clamped(self.key.private);
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snow::resolvers::CryptoResolver;

    fn pair() -> KeyPair {
        let kp = snow::Builder::new("Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
            .generate_keypair()
            .unwrap();
        KeyPair {
            private: kp.private.try_into().unwrap(),
            public: kp.public.try_into().unwrap(),
        }
    }

    /// Set to the known key, it gives snow's public half and snow's
    /// shared secrets; set to another key, it is snow's.
    #[test]
    fn the_known_key_agrees_with_snow() {
        let (ours, theirs, other) = (pair(), pair(), pair());
        let resolver = Resolver::new(ours);
        let snow = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
        for key in [ours, other] {
            let mut known = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
            let mut plain = snow.resolve_dh(&DHChoice::Curve25519).unwrap();
            known.set(&key.private);
            plain.set(&key.private);
            assert_eq!(known.pubkey(), &key.public[..]);
            assert_eq!(known.pubkey(), plain.pubkey());
            assert_eq!(known.privkey(), plain.privkey());
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            known.dh(&theirs.public, &mut a).unwrap();
            plain.dh(&theirs.public, &mut b).unwrap();
            assert_eq!(a, b);
        }
    }
}
