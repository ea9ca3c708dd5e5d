import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import {
  createServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
} from "node:http2";
import { connect } from "node:net";
import { dirname } from "node:path";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";

export interface GrpcServerOptions {
  /** Unix socket path. Its directory is created 0700 when missing; the socket is 0600. */
  address: string;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  logger: Logger;
}

/**
 * Largest request message read, in bytes, after decompression: grpc-go's default for a server
 * (4 MiB). containerd's own clients send up to 16 MiB, but nothing they send us comes near 4 MiB
 * (a snapshot's labels are bounded to 1 MiB); a larger or an inflating message is refused with
 * ResourceExhausted before it is parsed (connect reads the envelope's length first, and inflates
 * with zlib's `maxOutputLength` set to this bound).
 */
export const maxReceiveMessageBytes = 4 * 1024 * 1024;

/**
 * Longest status message sent, in characters (before percent-encoding). A longer one is cut:
 * trailers must fit the peer's header limits, or the client gets a reset stream (seen:
 * FRAME_SIZE_ERROR for a 1 MiB message) instead of a gRPC status.
 */
export const maxStatusMessageLength = 1024;

const grpcStatusInternal = "13";
const grpcStatusInvalidArgument = "3";

/** `grpc-status` / `grpc-message` as sent: parse failures become InvalidArgument, long messages are cut. */
export function boundStatus(headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const encoded = headers["grpc-message"];
  if (typeof encoded !== "string") return headers;
  let message: string;
  try {
    message = decodeURIComponent(encoded);
  } catch {
    message = encoded;
  }
  let status = headers["grpc-status"];
  // connect reports a request it cannot decode (malformed protobuf, invalid UTF-8 in a string
  // field) as Internal ("parse binary: ..."): the fault is the caller's.
  if (String(status) === grpcStatusInternal && message.startsWith("parse binary:")) {
    status = grpcStatusInvalidArgument;
    message = `malformed request message: ${message.slice("parse binary:".length).trim()}`;
  }
  if (message.length > maxStatusMessageLength) {
    message = `${message.slice(0, maxStatusMessageLength)}... (${message.length} characters)`;
  }
  return { ...headers, "grpc-status": status, "grpc-message": encodeURIComponent(message) };
}

/** Passes the gRPC status of every response through {@link boundStatus}. */
function boundStatuses(
  handler: (request: Http2ServerRequest, response: Http2ServerResponse) => void,
): (request: Http2ServerRequest, response: Http2ServerResponse) => void {
  return (request, response) => {
    const addTrailers = response.addTrailers.bind(response);
    response.addTrailers = (headers: OutgoingHttpHeaders) => addTrailers(boundStatus(headers));
    const writeHead = response.writeHead.bind(response) as (
      status: number,
      headers?: OutgoingHttpHeaders,
    ) => Http2ServerResponse;
    response.writeHead = ((status: number, headers?: OutgoingHttpHeaders) =>
      writeHead(
        status,
        headers === undefined ? headers : boundStatus(headers),
      )) as typeof response.writeHead;
    handler(request, response);
  };
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

/**
 * gRPC (HTTP/2 without TLS, "prior knowledge") on a unix socket with connect-es: what containerd's
 * grpc-go client and the kubelet speak.
 */
export async function listenGrpc(options: GrpcServerOptions): Promise<GrpcServer> {
  const { address, logger } = options;
  await prepareDirectory(address);
  await claimSocketPath(address);

  const handler = connectNodeAdapter({
    routes: options.routes,
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: maxReceiveMessageBytes,
    ...(options.interceptors ? { interceptors: options.interceptors } : {}),
  });
  const server: Http2Server = createServer({}, boundStatuses(handler));
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.on("error", (error) => logger.debug({ err: error }, "http2 session error"));
  });

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
        for (const session of sessions) session.close();
        const timer = setTimeout(() => {
          logger.warn(
            { sessions: sessions.size },
            "grace period over; closing remaining connections",
          );
          for (const session of sessions) session.destroy();
        }, graceMs);
        await closed;
        clearTimeout(timer);
        await rm(address, { force: true });
      })();
      return closing;
    },
  };
}
