//! The bounded queues between a link's task and its handles: one for frames
//! to send, one for messages received.
//!
//! Each is bounded twice: by items and by the bytes they carry, so a queue of
//! large frames holds a few megabytes, not a thousand frames' worth (which
//! costs memory, and time: fresh memory for every frame, faulted in page by
//! page). An item larger than the byte bound still goes through, alone.
//!
//! They behave as tokio's bounded `mpsc` channels do (`try_send`, `send`
//! waiting for room, `close`, the end once every sender is gone) but cost
//! less per item, which matters at millions of small frames a second: a push
//! is one uncontended lock, the receiving task is woken only when it was
//! waiting for an empty queue, senders waiting for room only once it is
//! down to half its bounds, and the receiver takes many items under one lock
//! (tokio's channel does several atomic operations per item each way, and
//! wakes the receiver on every send).
//!
//! What a queue holds is its [`Store`]: a plain `VecDeque` of items for the
//! receive side, and for the send side the frames already encoded (see
//! [`crate::link::outbox`]), so the sending task does the encoding and the link's
//! task only writes.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::stats::Queued;

pub(crate) use tokio::sync::mpsc::error::TrySendError;

/// What an item weighs against the queue's byte bound.
pub(crate) trait Weighed {
    fn weight(&self) -> usize;
    /// How many items it counts as against the queue's bound: more than
    /// one for a run of frames already encoded (see [`Runs`]).
    fn items(&self) -> usize {
        1
    }
}

impl Weighed for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Weighed for crate::wire::frame::Frame {
    fn weight(&self) -> usize {
        self.payload.len()
    }
}

/// What a queue keeps its items in.
pub(crate) trait Store: Default {
    type Item: Weighed;
    /// Adds an item at the back. `idle`: the queue is empty and its
    /// receiver waits for an item. `false`: the store disposed of the item
    /// itself, so nothing was queued (see [`crate::link::outbox`]), and the
    /// receiver is not woken for it.
    fn put(&mut self, item: Self::Item, idle: bool) -> bool;
    /// Called under the lock after [`Sender::send`] or
    /// [`Sender::poll_send`] queued an item while the receiver holds
    /// nothing it took (it waits, or was woken and has not taken yet): the
    /// store may write what is queued itself. True if it wrote all of it,
    /// and the queue is empty (see [`crate::link::outbox`]: a sender
    /// writes what is queued once it is worth a system call).
    fn write_queued(&mut self) -> bool {
        false
    }
    /// The queue is closed: nothing more will be put.
    fn closed(&mut self) {}
    /// Nothing is queued and the queue has been quiet for a while: memory
    /// kept for the next items may go.
    fn trim(&mut self) {}
    /// Bytes of memory the store keeps for the next items (spare buffers),
    /// counted against the node's cap with the bytes queued.
    fn kept(&self) -> usize {
        0
    }
    /// Lets go of what [`kept`](Self::kept) counts: the node is at its cap,
    /// or the queue has been quiet for a while.
    fn release(&mut self) {}
}

/// A store that also takes runs of items already encoded, each counted as
/// the items it holds (see [`crate::link::batch`]).
pub(crate) trait Runs: Store {
    type Run: Weighed;
    /// As [`Store::put`], for a run.
    fn put_run(&mut self, run: Self::Run, idle: bool) -> bool;
}

impl<T: Weighed> Store for VecDeque<T> {
    type Item = T;
    fn put(&mut self, item: T, _idle: bool) -> bool {
        self.push_back(item);
        true
    }
}

/// A queue of at most `cap` items (at least 1) and `max_bytes` bytes.
#[cfg(test)]
pub(crate) fn channel<S: Store>(cap: usize, max_bytes: usize) -> (Sender<S>, Receiver<S>) {
    within(cap, max_bytes, None)
}

/// A queue as [`channel`] makes, whose bytes also count against a node's
/// cap (see [`Queued`]): it takes an item only while the node is under its
/// cap, or if it is empty.
pub(crate) fn within<S: Store>(
    cap: usize,
    max_bytes: usize,
    node: Option<Arc<Queued>>,
) -> (Sender<S>, Receiver<S>) {
    let inner = Arc::new(Inner {
        waiting: AtomicBool::new(false),
        state: Mutex::new(State {
            store: S::default(),
            len: 0,
            cap: cap.max(1),
            bytes: 0,
            max_bytes,
            closed: false,
            holding: false,
            senders: 1,
            receiver: None,
            senders_waiting: Vec::new(),
            node,
            charged: 0,
        }),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

// On cache lines of its own: a queue is written by two threads, and must not
// share a line with anything the other queue or the handles write.
#[repr(align(128))]
struct Inner<S> {
    state: Mutex<State<S>>,
    /// The receiver waits for an item, nothing is queued and the queue is
    /// open: set and cleared under the lock, read without it, so that a
    /// receiver woken for something else (a link's task, for its socket)
    /// looks at its empty queue without taking the lock that senders
    /// hold, sometimes through a write at once (see
    /// [`crate::link::outbox`]). A queue's receiver is polled from one
    /// task only (the link's task; the handles' shared waker), so the
    /// waker it left is the one to wake.
    waiting: AtomicBool,
}

struct State<S> {
    store: S,
    /// Items queued.
    len: usize,
    cap: usize,
    /// What the queued items weigh.
    bytes: usize,
    max_bytes: usize,
    /// The receiver closed the queue or is gone: pushes fail.
    closed: bool,
    /// The receiver took items and has not come back for more (the link's
    /// task writing what it took): nobody else may dispose of what is
    /// queued, which goes after those.
    holding: bool,
    senders: usize,
    /// The receiver, waiting for an item.
    receiver: Option<Waker>,
    /// Senders waiting for room.
    senders_waiting: Vec<Waker>,
    /// The node's count of queued bytes, if the queue counts in it ...
    node: Option<Arc<Queued>>,
    /// ... and what this queue is charged there.
    charged: usize,
}

impl<S: Store> State<S> {
    /// Room for `items` items of `weight` bytes in all: within both
    /// bounds, or the queue is empty.
    fn fits(&self, items: usize, weight: usize) -> bool {
        self.len == 0
            || self.len + items <= self.cap
                && self.bytes + weight <= self.max_bytes
                && self.node.as_ref().is_none_or(|n| n.has_room(weight))
    }

    /// As [`fits`](Self::fits); if only the node's cap stands in the way,
    /// lets what the store keeps for the next items go first (see
    /// [`Store::kept`]), and looks again.
    fn make_room(&mut self, items: usize, weight: usize) -> bool {
        if self.fits(items, weight) {
            return true;
        }
        if self.store.kept() == 0
            || self.len + items > self.cap
            || self.bytes + weight > self.max_bytes
        {
            return false;
        }
        self.store.release();
        self.recharge();
        self.fits(items, weight)
    }

    /// Brings what the node counts for this queue up to date: the bytes
    /// queued and what the store keeps.
    fn recharge(&mut self) {
        if let Some(node) = &self.node {
            self.charged = node.recharge(self.charged, self.bytes + self.store.kept());
        }
    }
}

impl<S> Drop for State<S> {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            self.charged = node.recharge(self.charged, 0);
        }
    }
}

impl<S> Inner<S> {
    /// The receiver's waker, if it waits: to be woken (after unlocking).
    fn take_receiver(&self, s: &mut State<S>) -> Option<Waker> {
        let w = s.receiver.take();
        if w.is_some() {
            self.waiting.store(false, Ordering::Release);
        }
        w
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // A panic while holding the lock leaves the queue consistent: every
        // change under it is a single push, take or flag.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end; clones share the queue.
pub(crate) struct Sender<S> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> Sender<S> {
    /// Runs `f` on the store and the queue's depth (items, bytes), under
    /// the queue's lock.
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&S, usize, usize) -> R) -> R {
        let s = self.inner.lock();
        f(&s.store, s.len, s.bytes)
    }

    /// Lets the store free what it keeps for the next items (see
    /// [`Store::release`]), and, if nothing is queued, what else it may
    /// (see [`Store::trim`]).
    pub(crate) fn trim(&self) {
        let mut s = self.inner.lock();
        if s.len == 0 {
            s.store.trim();
        } else {
            s.store.release();
        }
        s.recharge();
    }

    /// Lets the store free what it keeps for the next items (see
    /// [`Store::release`]) if the node is short of room (see
    /// [`Queued::short`]): a busy queue's spares would otherwise hold the
    /// node's cap while other queues wait for room.
    pub(crate) fn release_if_short(&self) {
        let mut s = self.inner.lock();
        if s.store.kept() > 0 && s.node.as_ref().is_some_and(|n| n.short()) {
            s.store.release();
            s.recharge();
        }
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: S::Item) -> Result<(), TrySendError<S::Item>> {
        self.try_put(item, put).map(drop)
    }

    /// Lets `put` queue `item` if there is room for it.
    /// `Ok(true)`: the store wrote what was queued (see [`Store::write_queued`]).
    #[inline]
    fn try_put<T: Weighed>(
        &self,
        item: T,
        put: impl FnOnce(&Inner<S>, MutexGuard<'_, State<S>>, T) -> bool,
    ) -> Result<bool, TrySendError<T>> {
        let mut s = self.inner.lock();
        if s.closed {
            return Err(TrySendError::Closed(item));
        }
        if !s.make_room(item.items(), item.weight()) {
            return Err(TrySendError::Full(item));
        }
        Ok(put(&self.inner, s, item))
    }

    /// Lets `keep` decide, under the queue's lock, where `item` goes: told
    /// whether it fits the queue's bounds, `keep` returns it to be queued as
    /// [`try_send`](Self::try_send) would (even past the bounds), or keeps
    /// it in the store apart from the queue and returns `None`. The store
    /// hands what it kept over with the next take; it may keep only while
    /// the queue holds items (`fits` is false then), so that a take comes.
    /// Gives `item` back if the queue is closed.
    pub(crate) fn send_with(
        &self,
        item: S::Item,
        keep: impl FnOnce(&mut S, S::Item, bool) -> Option<S::Item>,
    ) -> Result<(), S::Item> {
        let mut s = self.inner.lock();
        if s.closed {
            return Err(item);
        }
        let fits = s.make_room(item.items(), item.weight());
        if let Some(item) = keep(&mut s.store, item, fits) {
            put(&self.inner, s, item);
        }
        Ok(())
    }

    /// Queues `item`, waiting while the queue is full. Gives it back if the
    /// queue is closed.
    pub(crate) fn send(&self, item: S::Item) -> impl Future<Output = Result<(), S::Item>> + '_ {
        self.send_waiting(item, move |it| self.try_put(it, put_writing))
    }

    /// Polls the hand-over of `item` to the queue, waiting for room while
    /// the queue is full: ready once it is queued (`item` is `None` then),
    /// or with the item given back if the queue is closed. For a caller
    /// that makes one future of its own around it (every `Sender::send`).
    #[inline]
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        item: &mut Option<S::Item>,
    ) -> Poll<Result<(), S::Item>> {
        self.poll_put(cx, item, |it| self.try_put(it, put_writing))
    }

    /// Hands `item` to `try_send`, waiting for room while the queue is
    /// full. Gives it back if the queue is closed.
    ///
    /// A plain function returning the one `poll_fn`, not an `async fn`
    /// around it: the future holds `item` once, and a caller that embeds it
    /// moves a small value per message.
    fn send_waiting<'a, T: Weighed + 'a>(
        &'a self,
        item: T,
        try_send: impl Fn(T) -> Result<bool, TrySendError<T>> + 'a,
    ) -> impl Future<Output = Result<(), T>> + 'a {
        let mut item = Some(item);
        poll_fn(move |cx| self.poll_put(cx, &mut item, &try_send))
    }

    /// Polls `try_send` with `item` (see [`poll_send`](Self::poll_send)).
    ///
    /// A send that wrote what was queued (see [`Store::write_queued`])
    /// spends a unit of the task's budget, as a write to a tokio socket
    /// does: a sender that keeps writing yields to the other tasks of its
    /// worker now and then, as it would if the queue filled up. The budget
    /// is looked at before the item is handed over, so that a send that
    /// yields has queued nothing: a caller that drops it then (a timeout,
    /// a `select!`) has not sent the item.
    #[inline]
    fn poll_put<T: Weighed>(
        &self,
        cx: &mut Context<'_>,
        item: &mut Option<T>,
        try_send: impl Fn(T) -> Result<bool, TrySendError<T>>,
    ) -> Poll<Result<(), T>> {
        loop {
            // Given back unspent when dropped without `made_progress`.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let Some(it) = item.take() else {
                // Polled again after it was queued.
                return Poll::Ready(Ok(()));
            };
            match try_send(it) {
                Ok(false) => return Poll::Ready(Ok(())),
                Ok(true) => {
                    coop.made_progress();
                    return Poll::Ready(Ok(()));
                }
                Err(TrySendError::Closed(it)) => return Poll::Ready(Err(it)),
                Err(TrySendError::Full(it)) => {
                    // Registers for room; if room was made (or the queue
                    // closed) between the two locks, try again at once.
                    let room = self.poll_room(cx, it.items(), it.weight());
                    *item = Some(it);
                    if room.is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Ready once there is room for a small item or the queue has closed
    /// (`Err`); else the task is woken when the receiver takes items.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.poll_room(cx, 1, 1)
    }

    /// Waits until there is room for an item of `weight` bytes (or the
    /// queue is empty); `Err` once the queue has closed. Pair it with
    /// [`send_ready`](Self::send_ready).
    pub(crate) async fn room_for(&self, weight: usize) -> Result<(), ()> {
        poll_fn(|cx| self.poll_room(cx, 1, weight)).await
    }

    /// Ready once there is room for `items` items of `weight` bytes (or the
    /// queue is empty), or the queue has closed (`Err`). Waiting for room
    /// for the item at hand, not for any room, is what keeps a large item's
    /// sender from spinning.
    fn poll_room(&self, cx: &mut Context<'_>, items: usize, weight: usize) -> Poll<Result<(), ()>> {
        let mut s = self.inner.lock();
        if s.closed {
            return Poll::Ready(Err(()));
        }
        if s.make_room(items, weight) {
            return Poll::Ready(Ok(()));
        }
        if !s.senders_waiting.iter().any(|w| w.will_wake(cx.waker())) {
            s.senders_waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queues `item` after [`poll_ready`](Self::poll_ready) said there was
    /// room (senders racing for the last places may take the queue a little
    /// past its bound; nothing is refused for that).
    pub(crate) fn send_ready(&self, item: S::Item) -> Result<(), S::Item> {
        self.put_past_bounds(item, put)
    }

    /// Lets `put` queue `item` whatever the bounds say, unless the queue
    /// is closed.
    fn put_past_bounds<T>(
        &self,
        item: T,
        put: impl FnOnce(&Inner<S>, MutexGuard<'_, State<S>>, T) -> bool,
    ) -> Result<(), T> {
        let s = self.inner.lock();
        if s.closed {
            return Err(item);
        }
        put(&self.inner, s, item);
        Ok(())
    }
}

impl<S: Store> Sender<S> {
    /// Hands the item `make` returns to the store if the queue is empty
    /// (and open), past its bounds; false otherwise: for a frame of the
    /// node's own that goes only where nothing else waits (a heartbeat).
    pub(crate) fn put_if_empty(&self, make: impl FnOnce() -> S::Item) -> bool {
        let s = self.inner.lock();
        if s.closed || s.len > 0 {
            return false;
        }
        put(&self.inner, s, make());
        true
    }
}

impl<T: Weighed> Sender<VecDeque<T>> {
    /// Queues items from the front of `items` while they fit, under one
    /// lock; those that do not fit stay in `items`. `Err` if the queue is
    /// closed.
    pub(crate) fn try_send_many(&self, items: &mut VecDeque<T>) -> Result<(), ()> {
        let mut s = self.inner.lock();
        if s.closed {
            return Err(());
        }
        let before = s.len;
        while let Some(front) = items.front() {
            let weight = front.weight();
            if !s.fits(1, weight) {
                break;
            }
            let item = items.pop_front().expect("front checked");
            s.bytes += weight;
            s.len += 1;
            s.store.push_back(item);
        }
        s.recharge();
        let receiver = if s.len > before {
            self.inner.take_receiver(&mut s)
        } else {
            None
        };
        drop(s);
        if let Some(w) = receiver {
            w.wake();
        }
        Ok(())
    }

    /// Queues all of `items`, waiting for room as needed. `Err` if the
    /// queue closed first (what was not queued stays in `items`).
    pub(crate) async fn send_many(&self, items: &mut VecDeque<T>) -> Result<(), ()> {
        loop {
            self.try_send_many(items)?;
            let Some(front) = items.front() else {
                return Ok(());
            };
            let weight = front.weight();
            poll_fn(|cx| self.poll_room(cx, 1, weight)).await?;
        }
    }
}

impl<S: Runs> Sender<S> {
    /// Queues `run` if there is room for all its items.
    pub(crate) fn try_send_run(&self, run: S::Run) -> Result<(), TrySendError<S::Run>> {
        self.try_put(run, put_run).map(drop)
    }

    /// Queues `run`, waiting while there is no room for it. Gives it back
    /// if the queue is closed.
    pub(crate) fn send_run(&self, run: S::Run) -> impl Future<Output = Result<(), S::Run>> + '_ {
        self.send_waiting(run, move |r| self.try_put(r, put_run))
    }

    /// Queues `run` without waiting, past the bounds if need be; gives it
    /// back if the queue is closed.
    pub(crate) fn send_run_now(&self, run: S::Run) -> Result<(), S::Run> {
        self.put_past_bounds(run, put_run)
    }
}

/// Hands `item` to the store; wakes the receiver, if it waits, when the
/// item was queued (after unlocking).
#[inline]
fn put<S: Store>(inner: &Inner<S>, s: MutexGuard<'_, State<S>>, item: S::Item) -> bool {
    put_item(inner, s, item, false)
}

/// As [`put`], and then lets the store write what is queued (see
/// [`Store::write_queued`]); true if it wrote all of it. Only for a sender that spends a unit
/// of its task's budget when it does (see [`Sender::poll_send`]): one that
/// never waits would otherwise never yield.
#[inline]
fn put_writing<S: Store>(inner: &Inner<S>, s: MutexGuard<'_, State<S>>, item: S::Item) -> bool {
    put_item(inner, s, item, true)
}

/// [`put`] or [`put_writing`], as `write` says.
#[inline]
fn put_item<S: Store>(
    inner: &Inner<S>,
    s: MutexGuard<'_, State<S>>,
    item: S::Item,
    write: bool,
) -> bool {
    let (items, weight) = (item.items(), item.weight());
    queued(inner, s, items, weight, write, |store, idle| {
        store.put(item, idle)
    })
}

/// As [`put`], for a run.
fn put_run<S: Runs>(inner: &Inner<S>, s: MutexGuard<'_, State<S>>, run: S::Run) -> bool {
    let (items, weight) = (run.items(), run.weight());
    queued(inner, s, items, weight, false, |store, idle| {
        store.put_run(run, idle)
    })
}

/// Lets `put` hand `items` items weighing `weight` to the store, and counts
/// them if it queued them; then, if `write` and the receiver holds no
/// items it took, lets the store write what is queued. True if it wrote
/// all of it.
#[inline]
fn queued<S: Store>(
    inner: &Inner<S>,
    mut s: MutexGuard<'_, State<S>>,
    items: usize,
    weight: usize,
    write: bool,
    put: impl FnOnce(&mut S, bool) -> bool,
) -> bool {
    let idle = s.len == 0 && s.receiver.is_some();
    if !put(&mut s.store, idle) {
        return false;
    }
    s.bytes += weight;
    s.len += items;
    if write && !s.holding && s.store.write_queued() {
        s.len = 0;
        s.bytes = 0;
        s.recharge();
        // Room made for any sender waiting; the receiver, if it was woken
        // for what was queued, finds the queue empty and waits again.
        wake_senders(s);
        return true;
    }
    s.recharge();
    let receiver = inner.take_receiver(&mut s);
    drop(s);
    if let Some(w) = receiver {
        w.wake();
    }
    false
}

impl<S> Clone for Sender<S> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<S> Drop for Sender<S> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.senders -= 1;
        let receiver = if s.senders == 0 {
            self.inner.take_receiver(&mut s)
        } else {
            None
        };
        drop(s);
        if let Some(w) = receiver {
            w.wake(); // to see the end
        }
    }
}

impl<S> std::fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue::Sender")
    }
}

/// The receiving end.
pub(crate) struct Receiver<S: Store> {
    inner: Arc<Inner<S>>,
}

/// What one take moved out of a store: items and their weight.
pub(crate) struct Taken {
    pub items: usize,
    pub bytes: usize,
}

impl<S: Store> Receiver<S> {
    /// Lets `take` move items out of the store, if it holds any. Ready with
    /// how many it took, or with 0 once the queue is empty and closed or
    /// without senders.
    pub(crate) fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut S) -> Taken,
    ) -> Poll<usize> {
        if self.inner.waiting.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut s = self.inner.lock();
        // Back for more: what it took before is written.
        s.holding = false;
        if s.len > 0 {
            let taken = take(&mut s.store);
            s.holding = taken.items > 0;
            s.len -= taken.items;
            s.bytes -= taken.bytes;
            s.recharge();
            // Senders waiting for room are woken once the queue is down to
            // half its bounds, not at every take: a reader that takes a few
            // items at a time from a full queue would otherwise wake its
            // sender as often, for a few items each time.
            if s.len <= s.cap / 2 && s.bytes <= s.max_bytes / 2 {
                wake_senders(s);
            }
            return Poll::Ready(taken.items);
        }
        if s.closed || s.senders == 0 {
            return Poll::Ready(0);
        }
        match &s.receiver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.receiver = Some(cx.waker().clone()),
        }
        self.inner.waiting.store(true, Ordering::Release);
        Poll::Pending
    }

    /// Items queued now.
    pub(crate) fn depth(&self) -> usize {
        self.inner.lock().len
    }

    /// Lets `f` change the store.
    pub(crate) fn with_store(&mut self, f: impl FnOnce(&mut S)) {
        self.with_room(|store, _| f(store));
    }

    /// Lets `f` change the store, told how many more bytes the node's cap
    /// has room for (all there are, for a queue outside a node): what the
    /// store keeps then (see [`Store::kept`]) is counted against the cap.
    pub(crate) fn with_room(&mut self, f: impl FnOnce(&mut S, usize)) {
        let mut s = self.inner.lock();
        let room = s.node.as_ref().map_or(usize::MAX, |n| n.room());
        f(&mut s.store, room);
        s.recharge();
    }

    /// Refuses further items; those queued can still be taken.
    pub(crate) fn close(&mut self) {
        let mut s = self.inner.lock();
        self.inner.waiting.store(false, Ordering::Release);
        s.closed = true;
        s.store.closed();
        s.recharge();
        wake_senders(s);
    }
}

impl<T: Weighed> Receiver<VecDeque<T>> {
    /// Moves up to `limit` items into `out`. Ready with how many, or with 0
    /// once the queue has ended.
    pub(crate) fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut impl Extend<T>,
        limit: usize,
    ) -> Poll<usize> {
        self.poll_take(cx, |items| {
            let n = limit.min(items.len());
            let mut bytes = 0;
            out.extend(items.drain(..n).inspect(|item| bytes += item.weight()));
            Taken { items: n, bytes }
        })
    }

    /// Waits for items and moves up to `limit` of them into `out`; 0 once
    /// the queue has ended.
    #[cfg(test)]
    pub(crate) async fn recv_many(&mut self, out: &mut Vec<T>, limit: usize) -> usize {
        poll_fn(|cx| self.poll_recv_many(cx, out, limit)).await
    }

    /// The next item, or `None` once the queue has ended.
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<T> {
        let mut one = Vec::with_capacity(1);
        match self.recv_many(&mut one, 1).await {
            0 => None,
            _ => one.pop(),
        }
    }
}

/// What is still queued is dropped with the last handle.
impl<S: Store> Drop for Receiver<S> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Wakes the senders waiting for room (room was made, or the queue closed),
/// after unlocking.
fn wake_senders<S>(mut s: MutexGuard<'_, State<S>>) {
    let waiting = std::mem::take(&mut s.senders_waiting);
    drop(s);
    for w in waiting {
        w.wake();
    }
}

impl<S: Store> std::fmt::Debug for Receiver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::future::Future;
    use std::time::Duration;

    impl Weighed for u32 {
        fn weight(&self) -> usize {
            1
        }
    }

    impl Weighed for (u32, u32) {
        fn weight(&self) -> usize {
            1
        }
    }

    /// A large item that does not fit yet waits for room to be made, on
    /// one thread: a sender that spun instead (there is room for a small
    /// item all along) would never let the receiver run.
    #[tokio::test]
    async fn a_large_item_waits_for_room() {
        let (tx, mut rx) = channel::<VecDeque<Bytes>>(100, 10);
        tx.try_send(Bytes::from_static(&[0; 4])).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move {
            let mut items: VecDeque<Bytes> = [Bytes::from_static(&[1; 8])].into();
            tx2.send_many(&mut items).await.map(|()| items.len())
        });
        let single =
            tokio::spawn(async move { tx.send(Bytes::from_static(&[2; 8])).await.is_ok() });
        tokio::task::yield_now().await;
        let mut got = Vec::new();
        while got.len() < 3 {
            rx.recv_many(&mut got, 1).await;
        }
        assert_eq!(got.iter().map(|b| b.len()).sum::<usize>(), 20);
        assert_eq!(waiting.await.unwrap(), Ok(0));
        assert!(single.await.unwrap());
    }

    /// Two queues under one node's cap: each takes items while the node
    /// is under it, an empty one takes one item past it, and what one
    /// queue gives back is room for the other; a queue gone gives back
    /// all it held.
    #[tokio::test]
    async fn queues_share_the_nodes_cap() {
        use crate::stats::SLAB;
        let node = Arc::new(Queued::default());
        node.set_max(2 * SLAB);
        let item = || Bytes::from(vec![0u8; SLAB]);
        let (a, mut a_rx) = within::<VecDeque<Bytes>>(100, usize::MAX, Some(node.clone()));
        let (b, b_rx) = within::<VecDeque<Bytes>>(100, usize::MAX, Some(node.clone()));
        a.try_send(item()).unwrap();
        a.try_send(item()).unwrap();
        assert_eq!(node.used(), 2 * SLAB);
        assert!(matches!(a.try_send(item()), Err(TrySendError::Full(_))));
        b.try_send(item()).expect("an empty queue takes one item");
        assert!(matches!(b.try_send(item()), Err(TrySendError::Full(_))));
        assert_eq!(node.used(), 3 * SLAB);
        let mut got = Vec::new();
        assert_eq!(a_rx.recv_many(&mut got, 2).await, 2);
        assert_eq!(node.used(), SLAB);
        b.try_send(item()).expect("room made by the other queue");
        drop((b, b_rx));
        assert_eq!(node.used(), 0, "a queue gone is charged nothing");
        // Less than a slab is not counted.
        a.try_send(Bytes::from(vec![0u8; SLAB - 1])).unwrap();
        assert_eq!(node.used(), 0);
    }

    /// A sender waiting for room in a full queue is woken once the
    /// receiver has taken it down to half its bound, not at every take.
    #[test]
    fn waiting_senders_wake_at_half() {
        #[derive(Default)]
        struct Woken(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (tx, mut rx) = channel::<VecDeque<u32>>(4, usize::MAX);
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut send = Box::pin(tx.send(4));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        let count = || woken.0.load(std::sync::atomic::Ordering::Relaxed);
        let mut got = Vec::new();
        let mut rx_cx = Context::from_waker(futures::task::noop_waker_ref());
        assert_eq!(rx.poll_recv_many(&mut rx_cx, &mut got, 1), Poll::Ready(1));
        assert_eq!(count(), 0, "three of four left");
        assert_eq!(rx.poll_recv_many(&mut rx_cx, &mut got, 1), Poll::Ready(1));
        assert_eq!(count(), 1, "down to half");
        assert_eq!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
    }

    /// A receiver waiting on an empty queue looks again without the lock
    /// (a sender holds it here) and still waits; an item queued, the last
    /// sender gone and a close each end the wait.
    #[test]
    fn a_waiting_receiver_looks_again_without_the_lock() {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let (tx, mut rx) = channel::<VecDeque<u32>>(4, usize::MAX);
        let mut got = Vec::new();
        assert!(rx.poll_recv_many(&mut cx, &mut got, 4).is_pending());
        {
            let _held = tx.inner.lock();
            assert!(rx.poll_recv_many(&mut cx, &mut got, 4).is_pending());
        }
        tx.try_send(1).unwrap();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut got, 4), Poll::Ready(1));
        assert!(rx.poll_recv_many(&mut cx, &mut got, 4).is_pending());
        drop(tx);
        assert_eq!(rx.poll_recv_many(&mut cx, &mut got, 4), Poll::Ready(0));

        let (_tx, mut rx) = channel::<VecDeque<u32>>(4, usize::MAX);
        assert!(rx.poll_recv_many(&mut cx, &mut got, 4).is_pending());
        rx.close();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut got, 4), Poll::Ready(0));
    }

    /// A batch goes in as far as it fits; the rest waits for room, in order.
    #[tokio::test]
    async fn batches_fill_the_queue_in_order() {
        let (tx, mut rx) = channel::<VecDeque<u32>>(3, usize::MAX);
        let mut batch: VecDeque<u32> = (0..5).collect();
        tx.try_send_many(&mut batch).unwrap();
        assert_eq!(batch, [3, 4]);
        let sender = tokio::spawn(async move {
            tx.send_many(&mut batch).await.unwrap();
            batch.len()
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            rx.recv_many(&mut got, 2).await;
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(sender.await.unwrap(), 0);
        rx.close();
    }

    /// The byte bound holds back the next item, but never one alone.
    #[tokio::test]
    async fn bounded_by_bytes_but_one_always_fits() {
        let (tx, mut rx) = channel::<VecDeque<Bytes>>(100, 10);
        tx.try_send(Bytes::from_static(&[0; 6])).unwrap();
        tx.try_send(Bytes::from_static(&[0; 4])).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(&[0; 1])),
            Err(TrySendError::Full(_))
        ));
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 1).await, 1);
        tx.try_send(Bytes::from_static(&[0; 6])).unwrap();
        assert_eq!(rx.recv_many(&mut got, 10).await, 2);
        tx.try_send(Bytes::from_static(&[0; 50])).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::new()),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(50));
        tx.try_send(Bytes::new()).unwrap();
    }

    #[tokio::test]
    async fn bounded_in_order_and_closed() {
        let (tx, mut rx) = channel::<VecDeque<u32>>(2, usize::MAX);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 10).await, 2);
        assert_eq!(got, [1, 2]);
        tx.try_send(3).unwrap();
        rx.close();
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
        assert_eq!(tx.send(5).await, Err(5));
        assert_eq!(rx.recv().await, Some(3), "queued before the close");
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel::<VecDeque<u32>>(4, usize::MAX);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx.recv().await)
        });
        tokio::task::yield_now().await;
        drop(tx2);
        assert_eq!(waiter.await.unwrap(), (Some(1), None));
    }

    #[tokio::test]
    async fn a_dropped_receiver_fails_waiting_senders() {
        let (tx, rx) = channel::<VecDeque<u32>>(1, usize::MAX);
        tx.try_send(1).unwrap();
        let blocked = tokio::spawn(async move { tx.send(2).await });
        tokio::task::yield_now().await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), blocked).await;
        assert_eq!(r.expect("woken").unwrap(), Err(2));
    }

    /// Many senders, each waiting for room in turn, with a receiver taking
    /// small batches: every item arrives once, each sender's in its order.
    #[test]
    fn many_senders_on_many_threads() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = channel::<VecDeque<(u32, u32)>>(3, usize::MAX);
            const SENDERS: u32 = 4;
            const EACH: u32 = 20_000;
            for s in 0..SENDERS {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        if i % 2 == 0 {
                            tx.send((s, i)).await.unwrap();
                        } else {
                            let mut item = (s, i);
                            loop {
                                match tx.try_send(item) {
                                    Ok(()) => break,
                                    Err(TrySendError::Full(it)) => {
                                        item = it;
                                        tokio::task::yield_now().await;
                                    }
                                    Err(TrySendError::Closed(_)) => panic!("closed"),
                                }
                            }
                        }
                    }
                });
            }
            drop(tx);
            let mut next = [0u32; SENDERS as usize];
            let mut batch = Vec::new();
            loop {
                batch.clear();
                if rx.recv_many(&mut batch, 2).await == 0 {
                    break;
                }
                for &(s, i) in &batch {
                    assert_eq!(next[s as usize], i, "sender {s} out of order");
                    next[s as usize] += 1;
                }
            }
            assert_eq!(next, [EACH; SENDERS as usize]);
        });
    }
}
