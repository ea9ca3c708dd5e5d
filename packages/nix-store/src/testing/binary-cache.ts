import { createReadStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, normalize, sep } from "node:path";
import { run } from "./run.js";

export interface BinaryCacheOptions {
  /** Store paths to put in the cache, with their closures (they must be valid). */
  paths: readonly string[];
  /** Delay before answering each request. Default 0. */
  latencyMs?: number;
  /** NAR compression of `nix copy`. Default `none` (fast to write). */
  compression?: "none" | "xz" | "zstd" | "bzip2";
  /** Directory holding `nix`; default: found on PATH. */
  nixBin?: string;
}

/** A `file://` binary cache made by `nix copy`, served over HTTP on 127.0.0.1. */
export interface BinaryCache {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** The cache directory. */
  readonly dir: string;
  /**
   * Settings for Nix to use only this cache (`<url>?trusted=1`), unsigned, without cached "not in
   * the cache" answers, also through a nix-daemon:
   * pass as `nixOptions` to `createNixStore` or `realise`.
   */
  readonly nixOptions: Readonly<Record<string, string>>;
  /** Requests answered so far (all methods, all files). */
  requests(): number;
  /** Changes the delay for the next requests. */
  setLatency(latencyMs: number): void;
  /** Stops the server and deletes the directory. */
  close(): Promise<void>;
}

/** Copies the paths into a new binary cache directory and serves it on 127.0.0.1. */
export async function startBinaryCache(options: BinaryCacheOptions): Promise<BinaryCache> {
  const dir = await mkdtemp(join(tmpdir(), "nix-store-cache-"));
  try {
    const nix = options.nixBin === undefined ? "nix" : join(options.nixBin, "nix");
    if (options.paths.length > 0) {
      await run(nix, [
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--to",
        `file://${dir}?compression=${options.compression ?? "none"}`,
        ...options.paths,
      ]);
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return serveBinaryCache(dir, options.latencyMs ?? 0, { removeOnClose: true });
}

/** Serves an existing binary cache directory over HTTP on 127.0.0.1. */
export async function serveBinaryCache(
  dir: string,
  latencyMs = 0,
  { removeOnClose = false }: { removeOnClose?: boolean } = {},
): Promise<BinaryCache> {
  let latency = latencyMs;
  let requestCount = 0;
  const root = normalize(dir);
  const server = createServer((request, response) => {
    requestCount += 1;
    const answer = async () => {
      if (request.method !== "GET" && request.method !== "HEAD") {
        response.writeHead(405).end();
        return;
      }
      const pathname = decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname);
      const file = normalize(join(root, pathname));
      if (!file.startsWith(root + sep)) {
        response.writeHead(404).end();
        return;
      }
      const info = await stat(file).catch(() => undefined);
      if (info === undefined || !info.isFile()) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { "content-length": info.size });
      if (request.method === "HEAD") {
        response.end();
        return;
      }
      createReadStream(file).pipe(response);
    };
    const go = () =>
      answer().catch(() => {
        if (!response.headersSent) response.writeHead(500);
        response.end();
      });
    if (latency > 0) setTimeout(go, latency);
    else go();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    dir,
    nixOptions: {
      // `?trusted=1` marks this cache's unsigned paths acceptable. `require-sigs false` alone is
      // not enough through a nix-daemon: Nix 2.34's daemon opens its store before the client's
      // settings arrive and keeps its own require-sigs (seen: "ignoring substitute ... not
      // signed by any of the keys in 'trusted-public-keys'"); a substituter's own `trusted`
      // flag travels with its URL. Nix 2.8 and 2.26 accept the flag too.
      substituters: `${url}?trusted=1`,
      "require-sigs": "false",
      "narinfo-cache-negative-ttl": "0",
    },
    requests: () => requestCount,
    setLatency(next) {
      latency = next;
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      if (removeOnClose) await rm(dir, { recursive: true, force: true });
    },
  };
}
