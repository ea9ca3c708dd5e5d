import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** A request body: bytes (sent as is) or a stream factory with a known length. */
export type RequestBody = Uint8Array | { length: number; open: () => Promise<Readable> | Readable };

export interface HttpRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body?: RequestBody;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The response body stream; consume it or call `discard()`. */
  body: Readable;
}

/** One HTTP exchange; the registry client is built on this seam. */
export type HttpTransport = (request: HttpRequest) => Promise<HttpResponse>;

export interface NodeTransportOptions {
  /** Idle time on the socket after which a request fails with ETIMEDOUT (default 60 s). */
  timeout?: number;
  /** Verify TLS certificates (default true). */
  rejectUnauthorized?: boolean;
  /** CA certificates (PEM) to trust instead of Node's defaults (which NODE_EXTRA_CA_CERTS extends). */
  ca?: string | Buffer | Array<string | Buffer>;
}

/** An HTTP transport on `node:http` / `node:https` with keep-alive agents. */
export function createNodeTransport(options: NodeTransportOptions = {}): HttpTransport & {
  close(): void;
} {
  const timeout = options.timeout ?? 60_000;
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  const httpsAgent = new HttpsAgent({
    keepAlive: true,
    maxSockets: 16,
    rejectUnauthorized: options.rejectUnauthorized ?? true,
    ...(options.ca === undefined ? {} : { ca: options.ca }),
  });
  const transport = async (request: HttpRequest): Promise<HttpResponse> => {
    const secure = request.url.protocol === "https:";
    const send = secure ? httpsRequest : httpRequest;
    const headers: Record<string, string> = { ...request.headers };
    const body = request.body;
    if (body !== undefined) {
      headers["Content-Length"] = String(
        body instanceof Uint8Array ? body.byteLength : body.length,
      );
    } else if (
      request.method === "PUT" ||
      request.method === "POST" ||
      request.method === "PATCH"
    ) {
      headers["Content-Length"] = "0";
    }
    const stream = body === undefined || body instanceof Uint8Array ? undefined : await body.open();
    return new Promise<HttpResponse>((resolve, reject) => {
      const outgoing = send(request.url, {
        method: request.method,
        headers,
        agent: secure ? httpsAgent : httpAgent,
      });
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        stream?.destroy();
        reject(error);
      };
      outgoing.setTimeout(timeout, () => {
        const error = Object.assign(new Error(`no answer within ${timeout} ms`), {
          code: "ETIMEDOUT",
        });
        outgoing.destroy(error);
      });
      outgoing.on("error", fail);
      outgoing.on("response", (response) => {
        if (settled) {
          response.resume();
          return;
        }
        settled = true;
        response.setTimeout(timeout, () => {
          response.destroy(
            Object.assign(new Error(`response stalled for ${timeout} ms`), { code: "ETIMEDOUT" }),
          );
        });
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: response });
      });
      if (body === undefined) {
        outgoing.end();
      } else if (body instanceof Uint8Array) {
        outgoing.end(body);
      } else {
        pipeline(stream!, outgoing).catch((error: unknown) => {
          // A response that arrived early unpipes the stream; only report real failures.
          if (!settled) fail(error as Error);
        });
      }
    });
  };
  return Object.assign(transport, {
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  });
}

/** Reads a whole response body, failing beyond `limit` bytes. */
export async function readBody(response: HttpResponse, limit = 16 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += (chunk as Buffer).byteLength;
    if (total > limit) {
      response.body.destroy();
      throw new Error(`response body larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Drops a response body, keeping the connection reusable when it is small. */
export function discard(response: HttpResponse): void {
  response.body.resume();
}

/** A stream of the given bytes, for bodies handed out as factories. */
export function bytesStream(data: Uint8Array): Readable {
  return Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
