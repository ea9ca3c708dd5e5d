import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "@nix-snapshotter/nix-store";
import { Authenticator, repositoryScope, TransientError } from "./auth.js";
import { parseChallenges } from "./challenge.js";
import { type CredentialsProvider, createDockerCredentialsProvider } from "./credentials.js";
import { codeForStatus, parseDistributionErrors, RegistryError } from "./errors.js";
import {
  bytesStream,
  createNodeTransport,
  discard,
  type HttpResponse,
  type HttpTransport,
  header,
  type RequestBody,
  readBody,
} from "./http.js";
import {
  defaultRetryPolicy,
  isRetryableError,
  isRetryableStatus,
  parseRetryAfter,
  type RetryPolicy,
  retryDelay,
} from "./retry.js";

/** The part of a descriptor the registry protocol needs. */
export interface BlobDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** Called after each HTTP exchange with the registry (not the token server). */
export type RequestListener = (event: { method: string; url: string; status: number }) => void;

export interface RegistryClientOptions {
  /** Registry host as written in references: `ghcr.io`, `127.0.0.1:5000`, `docker.io`. */
  registry: string;
  /** Speak plain HTTP instead of HTTPS (never chosen silently, also not for localhost). */
  plainHttp?: boolean;
  /** Where credentials come from (default: docker's config.json, see createDockerCredentialsProvider). */
  credentials?: CredentialsProvider;
  retry?: Partial<RetryPolicy>;
  /** HTTP seam (default: node:http/https with keep-alive). */
  transport?: HttpTransport;
  /** CA certificates (PEM) to trust for the registry's HTTPS (default: Node's, plus NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** pino (nix-store's `Logger` contract): requests at debug, retried failures at warn. */
  logger?: Logger;
  onRequest?: RequestListener;
  userAgent?: string;
  /** Waits between retries (default setTimeout); tests pass a fake. */
  sleep?: (milliseconds: number) => Promise<void>;
}

export interface UploadBlobOptions {
  /** Blobs larger than this go up in PATCH chunks of this size (default 16 MiB). */
  chunkSize?: number;
  /** Try a cross-repository mount from this repository of the same registry first. */
  mountFrom?: string;
  /** Bytes sent so far for this blob (restarts from 0 when an upload is retried). */
  onProgress?: (bytes: number) => void;
}

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  data: Buffer;
}

/** Accept header for manifests: OCI and Docker schema 2, images and indexes. */
export const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

const defaultChunkSize = 16 * 1024 * 1024;

/** A blob to upload: its bytes, or a function opening a fresh stream of them on each attempt. */
export type BlobContent =
  | Uint8Array
  | (() => Promise<Readable | Uint8Array> | Readable | Uint8Array);

interface ExchangeSpec {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: RequestBody;
  repository?: string;
  scopes: string[];
  /** What the request is about, for error messages: `blob sha256:...`, `manifest latest`. */
  subject: string;
  /** Statuses that are success for this request. */
  expect: number[];
}

/** The API host of a registry name (`docker.io` is served by `registry-1.docker.io`). */
export function registryApiHost(registry: string): string {
  return registry === "docker.io" || registry === "index.docker.io"
    ? "registry-1.docker.io"
    : registry;
}

/**
 * A client of the OCI distribution API for one registry: blobs (exists, upload monolithic or in
 * chunks, cross-repository mount, download), manifests (put, get), authentication (anonymous,
 * Basic, Bearer tokens) and retries of transient failures with exponential backoff.
 */
export class RegistryClient {
  readonly registry: string;
  readonly baseUrl: URL;
  readonly #transport: HttpTransport;
  readonly #ownTransport: { close(): void } | undefined;
  readonly #auth: Authenticator;
  readonly #retry: RetryPolicy;
  readonly #logger: Logger | undefined;
  readonly #onRequest: RequestListener | undefined;
  readonly #userAgent: string;
  readonly #sleep: (milliseconds: number) => Promise<void>;

  constructor(options: RegistryClientOptions) {
    if (!/^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(options.registry)) {
      throw new RegistryError(
        "InvalidArgument",
        `registry host "${options.registry}" is not valid`,
      );
    }
    this.registry = options.registry;
    this.baseUrl = new URL(
      `${options.plainHttp === true ? "http" : "https"}://${registryApiHost(options.registry)}/`,
    );
    if (options.transport === undefined) {
      const transport = createNodeTransport(options.ca === undefined ? {} : { ca: options.ca });
      this.#transport = transport;
      this.#ownTransport = transport;
    } else {
      this.#transport = options.transport;
      this.#ownTransport = undefined;
    }
    this.#userAgent = options.userAgent ?? "nix2container (nix-snapshotter)";
    this.#auth = new Authenticator({
      registry: options.registry,
      credentials: options.credentials ?? createDockerCredentialsProvider(),
      transport: this.#transport,
      userAgent: this.#userAgent,
    });
    this.#retry = { ...defaultRetryPolicy, ...options.retry };
    this.#logger = options.logger;
    this.#onRequest = options.onRequest;
    this.#sleep =
      options.sleep ??
      ((milliseconds) => new Promise((resolve) => setTimeout(resolve, milliseconds)));
  }

  /** Closes idle connections of the client's own transport. */
  close(): void {
    this.#ownTransport?.close();
  }

  /** Checks that the registry speaks the v2 API and accepts our credentials for `repository`. */
  async ping(repository?: string): Promise<void> {
    const scopes = repository === undefined ? [] : [repositoryScope(repository, "pull")];
    const response = await this.#withRetry(`registry "${this.registry}"`, () =>
      this.#exchange({
        method: "GET",
        url: this.#url("v2/"),
        scopes,
        ...(repository === undefined ? {} : { repository }),
        subject: "API version check",
        expect: [200],
      }),
    );
    discard(response);
  }

  /** True when the repository has the blob (HEAD 200), false on 404. */
  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const response = await this.#withRetry(this.#where(repository), () =>
      this.#exchange({
        method: "HEAD",
        url: this.#url(`v2/${repository}/blobs/${digest}`),
        repository,
        scopes: [repositoryScope(repository, "pull,push")],
        subject: `blob ${digest}`,
        expect: [200, 404],
      }),
    );
    discard(response);
    return response.status === 200;
  }

  /**
   * Uploads a blob: POST to start (or mount), then one PUT `?digest=` with the content, or PATCH
   * chunks followed by a closing PUT for blobs above `chunkSize`. A transient failure anywhere
   * restarts the whole upload. Returns how the blob arrived.
   */
  async uploadBlob(
    repository: string,
    blob: BlobDescriptor,
    content: BlobContent,
    options: UploadBlobOptions = {},
  ): Promise<"uploaded" | "mounted"> {
    const chunkSize = options.chunkSize ?? defaultChunkSize;
    const scopes = [repositoryScope(repository, "pull,push")];
    if (options.mountFrom !== undefined && options.mountFrom !== repository) {
      scopes.push(repositoryScope(options.mountFrom, "pull"));
    }
    return this.#withRetry(this.#where(repository), async () => {
      options.onProgress?.(0);
      const start = this.#url(`v2/${repository}/blobs/uploads/`);
      if (options.mountFrom !== undefined && options.mountFrom !== repository) {
        start.searchParams.set("mount", blob.digest);
        start.searchParams.set("from", options.mountFrom);
      }
      const started = await this.#exchange({
        method: "POST",
        url: start,
        repository,
        scopes,
        subject: `upload of blob ${blob.digest}`,
        expect: [201, 202],
      });
      discard(started);
      if (started.status === 201) {
        options.onProgress?.(blob.size);
        return "mounted";
      }
      let location = this.#location(started, repository, blob.digest);
      if (blob.size <= chunkSize) {
        const finish = new URL(location);
        finish.searchParams.set("digest", blob.digest);
        // A stream factory, not one stream: a 401 answered by new authorization resends the body.
        const body: RequestBody =
          content instanceof Uint8Array
            ? content
            : {
                length: blob.size,
                open: async () => {
                  const opened = await content();
                  const stream = opened instanceof Uint8Array ? bytesStream(opened) : opened;
                  return countBytes(stream, options.onProgress);
                },
              };
        const done = await this.#exchange({
          method: "PUT",
          url: finish,
          headers: { "Content-Type": "application/octet-stream" },
          body,
          repository,
          scopes,
          subject: `blob ${blob.digest}`,
          expect: [201],
        });
        discard(done);
        options.onProgress?.(blob.size);
        return "uploaded";
      }
      const source = await openContent(content);
      let offset = 0;
      for await (const chunk of chunks(source, chunkSize)) {
        const response = await this.#exchange({
          method: "PATCH",
          url: location,
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Range": `${offset}-${offset + chunk.byteLength - 1}`,
          },
          body: chunk,
          repository,
          scopes,
          subject: `chunk ${offset}-${offset + chunk.byteLength - 1} of blob ${blob.digest}`,
          expect: [202],
        });
        discard(response);
        location = this.#location(response, repository, blob.digest);
        offset += chunk.byteLength;
        options.onProgress?.(offset);
      }
      if (offset !== blob.size) {
        throw new RegistryError(
          "DataLoss",
          `blob ${blob.digest}: the image source gave ${offset} bytes, its descriptor says ${blob.size}`,
          { registry: this.registry, repository },
        );
      }
      const finish = new URL(location);
      finish.searchParams.set("digest", blob.digest);
      const done = await this.#exchange({
        method: "PUT",
        url: finish,
        repository,
        scopes,
        subject: `blob ${blob.digest}`,
        expect: [201],
      });
      discard(done);
      return "uploaded";
    });
  }

  /** PUTs a manifest or index under a tag or digest; returns the digest the registry computed. */
  async putManifest(
    repository: string,
    reference: string,
    mediaType: string,
    data: Uint8Array,
  ): Promise<string> {
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const response = await this.#withRetry(this.#where(repository), () =>
      this.#exchange({
        method: "PUT",
        url: this.#url(`v2/${repository}/manifests/${reference}`),
        headers: { "Content-Type": mediaType },
        body: data,
        repository,
        scopes: [repositoryScope(repository, "pull,push")],
        subject: `manifest ${reference}`,
        expect: [200, 201],
      }),
    );
    discard(response);
    const answered = header(response.headers, "docker-content-digest");
    if (answered !== undefined && answered !== digest) {
      throw new RegistryError(
        "DataLoss",
        `${this.#where(repository)}: manifest ${reference} stored with digest ${answered}, expected ${digest}`,
        { registry: this.registry, repository },
      );
    }
    return digest;
  }

  /** GETs a manifest or index by tag or digest; by digest, the content is verified. */
  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    const data = await this.#withRetry(this.#where(repository), async () => {
      const response = await this.#exchange({
        method: "GET",
        url: this.#url(`v2/${repository}/manifests/${reference}`),
        headers: { Accept: MANIFEST_ACCEPT },
        repository,
        scopes: [repositoryScope(repository, "pull")],
        subject: `manifest ${reference}`,
        expect: [200],
      });
      return { response, data: await readBody(response, 4 * 1024 * 1024) };
    });
    const digest = `sha256:${createHash("sha256").update(data.data).digest("hex")}`;
    if (reference.startsWith("sha256:") && reference !== digest) {
      throw new RegistryError(
        "DataLoss",
        `${this.#where(repository)}: manifest ${reference} has content with digest ${digest}`,
        { registry: this.registry, repository },
      );
    }
    const contentType = header(data.response.headers, "content-type") ?? "";
    return { mediaType: contentType.split(";")[0]!.trim(), digest, data: data.data };
  }

  /** Downloads a whole blob and verifies its digest. */
  async getBlob(repository: string, digest: string, limit = 512 * 1024 * 1024): Promise<Buffer> {
    const data = await this.#withRetry(this.#where(repository), async () => {
      const response = await this.#exchange({
        method: "GET",
        url: this.#url(`v2/${repository}/blobs/${digest}`),
        repository,
        scopes: [repositoryScope(repository, "pull")],
        subject: `blob ${digest}`,
        expect: [200],
      });
      return readBody(response, limit);
    });
    const actual = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    if (actual !== digest) {
      throw new RegistryError(
        "DataLoss",
        `${this.#where(repository)}: blob ${digest} has content with digest ${actual}`,
        { registry: this.registry, repository },
      );
    }
    return data;
  }

  #url(path: string): URL {
    return new URL(path, this.baseUrl);
  }

  #where(repository: string): string {
    return `registry "${this.registry}" repository "${repository}"`;
  }

  #location(response: HttpResponse, repository: string, digest: string): URL {
    const location = header(response.headers, "location");
    if (location === undefined || location === "") {
      throw new RegistryError(
        "Internal",
        `${this.#where(repository)}: upload of blob ${digest} answered without a Location header`,
        { registry: this.registry, repository },
      );
    }
    return new URL(location, this.baseUrl);
  }

  async #withRetry<T>(where: string, attempt: () => Promise<T>): Promise<T> {
    let lastError: unknown;
    for (let retry = 0; retry < this.#retry.attempts; retry++) {
      try {
        return await attempt();
      } catch (error) {
        lastError = error;
        const transient =
          error instanceof TransientError ||
          (!(error instanceof RegistryError) && isRetryableError(error));
        if (!transient || retry + 1 >= this.#retry.attempts) break;
        const delay = retryDelay(
          this.#retry,
          retry,
          error instanceof TransientError ? error.retryAfter : undefined,
        );
        this.#logger?.warn(
          {
            registry: this.registry,
            attempt: retry + 1,
            delay: Math.round(delay),
            err: error,
          },
          "transient registry failure, retrying",
        );
        await this.#sleep(delay);
      }
    }
    throw this.#finalError(where, lastError);
  }

  #finalError(where: string, error: unknown): Error {
    if (error instanceof RegistryError) return error;
    if (error instanceof TransientError) {
      return new RegistryError(
        error.status === 429 ? "ResourceExhausted" : "Unavailable",
        `${where}: ${error.message} (gave up after ${this.#retry.attempts} attempts)`,
        { registry: this.registry, status: error.status, cause: error },
      );
    }
    const message = describe(error);
    const tls = tlsProblem(error, this.baseUrl);
    return new RegistryError(
      "Unavailable",
      `${where} unreachable at ${this.baseUrl.origin}: ${message}${tls?.hint ?? ""}${isRetryableError(error) ? ` (gave up after ${this.#retry.attempts} attempts)` : ""}`,
      {
        registry: this.registry,
        cause: error,
        ...(tls?.registrySpeaks === undefined ? {} : { registrySpeaks: tls.registrySpeaks }),
      },
    );
  }

  /**
   * One request with authorization: a 401 is answered once by following its challenge; GET and
   * HEAD follow redirects (Authorization dropped when the origin changes). Statuses outside
   * `expect` become RegistryError, or TransientError when worth retrying.
   */
  async #exchange(spec: ExchangeSpec): Promise<HttpResponse> {
    let authorization = await this.#auth.authorization(spec.scopes, spec.repository);
    for (let authAttempt = 0; ; authAttempt++) {
      let url = spec.url;
      let response: HttpResponse;
      for (let redirects = 0; ; redirects++) {
        const headers: Record<string, string> = { "User-Agent": this.#userAgent, ...spec.headers };
        if (authorization !== undefined && url.origin === this.baseUrl.origin) {
          headers.Authorization = authorization;
        }
        response = await this.#transport({
          method: spec.method,
          url,
          headers,
          ...(spec.body === undefined ? {} : { body: spec.body }),
        });
        this.#logger?.debug(
          { method: spec.method, url: url.href, status: response.status },
          "registry request",
        );
        this.#onRequest?.({ method: spec.method, url: url.href, status: response.status });
        const location = header(response.headers, "location");
        const redirect = [301, 302, 303, 307, 308].includes(response.status);
        if (
          !redirect ||
          (spec.method !== "GET" && spec.method !== "HEAD") ||
          location === undefined
        )
          break;
        if (redirects >= 5) break;
        discard(response);
        url = new URL(location, url);
      }
      if (response.status === 401 && authAttempt === 0) {
        discard(response);
        const retry = await this.#auth.challenge(
          header(response.headers, "www-authenticate"),
          spec.scopes,
          spec.repository,
          authorization,
        );
        if (retry) {
          authorization = await this.#auth.authorization(spec.scopes, spec.repository);
          continue;
        }
        return this.#fail(spec, response, "");
      }
      if (spec.expect.includes(response.status)) return response;
      const body =
        spec.method === "HEAD"
          ? ""
          : (await readBody(response, 64 * 1024).catch(() => Buffer.alloc(0))).toString("utf8");
      return this.#fail(spec, response, body);
    }
  }

  async #fail(spec: ExchangeSpec, response: HttpResponse, body: string): Promise<never> {
    const status = response.status;
    const where =
      spec.repository === undefined ? `registry "${this.registry}"` : this.#where(spec.repository);
    const errors = parseDistributionErrors(body);
    const detail =
      errors.length > 0
        ? errors
            .map((entry) => `${entry.code}${entry.message === "" ? "" : `: ${entry.message}`}`)
            .join("; ")
        : body.trim().slice(0, 200);
    const suffix = detail === "" ? "" : ` (${detail})`;
    if (isRetryableStatus(status)) {
      throw new TransientError(
        `${spec.method} ${spec.subject}: HTTP ${status}${suffix}`,
        status,
        parseRetryAfter(header(response.headers, "retry-after")),
      );
    }
    const options = {
      registry: this.registry,
      status,
      ...(spec.repository === undefined ? {} : { repository: spec.repository }),
    };
    switch (status) {
      case 401: {
        const challenge = parseChallenges(header(response.headers, "www-authenticate") ?? "").find(
          (entry) => entry.scheme === "bearer",
        );
        if (challenge?.parameters.error === "insufficient_scope") {
          throw new RegistryError(
            "PermissionDenied",
            `${where}: ${spec.method} ${spec.subject}: access denied: the token obtained with ${await this.#auth.describeCredentials()} does not grant ${challenge.parameters.scope ?? spec.scopes.join(" ")} (insufficient_scope)${suffix}`,
            options,
          );
        }
        throw new RegistryError(
          "Unauthenticated",
          `${where}: ${spec.method} ${spec.subject}: authentication failed (HTTP 401) with ${await this.#auth.describeCredentials()}${suffix}`,
          options,
        );
      }
      case 403:
        throw new RegistryError(
          "PermissionDenied",
          `${where}: ${spec.method} ${spec.subject}: access denied (HTTP 403) with ${await this.#auth.describeCredentials()}${suffix}`,
          options,
        );
      case 404:
        throw new RegistryError(
          "NotFound",
          `${where}: ${spec.method} ${spec.subject}: not found (HTTP 404)${suffix}`,
          options,
        );
      default: {
        const httpsToHttp = status === 400 && /HTTP request to an HTTPS server/i.test(body);
        throw new RegistryError(
          codeForStatus(status),
          `${where}: ${spec.method} ${spec.subject}: HTTP ${status}${suffix}${httpsToHttp ? " (the registry speaks HTTPS, the request was plain HTTP)" : ""}`,
          httpsToHttp ? { ...options, registrySpeaks: "https" } : options,
        );
      }
    }
  }
}

/** Creates a registry client (see RegistryClient). */
export function createRegistryClient(options: RegistryClientOptions): RegistryClient {
  return new RegistryClient(options);
}

async function openContent(content: BlobContent): Promise<Readable | Uint8Array> {
  return typeof content === "function" ? content() : content;
}

function countBytes(source: Readable, onProgress: ((bytes: number) => void) | undefined): Readable {
  if (onProgress === undefined) return source;
  let total = 0;
  source.on("data", (chunk: Buffer) => {
    total += chunk.byteLength;
    onProgress(total);
  });
  return source;
}

/** Splits bytes or a stream into chunks of exactly `size` bytes (the last one may be shorter). */
async function* chunks(source: Readable | Uint8Array, size: number): AsyncGenerator<Buffer> {
  if (source instanceof Uint8Array) {
    for (let offset = 0; offset < source.byteLength; offset += size) {
      yield Buffer.from(source.subarray(offset, Math.min(source.byteLength, offset + size)));
    }
    return;
  }
  let pending: Buffer[] = [];
  let pendingSize = 0;
  for await (const piece of source as AsyncIterable<Buffer | string>) {
    let chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
    while (chunk.byteLength > 0) {
      const take = Math.min(size - pendingSize, chunk.byteLength);
      pending.push(chunk.subarray(0, take));
      pendingSize += take;
      chunk = chunk.subarray(take);
      if (pendingSize === size) {
        yield Buffer.concat(pending);
        pending = [];
        pendingSize = 0;
      }
    }
  }
  if (pendingSize > 0) yield Buffer.concat(pending);
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    const text = `${typeof code === "string" && !error.message.includes(code) ? `${code} ` : ""}${error.message}${cause}`;
    // OpenSSL messages span lines; keep the error on one.
    return text.replace(/\s+/g, " ").trim();
  }
  return String(error);
}

/** What went wrong with TLS, said without advice about any program's flags. */
function tlsProblem(
  error: unknown,
  baseUrl: URL,
): { hint: string; registrySpeaks?: "http" } | undefined {
  if (baseUrl.protocol !== "https:") return undefined;
  const text = describe(error);
  if (/wrong version number|EPROTO|packet length too long|ERR_SSL/i.test(text)) {
    return { hint: " (the registry does not speak TLS here)", registrySpeaks: "http" };
  }
  if (/CERT|self[- ]signed|unable to (get|verify)|altname/i.test(text)) {
    return {
      hint: " (the registry's TLS certificate is not trusted: add its CA with NODE_EXTRA_CA_CERTS=<file.pem>)",
    };
  }
  return undefined;
}
