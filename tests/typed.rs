//! Typed messages (the `typed` and `json` features), each test in a private
//! network namespace: values both ways in both formats, a payload that does
//! not decode, a request that does not decode, drops reported in the
//! stream and on the error stream.

mod common;

use std::time::Duration;

use common::*;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tcpnet::typed::{Format, Messages, BAD_REQUEST};
use tcpnet::{CallError, Error, ErrorKind, Settings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Set {
    key: String,
    value: Vec<u8>,
    version: u64,
}

fn set(i: u64) -> Set {
    Set {
        key: format!("k{i}"),
        value: vec![i as u8; 3],
        version: i,
    }
}

/// The next item of a typed stream, with the deadline.
async fn next<T: serde::de::DeserializeOwned>(s: &mut Messages<T>) -> tcpnet::Result<T> {
    within("a typed message", s.next())
        .await
        .expect("stream ended")
        .map(|r| r.into_value())
}

#[test]
fn values_travel_on_events_topics_inboxes_and_calls_in_both_formats() {
    netns(|| async {
        let (a, b, _, _) = linked_pair(|| Settings::new("c")).await;
        for format in [Format::Postcard, Format::Json] {
            let name = format!("set-{format:?}");
            let mut sets = b
                .event::<Set>(&name)
                .with_format(format)
                .receiver()
                .unwrap();
            let sent = a.event::<Set>(&name).with_format(format);
            assert_eq!(sent.emit(&set(1)).await.unwrap(), 1);
            sent.emit_to(b.id(), &set(2)).await.unwrap();
            assert_eq!(next(&mut sets).await.unwrap(), set(1));
            let got = within("the second", sets.next()).await.unwrap().unwrap();
            assert_eq!(
                (got.from(), got.name(), got.value()),
                (a.id(), &name[..], &set(2))
            );

            let room = b.topic::<Set>(&name).with_format(format);
            let mut sub = room.subscribe().unwrap();
            wait_until(std::slice::from_ref(&a), "b subscribed", || {
                a.topic_members(&name).len() == 1
            })
            .await;
            let to = a.topic::<Set>(&name).with_format(format);
            assert_eq!(to.publish(&set(3)).await.unwrap(), 1);
            assert_eq!(next(&mut sub).await.unwrap(), set(3));

            let mut inbox = b.inbox::<Set>().with_format(format).messages();
            let out = a.inbox::<Set>().with_format(format);
            out.send_to(b.id(), &set(4)).await.unwrap();
            out.broadcast(&set(5)).await.unwrap();
            assert_eq!(next(&mut inbox).await.unwrap(), set(4));
            assert_eq!(next(&mut inbox).await.unwrap(), set(5));

            let get = b.rpc::<String, Option<Set>>(&name).with_format(format);
            let mut calls = get.serve().unwrap();
            tokio::spawn(async move {
                while let Some(Ok(req)) = calls.next().await {
                    let answer = (req.value() == "k6").then(|| set(6));
                    req.reply(&answer).await.unwrap();
                }
            });
            let call = a.rpc::<String, Option<Set>>(&name).with_format(format);
            let t = Duration::from_secs(5);
            assert_eq!(
                call.call(b.id(), &"k6".into(), t).await.unwrap(),
                Some(set(6))
            );
            assert_eq!(call.call(b.id(), &"k7".into(), t).await.unwrap(), None);
        }
        close_all(&[a, b]).await;
    });
}

/// A payload that is not the stream's type is an `Error::Decode` in the
/// stream, which goes on; JSON that is not a `Set` says what it lacks.
#[test]
fn a_payload_that_does_not_decode_is_an_error_and_the_stream_goes_on() {
    netns(|| async {
        let (a, b, _, _) = linked_pair(|| Settings::new("c")).await;
        let mut sets = b.event::<Set>("set").receiver().unwrap();
        let mut json = b
            .event::<Set>("json")
            .with_format(Format::Json)
            .receiver()
            .unwrap();
        a.emit("set", "not postcard").await.unwrap();
        a.event::<Set>("set").emit(&set(1)).await.unwrap();
        a.emit("json", r#"{"key":"k"}"#).await.unwrap();
        a.event::<Set>("json")
            .with_format(Format::Json)
            .emit(&set(2))
            .await
            .unwrap();

        match next(&mut sets).await {
            Err(e @ Error::Decode { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Fault);
                let Error::Decode {
                    from, name, what, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!((from, &name[..]), (a.id(), "set"));
                assert!(what.ends_with("Set"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(next(&mut sets).await.unwrap(), set(1));
        match next(&mut json).await {
            Err(Error::Decode { reason, .. }) => assert!(reason.contains("value"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(next(&mut json).await.unwrap(), set(2));
        close_all(&[a, b]).await;
    });
}

/// A request that is not the procedure's type is answered `bad-request`
/// for the caller and yielded as an error to the handler, whose stream goes
/// on; an answer that is not the caller's type is a decode error there.
#[test]
fn a_request_or_answer_that_does_not_decode_fails_that_call_only() {
    netns(|| async {
        let (a, b, _, _) = linked_pair(|| Settings::new("c")).await;
        let mut calls = b.rpc::<u64, u64>("double").serve().unwrap();
        let (bad_tx, mut bad) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(req) = calls.next().await {
                match req {
                    Ok(req) => {
                        let twice = req.value() * 2;
                        req.reply(&twice).await.unwrap()
                    }
                    Err(e) => bad_tx.send(e).unwrap(),
                }
            }
        });
        let t = Duration::from_secs(5);
        // Bytes that are no postcard u64 (a varint that never ends).
        match a.request(b.id(), "double", vec![0xff; 11], t).await {
            Err(Error::Call {
                error: CallError::Remote { name, message },
                ..
            }) => {
                assert_eq!(name, BAD_REQUEST);
                assert!(message.contains("u64"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let double = a.rpc::<u64, u64>("double");
        assert_eq!(double.call(b.id(), &21, t).await.unwrap(), 42);
        // The caller expects a string: the answer does not decode there.
        let wrong = a.rpc::<u64, String>("double");
        match wrong.call(b.id(), &1, t).await {
            Err(Error::Decode { name, .. }) => assert_eq!(name, "double"),
            other => panic!("{other:?}"),
        }
        // The handler saw the bad request as an error, and went on.
        match bad.recv().await.unwrap() {
            Error::Decode { from, name, .. } => assert_eq!((&from, &name[..]), (a.id(), "double")),
            other => panic!("{other:?}"),
        }
        assert!(bad.try_recv().is_err());
        close_all(&[a, b]).await;
    });
}

/// A typed stream that is not read drops what does not fit its queue, and
/// says so in place (before the next message) and on the error stream.
#[test]
fn drops_are_reported_in_the_stream_and_on_the_error_stream() {
    netns(|| async {
        let settings = || Settings::new("c").queue_len(4);
        let (a, b, _, _) = linked_pair(settings).await;
        let mut errors = b.on_error();
        let mut sets = b.event::<Set>("set").receiver().unwrap();
        let raw = b.receiver("set").unwrap();
        let out = a.event::<Set>("set");
        for i in 0..10 {
            out.emit(&set(i)).await.unwrap();
        }
        // A barrier on another name: every set has been handled when it arrives.
        let mut barrier = b.receiver("barrier").unwrap();
        a.emit("barrier", "").await.unwrap();
        within("the barrier", barrier.next()).await.unwrap();

        for i in 0..4 {
            assert_eq!(next(&mut sets).await.unwrap(), set(i));
        }
        match next(&mut sets).await {
            Err(e @ Error::Dropped { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Fault);
                let Error::Dropped { stream, count } = e else {
                    unreachable!()
                };
                assert_eq!((&stream[..], count), ("event set", 6));
            }
            other => panic!("{other:?}"),
        }
        assert!(sets.next().now_or_never().is_none());
        // The stream goes on.
        out.emit(&set(10)).await.unwrap();
        assert_eq!(next(&mut sets).await.unwrap(), set(10));

        // The error stream reported each stream's first drop at once; the
        // other five go with a message offered a second or more later.
        let mut first = Vec::new();
        while first.len() < 2 {
            match within("drop reports", errors.next()).await.unwrap() {
                Error::Dropped { stream, count } => first.push((stream, count)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            first,
            [("event set".to_string(), 1), ("event set".to_string(), 1)]
        );
        // The bytes stream dropped that last one too: it is never read.
        wait_until(&[], "the bytes stream to drop the last one", || {
            raw.dropped() == 7
        })
        .await;
        drop(raw);
        let rest = within("the rest of the drops", async {
            loop {
                // A message, read at once, until the rest is reported.
                out.emit(&set(11)).await.unwrap();
                next(&mut sets).await.unwrap();
                let report = tokio::time::timeout(Duration::from_millis(100), errors.next()).await;
                if let Ok(Some(Error::Dropped { count, .. })) = report {
                    break count;
                }
            }
        })
        .await;
        assert_eq!(rest, 5);
        close_all(&[a, b]).await;
    });
}
