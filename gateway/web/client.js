// The tcpnet-gateway client: one ES module, no build step, no dependencies.
//
// It speaks the JSON protocol of PROTOCOL.md over a browser WebSocket. On a
// lost connection it reconnects with jittered exponential backoff, first to
// the node it had, then to the other gateway nodes it learned from
// `GET /nodes`, and subscribes its channels and watches its keys again; the
// server's answer to each of those requests is what the `connect` event
// reports as restored. Types: client.d.ts beside this file.

/** The client's own error codes (the server's are in PROTOCOL.md). */
export const CLIENT_CODES = Object.freeze({
  /** The request was made while reconnecting and the queue was full. */
  QUEUE_FULL: "queue-full",
  /** The request was sent, then the connection was lost before its answer:
   * it may or may not have taken effect. */
  CONNECTION_LOST: "connection-lost",
  /** The client was closed (`close()`), or the server disconnected it. */
  CLOSED: "closed",
});

/**
 * An error from the gateway (a code of PROTOCOL.md) or from the client (one
 * of CLIENT_CODES). For a procedure that answered with a named error (code
 * `remote`), `name` is that name and `message` its message.
 */
export class GatewayError extends Error {
  constructor(code, message, fields = {}) {
    super(message);
    this.name = fields.name ?? "GatewayError";
    this.code = code;
    if (fields.channel !== undefined) this.channel = fields.channel;
    if (fields.count !== undefined) this.count = fields.count;
  }

  static fromFrame(frame) {
    return new GatewayError(frame.code, frame.message, frame);
  }
}

const DEFAULTS = Object.freeze({
  key: undefined,
  nodes: [],
  minDelay: 250,
  maxDelay: 10_000,
  connectTimeout: 5_000,
  pingInterval: 10_000,
  pingTimeout: 5_000,
  queueLimit: 500,
  channelBuffer: 10_000,
  autoConnect: true,
});

/** Small typed event emitter: `on(type, fn)` returns the function that
 * removes `fn`. */
class Emitter {
  #listeners = new Map();

  on(type, fn) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(type, detail) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's bug must not break the client's own state.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

/** The base URL (`http(s)://host:port`) of a gateway given as an http(s) or
 * ws(s) URL, absolute or relative to the page. */
function baseUrl(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === "ws:") u.protocol = "http:";
  if (u.protocol === "wss:") u.protocol = "https:";
  return u.origin;
}

/** The delay before reconnect attempt `attempt` (0-based): exponential,
 * capped, with "equal jitter" (a random point in the upper half) so that
 * clients dropped together do not come back together. */
export function backoff(attempt, minDelay, maxDelay) {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * One channel subscription. Async-iterable: each iterator gets every
 * message that arrives after it was made, until the channel ends
 * (unsubscribed, closed by the server, or refused, when the iterator
 * throws the error).
 */
export class Channel extends Emitter {
  #client;
  #consumers = new Set();
  #ended = null;
  #resolveReady;
  #rejectReady;
  #resolveClosed;

  constructor(client, name, presence) {
    super();
    this.#client = client;
    /** The channel's name. */
    this.name = name;
    /** Whether join/leave notices and `members` are kept. */
    this.presence = presence;
    /** `pending`, `subscribed`, `refused`, `closed` (by the server) or
     * `unsubscribed`. */
    this.state = "pending";
    /** Cluster-wide members by connection id (with `presence: true`). */
    this.members = new Map();
    /** Messages lost: dropped by the server for a reader behind
     * (`messages-lost`), or by this client for an iterator whose buffer was
     * full. */
    this.lost = 0;
    /** Resolves when the server first accepted the subscription; rejects
     * with the error if it refused it. */
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {});
    /** Resolves with the reason when the channel ends. */
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** Publishes to this channel. */
  publish(data) {
    return this.#client.publish(this.name, data);
  }

  /** Leaves the channel: the iterators end after what they hold. */
  unsubscribe() {
    return this.#client.unsubscribe(this.name);
  }

  [Symbol.asyncIterator]() {
    const consumer = { buffer: [], wake: null };
    if (this.#ended) {
      consumer.done = true;
    } else {
      this.#consumers.add(consumer);
    }
    const channel = this;
    return {
      next() {
        if (consumer.buffer.length > 0) {
          return Promise.resolve({ value: consumer.buffer.shift(), done: false });
        }
        if (consumer.done || channel.#ended) {
          const error = channel.#ended?.error;
          return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          consumer.wake = () => {
            consumer.wake = null;
            this.next().then(resolve, reject);
          };
        });
      },
      return() {
        consumer.done = true;
        consumer.buffer.length = 0;
        channel.#consumers.delete(consumer);
        consumer.wake?.();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Messages waiting in this channel's iterators, summed. */
  get backlog() {
    let n = 0;
    for (const c of this.#consumers) n += c.buffer.length;
    return n;
  }

  // The client drives the rest.

  _message(message) {
    const limit = this.#client.options.channelBuffer;
    for (const c of this.#consumers) {
      if (c.buffer.length >= limit) {
        this._lost(1, "client");
        continue;
      }
      c.buffer.push(message);
      c.wake?.();
    }
    this.emit("message", message);
  }

  _lost(count, where) {
    this.lost += count;
    this.emit("lost", { channel: this.name, count, where });
  }

  _subscribed() {
    this._setState("subscribed");
    this.#resolveReady();
  }

  _presence(members) {
    this.members = new Map(members.map((m) => [m.conn, m]));
    this.emit("presence", { channel: this.name, members: [...this.members.values()] });
  }

  _join(member) {
    this.members.set(member.conn, member);
    this.emit("join", { channel: this.name, member });
  }

  _leave(member) {
    this.members.delete(member.conn);
    this.emit("leave", { channel: this.name, member });
  }

  /** Ends the channel: `state` says why; `error` makes iterators throw. */
  _end(state, error) {
    if (this.#ended) return;
    this.#ended = { error };
    this._setState(state);
    if (error) this.#rejectReady(error);
    for (const c of this.#consumers) c.wake?.();
    this.#consumers.clear();
    this.#resolveClosed({ channel: this.name, state, error });
  }

  get _ended() {
    return this.#ended !== null;
  }

  _setState(state) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this.emit("state", { channel: this.name, state, previous });
  }
}

/**
 * A connection to a tcpnet-gateway cluster that comes back by itself.
 *
 * ```js
 * import { Client } from "/client.js";
 * const client = new Client(location.origin, { key: "alice" });
 * for await (const msg of client.subscribe("room")) console.log(msg.from.node, msg.data);
 * ```
 */
export class Client extends Emitter {
  #ws = null;
  #urls = [];
  #seeds = [];
  #current = null;
  #failed = new Set();
  #attempt = 0;
  #nextId = 1;
  #pending = new Map();
  #queue = [];
  #channels = new Map();
  #watched = new Set();
  #timer = null;
  #lastHeard = 0;
  #kicked = null;
  #connectedOnce = false;
  /** The current socket is open and welcomed (restoring or open). */
  #welcomed = false;

  /**
   * @param url a gateway node: `http(s)://host:port` or `ws(s)://host:port`,
   *   absolute or relative to the page.
   * @param options see client.d.ts (`ClientOptions`).
   */
  constructor(url, options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.#seeds = [url, ...this.options.nodes].map(baseUrl);
    this.#urls = [...new Set(this.#seeds)];
    this.#current = this.#urls[0];
    /** `connecting`, `open`, `reconnecting` or `closed`. */
    this.status = "closed";
    /** The welcome's connection id, node id and key (null before). */
    this.conn = null;
    this.node = null;
    this.key = null;
    /** Base URL of the node connected to (or being tried). */
    this.url = this.#current;
    /** Watched keys' status: key -> online (true/false). */
    this.keys = new Map();
    if (this.options.autoConnect) this.connect();
  }

  /** The gateway nodes known (base URLs), learned from `GET /nodes`. */
  get nodes() {
    return [...this.#urls];
  }

  /** Requests queued while not connected. */
  get queued() {
    return this.#queue.length;
  }

  /** Connects (again, after `close()` or a disconnect by the server). */
  connect() {
    if (this.status === "open" || this.status === "connecting" || this.status === "reconnecting") {
      return;
    }
    this.#kicked = null;
    this.#attempt = 0;
    this.#setStatus("connecting");
    this.#open();
  }

  /** Closes for good: queued and unanswered requests reject with `closed`,
   * channels end as `unsubscribed`. */
  close() {
    this.#stop();
    const error = new GatewayError(CLIENT_CODES.CLOSED, "the client was closed");
    this.#failQueue(error);
    for (const ch of this.#channels.values()) ch._end("unsubscribed");
    this.#channels.clear();
    this.#watched.clear();
    this.#setStatus("closed");
  }

  /**
   * Subscribes to a channel (again after every reconnect). Returns the same
   * Channel for a channel already subscribed, with `presence` updated.
   */
  subscribe(name, { presence = false } = {}) {
    let ch = this.#channels.get(name);
    if (ch && !ch._ended) {
      if (presence && !ch.presence) {
        ch.presence = true;
        if (this.#welcomed) this.#restoreChannel(ch).catch(() => {});
      }
      return ch;
    }
    ch = new Channel(this, name, presence);
    this.#channels.set(name, ch);
    if (this.#welcomed) this.#restoreChannel(ch).catch(() => {});
    return ch;
  }

  /** Leaves a channel; its iterators end. */
  async unsubscribe(name) {
    const ch = this.#channels.get(name);
    this.#channels.delete(name);
    ch?._end("unsubscribed");
    if (this.#welcomed) {
      await this.#request({ type: "unsubscribe", channel: name }, true).catch((e) => {
        if (e.code !== "not-subscribed") throw e;
      });
    }
  }

  /** The Channel of a subscribed channel, if any. */
  channel(name) {
    return this.#channels.get(name);
  }

  /** Subscribed channels. */
  get channels() {
    return [...this.#channels.values()];
  }

  /** Publishes to a channel, cluster-wide (no subscription needed). */
  publish(channel, data) {
    return this.#request({ type: "publish", channel, data });
  }

  /** Sends to every connection of a key, on every node. */
  send(key, data) {
    return this.#request({ type: "send", key, data });
  }

  /** Transmits a named event to the server's receivers. */
  transmit(event, data) {
    return this.#request({ type: "transmit", event, data });
  }

  /** Calls a procedure; resolves with its answer, rejects with its named
   * error (`error.name`, code `remote`) or the gateway's. */
  invoke(procedure, data, { timeoutMs } = {}) {
    const frame = { type: "invoke", procedure, data };
    if (timeoutMs !== undefined) frame.timeout_ms = timeoutMs;
    return this.#request(frame);
  }

  /** Who is in a channel, cluster-wide. */
  presence(channel) {
    return this.#request({ type: "presence", channel });
  }

  /** Watches keys' status (`key` events, `keys` map), again after every
   * reconnect. Resolves once the server has said their status (at the next
   * connect when not connected now). */
  watch(keys) {
    const fresh = keys.filter((k) => !this.#watched.has(k));
    for (const k of fresh) this.#watched.add(k);
    if (fresh.length === 0 || this.status === "closed") return Promise.resolve();
    if (this.#welcomed) return this.#request({ type: "watch", keys: fresh }, true);
    return new Promise((resolve) => {
      const off = this.on("connect", () => {
        off();
        resolve();
      });
    });
  }

  /** Stops watching keys. */
  async unwatch(keys) {
    for (const k of keys) {
      this.#watched.delete(k);
      this.keys.delete(k);
    }
    if (this.#welcomed) await this.#request({ type: "unwatch", keys }, true);
  }

  // Connection handling.

  #setStatus(status) {
    if (this.status === status) return;
    const previous = this.status;
    this.status = status;
    this.emit("status", { status, previous });
  }

  /** Opens a WebSocket to the current candidate node. */
  #open() {
    const url = new URL("/ws", this.#current);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.options.key !== undefined) url.searchParams.set("key", this.options.key);
    this.url = this.#current;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.#lost(null, 1006, String(e), false);
      return;
    }
    this.#ws = ws;
    let welcomed = false;
    const giveUp = setTimeout(() => {
      if (!welcomed) ws.close();
    }, this.options.connectTimeout);
    ws.onmessage = (event) => {
      this.#lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        this.emit("error", new GatewayError("bad-json", `the server sent something not JSON: ${event.data}`));
        return;
      }
      if (!welcomed) {
        if (frame.type !== "welcome") return;
        welcomed = true;
        clearTimeout(giveUp);
        this.#welcome(frame);
        return;
      }
      this.#frame(frame);
    };
    ws.onclose = (event) => {
      clearTimeout(giveUp);
      if (this.#ws === ws) this.#lost(ws, event.code, event.reason, welcomed);
    };
  }

  /** After the welcome: restore the channels and keys, then flush the
   * queue, then say `connect`. */
  async #welcome(frame) {
    const ws = this.#ws;
    this.conn = frame.conn;
    this.node = frame.node;
    this.key = frame.key;
    this.#failed.clear();
    this.#attempt = 0;
    this.#lastHeard = Date.now();
    this.#startPing();
    this.#refreshNodes();
    this.#welcomed = true;
    const channels = [...this.#channels.values()];
    const keys = [...this.#watched];
    const results = await Promise.allSettled([
      ...channels.map((ch) => this.#restoreChannel(ch)),
      keys.length > 0 ? this.#request({ type: "watch", keys }, true) : Promise.resolve(),
    ]);
    if (this.#ws !== ws) return;
    const restored = { channels: [], refused: [], keys: [] };
    channels.forEach((ch, i) => {
      const r = results[i];
      if (r.status === "fulfilled") restored.channels.push(ch.name);
      else restored.refused.push({ channel: ch.name, code: r.reason.code, message: r.reason.message });
    });
    if (results.at(-1).status === "fulfilled") {
      restored.keys = keys.map((key) => ({ key, online: this.keys.get(key) ?? false }));
    }
    const queue = this.#queue;
    this.#queue = [];
    this.#setStatus("open");
    for (const q of queue) this.#sendRequest(q);
    const reconnected = this.#connectedOnce;
    this.#connectedOnce = true;
    this.emit("connect", {
      conn: this.conn,
      node: this.node,
      key: this.key,
      url: this.url,
      reconnected,
      restored,
    });
  }

  /** Subscribes `ch` on the current connection (presence snapshot after). */
  async #restoreChannel(ch) {
    try {
      await this.#request({ type: "subscribe", channel: ch.name, presence: ch.presence }, true);
    } catch (e) {
      if (e.code !== CLIENT_CODES.CONNECTION_LOST) {
        this.#channels.delete(ch.name);
        ch._end("refused", e);
      }
      throw e;
    }
    ch._subscribed();
    if (ch.presence) {
      this.#request({ type: "presence", channel: ch.name }, true)
        .then((members) => ch._presence(members))
        .catch(() => {});
    }
  }

  /** Learns the gateway nodes from the node connected to. */
  async #refreshNodes() {
    try {
      const r = await fetch(new URL("/nodes", this.#current), { cache: "no-store" });
      if (!r.ok) return;
      const body = await r.json();
      const urls = body.nodes.map((n) => baseUrl(n.url));
      this.#urls = [...new Set([...urls, ...this.#seeds])];
      this.emit("nodes", { nodes: body.nodes });
    } catch {
      // A node list is a help, not a need: the ones known still serve.
    }
  }

  #startPing() {
    clearInterval(this.#timer);
    const { pingInterval, pingTimeout } = this.options;
    const tick = Math.max(100, Math.min(pingInterval, pingTimeout) / 2);
    let pinged = 0;
    this.#timer = setInterval(() => {
      const quiet = Date.now() - this.#lastHeard;
      if (quiet > pingInterval + pingTimeout) {
        // Nothing heard, not even the ping's answer: the node or the path
        // to it is gone.
        this.#ws?.close();
        this.#lost(this.#ws, 1006, "no answer to ping", true);
      } else if (quiet > pingInterval && Date.now() - pinged > pingInterval) {
        pinged = Date.now();
        this.#request({ type: "ping" }, true).catch(() => {});
      }
    }, tick);
  }

  /** A connection ended (or failed to open): reconnect unless told not to. */
  #lost(ws, code, reason, wasOpen) {
    if (ws) {
      ws.onmessage = ws.onclose = null;
    }
    this.#ws = null;
    this.#welcomed = false;
    clearInterval(this.#timer);
    const error = new GatewayError(CLIENT_CODES.CONNECTION_LOST, `the connection was lost (${code} ${reason})`);
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    for (const ch of this.#channels.values()) ch._setState("pending");
    const kicked = this.#kicked;
    if (kicked !== null) {
      this.#failQueue(new GatewayError(CLIENT_CODES.CLOSED, `disconnected by the server: ${kicked}`));
      this.#setStatus("closed");
      this.emit("disconnect", { code, reason: kicked, byServer: true, reconnecting: false });
      return;
    }
    if (this.status === "closed") return;
    if (wasOpen) {
      this.emit("disconnect", { code, reason, byServer: false, reconnecting: true });
    } else {
      this.#failed.add(this.#current);
    }
    this.#setStatus(this.#connectedOnce ? "reconnecting" : "connecting");
    const delay = backoff(this.#attempt++, this.options.minDelay, this.options.maxDelay);
    this.#current = this.#pick();
    setTimeout(() => {
      if (this.status === "reconnecting" || this.status === "connecting") this.#open();
    }, delay);
  }

  /** The next node to try: the one we had unless it just failed, else a
   * random one of the others that has not failed since the last success. */
  #pick() {
    if (!this.#failed.has(this.#current)) return this.#current;
    let candidates = this.#urls.filter((u) => !this.#failed.has(u));
    if (candidates.length === 0) {
      this.#failed.clear();
      candidates = this.#urls.filter((u) => u !== this.#current);
      if (candidates.length === 0) candidates = this.#urls;
    }
    return candidates[Math.floor(Math.random() * candidates.length)];
  }

  #stop() {
    clearInterval(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      ws.close(1000, "closed by the client");
    }
  }

  #failQueue(error) {
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    for (const q of this.#queue) q.reject(error);
    this.#queue = [];
  }

  // Requests.

  /** Sends a request with an id; resolves with its answer. `internal`
   * requests (restoring, pings) go out only on an open socket and are not
   * queued. */
  #request(frame, internal = false) {
    return new Promise((resolve, reject) => {
      const q = { frame, resolve, reject };
      if (internal) {
        if (this.#welcomed && this.#ws?.readyState === WebSocket.OPEN) this.#sendRequest(q);
        else reject(new GatewayError(CLIENT_CODES.CONNECTION_LOST, "not connected"));
      } else if (this.status === "open") {
        this.#sendRequest(q);
      } else if (this.status === "closed") {
        reject(new GatewayError(CLIENT_CODES.CLOSED, "the client is closed: call connect()"));
      } else if (this.#queue.length >= this.options.queueLimit) {
        reject(
          new GatewayError(
            CLIENT_CODES.QUEUE_FULL,
            `${this.#queue.length} requests already wait for the connection, the most allowed`,
          ),
        );
      } else {
        this.#queue.push(q);
      }
    });
  }

  #sendRequest(q) {
    const id = this.#nextId++;
    this.#pending.set(id, q);
    this.#ws.send(JSON.stringify({ ...q.frame, id }));
  }

  #answer(id, settle) {
    const p = this.#pending.get(id);
    if (!p) return false;
    this.#pending.delete(id);
    settle(p);
    return true;
  }

  /** One server frame after the welcome. */
  #frame(f) {
    switch (f.type) {
      case "ok":
      case "pong":
        this.#answer(f.id, (p) => p.resolve());
        return;
      case "result":
        this.#answer(f.id, (p) => p.resolve(f.data));
        return;
      case "presence":
        if (f.id !== undefined) this.#answer(f.id, (p) => p.resolve(f.members));
        return;
      case "error": {
        const error = GatewayError.fromFrame(f);
        if (f.id !== undefined && this.#answer(f.id, (p) => p.reject(error))) return;
        if (f.code === "messages-lost") this.#channels.get(f.channel)?._lost(f.count, "server");
        this.emit("error", error);
        return;
      }
      case "message":
        this.#channels.get(f.channel)?._message({ channel: f.channel, from: f.from, data: f.data });
        return;
      case "direct":
        this.emit("direct", { key: f.key, from: f.from, data: f.data });
        return;
      case "status":
        if (!this.#watched.has(f.key)) return;
        this.keys.set(f.key, f.online);
        this.emit("key", { key: f.key, online: f.online });
        return;
      case "join":
        this.#channels.get(f.channel)?._join(f.member);
        return;
      case "leave":
        this.#channels.get(f.channel)?._leave(f.member);
        return;
      case "channel-closed": {
        const ch = this.#channels.get(f.channel);
        this.#channels.delete(f.channel);
        ch?._end("closed");
        this.emit("channelclosed", { channel: f.channel });
        return;
      }
      case "disconnected":
        this.#kicked = f.reason;
        return;
      default:
        // A newer server's frame: not an error for an older client.
        return;
    }
  }
}
