import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import type { OutgoingHttpHeaders } from "node:http2";
import { connect } from "node:net";
import { dirname } from "node:path";
import { performance } from "node:perf_hooks";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  isMessage,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  acceptedEncodings,
  envelope,
  errorStatus,
  malformedRequestPrefix,
  parseGrpcTimeout,
  type RequestEncoding,
  UnaryBody,
} from "./grpc-wire.js";
import { createHttp2Server, type RequestHeaders, type ServerStream } from "./http2/server.js";

export {
  maxReceiveMessageBytes,
  maxStatusMessageLength,
} from "./grpc-wire.js";

/** Where services are registered: `router.service(Desc, impl)`, as with connect-es's router. */
export interface GrpcRouter {
  service<T extends DescService>(service: T, implementation: Partial<ServiceImpl<T>>): GrpcRouter;
}

/**
 * Told of every routed call when it ends (streams: after the last message): the service's full
 * name, the method's name, its start (`performance.now()`) and its code (`undefined`: OK).
 */
export type CallObserver = (
  service: string,
  method: string,
  start: number,
  code: Code | undefined,
) => void;

export interface GrpcServerOptions {
  /** Unix socket path. Its directory is created 0700 when missing; the socket is 0600. */
  address: string;
  routes: (router: GrpcRouter) => void;
  /** Called when each call ends (metrics). */
  observe?: CallObserver;
  logger: Logger;
}

export interface GrpcServer {
  address: string;
  /**
   * Stops accepting connections, lets in-flight calls finish (GOAWAY to every client), then
   * closes; after `graceMs` the remaining sessions are destroyed. Removes the socket file.
   */
  close(graceMs?: number): Promise<void>;
}

/** Answers whether something accepts connections on the unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Makes `address` free: a stale socket (nothing answers) is removed; a live one, or a file that
 * is not a socket, is an error naming the path.
 */
export async function claimSocketPath(address: string): Promise<void> {
  let stats: Awaited<ReturnType<typeof lstat>>;
  try {
    stats = await lstat(address);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  if (!stats.isSocket()) {
    throw new Error(`${address} exists and is not a socket; refusing to replace it`);
  }
  if (await answers(address)) {
    throw new Error(
      `another server is listening on ${address}; is nix-snapshotter already running?`,
    );
  }
  await rm(address, { force: true });
}

/** Creates the socket's directory with mode 0700 if it does not exist (existing ones are kept). */
async function prepareDirectory(address: string): Promise<void> {
  const directory = dirname(address);
  try {
    await lstat(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await mkdir(directory, { recursive: true, mode: 0o700 });
    await chmod(directory, 0o700);
  }
}

/** A registered method: its descriptors and the implementation's function. */
interface Route {
  service: DescService;
  method: DescMethod;
  streaming: boolean;
  // biome-ignore lint/suspicious/noExplicitAny: a ServiceImpl's method, called with its own request type
  run: (request: any, context: HandlerContext) => any;
}

/** The routes of `register`, by request path (`/package.Service/Method`). */
function routeTable(register: (router: GrpcRouter) => void): Map<string, Route> {
  const routes = new Map<string, Route>();
  const router: GrpcRouter = {
    service(service, implementation) {
      for (const method of service.methods) {
        const run = (implementation as Record<string, unknown>)[method.localName];
        if (typeof run !== "function") continue;
        // Client and bidirectional streams are not served (no service here has one).
        if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") continue;
        routes.set(`/${service.typeName}/${method.name}`, {
          service,
          method,
          streaming: method.methodKind === "server_streaming",
          run: run.bind(implementation),
        });
      }
      return router;
    },
  };
  register(router);
  return routes;
}

/** gRPC's content types for protobuf (no JSON, no gRPC-web). */
const grpcContentType = /^application\/grpc(?:\+proto)?\s*(?:;|$)/i;

// Frozen: the transport encodes a frozen set of fields once (./http2/server.ts).
const responseHeaders: OutgoingHttpHeaders = Object.freeze({
  ":status": 200,
  "content-type": "application/grpc",
  "grpc-accept-encoding": acceptedEncodings,
});
const okTrailers: OutgoingHttpHeaders = Object.freeze({ "grpc-status": "0" });

/**
 * A call's HandlerContext, built lazily: the signal, headers and context values exist only when
 * an implementation reads them. The signal aborts only when the call is cancelled (client reset,
 * connection lost, deadline), with a ConnectError as its reason.
 */
class CallContext implements HandlerContext {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  private controller: AbortController | undefined;
  private request: Headers | undefined;
  private response: Headers | undefined;
  private trailer: Headers | undefined;
  private contextValues: ContextValues | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    private readonly headers: RequestHeaders,
    private readonly deadline: number | undefined,
  ) {}

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  abort(reason: ConnectError): void {
    this.controller ??= new AbortController();
    this.controller.abort(reason);
  }

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - performance.now();
  }

  get requestHeader(): Headers {
    if (this.request === undefined) {
      this.request = new Headers();
      for (const name in this.headers) {
        if (name.startsWith(":")) continue;
        this.request.set(name, this.headers[name]!);
      }
    }
    return this.request;
  }

  get responseHeader(): Headers {
    this.response ??= new Headers();
    return this.response;
  }

  get responseTrailer(): Headers {
    this.trailer ??= new Headers();
    return this.trailer;
  }

  get values(): ContextValues {
    this.contextValues ??= createContextValues();
    return this.contextValues;
  }

  get url(): string {
    return `http://localhost/${this.service.typeName}/${this.method.name}`;
  }

  /** Response headers with what the implementation added. */
  headersToSend(): OutgoingHttpHeaders {
    if (this.response === undefined) return responseHeaders;
    const fields = { ...responseHeaders };
    this.response.forEach((value, name) => {
      if (!(name in fields)) fields[name] = value;
    });
    return fields;
  }

  /** Trailers with what the implementation added. */
  trailersToSend(status: OutgoingHttpHeaders): OutgoingHttpHeaders {
    if (this.trailer === undefined) return status;
    const fields: OutgoingHttpHeaders = {};
    this.trailer.forEach((value, name) => {
      if (!name.startsWith("grpc-")) fields[name] = value;
    });
    return { ...fields, ...status };
  }
}

/** Longest delay setTimeout takes (2^31 - 1 ms). */
const maxTimerMs = 2 ** 31 - 1;

/** One call on one HTTP/2 stream, from its headers to its status. */
class Call {
  done = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly start = performance.now();

  constructor(
    private readonly stream: ServerStream,
    private readonly route: Route,
    private readonly context: CallContext,
    private readonly observe: CallObserver | undefined,
    timeoutMs: number | undefined,
  ) {
    // A deadline beyond setTimeout's range (24.8 days; grpc-timeout allows years) is no timer:
    // Node would fire it at once.
    if (timeoutMs !== undefined && timeoutMs <= maxTimerMs) {
      this.timer = setTimeout(() => this.expire(), timeoutMs);
    }
  }

  private end(code: Code | undefined): void {
    this.done = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.observe?.(this.route.service.typeName, this.route.method.name, this.start, code);
  }

  private expire(): void {
    if (this.done) return;
    const error = new ConnectError("the call's deadline passed", Code.DeadlineExceeded);
    this.fail(error);
    this.context.abort(error);
  }

  /** The stream closed (client reset, connection lost) before the call's status was sent. */
  closed(): void {
    if (this.done) return;
    const error = new ConnectError("the client canceled the call", Code.Canceled);
    this.end(error.code);
    this.context.abort(error);
  }

  /** Answers `error` (trailers-only when nothing was sent yet). */
  fail(error: ConnectError): void {
    if (this.done) return;
    this.end(error.code);
    const { stream } = this;
    if (stream.closed) return;
    const status = this.context.trailersToSend(errorStatus(error));
    // Trailers-only when nothing was sent yet; the rest of a refused request is not read (the
    // transport resets the stream with NO_ERROR after the status).
    if (!stream.headersSent) stream.respondAndEnd({ ...responseHeaders, ...status });
    else stream.end(status);
  }

  /** Nothing more can be sent: reset, connection lost, or answered. */
  private gone(): boolean {
    return this.stream.closed;
  }

  private respond(): void {
    this.stream.respond(this.context.headersToSend());
  }

  /** Decodes the request message, runs the implementation and sends its answer. */
  async run(body: UnaryBody, encoding: RequestEncoding | undefined): Promise<void> {
    const message = body.message(encoding);
    const bytes = message instanceof Promise ? await message : message;
    if (this.done) return;
    if (bytes instanceof ConnectError) return this.fail(bytes);
    const { method } = this.route;
    let request: unknown;
    try {
      request = fromBinary(method.input, bytes);
    } catch (error) {
      return this.fail(
        new ConnectError(
          `${malformedRequestPrefix}${(error as Error).message}`,
          Code.InvalidArgument,
        ),
      );
    }
    try {
      if (this.route.streaming) {
        await this.stream_(this.route.run(request, this.context), method.output);
      } else {
        const result = await this.route.run(request, this.context);
        // A stream gone without its 'close' event yet: that event counts the call (Canceled).
        if (this.done || this.gone()) return;
        const payload = encode(method.output, result);
        this.end(undefined);
        // Headers, message and trailers in one write.
        this.stream.answer(
          this.context.headersToSend(),
          envelope(payload),
          this.context.trailersToSend(okTrailers),
        );
      }
    } catch (error) {
      this.fail(ConnectError.from(error));
    }
  }

  /** Writes a server stream's messages, waiting for the peer when HTTP/2's window is full. */
  private async stream_(messages: AsyncIterable<unknown>, output: DescMessage): Promise<void> {
    for await (const message of messages) {
      if (this.done || this.gone()) return;
      if (!this.stream.headersSent) this.respond();
      if (!this.stream.write(envelope(encode(output, message)))) {
        await drained(this.stream);
        if (this.done || this.gone()) return;
      }
    }
    if (this.done || this.gone()) return;
    this.end(undefined);
    if (!this.stream.headersSent) this.respond();
    this.stream.end(this.context.trailersToSend(okTrailers));
  }
}

const noBytes = new Uint8Array(0);

/** An implementation's answer (a message or its init shape) in protobuf's binary encoding. */
function encode(schema: DescMessage, value: unknown): Uint8Array {
  // biome-ignore lint/suspicious/noExplicitAny: an init shape of `schema`
  const message = isMessage(value, schema) ? value : create(schema, value as any);
  // A message type without fields (Empty) encodes as its unknown fields alone.
  if (schema.fields.length === 0 && !message.$unknown?.length) return noBytes;
  return toBinary(schema, message);
}

/** Resolves when the stream can take more data, or is gone. */
function drained(stream: ServerStream): Promise<void> {
  return new Promise((resolve) => {
    stream.ondrain = () => {
      stream.ondrain = undefined;
      resolve();
    };
  });
}

/** A trailers-only answer for a call refused before it reached an implementation. */
function refuse(stream: ServerStream, error: ConnectError, extra?: OutgoingHttpHeaders) {
  stream.respondAndEnd({ ...responseHeaders, ...extra, ...errorStatus(error) });
}

/** Dispatches one HTTP/2 stream to its route. */
function handleStream(
  routes: Map<string, Route>,
  observe: CallObserver | undefined,
  stream: ServerStream,
): void {
  const { headers } = stream;
  if (headers[":method"] !== "POST") {
    stream.respondAndEnd({ ":status": 405, allow: "POST" });
    return;
  }
  // gRPC: a request that is not gRPC gets HTTP 415, not a gRPC status.
  if (!grpcContentType.test(headers["content-type"] ?? "")) {
    stream.respondAndEnd({ ":status": 415, "content-type": "text/plain" });
    return;
  }
  const path = headers[":path"] ?? "";
  const route = routes.get(path);
  if (route === undefined) {
    refuse(
      stream,
      new ConnectError(`unknown method ${JSON.stringify(path.slice(0, 200))}`, Code.Unimplemented),
    );
    return;
  }
  const encodingHeader = headers["grpc-encoding"];
  let encoding: RequestEncoding | undefined;
  if (encodingHeader === "gzip" || encodingHeader === "br") encoding = encodingHeader;
  else if (encodingHeader !== undefined && encodingHeader !== "identity") {
    refuse(
      stream,
      new ConnectError(
        `unsupported grpc-encoding ${JSON.stringify(String(encodingHeader).slice(0, 64))}`,
        Code.Unimplemented,
      ),
    );
    return;
  }
  const timeout = parseGrpcTimeout(headers["grpc-timeout"]);
  if (timeout instanceof ConnectError) {
    refuse(stream, timeout);
    return;
  }
  const context = new CallContext(
    route.service,
    route.method,
    headers,
    timeout === undefined ? undefined : performance.now() + timeout,
  );
  const call = new Call(stream, route, context, observe, timeout);
  const body = new UnaryBody((error) => call.fail(error));
  stream.ondata = (chunk) => body.push(chunk);
  stream.onend = () => {
    if (!body.failed && !call.done) void call.run(body, encoding);
  };
  stream.onclose = () => call.closed();
}

/**
 * gRPC (HTTP/2 without TLS, "prior knowledge") on a unix socket: what containerd's grpc-go
 * client and the kubelet speak. Unary and server-streaming methods of protobuf-es services,
 * served over the daemon's own HTTP/2 transport (./http2/server.ts; see
 * docs/decisions/2026-12-06-grpc-server.md and 2026-12-06-http2-transport.md).
 */
export async function listenGrpc(options: GrpcServerOptions): Promise<GrpcServer> {
  const { address, logger } = options;
  await prepareDirectory(address);
  await claimSocketPath(address);

  const routes = routeTable(options.routes);
  const { server, connections } = createHttp2Server(
    (stream) => handleStream(routes, options.observe, stream),
    (error) => logger.debug({ err: error }, "http2 connection error"),
  );

  // The socket is created by bind(2), which Node runs synchronously inside listen() for a unix
  // socket: with umask 0177 around that call it is born 0600, so there is no moment where other
  // users could connect. The umask is restored before anything else can run (child processes and
  // files created later get the normal one).
  const listening = new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const previousUmask = process.umask(0o177);
  try {
    server.listen(address);
  } finally {
    process.umask(previousUmask);
  }
  await listening;
  await chmod(address, 0o600);
  server.on("error", (error) => logger.error({ err: error }, "gRPC server error"));

  let closing: Promise<void> | undefined;
  return {
    address,
    close(graceMs = 30_000) {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const connection of connections) connection.shutdown();
        const timer = setTimeout(() => {
          logger.warn(
            { connections: connections.size },
            "grace period over; closing remaining connections",
          );
          for (const connection of connections) connection.destroy();
        }, graceMs);
        await closed;
        clearTimeout(timer);
        await rm(address, { force: true });
      })();
      return closing;
    },
  };
}
