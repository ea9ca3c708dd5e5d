import { mkdtemp, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { encodeFields } from "./hpack.js";
import { createHttp2Server, ErrorCode, limits, type ServerStream } from "./server.js";

/**
 * The HTTP/2 transport spoken to in raw frames over its unix socket: the connection's setup,
 * flow control both ways, and each bound on what a hostile client sends.
 */

const DATA = 0;
const HEADERS = 1;
const PRIORITY = 2;
const RST_STREAM = 3;
const SETTINGS = 4;
const PUSH_PROMISE = 5;
const PING = 6;
const GOAWAY = 7;
const WINDOW_UPDATE = 8;
const CONTINUATION = 9;

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array = Buffer.alloc(0),
): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.byteLength, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return Buffer.concat([header, payload]);
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

function settings(pairs: Array<[number, number]>): Buffer {
  const payload = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, value], index) => {
    payload.writeUInt16BE(id, index * 6);
    payload.writeUInt32BE(value, index * 6 + 2);
  });
  return frame(SETTINGS, 0, 0, payload);
}

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

function requestBlock(path = "/echo", extra: Array<[string, string]> = []): Buffer {
  return encodeFields([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ...extra,
  ]);
}

/** A client writing raw frames and collecting what the server sends. */
class Peer {
  readonly frames: Frame[] = [];
  private input = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;

  constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.input = Buffer.concat([this.input, chunk]);
      while (this.input.byteLength >= 9) {
        const length = this.input.readUIntBE(0, 3);
        if (this.input.byteLength < 9 + length) break;
        this.frames.push({
          type: this.input[3]!,
          flags: this.input[4]!,
          stream: this.input.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.input.subarray(9, 9 + length)),
        });
        this.input = this.input.subarray(9 + length);
      }
      this.wake();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  static async open(address: string, handshake = true): Promise<Peer> {
    const socket = connect(address);
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const peer = new Peer(socket);
    if (handshake) peer.send(preface, settings([]));
    return peer;
  }

  send(...chunks: Uint8Array[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(chunks));
  }

  /** The first frame (from `from` on) matching `match`; undefined when the socket closed first. */
  async next(match: (frame: Frame) => boolean, from = 0): Promise<Frame | undefined> {
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found !== undefined) return found;
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** The GOAWAY's error code, once the server sent one and closed. */
  async goaway(): Promise<number | undefined> {
    const goaway = await this.next((frame) => frame.type === GOAWAY);
    await this.closed;
    return goaway?.payload.readUInt32BE(4);
  }

  close(): void {
    this.socket.destroy();
  }
}

describe("the HTTP/2 transport", () => {
  let work: string;
  let address: string;
  const streams: ServerStream[] = [];
  const canceled: ServerStream[] = [];
  let server: ReturnType<typeof createHttp2Server>;
  const peers: Peer[] = [];
  const original = { ...limits };

  /** Handler: /echo answers the request body's length once it ended; /hold never answers. */
  function handle(stream: ServerStream): void {
    streams.push(stream);
    let received = 0;
    stream.ondata = (chunk) => {
      received += chunk.byteLength;
    };
    stream.onclose = () => canceled.push(stream);
    stream.onend = () => {
      const path = stream.headers[":path"];
      if (path === "/echo") {
        stream.answer(
          {
            ":status": 200,
            "content-type": "application/grpc",
            authority: stream.headers[":authority"],
          },
          Buffer.from(String(received)),
          { "grpc-status": "0" },
        );
      } else if (path?.startsWith("/bytes/")) {
        stream.answer({ ":status": 200 }, Buffer.alloc(Number(path.slice(7)), 0x61), {
          "grpc-status": "0",
        });
      }
    };
  }

  async function listen(path: string): Promise<ReturnType<typeof createHttp2Server>> {
    const created = createHttp2Server(handle);
    await new Promise<void>((resolve) => created.server.listen(path, resolve));
    return created;
  }

  async function open(handshake = true): Promise<Peer> {
    const peer = await Peer.open(address, handshake);
    peers.push(peer);
    return peer;
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "http2-"));
    address = join(work, "h2.sock");
    server = await listen(address);
  });
  afterEach(() => {
    Object.assign(limits, original);
    for (const peer of peers.splice(0)) peer.close();
  });
  afterAll(async () => {
    for (const connection of server.connections) connection.destroy();
    await new Promise((resolve) => server.server.close(resolve));
    await rm(work, { recursive: true, force: true });
  });

  it("sends its SETTINGS and a connection WINDOW_UPDATE, ACKs the client's, answers PING", async () => {
    const peer = await open();
    const ours = await peer.next((f) => f.type === SETTINGS && f.flags === 0);
    const values = new Map<number, number>();
    for (let offset = 0; offset < ours!.payload.byteLength; offset += 6) {
      values.set(ours!.payload.readUInt16BE(offset), ours!.payload.readUInt32BE(offset + 2));
    }
    expect(values.get(3)).toBe(limits.maxConcurrentStreams);
    expect(values.get(4)).toBe(limits.streamWindow);
    expect(values.get(5)).toBe(16_384);
    expect(values.get(6)).toBe(limits.maxHeaderListSize);
    const update = await peer.next((f) => f.type === WINDOW_UPDATE && f.stream === 0);
    expect(update!.payload.readUInt32BE(0)).toBe(limits.connectionWindow - 65_535);
    expect(await peer.next((f) => f.type === SETTINGS && f.flags === 1)).toBeDefined();
    peer.send(frame(PING, 0, 0, Buffer.from("12345678")));
    const pong = await peer.next((f) => f.type === PING);
    expect(pong!.flags).toBe(1);
    expect(pong!.payload.toString()).toBe("12345678");
  });

  it("holds a PING ACK for an answer being prepared, to share its write, a bounded time", async () => {
    limits.pingAckHoldMs = 60_000;
    const peer = await open();
    await peer.next((f) => f.type === SETTINGS && f.flags === 1);
    const before = streams.length;
    peer.send(frame(HEADERS, 5, 101, requestBlock("/hold")));
    while (streams.length === before) await new Promise((resolve) => setImmediate(resolve));
    const held = streams[before]!;
    peer.send(frame(PING, 0, 0, Buffer.from("held-ack")));
    // The PING is read (a later one on this connection is ACKed after it) but its ACK waits.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(peer.frames.some((f) => f.type === PING && f.flags === 1)).toBe(false);
    held.answer({ ":status": 200 }, Buffer.from("x"), { "grpc-status": "0" });
    const ack = await peer.next((f) => f.type === PING && f.flags === 1);
    expect(ack!.payload.toString()).toBe("held-ack");
    // It went out just before the answer, in its write.
    const index = peer.frames.indexOf(ack!);
    expect(peer.frames[index + 1]).toMatchObject({ type: HEADERS, stream: 101 });

    // A stream whose answer started (a server stream sending) holds nothing.
    peer.send(frame(HEADERS, 5, 105, requestBlock("/hold")));
    while (!streams.some((s) => s.id === 105)) await new Promise((r) => setImmediate(r));
    streams.find((s) => s.id === 105)!.respond({ ":status": 200 });
    await peer.next((f) => f.type === HEADERS && f.stream === 105);
    peer.send(frame(PING, 0, 0, Buffer.from("send-ack")));
    const sending = await peer.next((f) => f.type === PING && f.payload.toString() === "send-ack");
    expect(sending!.flags).toBe(1);

    // An answer that does not come: the ACK goes out once the hold is over.
    limits.pingAckHoldMs = 20;
    const waiting = await open();
    await waiting.next((f) => f.type === SETTINGS && f.flags === 1);
    waiting.send(frame(HEADERS, 5, 1, requestBlock("/never")));
    waiting.send(frame(PING, 0, 0, Buffer.from("late-ack")));
    const late = await waiting.next((f) => f.type === PING && f.payload.toString() === "late-ack");
    expect(late!.flags).toBe(1);
    // No answer is pending: a PING is ACKed at once, whatever the hold.
    const idle = await open();
    limits.pingAckHoldMs = 60_000;
    await idle.next((f) => f.type === SETTINGS && f.flags === 1);
    idle.send(frame(PING, 0, 0, Buffer.from("idle-ack")));
    expect((await idle.next((f) => f.type === PING))!.payload.toString()).toBe("idle-ack");
  });

  it("answers headers, message and trailers; takes an :authority that is a socket path", async () => {
    const peer = await open();
    peer.send(
      frame(
        HEADERS,
        0x4,
        1,
        encodeFields([
          [":method", "POST"],
          [":scheme", "http"],
          [":path", "/echo"],
          [":authority", "/run/containerd/containerd.sock"],
          ["content-type", "application/grpc"],
        ]),
      ),
      frame(DATA, 0x1, 1, Buffer.from("hello")),
    );
    const trailers = await peer.next((f) => f.type === HEADERS && (f.flags & 1) === 1);
    expect(trailers).toBeDefined();
    const kinds = peer.frames.filter((f) => f.stream === 1).map((f) => f.type);
    expect(kinds).toEqual([HEADERS, DATA, HEADERS]);
    const data = peer.frames.find((f) => f.type === DATA && f.stream === 1)!;
    expect(data.payload.toString()).toBe("5");
    const { HpackDecoder } = await import("./hpack.js");
    const decoder = new HpackDecoder({ maxTableSize: 4096 });
    const headers = decoder.decode(peer.frames.find((f) => f.type === HEADERS)!.payload, 1e6);
    expect(headers).toContainEqual(["authority", "/run/containerd/containerd.sock"]);
    expect(decoder.decode(trailers!.payload, 1e6)).toEqual([["grpc-status", "0"]]);
  });

  it("closes a connection that does not start with the preface, or not in time", async () => {
    const http1 = await open(false);
    http1.send(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await http1.closed;
    expect(http1.frames.some((f) => f.type === HEADERS)).toBe(false);
    limits.prefaceTimeoutMs = 100;
    const silent = await open(false);
    await silent.closed;
    expect(silent.ended).toBe(true);
  });

  it("answers protocol violations with GOAWAY and closes", async () => {
    const cases: Array<[string, Uint8Array[], number]> = [
      [
        "first frame not SETTINGS",
        [preface, frame(PING, 0, 0, Buffer.alloc(8))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "PUSH_PROMISE",
        [preface, settings([]), frame(PUSH_PROMISE, 4, 1, Buffer.alloc(4))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "frame over 16,384",
        [preface, settings([]), frame(0x42, 0, 0, Buffer.alloc(16_385))],
        ErrorCode.FRAME_SIZE_ERROR,
      ],
      [
        "PING of 7 bytes",
        [preface, settings([]), frame(PING, 0, 0, Buffer.alloc(7))],
        ErrorCode.FRAME_SIZE_ERROR,
      ],
      [
        "SETTINGS of 5 bytes",
        [preface, settings([]), frame(SETTINGS, 0, 0, Buffer.alloc(5))],
        ErrorCode.FRAME_SIZE_ERROR,
      ],
      ["ENABLE_PUSH 2", [preface, settings([[2, 2]])], ErrorCode.PROTOCOL_ERROR],
      ["MAX_FRAME_SIZE too small", [preface, settings([[5, 100]])], ErrorCode.PROTOCOL_ERROR],
      [
        "INITIAL_WINDOW_SIZE 2^31",
        [preface, settings([[4, 2 ** 31]])],
        ErrorCode.FLOW_CONTROL_ERROR,
      ],
      [
        "even stream id",
        [preface, settings([]), frame(HEADERS, 5, 2, requestBlock())],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "stream id not increasing",
        [
          preface,
          settings([]),
          frame(HEADERS, 4, 5, requestBlock("/hold")),
          frame(HEADERS, 4, 3, requestBlock("/hold")),
        ],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "DATA on an idle stream",
        [preface, settings([]), frame(DATA, 1, 7, Buffer.from("x"))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "DATA on stream 0",
        [preface, settings([]), frame(DATA, 1, 0, Buffer.from("x"))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "header block interrupted",
        [
          preface,
          settings([]),
          frame(HEADERS, 0, 1, requestBlock()),
          frame(PING, 0, 0, Buffer.alloc(8)),
        ],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "CONTINUATION without HEADERS",
        [preface, settings([]), frame(CONTINUATION, 4, 1, Buffer.alloc(1))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "HPACK garbage",
        [preface, settings([]), frame(HEADERS, 5, 1, Buffer.from([0x80]))],
        ErrorCode.COMPRESSION_ERROR,
      ],
      [
        "WINDOW_UPDATE of 0",
        [preface, settings([]), frame(WINDOW_UPDATE, 0, 0, u32(0))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "connection window beyond 2^31-1",
        [preface, settings([]), frame(WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1))],
        ErrorCode.FLOW_CONTROL_ERROR,
      ],
      [
        "RST_STREAM on an idle stream",
        [preface, settings([]), frame(RST_STREAM, 0, 9, u32(8))],
        ErrorCode.PROTOCOL_ERROR,
      ],
      [
        "PRIORITY of 4 bytes",
        [preface, settings([]), frame(PRIORITY, 0, 1, Buffer.alloc(4))],
        ErrorCode.FRAME_SIZE_ERROR,
      ],
    ];
    for (const [what, chunks, code] of cases) {
      const peer = await open(false);
      peer.send(...chunks);
      expect(await peer.goaway(), what).toBe(code);
    }
  });

  it("ignores PRIORITY and unknown frame types", async () => {
    const peer = await open();
    peer.send(frame(PRIORITY, 0, 1, Buffer.alloc(5)), frame(0x42, 0xff, 0, Buffer.from("?")));
    peer.send(frame(PING, 0, 0, Buffer.from("abcdefgh")));
    const pong = await peer.next((f) => f.type === PING);
    expect(pong?.payload.toString()).toBe("abcdefgh");
    expect(peer.frames.some((f) => f.type === GOAWAY)).toBe(false);
  });

  it("bounds header blocks: size, and CONTINUATION floods", async () => {
    const big = await open();
    big.send(frame(HEADERS, 0, 1, requestBlock()));
    for (let i = 0; i < 8; i++) big.send(frame(CONTINUATION, 0, 1, Buffer.alloc(16_000)));
    expect(await big.goaway()).toBe(ErrorCode.ENHANCE_YOUR_CALM);
    const empty = await open();
    empty.send(frame(HEADERS, 0, 1, requestBlock()));
    for (let i = 0; i < 1000; i++) empty.send(frame(CONTINUATION, 0, 1));
    expect(await empty.goaway()).toBe(ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("resets a malformed request with PROTOCOL_ERROR and keeps the connection", async () => {
    const peer = await open();
    const malformed: Array<Array<[string, string]>> = [
      [
        [":method", "POST"],
        [":path", "/echo"],
      ], // no :scheme
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["Upper", "x"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["connection", "close"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        ["x", "y"],
        [":path", "/echo"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        [":status", "200"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["te", "gzip"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["x", "a\r\nb: c"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["a b", "c"],
      ],
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/echo"],
        ["x", " padded"],
      ],
    ];
    let id = 1;
    for (const fields of malformed) {
      peer.send(frame(HEADERS, 5, id, encodeFields(fields)));
      const reset = await peer.next((f) => f.type === RST_STREAM && f.stream === id);
      expect(reset!.payload.readUInt32BE(0), JSON.stringify(fields)).toBe(ErrorCode.PROTOCOL_ERROR);
      id += 2;
    }
    peer.send(frame(HEADERS, 4, id, requestBlock()), frame(DATA, 1, id, Buffer.from("ok")));
    const data = await peer.next((f) => f.type === DATA && f.stream === id);
    expect(data!.payload.toString()).toBe("2");
  });

  it("refuses streams beyond MAX_CONCURRENT_STREAMS with REFUSED_STREAM", async () => {
    const peer = await open();
    const chunks: Uint8Array[] = [];
    for (let i = 0; i <= limits.maxConcurrentStreams; i++) {
      chunks.push(frame(HEADERS, 4, 1 + 2 * i, requestBlock("/hold")));
    }
    peer.send(...chunks);
    const last = 1 + 2 * limits.maxConcurrentStreams;
    const reset = await peer.next((f) => f.type === RST_STREAM);
    expect(reset!.stream).toBe(last);
    expect(reset!.payload.readUInt32BE(0)).toBe(ErrorCode.REFUSED_STREAM);
  });

  it("cancels a call on RST_STREAM, and ends a rapid-reset connection with ENHANCE_YOUR_CALM", async () => {
    const peer = await open();
    peer.send(frame(HEADERS, 4, 1, requestBlock("/hold")));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const stream = streams.find(
      (s) => s.headers[":path"] === "/hold" && s.id === 1 && !s.destroyed,
    );
    expect(stream).toBeDefined();
    peer.send(frame(RST_STREAM, 0, 1, u32(ErrorCode.CANCEL)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(stream!.destroyed).toBe(true);
    expect(canceled).toContain(stream);

    const flood = await open();
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < 2000; i++) {
      const id = 1 + 2 * i;
      chunks.push(frame(HEADERS, 4, id, requestBlock("/hold")), frame(RST_STREAM, 0, id, u32(8)));
    }
    flood.send(...chunks);
    expect(await flood.goaway()).toBe(ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("ends PING and SETTINGS floods with ENHANCE_YOUR_CALM", async () => {
    const pings = await open();
    pings.send(...Array.from({ length: 30_000 }, () => frame(PING, 0, 0, Buffer.alloc(8))));
    expect(await pings.goaway()).toBe(ErrorCode.ENHANCE_YOUR_CALM);
    const settingsFlood = await open();
    settingsFlood.send(...Array.from({ length: 30_000 }, () => settings([[1, 4096]])));
    expect(await settingsFlood.goaway()).toBe(ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("drops a client that does not read what it asked for", async () => {
    limits.controlBurst = 1e9;
    limits.maxSocketBacklog = 64 * 1024;
    const peer = await open();
    peer.socket.pause();
    // 40,000 PINGs: 680 KB of ACKs, more than the socket buffers and the backlog bound hold.
    const pings = frame(PING, 0, 0, Buffer.alloc(8));
    for (let i = 0; i < 40; i++) peer.send(...Array.from({ length: 1000 }, () => pings));
    await peer.closed;
    expect(peer.ended).toBe(true);
  });

  it("answers a HEADERS frame shorter than its PRIORITY fields with FRAME_SIZE_ERROR", async () => {
    const peer = await open();
    peer.send(frame(HEADERS, 0x24, 1, Buffer.alloc(3)));
    expect(await peer.goaway()).toBe(ErrorCode.FRAME_SIZE_ERROR);
  });

  it("ends a connection sending DATA beyond the stream window with FLOW_CONTROL_ERROR", async () => {
    limits.streamWindow = 8192;
    const peer = await open();
    peer.send(frame(HEADERS, 4, 1, requestBlock("/hold")), frame(DATA, 0, 1, Buffer.alloc(16_384)));
    expect(await peer.goaway()).toBe(ErrorCode.FLOW_CONTROL_ERROR);
  });

  it("credits request bytes back with WINDOW_UPDATE as they are read", async () => {
    const peer = await open();
    const chunks = [frame(HEADERS, 4, 1, requestBlock("/echo"))];
    // 2 MiB in 16 KiB frames: twice the stream window, so the server must credit it back.
    const total = 2 * 1024 * 1024;
    let sent = 0;
    peer.send(...chunks);
    let credit = limits.streamWindow;
    while (sent < total) {
      while (credit >= 16_384 && sent < total) {
        const last = sent + 16_384 >= total;
        peer.send(frame(DATA, last ? 1 : 0, 1, Buffer.alloc(16_384)));
        sent += 16_384;
        credit -= 16_384;
      }
      if (sent >= total) break;
      const from = peer.frames.length;
      const update = await peer.next((f) => f.type === WINDOW_UPDATE && f.stream === 1, from);
      credit += update!.payload.readUInt32BE(0);
    }
    const data = await peer.next((f) => f.type === DATA && f.stream === 1);
    expect(data!.payload.toString()).toBe(String(total));
  });

  it("sends within the client's stream window and frame size, the rest after WINDOW_UPDATE", async () => {
    const peer = await open();
    peer.send(settings([[4, 100]]));
    peer.send(frame(HEADERS, 5, 1, requestBlock("/bytes/40000")));
    await peer.next((f) => f.type === DATA && f.stream === 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const sentFirst = peer.frames
      .filter((f) => f.type === DATA && f.stream === 1)
      .reduce((sum, f) => sum + f.payload.byteLength, 0);
    expect(sentFirst).toBe(100);
    expect(peer.frames.some((f) => f.type === HEADERS && (f.flags & 1) === 1)).toBe(false);
    peer.send(frame(WINDOW_UPDATE, 0, 1, u32(39_900)));
    await peer.next((f) => f.type === HEADERS && (f.flags & 1) === 1);
    const data = peer.frames.filter((f) => f.type === DATA && f.stream === 1);
    expect(data.reduce((sum, f) => sum + f.payload.byteLength, 0)).toBe(40_000);
    expect(Math.max(...data.map((f) => f.payload.byteLength))).toBeLessThanOrEqual(16_384);
  });

  it("closes gracefully: GOAWAY(NO_ERROR), the in-flight call answered, then the socket ends", async () => {
    const own = await listen(join(work, "graceful.sock"));
    const peer = await Peer.open(join(work, "graceful.sock"));
    peers.push(peer);
    peer.send(frame(HEADERS, 4, 1, requestBlock("/echo")));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const closed = new Promise((resolve) => own.server.close(resolve));
    for (const connection of own.connections) connection.shutdown();
    const goaway = await peer.next((f) => f.type === GOAWAY);
    expect(goaway!.payload.readUInt32BE(0)).toBe(1);
    expect(goaway!.payload.readUInt32BE(4)).toBe(ErrorCode.NO_ERROR);
    expect(peer.ended).toBe(false);
    // A request racing the GOAWAY is ignored, its DATA too, without a connection error.
    peer.send(frame(HEADERS, 4, 3, requestBlock("/echo")), frame(DATA, 1, 3, Buffer.from("x")));
    peer.send(frame(DATA, 1, 1, Buffer.from("late")));
    const data = await peer.next((f) => f.type === DATA && f.stream === 1);
    expect(data!.payload.toString()).toBe("4");
    await peer.closed;
    await closed;
    expect(peer.frames.filter((f) => f.type === GOAWAY)).toHaveLength(1);
    expect(peer.frames.filter((f) => f.stream === 3)).toEqual([]);
  });
});
