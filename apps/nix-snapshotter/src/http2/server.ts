import { createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { encodeFields, type Field, HpackDecoder, HpackError, sendable } from "./hpack.js";

/**
 * A small HTTP/2 server (RFC 9113, cleartext with prior knowledge) for the daemon's gRPC: one
 * object per connection parsing frames off a `net.Socket`, no stream objects beyond a plain
 * record per request, and every answer's frames (headers, data, trailers) written to the socket
 * in one write when the peer's windows allow it. Not implemented: TLS, the HTTP/1.1 upgrade,
 * server push, priorities (PRIORITY is read and ignored). See
 * docs/decisions/2026-12-06-http2-transport.md.
 */

/** Frame types. */
const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;

/** Flags. */
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;

/** Error codes (RFC 9113 7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** Settings identifiers. */
const SETTINGS_HEADER_TABLE_SIZE = 0x1;
const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const maxWindow = 2 ** 31 - 1;

/** What the server advertises and enforces. */
export const limits = {
  /** Streams open at once per connection; more are refused with REFUSED_STREAM. */
  maxConcurrentStreams: 128,
  /** Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE). */
  streamWindow: 1024 * 1024,
  /** The connection's receive window (raised from 65,535 by a WINDOW_UPDATE at the start). */
  connectionWindow: 16 * 1024 * 1024,
  /** SETTINGS_MAX_FRAME_SIZE: the protocol's minimum, the largest frame read. */
  maxFrameSize: 16_384,
  /** SETTINGS_MAX_HEADER_LIST_SIZE (decoded: names, values and 32 per field). */
  maxHeaderListSize: 64 * 1024,
  /** Largest header block (HEADERS and its CONTINUATIONs, compressed) read. */
  maxHeaderBlock: 64 * 1024,
  /** CONTINUATION frames of one header block. */
  maxContinuations: 64,
  /** Our SETTINGS_HEADER_TABLE_SIZE (the default, not sent). */
  headerTableSize: 4096,
  /** Time for a client to send the connection preface. */
  prefaceTimeoutMs: 10_000,
  /** Bytes queued on the socket beyond which nothing more is sent (the peer does not read). */
  socketHighWater: 256 * 1024,
  /** Queued bytes the peer's not reading may make us hold before the connection is dropped. */
  maxSocketBacklog: 4 * 1024 * 1024,
  /** A stream's queued outgoing data above which `write` says wait. */
  streamHighWater: 64 * 1024,
  /** Resets by the client of streams still open: a burst of this many at most... */
  resetBurst: 200,
  /** ...refilled at this rate per second, beyond which: GOAWAY ENHANCE_YOUR_CALM. */
  resetsPerSecond: 100,
  /**
   * PING and SETTINGS frames: the same kind of budget. grpc-go pings once per answer it reads
   * (its bandwidth estimator) while no ping is outstanding: thousands a second from a busy
   * client are legitimate.
   */
  controlBurst: 10_000,
  controlPerSecond: 10_000,
  /**
   * Longest a PING ACK waits for an answer being prepared, to go out in the same write, ahead
   * of it (one socket write and one wakeup of the client per call instead of two: grpc-go pings
   * after each answer it reads). 0: PING ACKs are never held.
   */
  pingAckHoldMs: 5,
};

/** Request headers as node:http2 gives them: one string per name (repeats joined by ", "). */
export type RequestHeaders = Record<string, string>;

/** Response headers or trailers: values are stringified; invalid fields are not sent. */
export type ResponseFields = Record<string, string | number | readonly string[] | undefined>;

/** A connection-level error: GOAWAY with `code`, then the socket is closed. */
class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** A budget refilled over time (rapid reset, control frame floods). */
class Budget {
  private tokens: number;
  private last = performance.now();
  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
  ) {
    this.tokens = burst;
  }
  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSecond) / 1000);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

type Outgoing = { data: Buffer } | { trailers: Buffer };

/** One request stream. The gRPC layer sets the `on*` callbacks and calls the answer methods. */
export class ServerStream {
  /** Called with each chunk of the request body. */
  ondata: ((chunk: Buffer) => void) | undefined;
  /** Called when the request body ended (END_STREAM). */
  onend: (() => void) | undefined;
  /** Called once when the stream ends before the answer was complete (reset, connection lost). */
  onclose: (() => void) | undefined;
  /** Called when queued outgoing data went below the high-water mark again. */
  ondrain: (() => void) | undefined;

  headersSent = false;
  /** END_STREAM received from the client. */
  remoteEnded = false;
  /** Our END_STREAM queued (trailers) or the stream reset: nothing more may be sent. */
  localEnded = false;
  /** Reset, or the connection is gone. */
  destroyed = false;

  /** @internal */ recvWindow: number;
  /** @internal */ sendWindow: number;
  /** @internal */ queue: Outgoing[] = [];
  /** @internal */ queued = 0;
  /** @internal */ unacked = 0;

  constructor(
    readonly id: number,
    readonly headers: RequestHeaders,
    private readonly connection: Connection,
  ) {
    this.recvWindow = limits.streamWindow;
    this.sendWindow = connection.peerInitialWindow;
  }

  /** Nothing more can be sent (answered, reset or gone). */
  get closed(): boolean {
    return this.localEnded || this.destroyed;
  }

  /**
   * The whole answer: headers, one DATA payload (may be absent) and trailers, written together.
   */
  answer(headers: ResponseFields, body: Buffer | undefined, trailers: ResponseFields): void {
    if (this.closed) return;
    this.headersSent = true;
    this.connection.sendHeaders(this, headerBlock(headers), false);
    if (body !== undefined && body.byteLength > 0) this.queue.push({ data: body });
    this.queued += body?.byteLength ?? 0;
    this.queue.push({ trailers: headerBlock(trailers) });
    this.localEnded = true;
    this.connection.pump(this);
    this.connection.flush();
  }

  /** Headers only (a server stream's first message follows with `write`). */
  respond(headers: ResponseFields): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    this.connection.sendHeaders(this, headerBlock(headers), false);
    this.connection.flush();
  }

  /** A trailers-only answer (headers with END_STREAM). */
  respondAndEnd(fields: ResponseFields): void {
    if (this.closed) return;
    this.headersSent = true;
    this.localEnded = true;
    this.connection.sendHeaders(this, headerBlock(fields), true);
    this.connection.flush();
  }

  /** Queues `data`; false when the caller should wait for `ondrain`. */
  write(data: Buffer): boolean {
    if (this.closed) return false;
    if (data.byteLength > 0) {
      this.queue.push({ data });
      this.queued += data.byteLength;
      this.connection.pump(this);
      this.connection.flush();
    }
    return this.queued < limits.streamHighWater;
  }

  /** Trailers with END_STREAM, after the queued data. */
  end(trailers: ResponseFields): void {
    if (this.closed) return;
    this.queue.push({ trailers: headerBlock(trailers) });
    this.localEnded = true;
    this.connection.pump(this);
    this.connection.flush();
  }
}

/** Encoded blocks of frozen field sets (the same answer headers and trailers on every call). */
const frozenBlocks = new WeakMap<ResponseFields, Buffer>();

/**
 * Header block of `fields`: `:status` first, names lowercased, unsendable fields left out. A
 * frozen object is encoded once.
 */
function headerBlock(fields: ResponseFields): Buffer {
  if (!Object.isFrozen(fields)) return encodeBlock(fields);
  let block = frozenBlocks.get(fields);
  if (block === undefined) {
    block = encodeBlock(fields);
    frozenBlocks.set(fields, block);
  }
  return block;
}

function encodeBlock(fields: ResponseFields): Buffer {
  const list: Array<readonly [string, string]> = [];
  const status = fields[":status"];
  if (status !== undefined) list.push([":status", String(status)]);
  for (const name in fields) {
    if (name === ":status") continue;
    const value = fields[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    const values = Array.isArray(value) ? value : [String(value)];
    for (const item of values) if (sendable(lower, item)) list.push([lower, item]);
  }
  return encodeFields(list);
}

/** Pseudo-headers a request may carry. */
const requestPseudo = new Set([":method", ":scheme", ":path", ":authority"]);
/** Connection-specific fields, malformed in HTTP/2 (RFC 9113 8.2.2). */
const connectionSpecific = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

/** A field name: a lowercase token, or a pseudo-header's (RFC 9113 8.2.1). */
const fieldName = /^:?[a-z0-9!#$%&'*+\-.^_`|~]+$/;
/** A field value: no NUL, CR or LF, no leading or trailing whitespace (RFC 9113 8.2.1). */
const fieldValue = /^(?![ \t])[^\0\r\n]*(?<![ \t])$/;

/**
 * The request's fields as {@link RequestHeaders}, or undefined when malformed (RFC 9113 8.2,
 * 8.3.1): uppercase names, pseudo-headers after fields, unknown or repeated pseudo-headers,
 * missing :method/:scheme/:path, connection-specific fields, `te` other than "trailers".
 */
function requestHeaders(fields: Field[]): RequestHeaders | undefined {
  const headers: RequestHeaders = Object.create(null);
  let regular = false;
  for (const [name, value] of fields) {
    if (!fieldName.test(name) || !fieldValue.test(value)) return undefined;
    if (name.startsWith(":")) {
      if (regular || !requestPseudo.has(name) || name in headers) return undefined;
      headers[name] = value;
      continue;
    }
    regular = true;
    if (connectionSpecific.has(name)) return undefined;
    if (name === "te" && value !== "trailers") return undefined;
    const previous = headers[name];
    headers[name] = previous === undefined ? value : `${previous}, ${value}`;
  }
  if (headers[":method"] === undefined || headers[":path"] === undefined) return undefined;
  if (headers[":scheme"] === undefined) return undefined;
  if (headers[":path"] === "") return undefined;
  return headers;
}

function frameHeader(length: number, type: number, flags: number, stream: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return header;
}

export interface ConnectionHandlers {
  /** A new request stream with its headers (after END_HEADERS). */
  stream(stream: ServerStream): void;
  /** The connection is closed (all its streams are gone). */
  close(connection: Connection): void;
  /** Connection errors, for debug logging. */
  error?: ((error: Error) => void) | undefined;
}

/** One client connection. */
export class Connection {
  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow = 65_535;
  private peerMaxFrameSize = 16_384;
  private sendWindow = 65_535;
  private recvWindow = limits.connectionWindow;
  private recvUnacked = 0;

  private readonly streams = new Map<number, ServerStream>();
  /** Streams with queued data waiting for a window. */
  private readonly blocked = new Set<ServerStream>();
  /** The last stream taken (named in our GOAWAY). */
  private lastStreamId = 0;
  /** The highest stream id opened by the client, taken or not (streams above it are idle). */
  private highestStreamId = 0;
  private readonly decoder = new HpackDecoder({ maxTableSize: limits.headerTableSize });

  private input: Buffer = Buffer.alloc(0);
  private prefaceSeen = false;
  private prefaceTimer: NodeJS.Timeout | undefined;
  private out: Buffer[] = [];
  /** `out` holds PING ACKs and nothing else (what may wait for an answer's write). */
  private outPingAcksOnly = true;
  /** `out` holds PING ACKs waiting for an answer to share its write. */
  private held = false;
  /**
   * A timer is armed that flushes held PING ACKs when it fires: one per hold period at most,
   * never cleared (a timer set and cleared per call cost more than the write it saves).
   */
  private holdArmed = false;
  private receiving = false;
  private goawaySent = false;
  private peerGoaway = false;
  private closed = false;

  /** A header block being read (HEADERS without END_HEADERS, then CONTINUATIONs). */
  private block:
    | { stream: number; endStream: boolean; parts: Buffer[]; size: number; frames: number }
    | undefined;

  private readonly resets = new Budget(limits.resetBurst, limits.resetsPerSecond);
  private readonly control = new Budget(limits.controlBurst, limits.controlPerSecond);

  constructor(
    private readonly socket: Socket,
    private readonly handlers: ConnectionHandlers,
  ) {
    socket.setNoDelay?.(true);
    // Server preface: our SETTINGS, then the connection window raised.
    const settings = Buffer.allocUnsafe(6 * 5);
    [
      [SETTINGS_ENABLE_PUSH, 0],
      [SETTINGS_MAX_CONCURRENT_STREAMS, limits.maxConcurrentStreams],
      [SETTINGS_INITIAL_WINDOW_SIZE, limits.streamWindow],
      [SETTINGS_MAX_FRAME_SIZE, limits.maxFrameSize],
      [SETTINGS_MAX_HEADER_LIST_SIZE, limits.maxHeaderListSize],
    ].forEach(([id, value], index) => {
      settings.writeUInt16BE(id!, index * 6);
      settings.writeUInt32BE(value!, index * 6 + 2);
    });
    this.frame(SETTINGS, 0, 0, settings);
    this.windowUpdate(0, limits.connectionWindow - 65_535);
    this.flush();
    this.prefaceTimer = setTimeout(() => {
      if (!this.prefaceSeen) this.destroy();
    }, limits.prefaceTimeoutMs);
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("drain", () => this.resume());
    socket.on("error", (error) => this.handlers.error?.(error));
    socket.on("close", () => this.gone());
  }

  /** Streams open now. */
  get activeStreams(): number {
    return this.streams.size;
  }

  /**
   * Graceful close: GOAWAY(NO_ERROR) naming the last stream taken; the socket ends once the
   * streams taken have been answered.
   */
  shutdown(): void {
    if (this.closed) return;
    if (!this.goawaySent) this.goaway(ErrorCode.NO_ERROR, "");
    this.flush();
    this.maybeEnd();
  }

  /** Closes the socket at once; open streams are cancelled. */
  destroy(): void {
    this.socket.destroy();
  }

  private gone(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.prefaceTimer !== undefined) clearTimeout(this.prefaceTimer);
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.blocked.clear();
    for (const stream of streams) this.lose(stream);
    this.handlers.close(this);
  }

  /** The stream ends without its answer complete: its onclose, once. */
  private lose(stream: ServerStream): void {
    if (stream.destroyed) return;
    const complete = stream.localEnded && stream.queue.length === 0;
    stream.destroyed = true;
    stream.queue = [];
    stream.queued = 0;
    if (!complete) stream.onclose?.();
    // A writer waiting for drain learns that the stream is gone.
    stream.ondrain?.();
  }

  private maybeEnd(): void {
    if ((this.goawaySent || this.peerGoaway) && this.streams.size === 0 && !this.closed) {
      this.flush();
      this.socket.end(() => this.socket.destroy());
    }
  }

  // ---- output -------------------------------------------------------------------------------

  private frame(type: number, flags: number, stream: number, payload?: Buffer): void {
    if (type !== PING || flags !== ACK) this.outPingAcksOnly = false;
    this.out.push(frameHeader(payload?.byteLength ?? 0, type, flags, stream));
    if (payload !== undefined && payload.byteLength > 0) this.out.push(payload);
  }

  private windowUpdate(stream: number, increment: number): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(increment, 0);
    this.frame(WINDOW_UPDATE, 0, stream, payload);
  }

  private rst(stream: number, code: number): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(code, 0);
    this.frame(RST_STREAM, 0, stream, payload);
  }

  private goaway(code: number, debug: string): void {
    this.goawaySent = true;
    const text = Buffer.from(debug.slice(0, 256), "utf8");
    const payload = Buffer.allocUnsafe(8 + text.byteLength);
    payload.writeUInt32BE(this.lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    text.copy(payload, 8);
    this.frame(GOAWAY, 0, 0, payload);
  }

  /** Writes what was queued in one write (after the input being read, when reading). */
  flush(): void {
    if (this.receiving || this.out.length === 0 || this.closed) return;
    const chunk = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
    this.out = [];
    this.outPingAcksOnly = true;
    this.held = false;
    this.socket.write(chunk);
    if (this.socket.writableLength > limits.maxSocketBacklog) {
      this.handlers.error?.(new Error("the peer does not read its answers; dropping it"));
      this.socket.destroy();
    }
  }

  /** @internal HEADERS (+ CONTINUATION when larger than the peer's frame size). */
  sendHeaders(stream: ServerStream, block: Buffer, endStream: boolean): void {
    let offset = 0;
    let type = HEADERS;
    do {
      const size = Math.min(this.peerMaxFrameSize, block.byteLength - offset);
      const last = offset + size >= block.byteLength;
      const flags = (last ? END_HEADERS : 0) | (type === HEADERS && endStream ? END_STREAM : 0);
      this.frame(type, flags, stream.id, block.subarray(offset, offset + size));
      offset += size;
      type = CONTINUATION;
    } while (offset < block.byteLength);
    if (endStream) this.finished(stream);
  }

  /** @internal Sends what the windows allow of `stream`'s queue. */
  pump(stream: ServerStream): void {
    if (stream.destroyed) return;
    if (this.socket.writableLength > limits.socketHighWater) {
      this.blocked.add(stream);
      return;
    }
    while (stream.queue.length > 0) {
      const item = stream.queue[0]!;
      if ("trailers" in item) {
        stream.queue.shift();
        this.sendHeaders(stream, item.trailers, true);
        this.blocked.delete(stream);
        return;
      }
      const allowed = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrameSize);
      if (allowed <= 0) {
        this.blocked.add(stream);
        return;
      }
      const { data } = item;
      const size = Math.min(allowed, data.byteLength);
      this.frame(DATA, 0, stream.id, data.subarray(0, size));
      stream.sendWindow -= size;
      this.sendWindow -= size;
      stream.queued -= size;
      if (size === data.byteLength) stream.queue.shift();
      else item.data = data.subarray(size);
    }
    this.blocked.delete(stream);
    if (stream.queued < limits.streamHighWater) stream.ondrain?.();
  }

  /** Windows grew or the socket drained: blocked streams go on. */
  private resume(): void {
    for (const stream of [...this.blocked]) this.pump(stream);
    this.flush();
  }

  /** Our END_STREAM went out: the stream is done on our side. */
  private finished(stream: ServerStream): void {
    stream.localEnded = true;
    if (!stream.remoteEnded) {
      // The rest of the request is not wanted (a refused call): RST_STREAM(NO_ERROR).
      this.rst(stream.id, ErrorCode.NO_ERROR);
    }
    this.streams.delete(stream.id);
    this.maybeEndSoon();
  }

  private maybeEndSoon(): void {
    if ((this.goawaySent || this.peerGoaway) && this.streams.size === 0) {
      queueMicrotask(() => this.maybeEnd());
    }
  }

  // ---- input --------------------------------------------------------------------------------

  private receive(chunk: Buffer): void {
    if (this.closed || this.closedForInput) return;
    this.input = this.input.byteLength === 0 ? chunk : Buffer.concat([this.input, chunk]);
    this.receiving = true;
    try {
      this.parse();
    } catch (error) {
      if (error instanceof ConnectionError) {
        this.handlers.error?.(error);
        this.fatal(error.code, error.message);
      } else if (error instanceof HpackError) {
        this.handlers.error?.(error);
        this.fatal(ErrorCode.COMPRESSION_ERROR, error.message);
      } else {
        this.handlers.error?.(error as Error);
        this.fatal(ErrorCode.INTERNAL_ERROR, "internal error");
      }
      return;
    } finally {
      this.receiving = false;
    }
    // What reading queued (PING and SETTINGS ACKs, WINDOW_UPDATEs, refusals) goes out after the
    // calls it started had their turn in this loop iteration: an answer ready by then (a call
    // that needs no I/O) shares its write.
    if (this.out.length > 0 && !this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.deferredFlush);
    }
  }

  private flushQueued = false;
  private readonly deferredFlush = () => {
    this.flushQueued = false;
    if (this.out.length === 0) return;
    // PING ACKs alone (grpc-go pings after each answer it reads, with its next request) wait for
    // an answer being prepared, a bounded time, to share its write; anything else goes now.
    // An armed timer fires within the bound; otherwise one is armed.
    if (this.outPingAcksOnly && limits.pingAckHoldMs > 0 && (this.held || this.answerPending())) {
      this.held = true;
      if (!this.holdArmed) {
        this.holdArmed = true;
        setTimeout(this.holdOver, limits.pingAckHoldMs).unref();
      }
      return;
    }
    this.flush();
  };

  private readonly holdOver = () => {
    this.holdArmed = false;
    if (this.held) this.flush();
  };

  /**
   * A stream whose request was read and whose answer has not started (a server stream that is
   * sending does not hold PING ACKs: grpc-go's window sizing times them).
   */
  private answerPending(): boolean {
    for (const stream of this.streams.values()) {
      if (stream.remoteEnded && !stream.headersSent && !stream.destroyed) return true;
    }
    return false;
  }

  /** GOAWAY with `code`, then the socket is closed. */
  private fatal(code: number, message: string): void {
    this.receiving = false;
    this.input = Buffer.alloc(0);
    this.goaway(code, message);
    this.flush();
    // Nothing more is read; the socket closes once the GOAWAY is written, or after a second
    // when the peer does not read it.
    this.closedForInput = true;
    this.socket.end(() => this.socket.destroy());
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private closedForInput = false;

  private parse(): void {
    if (!this.prefaceSeen) {
      const have = Math.min(this.input.byteLength, preface.byteLength);
      if (!this.input.subarray(0, have).equals(preface.subarray(0, have))) {
        // Not HTTP/2 with prior knowledge: nothing is answered.
        this.closedForInput = true;
        this.socket.destroy();
        return;
      }
      if (this.input.byteLength < preface.byteLength) return;
      this.prefaceSeen = true;
      if (this.prefaceTimer !== undefined) clearTimeout(this.prefaceTimer);
      this.input = this.input.subarray(preface.byteLength);
      this.expectSettings = true;
    }
    let offset = 0;
    const input = this.input;
    while (!this.closedForInput && input.byteLength - offset >= 9) {
      const length = input.readUIntBE(offset, 3);
      if (length > limits.maxFrameSize) {
        throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes`);
      }
      if (input.byteLength - offset < 9 + length) break;
      const type = input[offset + 3]!;
      const flags = input[offset + 4]!;
      const stream = input.readUInt32BE(offset + 5) & 0x7fffffff;
      const payload = input.subarray(offset + 9, offset + 9 + length);
      offset += 9 + length;
      this.onFrame(type, flags, stream, payload);
    }
    this.input = offset === input.byteLength ? Buffer.alloc(0) : input.subarray(offset);
    // Kept input is at most one frame; copy it so that a large chunk is not retained.
    if (this.input.byteLength > 0 && offset > 0) this.input = Buffer.from(this.input);
  }

  private expectSettings = false;

  private onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    if (this.expectSettings) {
      if (type !== SETTINGS || (flags & ACK) !== 0) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the preface must end with SETTINGS");
      }
      this.expectSettings = false;
    }
    if (this.block !== undefined && type !== CONTINUATION) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "header block interrupted");
    }
    switch (type) {
      case DATA:
        this.onData(flags, stream, payload);
        return;
      case HEADERS:
        this.onHeaders(flags, stream, payload);
        return;
      case PRIORITY:
        if (stream === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on 0");
        if (payload.byteLength !== 5) {
          throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY size");
        }
        return;
      case RST_STREAM:
        this.onReset(stream, payload);
        return;
      case SETTINGS:
        this.onSettings(flags, stream, payload);
        return;
      case PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case PING:
        if (stream !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (payload.byteLength !== 8) {
          throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING size");
        }
        if ((flags & ACK) !== 0) return;
        if (!this.control.take()) {
          throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "PING flood");
        }
        this.frame(PING, ACK, 0, Buffer.from(payload));
        return;
      case GOAWAY:
        if (stream !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (payload.byteLength < 8) {
          throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY size");
        }
        this.peerGoaway = true;
        this.maybeEndSoon();
        return;
      case WINDOW_UPDATE:
        this.onWindowUpdate(stream, payload);
        return;
      case CONTINUATION:
        this.onContinuation(flags, stream, payload);
        return;
      default:
        // Unknown frame types are ignored (RFC 9113 4.1).
        return;
    }
  }

  /** Strips padding; the pad length must leave room (PROTOCOL_ERROR otherwise). */
  private unpad(flags: number, payload: Buffer, skip = 0): Buffer {
    if ((flags & PADDED) === 0) return skip === 0 ? payload : payload.subarray(skip);
    if (payload.byteLength < 1) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "padding");
    const pad = payload[0]!;
    if (pad + 1 + skip > payload.byteLength) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame");
    }
    return payload.subarray(1 + skip, payload.byteLength - pad);
  }

  private onData(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    if (id > this.highestStreamId) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
    }
    // The whole frame counts against the windows, padding included (RFC 9113 6.9.1).
    const size = payload.byteLength;
    if (size > this.recvWindow) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    this.recvWindow -= size;
    this.recvUnacked += size;
    if (this.recvUnacked >= limits.connectionWindow / 2) {
      this.windowUpdate(0, this.recvUnacked);
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
    const data = this.unpad(flags, payload);
    const stream = this.streams.get(id);
    if (stream === undefined || stream.destroyed) {
      // A stream we closed or reset: its data is dropped (the connection window was counted).
      return;
    }
    if (stream.remoteEnded) {
      this.resetStream(stream, ErrorCode.STREAM_CLOSED);
      return;
    }
    if (size > stream.recvWindow) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window");
    }
    stream.recvWindow -= size;
    const end = (flags & END_STREAM) !== 0;
    if (end) stream.remoteEnded = true;
    else {
      stream.unacked += size;
      if (stream.unacked >= limits.streamWindow / 2) {
        this.windowUpdate(id, stream.unacked);
        stream.recvWindow += stream.unacked;
        stream.unacked = 0;
      }
    }
    if (data.byteLength > 0) stream.ondata?.(data);
    if (end && !stream.destroyed) this.remoteEnd(stream);
  }

  private remoteEnd(stream: ServerStream): void {
    stream.remoteEnded = true;
    if (stream.localEnded && stream.queue.length === 0) {
      this.streams.delete(stream.id);
      this.maybeEndSoon();
    }
    stream.onend?.();
  }

  private onHeaders(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    const minimum = ((flags & PADDED) !== 0 ? 1 : 0) + ((flags & PRIORITY_FLAG) !== 0 ? 5 : 0);
    if (payload.byteLength < minimum) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS shorter than its fields");
    }
    const fragment = this.unpad(flags, payload, (flags & PRIORITY_FLAG) !== 0 ? 5 : 0);
    if ((flags & PRIORITY_FLAG) !== 0) {
      const start = (flags & PADDED) !== 0 ? 1 : 0;
      if ((payload.readUInt32BE(start) & 0x7fffffff) === id) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "stream depends on itself");
      }
    }
    const block = {
      stream: id,
      endStream: (flags & END_STREAM) !== 0,
      parts: [Buffer.from(fragment)],
      size: fragment.byteLength,
      frames: 0,
    };
    if (block.size > limits.maxHeaderBlock) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    }
    if ((flags & END_HEADERS) !== 0) this.onHeaderBlock(block);
    else this.block = block;
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    const block = this.block;
    if (block === undefined || block.stream !== id) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    block.frames++;
    block.size += payload.byteLength;
    if (block.size > limits.maxHeaderBlock || block.frames > limits.maxContinuations) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    }
    block.parts.push(Buffer.from(payload));
    if ((flags & END_HEADERS) !== 0) {
      this.block = undefined;
      this.onHeaderBlock(block);
    }
  }

  private onHeaderBlock(block: { stream: number; endStream: boolean; parts: Buffer[] }): void {
    const bytes = block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts);
    // Decoded first, whatever happens to the stream: the table must stay in step.
    const fields = this.decoder.decode(bytes, limits.maxHeaderListSize);
    const id = block.stream;
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // Trailers: they must end the stream.
      if (existing.remoteEnded) {
        this.resetStream(existing, ErrorCode.STREAM_CLOSED);
        return;
      }
      if (!block.endStream) {
        this.resetStream(existing, ErrorCode.PROTOCOL_ERROR);
        return;
      }
      if (!existing.destroyed) this.remoteEnd(existing);
      return;
    }
    if (id % 2 === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "even stream id");
    if (id <= this.highestStreamId) {
      // Trailers in flight for a stream we closed are dropped; a new request must take a
      // higher id (RFC 9113 5.1.1).
      if (block.endStream) return;
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "stream id not increasing");
    }
    this.highestStreamId = id;
    // After our GOAWAY, new streams are ignored (the client retries them elsewhere).
    if (this.goawaySent) return;
    this.lastStreamId = id;
    if (this.streams.size >= limits.maxConcurrentStreams) {
      this.rst(id, ErrorCode.REFUSED_STREAM);
      return;
    }
    const headers = fields === undefined ? undefined : requestHeaders(fields);
    if (headers === undefined) {
      this.rst(id, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const stream = new ServerStream(id, headers, this);
    this.streams.set(id, stream);
    this.handlers.stream(stream);
    if (block.endStream && !stream.destroyed) this.remoteEnd(stream);
  }

  private onReset(id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on 0");
    if (payload.byteLength !== 4) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM size");
    }
    if (id > this.highestStreamId) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
    }
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (!this.resets.take()) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset");
    }
    this.streams.delete(id);
    this.blocked.delete(stream);
    this.lose(stream);
    this.maybeEndSoon();
  }

  /** A stream error: RST_STREAM with `code`, the call is cancelled. */
  private resetStream(stream: ServerStream, code: number): void {
    this.rst(stream.id, code);
    this.streams.delete(stream.id);
    this.blocked.delete(stream);
    this.lose(stream);
    this.maybeEndSoon();
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & ACK) !== 0) {
      if (payload.byteLength !== 0) {
        throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      }
      return;
    }
    if (payload.byteLength % 6 !== 0) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS size");
    }
    if (!this.control.take()) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "SETTINGS flood");
    }
    for (let offset = 0; offset < payload.byteLength; offset += 6) {
      const setting = payload.readUInt16BE(offset);
      const value = payload.readUInt32BE(offset + 2);
      switch (setting) {
        case SETTINGS_HEADER_TABLE_SIZE:
          // Our encoder never indexes: any table size suits it.
          break;
        case SETTINGS_ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH");
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE: {
          if (value > maxWindow) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE");
          }
          const delta = value - this.peerInitialWindow;
          this.peerInitialWindow = value;
          for (const stream of this.streams.values()) {
            stream.sendWindow += delta;
            if (stream.sendWindow > maxWindow) {
              throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window overflow");
            }
          }
          break;
        }
        case SETTINGS_MAX_FRAME_SIZE:
          if (value < 16_384 || value > 16_777_215) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE");
          }
          this.peerMaxFrameSize = value;
          break;
        default:
          // MAX_CONCURRENT_STREAMS (we push none), MAX_HEADER_LIST_SIZE (our answers are small
          // and bounded) and unknown settings.
          break;
      }
    }
    this.frame(SETTINGS, ACK, 0);
    this.queueResume();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.byteLength !== 4) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE size");
    }
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "increment 0");
      this.sendWindow += increment;
      if (this.sendWindow > maxWindow) {
        throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow");
      }
      this.queueResume();
      return;
    }
    if (id > this.highestStreamId) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
    }
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (increment === 0) {
      this.resetStream(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > maxWindow) {
      this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    if (this.blocked.has(stream)) this.queueResume();
  }

  private resumeQueued = false;

  /** Blocked streams go on after the input being read (their frames join its answers). */
  private queueResume(): void {
    if (this.blocked.size === 0 || this.resumeQueued) return;
    this.resumeQueued = true;
    queueMicrotask(() => {
      this.resumeQueued = false;
      if (!this.closed) this.resume();
    });
  }
}

export interface Http2Server {
  readonly server: Server;
  /** Connections open now. */
  readonly connections: Set<Connection>;
}

/** A `net` server whose connections speak HTTP/2; `onStream` gets each request. */
export function createHttp2Server(
  onStream: (stream: ServerStream) => void,
  onError?: (error: Error) => void,
): Http2Server {
  const connections = new Set<Connection>();
  const server = createServer((socket) => {
    const connection = new Connection(socket, {
      stream: onStream,
      close: (closed) => connections.delete(closed),
      error: onError,
    });
    connections.add(connection);
  });
  return { server, connections };
}
