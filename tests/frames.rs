//! Frames on a link: whole messages both ways, through every handle, the
//! maximum frame length on both sides, and sends on a closed link.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use tcpnet::{CloseReason, Error, Settings};

#[test]
fn data_written_the_instant_a_link_opens_arrives_whole_and_in_order() {
    netns(|| async {
        let a = tcpnet::tcpnet("c").unwrap();
        let b = tcpnet::tcpnet("c").unwrap();
        let (ea, eb) = (a.on_connection(), b.on_connection());
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let big2 = big.clone();
        // Both ends write from inside the connection event.
        let writer = |mut events: tcpnet::Events<tcpnet::Connection>, big: Vec<u8>| async move {
            let conn = events.next().await.unwrap();
            conn.send(big).await.unwrap();
            for i in 0..1000u32 {
                conn.send(i.to_be_bytes().to_vec()).await.unwrap();
            }
            conn
        };
        let (ra, rb) = tokio::join!(a.listen(0, "0.0.0.0"), b.listen(0, "0.0.0.0"));
        ra.unwrap();
        rb.unwrap();
        let (mut ca, mut cb) = within("links", async {
            tokio::join!(writer(ea, big.clone()), writer(eb, big2))
        })
        .await;
        for conn in [&mut ca, &mut cb] {
            let first = within("big frame", conn.next()).await.unwrap();
            assert_eq!(first.len(), big.len());
            assert!(first[..] == big[..]);
            for i in 0..1000u32 {
                let f = within("small frame", conn.next()).await.unwrap();
                assert_eq!(&f[..], &i.to_be_bytes());
            }
        }
        close_all(&[a, b]).await;
    });
}

#[test]
fn sink_stream_split_and_cloned_senders() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c")).await;
        let (mut sink, _stream) = ab.clone().split();
        sink.send(bytes::Bytes::from_static(b"via sink"))
            .await
            .unwrap();
        let sender = ab.sender();
        let s2 = sender.clone();
        tokio::spawn(async move { s2.send("via clone").await.unwrap() })
            .await
            .unwrap();
        let got: Vec<_> = within("two frames", ba.clone().take(2).collect::<Vec<_>>()).await;
        assert_eq!(&got[0][..], b"via sink");
        assert_eq!(&got[1][..], b"via clone");
        close_all(&[a, b]).await;
    });
}

/// Messages fed to a batch, sent with `send` between hand-overs, dropped
/// with a batch, and one of the batch's too large for its buffer, arrive
/// in the order they were handed over, each whole; a batch errs as `send`
/// does, on a message too large and once the link has closed.
#[test]
fn a_batch_hands_its_messages_over_in_order_with_the_other_handles() {
    netns(|| async {
        let (a, b, ab, mut ba) = linked_pair(|| Settings::new("c").max_frame_len(100_000)).await;
        let msg = |i: u32| {
            let len = [0, 1, 60, 1000, 20_000][i as usize % 5];
            let mut m = vec![(i % 251) as u8; len.max(4)];
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        };
        // Read as it comes: the link pushes back on a sender that fills it.
        let reader = tokio::spawn(async move {
            let got: Vec<_> = ba.by_ref().take(3009).collect().await;
            (got, ba)
        });
        let mut batch = ab.sender().batch();
        let mut want = Vec::new();
        let mut i = 0u32;
        // Enough to fill the batch's buffer several times over.
        while i < 2999 {
            if i % 700 == 699 {
                batch.flush().await.unwrap();
                ab.send(msg(i)).await.unwrap();
            } else {
                batch.feed(&msg(i)).await.unwrap();
            }
            want.push(msg(i));
            i += 1;
        }
        assert!(matches!(
            batch.feed(&[0u8; 100_001]).await,
            Err(Error::FrameTooLarge {
                len: 100_001,
                max: 100_000
            })
        ));
        assert!(!batch.is_empty());
        // Dropped with messages in it: they are handed over.
        drop(batch);
        let mut batch = ab.batch();
        for i in 0..10u32 {
            batch.feed(&i.to_le_bytes()).await.unwrap();
            want.push(i.to_le_bytes().to_vec());
        }
        assert_eq!(batch.len(), 10);
        batch.flush().await.unwrap();
        assert!(batch.is_empty());
        let (got, ba) = within("the batched messages", reader).await.unwrap();
        assert_eq!(got.len(), want.len());
        for (k, (m, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(m[..], w[..], "message {k}");
        }
        drop(ba);
        ab.close();
        within("closed", ab.closed()).await;
        batch.feed(b"late").await.unwrap();
        assert!(matches!(batch.flush().await, Err(Error::Closed)));
        close_all(&[a, b]).await;
    });
}

/// A reader that read the socket itself and then stops polling leaves it
/// to the link's task: what comes meanwhile is read (and queued for the
/// reader, in order after what it left), heartbeats keep the link up for
/// several timeouts, and what the reader reads when it comes back, from
/// the queue and then from the socket, is in order; the peer's close ends
/// its stream. In the clear and with a secret.
#[test]
fn a_reader_that_stops_polling_leaves_the_socket_to_its_link() {
    for secret in [None, Some("a cluster secret of at least 32 bytes")] {
        netns(move || async move {
            let ms = std::time::Duration::from_millis;
            let settings = move || {
                let s = Settings::new("c").heartbeat(ms(100), ms(400));
                match secret {
                    Some(k) => s.secret(k),
                    None => s,
                }
            };
            let (a, b, ab, mut ba) = linked_pair(settings).await;
            let frames_in = || b.stats().links.first().map_or(0, |l| l.frames_in);
            let msg = |i: u32| i.to_be_bytes().to_vec();
            // More than one read hands out at once, so the reader leaves
            // some behind.
            let mut batch = ab.batch();
            for i in 0..200 {
                batch.feed(&msg(i)).await.unwrap();
            }
            batch.flush().await.unwrap();
            let first = within("the first message", ba.next()).await.unwrap();
            assert_eq!(first[..], msg(0)[..]);
            // Not polled from here on.
            let before = frames_in();
            for i in 200..300 {
                ab.send(msg(i)).await.unwrap();
            }
            wait_until(
                &[a.clone(), b.clone()],
                "the messages read while not polled",
                || frames_in() >= before + 100,
            )
            .await;
            // Heartbeats only, for more than two timeouts: each one read.
            let read = frames_in();
            wait_until(
                &[a.clone(), b.clone()],
                "heartbeats read while not polled",
                || frames_in() >= read + 10,
            )
            .await;
            assert!(ba.close_reason().is_none(), "{:?}", ba.close_reason());
            assert_eq!(b.connections().len(), 1);
            for i in 1..300 {
                let m = within("a message left", ba.next()).await.unwrap();
                assert_eq!(m[..], msg(i)[..], "message {i}");
            }
            // Polled again: read as they come.
            for i in 300..400 {
                ab.send(msg(i)).await.unwrap();
                let m = within("a message read at once", ba.next()).await.unwrap();
                assert_eq!(m[..], msg(i)[..], "message {i}");
            }
            ab.close();
            assert!(within("the end", ba.next()).await.is_none());
            assert_eq!(within("closed", ba.closed()).await, CloseReason::PeerClosed);
            close_all(&[a, b]).await;
        });
    }
}

#[test]
fn oversize_frames_are_refused_on_send_and_close_the_link_on_receive() {
    netns(|| async {
        let small = start(Settings::new("c").max_frame_len(1024)).await;
        let (b, c) = tokio::join!(start("c"), start("c"));
        let nodes = [small.clone(), b.clone(), c.clone()];
        full_mesh(&nodes).await;
        let mut errors = small.on_error();
        let to = |from: &tcpnet::Service, to: &tcpnet::Service| {
            from.connections()
                .into_iter()
                .find(|x| x.peer_id() == to.id())
                .unwrap()
        };

        // Sending too much is the caller's error; the link stays up.
        match to(&small, &b).send(vec![0u8; 1025]).await {
            Err(Error::FrameTooLarge {
                len: 1025,
                max: 1024,
            }) => {}
            other => panic!("{other:?}"),
        }
        to(&small, &b).send(vec![1u8; 1024]).await.unwrap();
        let mut bs = to(&b, &small);
        assert_eq!(within("max frame", bs.next()).await.unwrap().len(), 1024);

        // Receiving too much closes that link, with an error event.
        let victim = to(&small, &b);
        bs.send(vec![0u8; 4096]).await.unwrap();
        assert_eq!(
            within("oversize close", victim.closed()).await,
            CloseReason::FrameTooLarge {
                len: 4096,
                max: 1024
            }
        );
        let e = within("error event", errors.next()).await.unwrap();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
        assert!(e.to_string().contains("4096"), "{e}");

        // Nothing else is harmed: the link to c carries data both ways.
        let (sc, mut cs) = (to(&small, &c), to(&c, &small));
        sc.send("fine").await.unwrap();
        assert_eq!(&within("data", cs.next()).await.unwrap()[..], b"fine");
        close_all(&nodes).await;
    });
}

#[test]
fn send_on_a_closed_link_is_an_error() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c")).await;
        ab.close();
        // A closing link has left the list already.
        assert!(a.connections().is_empty());
        assert_eq!(within("local close", ab.closed()).await, CloseReason::Local);
        assert_eq!(
            within("peer close", ba.closed()).await,
            CloseReason::PeerClosed
        );
        assert!(matches!(ab.send("x").await, Err(Error::Closed)));
        assert!(matches!(ba.sender().send("x").await, Err(Error::Closed)));
        // The closed link is listed on neither end. (Both nodes still run,
        // so a later mDNS announcement may link them again: a new link.)
        let same = |c: &tcpnet::Connection| {
            c.local_addr() == ab.local_addr() || c.local_addr() == ba.local_addr()
        };
        assert!(!a.connections().iter().any(same));
        assert!(!b.connections().iter().any(same));
        close_all(&[a, b]).await;
    });
}

/// Both ends send numbered frames through small queues (16 frames), then one
/// side closes while frames are still queued on both: every frame `send`
/// accepted arrives, once and in order, on both sides.
#[test]
fn frames_accepted_before_a_close_are_delivered_both_ways() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c").queue_len(16)).await;
        let n = 2000u32;
        // Readers on both ends collect until their link closes.
        let read_a = tokio::spawn(ab.clone().collect::<Vec<_>>());
        let read_b = tokio::spawn(ba.clone().collect::<Vec<_>>());
        let send = |conn: tcpnet::Connection| async move {
            for i in 0..n {
                conn.send(i.to_be_bytes().to_vec()).await.unwrap();
            }
        };
        within("sending", async {
            tokio::join!(send(ab.clone()), send(ba.clone()))
        })
        .await;
        a.close().await;
        for reader in [read_a, read_b] {
            let got = within("all frames", reader).await.unwrap();
            assert_eq!(got.len(), n as usize);
            assert!(got
                .iter()
                .enumerate()
                .all(|(i, f)| f[..] == (i as u32).to_be_bytes()));
        }
        assert_eq!(ab.closed().await, CloseReason::Shutdown);
        assert_eq!(ba.closed().await, CloseReason::PeerClosed);
        b.close().await;
    });
}

/// The peer closes while this end is sending as fast as it can, so frames
/// that `send` accepted are still queued here: every accepted frame reaches
/// the peer, in order, and the first refused send is the end.
#[test]
fn frames_queued_when_the_peer_closes_are_still_delivered() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c").queue_len(16)).await;
        let (progress, mut sent) = tokio::sync::watch::channel(0u32);
        let sender = tokio::spawn(async move {
            let mut accepted = 0u32;
            loop {
                let mut frame = vec![7u8; 16 * 1024];
                frame[..4].copy_from_slice(&accepted.to_be_bytes());
                match ba.send(frame).await {
                    Ok(()) => accepted += 1,
                    Err(Error::Closed) => return accepted,
                    Err(e) => panic!("{e}"),
                }
                progress.send_replace(accepted);
            }
        });
        let reader = tokio::spawn(ab.clone().collect::<Vec<_>>());
        within("b to be sending", sent.wait_for(|n| *n >= 256))
            .await
            .unwrap();
        a.close().await;
        let accepted = within("b's sends to be refused", sender).await.unwrap();
        let got = within("frames", reader).await.unwrap();
        assert_eq!(got.len(), accepted as usize, "frames accepted by b's send");
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, f)| f[..4] == (i as u32).to_be_bytes()));
        b.close().await;
    });
}

/// The most data that can sit between a sender's link and a receiver that
/// does not read, past the sender's own queue: the receiver's queue, the
/// batch its link holds before handing it over (at most one frame of this
/// size), the codecs' buffers and both sockets' buffers (their maxima, from
/// this namespace's sysctls), with room to spare.
fn downstream_capacity(receiver_queue: usize, frame: usize) -> usize {
    let max = |name: &str| -> usize {
        let v = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
        v.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    max("tcp_wmem") + max("tcp_rmem") + (receiver_queue + 8) * frame + (1 << 20)
}

/// A peer that stops reading cannot hold a close forever: the closing side
/// gives up once nothing moves, and reports the frames it could not deliver.
#[test]
fn a_close_stalled_by_a_peer_that_stopped_reading_is_cut_and_reported() {
    netns(|| async {
        // Small socket buffers in this namespace keep the bound tight.
        sh("echo '4096 16384 65536' > /proc/sys/net/ipv4/tcp_rmem \
            && echo '4096 16384 65536' > /proc/sys/net/ipv4/tcp_wmem");
        let frame = 64 * 1024;
        // a's queue (16 MiB) is far larger than all there is room for past it.
        // Its heartbeat timeout is long, so that it is the close that finds
        // the peer stalled (not the check of a link's writes while it is up).
        let long_beat = |s: Settings| {
            s.heartbeat(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(120),
            )
        };
        let (a, b) = tokio::join!(
            start(long_beat(
                Settings::new("c").queue_len(256).queue_bytes(16 << 20)
            )),
            start(long_beat(Settings::new("c").queue_len(1)))
        );
        full_mesh(&[a.clone(), b.clone()]).await;
        let ab = a.connections().pop().unwrap();
        let mut errors = a.on_error();
        // b never reads. Once a's link has accepted more than fits past its
        // queue, frames sit in that queue that b will not take.
        let beyond = downstream_capacity(1, frame);
        let (full_tx, full) = tokio::sync::oneshot::channel();
        let out = ab.sender();
        let sender = tokio::spawn(async move {
            let mut full_tx = Some(full_tx);
            let mut accepted = 0;
            while out.send(vec![0u8; frame]).await.is_ok() {
                accepted += frame;
                if accepted > beyond {
                    if let Some(tx) = full_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        within("a's queue to hold frames", full).await.unwrap();
        within("a's close", a.close()).await;
        within("the sender to be refused", sender).await.unwrap();
        match ab.close_reason() {
            Some(CloseReason::Io(e)) => assert!(e.to_string().contains("stalled"), "{e}"),
            other => panic!("{other:?}"),
        }
        let e = within("an error event", errors.next()).await.unwrap();
        assert!(matches!(e, Error::Link { .. }), "{e:?}");
        b.close().await;
    });
}

/// A node whose application uses messaging only and never reads its
/// connections: a peer that sends it more raw messages than a receive
/// queue holds fills that queue, and the link stops reading its socket.
/// Once the application has read nothing for its unread timeout (here
/// 600 ms, under the default 3 s heartbeat timeout, which plays no part),
/// the link is closed as unread and reported (before, it stayed wedged for
/// as long as it lived, carrying nothing more from the peer); what the
/// queue holds can still be read.
#[test]
fn a_link_whose_raw_messages_nobody_reads_is_closed_as_unread_and_reported() {
    netns(|| async {
        let unread = std::time::Duration::from_millis(600);
        let (a, b) = tokio::join!(
            start(Settings::new("c").queue_len(64).unread_timeout(unread)),
            start(Settings::new("c"))
        );
        full_mesh(&[a.clone(), b.clone()]).await;
        let mut errors = a.on_error();
        let ab = a.connections().pop().unwrap();
        let ba = b.connections().pop().unwrap();
        for i in 0..200u32 {
            ba.send(i.to_be_bytes().to_vec()).await.unwrap();
        }
        let e = within("an error event", errors.next()).await.unwrap();
        match &e {
            Error::Link {
                reason: CloseReason::Unread(t),
                ..
            } => assert!(*t >= unread, "{t:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ab.close_reason(), Some(CloseReason::Unread(_))));
        assert_eq!(a.stats().unread_links, 1);
        // The queue's 64 messages are there to read, in order.
        let held: Vec<_> = ab.take(64).collect().await;
        for (i, m) in held.iter().enumerate() {
            assert_eq!(m[..], (i as u32).to_be_bytes());
        }
        a.close().await;
        b.close().await;
    });
}
