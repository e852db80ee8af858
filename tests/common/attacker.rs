//! A raw-socket peer that speaks tcpnet's wire protocol by hand, for attack
//! reproductions: it can claim any id and incarnation in its hello, prove
//! the key pair it holds (Noise XX, or XXpsk3 with the cluster secret, as a
//! member) in the handshake, and send any frame or messaging envelope once
//! linked.

use std::net::{Ipv4Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use hkdf::Hkdf;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::Sha256;
use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::DEADLINE;

pub(crate) const HELLO: u8 = 0x01;
pub(crate) const ACCEPT: u8 = 0x02;
pub(crate) const REJECT: u8 = 0x03;
pub(crate) const HEARTBEAT: u8 = 0x04;
pub(crate) const CONFLICT: u8 = 0x05;
pub(crate) const NOISE: u8 = 0x06;
pub(crate) const DATA: u8 = 0x10;
pub(crate) const MSG: u8 = 0x11;
const MAGIC: &[u8; 6] = b"tcpnet";
const VERSION: u16 = tcpnet::PROTOCOL_VERSION;

/// Messaging ops and flags, as in the envelope.
pub(crate) const OP_DIRECT: u8 = 1;
pub(crate) const OP_BROADCAST: u8 = 2;
pub(crate) const OP_INTEREST: u8 = 5;
pub(crate) const OP_REQUEST: u8 = 6;
pub(crate) const OP_REPLY: u8 = 7;
pub(crate) const OP_MEMBER: u8 = 10;
pub(crate) const FLOOD: u8 = 0x01;
pub(crate) const SIGNED: u8 = 0x02;

/// What the attacker says about itself, and the key pair it holds.
#[derive(Clone)]
pub(crate) struct Claim {
    /// The id its hello claims.
    pub(crate) id: String,
    pub(crate) incarnation: u64,
    pub(crate) cluster: String,
    /// The cluster secret, for a member.
    pub(crate) secret: Option<Vec<u8>>,
    /// The key pair it proves in the handshake.
    pub(crate) key: tcpnet::Identity,
    /// Its metadata, encoded as the hello carries it (any bytes).
    pub(crate) meta: Vec<u8>,
}

impl Claim {
    /// An honest stranger: a key pair of its own, the id of that key,
    /// started now.
    pub(crate) fn stranger(cluster: &str) -> Claim {
        let key = tcpnet::Identity::generate();
        Claim {
            id: key.id().to_string(),
            incarnation: now_nanos(),
            cluster: cluster.into(),
            secret: None,
            key,
            meta: Vec::new(),
        }
    }
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One frame: length (kind + payload), kind, payload.
pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32 + 1).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

fn hello_payload(c: &Claim) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&VERSION.to_be_bytes());
    p.extend_from_slice(&c.incarnation.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p.push(if c.secret.is_some() { 1 } else { 0 });
    p.push(c.id.len() as u8);
    p.extend_from_slice(c.id.as_bytes());
    p.push(c.cluster.len() as u8);
    p.extend_from_slice(c.cluster.as_bytes());
    if let Some(secret) = &c.secret {
        p.extend_from_slice(&key_id(&psk(secret, &c.cluster)));
    }
    p.extend_from_slice(&c.incarnation.to_be_bytes());
    p.extend_from_slice(&(c.meta.len() as u16).to_be_bytes());
    p.extend_from_slice(&c.meta);
    p
}

/// The short name a hello gives a cluster key.
fn key_id(psk: &[u8; 32]) -> [u8; 4] {
    let hk = Hkdf::<Sha256>::from_prk(psk).unwrap();
    let mut id = [0u8; 4];
    hk.expand(b"tcpnet key id", &mut id).unwrap();
    id
}

/// A hello frame saying `c`.
pub(crate) fn hello_frame(c: &Claim) -> Vec<u8> {
    frame(HELLO, &hello_payload(c))
}

/// A messaging envelope.
pub(crate) struct Envelope<'a> {
    pub(crate) op: u8,
    pub(crate) flags: u8,
    pub(crate) hops: u8,
    pub(crate) origin: &'a str,
    pub(crate) seq: u64,
    pub(crate) corr: u64,
    pub(crate) name: &'a str,
    pub(crate) body: &'a [u8],
}

impl Envelope<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.op, self.flags, self.hops, self.origin.len() as u8];
        b.extend_from_slice(self.origin.as_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.corr.to_be_bytes());
        b.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(self.body);
        b
    }

    /// The envelope signed by `key` as its origin would sign it: the
    /// `SIGNED` flag, then the key and the signature after the name. The
    /// signature is over SHA-256 of a label and every field but `hops`.
    pub(crate) fn signed_by(&self, key: &tcpnet::Identity) -> Vec<u8> {
        use sha2::Digest;
        let flags = self.flags | SIGNED;
        let mut h = Sha256::new();
        h.update(b"tcpnet envelope v1");
        h.update([self.op, flags, self.origin.len() as u8]);
        h.update(self.origin.as_bytes());
        h.update(self.seq.to_be_bytes());
        h.update(self.corr.to_be_bytes());
        h.update((self.name.len() as u16).to_be_bytes());
        h.update(self.name.as_bytes());
        h.update(self.body);
        let sig = key.sign(&h.finalize());
        let mut b = vec![self.op, flags, self.hops, self.origin.len() as u8];
        b.extend_from_slice(self.origin.as_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.corr.to_be_bytes());
        b.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(&key.public_key());
        b.extend_from_slice(&sig);
        b.extend_from_slice(self.body);
        b
    }
}

/// The parts of an envelope a test looks at.
pub(crate) struct Received {
    pub(crate) op: u8,
    pub(crate) corr: u64,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn decode_envelope(p: &[u8]) -> Received {
    let olen = p[3] as usize;
    let at = 4 + olen;
    let corr = u64::from_be_bytes(p[at + 8..at + 16].try_into().unwrap());
    let nlen = u16::from_be_bytes(p[at + 16..at + 18].try_into().unwrap()) as usize;
    Received {
        op: p[0],
        corr,
        body: p[at + 18 + nlen..].to_vec(),
    }
}

/// Why the node did not link with the attacker.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The node closed the connection (or reset it) during the handshake.
    Closed(String),
    /// The node sent a verdict other than accept.
    Verdict(u8),
}

/// A linked session with a node.
pub(crate) struct Session {
    pub(crate) stream: TcpStream,
    pub(crate) node_id: String,
    pub(crate) node_incarnation: u64,
    cipher: Option<StatelessTransportState>,
    tx_nonce: u64,
    rx_nonce: u64,
    rbuf: BytesMut,
    plain: BytesMut,
}

/// A TCP connection from `from` to 127.0.0.1:`port`.
pub(crate) async fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind");
    tokio::time::timeout(
        DEADLINE,
        socket.connect(SocketAddr::from(([127, 0, 0, 1], port))),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

async fn read_frame(s: &mut TcpStream, max: usize) -> Result<(u8, Vec<u8>), String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > max {
        return Err(format!("frame length {n}"));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok((body[0], body[1..].to_vec()))
}

fn psk(secret: &[u8], cluster: &str) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"tcpnet cluster secret v1"), secret);
    let mut key = [0u8; 32];
    hk.expand(cluster.as_bytes(), &mut key).unwrap();
    key
}

/// [`handshake`], then waits for the link to open (sending the verdict
/// itself when its claimed id decides) and for the node to answer on it.
pub(crate) async fn join(from: Ipv4Addr, port: u16, claim: &Claim) -> Result<Session, Refused> {
    let closed = |e: String| Refused::Closed(e);
    let mut session = handshake(from, port, claim).await?;
    if claim.id < session.node_id {
        session
            .send(ACCEPT, &[])
            .await
            .map_err(|e| closed(e.to_string()))?;
    } else {
        loop {
            match session.recv().await {
                Some((ACCEPT, _)) => break,
                Some((HEARTBEAT, _)) => {}
                Some((kind, _)) => return Err(Refused::Verdict(kind)),
                None => return Err(closed("end of stream before the verdict".into())),
            }
        }
    }
    // Linked once the node answers on the link (a node that refused the
    // handshake has closed it instead).
    match session.call(&claim.id, 0).await {
        true => Ok(session),
        false => Err(closed("closed by the node after the handshake".into())),
    }
}

/// Dials the node at 127.0.0.1:`port` from `from`, says `claim`, and runs
/// the handshake proving `claim.key` (with the secret if the claim holds
/// one), up to where the verdict is due.
pub(crate) async fn handshake(
    from: Ipv4Addr,
    port: u16,
    claim: &Claim,
) -> Result<Session, Refused> {
    handshake_pausing(from, port, claim, async {}).await
}

/// [`handshake`], waiting for `pause` before its last Noise message: the
/// node is then in the middle of the handshake, under the claim's key.
pub(crate) async fn handshake_pausing(
    from: Ipv4Addr,
    port: u16,
    claim: &Claim,
    pause: impl std::future::Future<Output = ()>,
) -> Result<Session, Refused> {
    let closed = |e: String| Refused::Closed(e);
    let mut stream = connect_from(from, port).await;
    let ours = hello_payload(claim);
    stream
        .write_all(&frame(HELLO, &ours))
        .await
        .map_err(|e| closed(e.to_string()))?;
    let (kind, theirs) = read_frame(&mut stream, 8192).await.map_err(closed)?;
    assert_eq!(kind, HELLO, "the node's first frame");
    let node_incarnation = u64::from_be_bytes(theirs[8..16].try_into().unwrap());
    let idlen = theirs[19] as usize;
    let node_id = String::from_utf8(theirs[20..20 + idlen].to_vec()).unwrap();
    let mut session = Session {
        stream,
        node_id,
        node_incarnation,
        cipher: None,
        tx_nonce: 0,
        rx_nonce: 0,
        rbuf: BytesMut::new(),
        plain: BytesMut::new(),
    };
    let mut prologue = Vec::new();
    for h in [&ours, &theirs] {
        prologue.extend_from_slice(&(h.len() as u16).to_be_bytes());
        prologue.extend_from_slice(h);
    }
    let pattern = if claim.secret.is_some() {
        "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s"
    } else {
        "Noise_XX_25519_ChaChaPoly_BLAKE2s"
    };
    let builder = snow::Builder::new(pattern.parse().unwrap());
    let statik = builder.generate_keypair().unwrap();
    let psk = claim.secret.as_ref().map(|s| psk(s, &claim.cluster));
    let mut builder = builder
        .local_private_key(&statik.private)
        .unwrap()
        .prologue(&prologue)
        .unwrap();
    if let Some(psk) = &psk {
        builder = builder.psk(3, psk).unwrap();
    }
    let mut hs = builder.build_initiator().unwrap();
    let mut buf = [0u8; 512];
    let mut payload = [0u8; 512];
    let n = hs.write_message(&[], &mut buf).unwrap();
    session
        .stream
        .write_all(&frame(NOISE, &buf[..n]))
        .await
        .map_err(|e| closed(e.to_string()))?;
    let (kind, msg) = read_frame(&mut session.stream, 512).await.map_err(closed)?;
    assert_eq!(kind, NOISE);
    hs.read_message(&msg, &mut payload)
        .map_err(|e| closed(format!("noise: {e}")))?;
    let pair = Ed25519KeyPair::from_pkcs8(&claim.key.to_pkcs8()).unwrap();
    let mut proof = pair.public_key().as_ref().to_vec();
    let signed = [&b"tcpnet-noise-static-key:"[..], &statik.public].concat();
    proof.extend_from_slice(pair.sign(&signed).as_ref());
    pause.await;
    let n = hs.write_message(&proof, &mut buf).unwrap();
    session
        .stream
        .write_all(&frame(NOISE, &buf[..n]))
        .await
        .map_err(|e| closed(e.to_string()))?;
    if psk.is_some() {
        session.cipher = Some(hs.into_stateless_transport_mode().unwrap());
        // The node's key confirmation.
        match session.recv().await {
            Some((NOISE, p)) if p.is_empty() => {}
            Some((kind, _)) => return Err(Refused::Verdict(kind)),
            None => return Err(closed("end of stream before the key confirmation".into())),
        }
    }
    Ok(session)
}

impl Session {
    /// Sends one frame (sealed on a secret link, in as many records as it
    /// takes).
    pub(crate) async fn send(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let out = self.encode(kind, payload);
        self.stream.write_all(&out).await
    }

    /// [`send`](Self::send), reading what the node sends meanwhile and
    /// dropping it, as a peer that reads would: a long send on a starved
    /// machine must not make this peer one that never reads (the node
    /// closes such a link as stalled).
    pub(crate) async fn send_draining(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let out = self.encode(kind, payload);
        let mut at = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while at < out.len() {
            // Both futures are cancel-safe: a write or read that loses the
            // race has moved no byte.
            let (wrote, read) = {
                let (mut rd, mut wr) = self.stream.split();
                tokio::select! {
                    n = wr.write(&out[at..]) => (Some(n?), 0),
                    n = rd.read(&mut buf) => (None, n?),
                }
            };
            match wrote {
                Some(n) => at += n,
                None if read == 0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                None => {
                    self.take_in(&buf[..read]);
                    while self.take_frame().is_some() {}
                }
            }
        }
        Ok(())
    }

    /// One frame as it goes on the wire (sealed on a secret link).
    fn encode(&mut self, kind: u8, payload: &[u8]) -> Vec<u8> {
        let f = frame(kind, payload);
        match &self.cipher {
            None => f,
            Some(c) => {
                let mut out = Vec::new();
                for part in f.chunks(60_000) {
                    let mut rec = vec![0u8; 2 + part.len() + 16];
                    let n = c
                        .write_message(self.tx_nonce, part, &mut rec[2..])
                        .expect("seal");
                    self.tx_nonce += 1;
                    rec[..2].copy_from_slice(&(n as u16).to_be_bytes());
                    out.extend_from_slice(&rec[..2 + n]);
                }
                out
            }
        }
    }

    /// Sends a messaging envelope.
    pub(crate) async fn send_msg(&mut self, e: &Envelope<'_>) -> std::io::Result<()> {
        self.send(MSG, &e.encode()).await
    }

    /// Sends `e` signed by `key` (see [`Envelope::signed_by`]).
    pub(crate) async fn send_signed(
        &mut self,
        e: &Envelope<'_>,
        key: &tcpnet::Identity,
    ) -> std::io::Result<()> {
        self.send(MSG, &e.signed_by(key)).await
    }

    /// Sends, for each of `keys`, a subscription message signed by it (so
    /// each is a node as far as the node can tell) with 2,000 topics of
    /// 200 bytes: each set just under the budget of one node.
    pub(crate) async fn subscribe_made_up(
        &mut self,
        keys: &[tcpnet::Identity],
    ) -> std::io::Result<()> {
        let mut body = Vec::new();
        for t in 0..2000 {
            body.extend_from_slice(format!("{t:0200}\n").as_bytes());
        }
        for key in keys {
            let origin = key.id().to_string();
            let e = Envelope {
                op: OP_INTEREST,
                flags: FLOOD,
                hops: 1,
                origin: &origin,
                seq: 0,
                corr: now_nanos(),
                name: "",
                body: &body,
            };
            // Many large frames: the node's own frames are read meanwhile.
            self.send_draining(MSG, &e.signed_by(key)).await?;
        }
        Ok(())
    }

    /// The next frame from the node; `None` once it closed the link.
    pub(crate) async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            let mut buf = [0u8; 64 * 1024];
            let n = match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            self.take_in(&buf[..n]);
        }
    }

    /// Bytes read from the node, opened on a secret link.
    fn take_in(&mut self, bytes: &[u8]) {
        match &self.cipher {
            None => self.plain.extend_from_slice(bytes),
            Some(_) => {
                self.rbuf.extend_from_slice(bytes);
                self.open_records();
            }
        }
    }

    fn open_records(&mut self) {
        let c = self.cipher.as_ref().expect("sealed");
        while self.rbuf.len() >= 2 {
            let len = u16::from_be_bytes([self.rbuf[0], self.rbuf[1]]) as usize;
            if self.rbuf.len() < 2 + len {
                return;
            }
            let mut out = vec![0u8; len];
            let n = c
                .read_message(self.rx_nonce, &self.rbuf[2..2 + len], &mut out)
                .expect("a record from the node opens");
            self.rx_nonce += 1;
            self.plain.extend_from_slice(&out[..n]);
            self.rbuf.advance(2 + len);
        }
    }

    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.plain.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes(self.plain[..4].try_into().unwrap()) as usize;
        if self.plain.len() < 4 + n {
            return None;
        }
        self.plain.advance(4);
        let body = self.plain.split_to(n);
        Some((body[0], body[1..].to_vec()))
    }

    /// Calls procedure "sync" on the node (which has none: it answers with a
    /// failure at once) and waits for the answer: every frame sent before it
    /// on this link has been handled by then.
    pub(crate) async fn sync(&mut self, me: &str, corr: u64) {
        assert!(
            self.call(me, corr).await,
            "the node closed the link before the sync answer"
        );
    }

    /// [`sync`](Self::sync); false if the node closed the link instead.
    async fn call(&mut self, me: &str, corr: u64) -> bool {
        let sent = self
            .send_msg(&Envelope {
                op: OP_REQUEST,
                flags: 0,
                hops: 0,
                origin: me,
                seq: 0,
                corr,
                name: "sync",
                body: b"",
            })
            .await;
        if sent.is_err() {
            return false;
        }
        let answered = async {
            while let Some((kind, p)) = self.recv().await {
                if kind == MSG {
                    let r = decode_envelope(&p);
                    if r.corr == corr && r.op != OP_REQUEST {
                        return true;
                    }
                }
            }
            false
        };
        tokio::time::timeout(DEADLINE, answered)
            .await
            .expect("the node answers the sync request in time")
    }
}
