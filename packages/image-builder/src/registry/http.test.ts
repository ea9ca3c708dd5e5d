import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createNodeTransport, readBody } from "./http.js";

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function listen(handler: Parameters<typeof createServer>[1]): Promise<URL> {
  server = createServer(handler);
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
}

describe("node transport", () => {
  it("streams a body with its Content-Length and reads the answer", async () => {
    const received: { length: string | undefined; bytes: number }[] = [];
    const url = await listen(async (request, response) => {
      let bytes = 0;
      for await (const chunk of request) bytes += (chunk as Buffer).byteLength;
      received.push({ length: request.headers["content-length"], bytes });
      response.writeHead(201, { "Docker-Content-Digest": "sha256:x" });
      response.end("done");
    });
    const transport = createNodeTransport();
    const pieces = Array.from({ length: 64 }, () => Buffer.alloc(16 * 1024, 7));
    const response = await transport({
      method: "PUT",
      url,
      headers: {},
      body: { length: 64 * 16 * 1024, open: () => Readable.from(pieces) },
    });
    expect(response.status).toBe(201);
    expect((await readBody(response)).toString()).toBe("done");
    expect(received).toEqual([{ length: String(64 * 16 * 1024), bytes: 64 * 16 * 1024 }]);
    transport.close();
  });

  it("returns an early answer to a streamed upload without hanging or throwing", async () => {
    const url = await listen((_request, response) => {
      // Answer before reading the body, then drop the connection, as a proxy might.
      response.writeHead(401, { "WWW-Authenticate": 'Basic realm="r"', Connection: "close" });
      response.end();
    });
    const transport = createNodeTransport();
    const big = Array.from({ length: 256 }, () => Buffer.alloc(64 * 1024, 1));
    const response = await transport({
      method: "PUT",
      url,
      headers: {},
      body: { length: 256 * 64 * 1024, open: () => Readable.from(big) },
    });
    expect(response.status).toBe(401);
    await readBody(response);
    transport.close();
  });

  it("fails with ETIMEDOUT when the server stays silent", async () => {
    const url = await listen(() => {
      // never answers
    });
    const transport = createNodeTransport({ timeout: 200 });
    await expect(transport({ method: "GET", url, headers: {} })).rejects.toMatchObject({
      code: "ETIMEDOUT",
    });
    transport.close();
  });

  it("refuses a body larger than the read limit", async () => {
    const url = await listen((_request, response) => {
      response.end(Buffer.alloc(2048));
    });
    const transport = createNodeTransport();
    const response = await transport({ method: "GET", url, headers: {} });
    await expect(readBody(response, 1024)).rejects.toThrow(/larger than 1024 bytes/);
    transport.close();
  });
});
