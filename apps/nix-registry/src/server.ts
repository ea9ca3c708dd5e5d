import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import {
  createServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { join } from "node:path";
import { ErrorCode } from "@nix-snapshotter/errdefs";
import type { Logger } from "@nix-snapshotter/nix-store";
import { MediaType } from "@nix-snapshotter/oci";
import { RegistryError, type RegistryErrorOptions, toDistributionError } from "./errors.js";
import type { ImageService } from "./image-service.js";
import { type ImageStore, isDigest } from "./image-store.js";
import type { RegistryMetrics } from "./metrics.js";
import { NameError, type NameLimits, parseImageName, quote } from "./names.js";

export interface RegistryServerOptions {
  service: ImageService;
  store: ImageStore;
  logger: Logger;
  metrics: RegistryMetrics;
  /** Platform of names without an `arm64` component. */
  defaultPlatform: string;
  nameLimits: NameLimits;
  /** Longest request target (path and query) accepted, in bytes. */
  maxUrlLength: number;
  /** Most requests one client address may have in flight. */
  maxRequestsPerClient: number;
  /** Most bytes of request headers (Node's `maxHeaderSize`). */
  maxHeaderBytes: number;
  /** Milliseconds a request may take in all (a build included). */
  requestTimeoutMs: number;
  /** Serve `/metrics` (Prometheus) beside `/v2/`. */
  metricsEnabled: boolean;
  /** Serve this binary cache directory (`nix-cache-info`, `*.narinfo`, `nar/*`); undefined = off. */
  binaryCacheDir: string | undefined;
}

/** Files of a binary cache a client may ask for, by exact name grammar. */
const binaryCacheFiles: { pattern: RegExp; contentType: string }[] = [
  { pattern: /^\/nix-cache-info$/, contentType: "text/x-nix-cache-info" },
  { pattern: /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/, contentType: "text/x-nix-narinfo" },
  {
    pattern: /^\/nar\/[0-9a-df-np-sv-z]{52}\.nar(?:\.(?:zst|xz|bz2))?$/,
    contentType: "application/x-nix-nar",
  },
];

/** Largest manifest or index read back from storage. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** The spec's tag grammar, minus what git refuses in a branch name (`..`, a `.lock` end). */
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const isTag = (tag: string) =>
  tagPattern.test(tag) && !tag.includes("..") && !tag.endsWith(".lock");
const SERVED_TAG = "latest";

/** Most tags in one tags/list answer (a client asks for the rest with `last`). */
const MAX_TAGS_PAGE = 1000;

/**
 * The distribution spec's tags/list paging from the URL's query: `n` (at most MAX_TAGS_PAGE, the
 * default) and `last` (the answer starts after it, in lexical order). A string: why it is refused.
 */
function tagsPage(url: string): { n: number; last?: string } | string {
  const query = new URLSearchParams(url.includes("?") ? url.slice(url.indexOf("?") + 1) : "");
  const n = query.get("n");
  const last = query.get("last");
  if (n !== null && !/^\d{1,7}$/.test(n)) return `tags/list: n=${quote(n, 32)} is not a count`;
  if (last !== null && !isTag(last)) return `tags/list: last=${quote(last, 140)} is not a tag`;
  return {
    n: n === null ? MAX_TAGS_PAGE : Math.min(Number(n), MAX_TAGS_PAGE),
    ...(last === null ? {} : { last }),
  };
}

function manifestRoute(
  path: string,
): { name: string; kind: string; reference: string } | undefined {
  const match = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
  if (match === null) return undefined;
  return { name: match[1]!, kind: match[2]!, reference: match[3]! };
}

/** Whether the client takes an index (true), only a manifest (false); undefined: neither. */
function negotiate(accept: string | string[] | undefined): "index" | "manifest" | undefined {
  const values = (Array.isArray(accept) ? accept.join(",") : (accept ?? ""))
    .split(",")
    .map((item) => item.split(";")[0]!.trim().toLowerCase())
    .filter((item) => item !== "");
  if (values.length === 0) return "index";
  if (values.includes(MediaType.ImageIndex) || values.includes("*/*")) return "index";
  if (values.includes(MediaType.ImageManifest)) return "manifest";
  return undefined;
}

/** The route's name for metrics. */
function routeOf(path: string): string {
  if (path === "/v2/" || path === "/v2") return "base";
  if (path === "/healthz") return "health";
  if (path === "/metrics") return "metrics";
  if (path === "/nix-cache-info" || path.endsWith(".narinfo") || path.startsWith("/nar/")) {
    return "binary-cache";
  }
  if (/^\/v2\/.+\/tags\/list$/.test(path)) return "tags";
  return manifestRoute(path)?.kind ?? "unknown";
}

export function createRegistryHandler(options: RegistryServerOptions) {
  const inFlight = new Map<string, number>();
  const { logger, metrics } = options;

  const send = (
    request: IncomingMessage,
    response: ServerResponse,
    status: number,
    headers: OutgoingHttpHeaders,
    body?: Uint8Array,
  ) => {
    response.writeHead(status, {
      "docker-distribution-api-version": "registry/2.0",
      ...headers,
      ...(body === undefined ? {} : { "content-length": body.byteLength }),
    });
    response.end(request.method === "HEAD" ? undefined : body);
  };

  /** The HTTP edge of errors: every error body and status comes from {@link toDistributionError}. */
  const fail = (request: IncomingMessage, response: ServerResponse, error: unknown) => {
    const answer = toDistributionError(error);
    const body = Buffer.from(
      JSON.stringify({
        errors: [
          {
            code: answer.code,
            message: answer.message,
            ...(answer.detail === undefined ? {} : { detail: answer.detail }),
          },
        ],
      }),
    );
    send(
      request,
      response,
      answer.status,
      { "content-type": "application/json", ...answer.headers },
      body,
    );
    return answer;
  };
  const refuse = (
    request: IncomingMessage,
    response: ServerResponse,
    code: ErrorCode,
    message: string,
    options: RegistryErrorOptions,
  ) => void fail(request, response, new RegistryError(code, message, options));

  const serveBlob = async (
    request: IncomingMessage,
    response: ServerResponse,
    digest: string,
  ): Promise<void> => {
    const location = await options.store.blob(digest);
    if (location === undefined) {
      return refuse(
        request,
        response,
        ErrorCode.NotFound,
        `blob ${digest} unknown to this registry`,
        {
          subject: "blob",
          detail: { digest },
        },
      );
    }
    response.writeHead(200, {
      "docker-distribution-api-version": "registry/2.0",
      "content-type": "application/octet-stream",
      "content-length": location.size,
      "docker-content-digest": digest,
      etag: `"${digest}"`,
    });
    if (request.method === "HEAD") return void response.end();
    await new Promise<void>((resolve) => {
      const stream = createReadStream(location.path);
      stream.once("error", (error) => {
        logger.warn({ err: error, digest }, "blob read failed");
        response.destroy(error);
        resolve();
      });
      response.once("close", () => {
        stream.destroy();
        resolve();
      });
      stream.pipe(response);
    });
  };

  /** A binary cache file: 404 (plain text, as Nix expects) when absent. */
  const serveFile = async (
    request: IncomingMessage,
    response: ServerResponse,
    path: string,
    contentType: string,
  ): Promise<void> => {
    const info = await stat(path).catch(() => undefined);
    if (info === undefined || !info.isFile()) {
      send(request, response, 404, { "content-type": "text/plain" }, Buffer.from("not found\n"));
      return;
    }
    response.writeHead(200, { "content-type": contentType, "content-length": info.size });
    if (request.method === "HEAD") return void response.end();
    await new Promise<void>((resolve) => {
      const stream = createReadStream(path);
      stream.once("error", (error) => {
        response.destroy(error);
        resolve();
      });
      response.once("close", () => {
        stream.destroy();
        resolve();
      });
      stream.pipe(response);
    });
  };

  const serveManifestBytes = (
    request: IncomingMessage,
    response: ServerResponse,
    digest: string,
    data: Uint8Array,
    mediaType: string,
  ) =>
    send(
      request,
      response,
      200,
      { "content-type": mediaType, "docker-content-digest": digest, etag: `"${digest}"` },
      data,
    );

  const route = async (
    request: IncomingMessage,
    response: ServerResponse,
    path: string,
  ): Promise<string> => {
    if (path === "/v2/" || path === "/v2") {
      send(request, response, 200, { "content-type": "application/json" }, Buffer.from("{}"));
      return "base";
    }
    if (path === "/healthz") {
      send(request, response, 200, { "content-type": "text/plain" }, Buffer.from("ok\n"));
      return "health";
    }
    if (options.binaryCacheDir !== undefined) {
      const file = binaryCacheFiles.find((entry) => entry.pattern.test(path));
      if (file !== undefined) {
        await serveFile(request, response, join(options.binaryCacheDir, path), file.contentType);
        return "binary-cache";
      }
    }
    if (path === "/metrics" && options.metricsEnabled) {
      const body = Buffer.from(metrics.render());
      send(request, response, 200, { "content-type": "text/plain; version=0.0.4" }, body);
      return "metrics";
    }
    const tags = /^\/v2\/(.+)\/tags\/list$/.exec(path);
    const target = tags ? { name: tags[1]!, kind: "tags", reference: "" } : manifestRoute(path);
    if (target === undefined) {
      refuse(request, response, ErrorCode.NotFound, `no such endpoint: ${quote(path)}`, {
        subject: "endpoint",
      });
      return "unknown";
    }
    let name: ReturnType<typeof parseImageName>;
    try {
      name = parseImageName(target.name, options.defaultPlatform, options.nameLimits);
    } catch (error) {
      if (!NameError.is(error)) throw error;
      metrics.event("refusedName");
      refuse(request, response, ErrorCode.InvalidArgument, error.message, {
        subject: "name",
        detail: { name: target.name.slice(0, 256) },
      });
      return target.kind;
    }
    if (target.kind === "tags") {
      const page = tagsPage(request.url ?? "");
      if (typeof page === "string") {
        refuse(request, response, ErrorCode.InvalidArgument, page, { subject: "endpoint" });
        return "tags";
      }
      await options.service.checkName(name);
      const listed = (await options.service.listedTags()).filter(isTag);
      const all = [...new Set([SERVED_TAG, ...listed])].sort();
      const after = page.last === undefined ? all : all.filter((tag) => tag > page.last!);
      const tags = after.slice(0, page.n);
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (tags.length < after.length && tags.length > 0) {
        const next = new URLSearchParams({ n: String(page.n), last: tags.at(-1)! });
        headers.link = `</v2/${name.repository}/tags/list?${next.toString()}>; rel="next"`;
      }
      send(
        request,
        response,
        200,
        headers,
        Buffer.from(JSON.stringify({ name: name.repository, tags })),
      );
      return "tags";
    }
    if (target.kind === "blobs") {
      if (!isDigest(target.reference)) {
        refuse(
          request,
          response,
          ErrorCode.InvalidArgument,
          `${quote(target.reference)} is not a sha256 digest`,
          { subject: "digest" },
        );
        return "blobs";
      }
      await serveBlob(request, response, target.reference);
      return "blobs";
    }
    // Manifests: by digest from storage, by tag through the cache (built on first request).
    const reference = target.reference;
    if (reference.includes(":")) {
      if (!isDigest(reference)) {
        refuse(
          request,
          response,
          ErrorCode.InvalidArgument,
          `${quote(reference)} is not a sha256 digest`,
          { subject: "digest" },
        );
        return "manifests";
      }
      const data = await options.store.readBlob(reference, MAX_MANIFEST_BYTES);
      const mediaType = (() => {
        if (data === undefined) return undefined;
        try {
          const parsed = JSON.parse(Buffer.from(data).toString("utf8")) as { mediaType?: unknown };
          return parsed.mediaType === MediaType.ImageIndex ||
            parsed.mediaType === MediaType.ImageManifest
            ? parsed.mediaType
            : undefined;
        } catch {
          return undefined;
        }
      })();
      if (data === undefined || mediaType === undefined) {
        refuse(request, response, ErrorCode.NotFound, `manifest ${reference} unknown`, {
          subject: "manifest",
          detail: { digest: reference },
        });
        return "manifests";
      }
      serveManifestBytes(request, response, reference, data, mediaType);
      return "manifests";
    }
    if (!isTag(reference)) {
      refuse(request, response, ErrorCode.NotFound, `${quote(reference)} is not a valid tag`, {
        subject: "manifest",
      });
      return "manifests";
    }
    if (!options.service.servesTag(reference)) {
      refuse(
        request,
        response,
        ErrorCode.NotFound,
        `tag ${quote(reference)} unknown: this registry serves "${SERVED_TAG}" (the package set as configured)`,
        { subject: "manifest" },
      );
      return "manifests";
    }
    const wanted = negotiate(request.headers.accept);
    if (wanted === undefined) {
      refuse(
        request,
        response,
        ErrorCode.NotFound,
        `no manifest of an accepted media type: this registry serves ${MediaType.ImageIndex} and ${MediaType.ImageManifest}`,
        { subject: "manifest" },
      );
      return "manifests";
    }
    const record = await options.service.image(name, reference);
    const digest = wanted === "index" ? record.index : record.manifest;
    const data = await options.store.readBlob(digest, MAX_MANIFEST_BYTES);
    if (data === undefined) {
      throw new RegistryError(
        ErrorCode.DataLoss,
        `stored ${wanted} ${digest} of ${quote(name.repository)} is missing`,
      );
    }
    serveManifestBytes(
      request,
      response,
      digest,
      data,
      wanted === "index" ? MediaType.ImageIndex : MediaType.ImageManifest,
    );
    return "manifests";
  };

  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const client = request.socket.remoteAddress ?? "unknown";
    const rawUrl = request.url ?? "/";
    let routeName = "invalid";
    const started = Date.now();
    try {
      if (rawUrl.length > options.maxUrlLength) {
        metrics.event("refusedName");
        return refuse(
          request,
          response,
          ErrorCode.InvalidArgument,
          `request URL of ${rawUrl.length} bytes is longer than ${options.maxUrlLength}`,
          { subject: "url" },
        );
      }
      if (request.method !== "GET" && request.method !== "HEAD") {
        return refuse(
          request,
          response,
          ErrorCode.Unimplemented,
          `${quote(request.method ?? "", 16)} is not supported: this registry is read-only (images are built from their names)`,
          { subject: "method" },
        );
      }
      const count = inFlight.get(client) ?? 0;
      if (count >= options.maxRequestsPerClient) {
        metrics.event("throttled");
        return refuse(
          request,
          response,
          ErrorCode.ResourceExhausted,
          `more than ${options.maxRequestsPerClient} requests in flight from this client`,
          { subject: "client" },
        );
      }
      inFlight.set(client, count + 1);
      try {
        const path = rawUrl.split("?")[0]!;
        routeName = routeOf(path);
        await route(request, response, path);
      } finally {
        const left = (inFlight.get(client) ?? 1) - 1;
        if (left <= 0) inFlight.delete(client);
        else inFlight.set(client, left);
      }
    } catch (error) {
      if (!response.headersSent) {
        const answer = fail(request, response, error);
        if (answer.status >= 500) {
          logger.error({ err: error, url: rawUrl.slice(0, 512) }, "request failed");
        }
      } else {
        logger.error({ err: error, url: rawUrl.slice(0, 512) }, "request failed after its headers");
        response.destroy();
      }
    } finally {
      metrics.request(routeName, response.statusCode);
      logger.debug(
        {
          method: request.method,
          url: rawUrl.slice(0, 512),
          status: response.statusCode,
          ms: Date.now() - started,
        },
        "request",
      );
    }
  };
}

/** An HTTP server with the handler and Node's own bounds set from the options. */
export function createRegistryServer(options: RegistryServerOptions): Server {
  const handler = createRegistryHandler(options);
  const server = createServer(
    {
      maxHeaderSize: options.maxHeaderBytes,
      requestTimeout: options.requestTimeoutMs,
      headersTimeout: 20_000,
    },
    (request, response) => void handler(request, response),
  );
  return server;
}
