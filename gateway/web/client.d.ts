// Types of the tcpnet-gateway client (client.js beside this file).

/** The client's own error codes (the server's are in PROTOCOL.md). */
export declare const CLIENT_CODES: {
  /** The request was made while reconnecting and the queue was full. */
  readonly QUEUE_FULL: "queue-full";
  /** The request was sent, then the connection was lost before its answer:
   * it may or may not have taken effect. */
  readonly CONNECTION_LOST: "connection-lost";
  /** The client was closed (`close()`), or the server disconnected it. */
  readonly CLOSED: "closed";
};

/**
 * An error from the gateway (a code of PROTOCOL.md) or from the client (one
 * of `CLIENT_CODES`). For a procedure that answered with a named error (code
 * `remote`), `name` is that name and `message` its message.
 */
export declare class GatewayError extends Error {
  /** The error code. */
  readonly code: string;
  /** With `messages-lost`: the channel. */
  readonly channel?: string;
  /** With `messages-lost`: how many were lost. */
  readonly count?: number;
}

/** Who sent a message: a client (`conn`, `key`), or the HTTP API or a
 * backend (only `node`). */
export interface Origin {
  node: string;
  conn?: string;
  key?: string;
}

/** A channel message. */
export interface Message<T = unknown> {
  channel: string;
  from: Origin;
  data: T;
}

/** A member of a channel, on any node. */
export interface Member {
  conn: string;
  key: string;
  node: string;
}

/** A node as `GET /nodes` lists it. */
export interface NodeInfo {
  node: string;
  url: string;
  self: boolean;
  linked_ms?: number;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";
export type ChannelState = "pending" | "subscribed" | "refused" | "closed" | "unsubscribed";

export interface ClientOptions {
  /** The key, sent as the `key` query parameter (default: none; the
   * gateway's key function decides, else the key is the connection id). */
  key?: string;
  /** More gateway nodes to fall back on, beside those of `GET /nodes`. */
  nodes?: string[];
  /** Reconnect backoff: the first delay's ceiling and the largest, in ms
   * (defaults 250 and 10000); each delay is random in the upper half of
   * min(maxDelay, minDelay * 2^attempt). */
  minDelay?: number;
  maxDelay?: number;
  /** An attempt with no welcome after this long is given up (ms, 5000). */
  connectTimeout?: number;
  /** After this long without a frame a ping is sent; after `pingTimeout`
   * more without one the connection is taken as lost (ms, 10000 and 5000). */
  pingInterval?: number;
  pingTimeout?: number;
  /** Requests kept while not connected (500); past it a request rejects
   * at once with `queue-full`. */
  queueLimit?: number;
  /** Messages one channel iterator holds unread (10000); past it new ones
   * are dropped for that iterator and counted in `Channel.lost`. */
  channelBuffer?: number;
  /** Connect in the constructor (true). */
  autoConnect?: boolean;
}

/** What a reconnect restored: the server's answer to each subscribe and to
 * the watch sent again. */
export interface Restored {
  channels: string[];
  refused: { channel: string; code: string; message: string }[];
  keys: { key: string; online: boolean }[];
}

export interface ClientEvents {
  status: { status: Status; previous: Status };
  connect: {
    conn: string;
    node: string;
    key: string;
    url: string;
    reconnected: boolean;
    restored: Restored;
  };
  disconnect: { code: number; reason: string; byServer: boolean; reconnecting: boolean };
  key: { key: string; online: boolean };
  direct: { key: string; from: Origin; data: unknown };
  channelclosed: { channel: string };
  nodes: { nodes: NodeInfo[] };
  error: GatewayError;
}

export interface ChannelEvents {
  message: Message;
  join: { channel: string; member: Member };
  leave: { channel: string; member: Member };
  presence: { channel: string; members: Member[] };
  state: { channel: string; state: ChannelState; previous: ChannelState };
  lost: { channel: string; count: number; where: "server" | "client" };
}

/** A channel subscription; async-iterable over its messages. */
export declare class Channel<T = unknown> implements AsyncIterable<Message<T>> {
  readonly name: string;
  presence: boolean;
  readonly state: ChannelState;
  /** Cluster-wide members by connection id (with `presence: true`). */
  readonly members: Map<string, Member>;
  /** Messages lost (server `messages-lost`, or a full iterator buffer). */
  readonly lost: number;
  /** Messages waiting in this channel's iterators. */
  readonly backlog: number;
  /** Resolves on the first accepted subscribe; rejects if refused. */
  readonly ready: Promise<void>;
  /** Resolves when the channel ends. */
  readonly closed: Promise<{ channel: string; state: ChannelState; error?: GatewayError }>;
  on<E extends keyof ChannelEvents>(type: E, listener: (detail: ChannelEvents[E]) => void): () => void;
  publish(data: T): Promise<void>;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Message<T>>;
}

/** A connection to a tcpnet-gateway cluster that comes back by itself. */
export declare class Client {
  /** @param url a gateway node, http(s):// or ws(s)://, absolute or
   *  relative to the page. */
  constructor(url: string, options?: ClientOptions);
  readonly options: Required<Omit<ClientOptions, "key">> & { key?: string };
  readonly status: Status;
  readonly conn: string | null;
  readonly node: string | null;
  readonly key: string | null;
  /** Base URL of the node connected to (or being tried). */
  readonly url: string;
  /** Gateway nodes known (base URLs). */
  readonly nodes: string[];
  /** Requests waiting for a connection. */
  readonly queued: number;
  /** Watched keys' status. */
  readonly keys: Map<string, boolean>;
  readonly channels: Channel[];
  on<E extends keyof ClientEvents>(type: E, listener: (detail: ClientEvents[E]) => void): () => void;
  connect(): void;
  close(): void;
  subscribe<T = unknown>(channel: string, options?: { presence?: boolean }): Channel<T>;
  unsubscribe(channel: string): Promise<void>;
  channel(name: string): Channel | undefined;
  publish(channel: string, data: unknown): Promise<void>;
  send(key: string, data: unknown): Promise<void>;
  transmit(event: string, data: unknown): Promise<void>;
  invoke<R = unknown>(procedure: string, data: unknown, options?: { timeoutMs?: number }): Promise<R>;
  presence(channel: string): Promise<Member[]>;
  watch(keys: string[]): Promise<void>;
  unwatch(keys: string[]): Promise<void>;
}

/** The reconnect delay of attempt `attempt` (0-based), in ms. */
export declare function backoff(attempt: number, minDelay: number, maxDelay: number): number;
