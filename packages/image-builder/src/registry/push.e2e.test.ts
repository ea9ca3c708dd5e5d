import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { TestRegistry } from "../testing/registry.js";
import {
  createRegistryPool,
  missingRegistryPrograms,
  skopeoRawManifest,
} from "../testing/registry-tools.js";
import { createRegistryClient, type RegistryClientOptions } from "./client.js";
import { createDockerCredentialsProvider, staticCredentials } from "./credentials.js";
import { RegistryError } from "./errors.js";
import { type ImageDescriptor, type ImageSource, pushImage } from "./push.js";

const execFileAsync = promisify(execFile);

const missing = missingRegistryPrograms();

function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

interface TestImage {
  source: ImageSource;
  manifestDigest: string;
  blobDigests: string[];
  blobs: Map<string, Buffer>;
}

/** A small image: a config, a small layer and a layer of `bigLayerSize` bytes (gzip). */
function makeImage(bigLayerSize = 3 * 1024 * 1024 + 17): TestImage {
  const smallRaw = Buffer.from(`layer ${randomBytes(8).toString("hex")}\n`);
  const bigRaw = randomBytes(bigLayerSize);
  const small = gzipSync(smallRaw);
  const big = gzipSync(bigRaw, { level: 1 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: ["PATH=/bin"] },
      rootfs: { type: "layers", diff_ids: [sha256(smallRaw), sha256(bigRaw)] },
    }),
  );
  const descriptor = (mediaType: string, data: Buffer): ImageDescriptor => ({
    mediaType,
    digest: sha256(data),
    size: data.byteLength,
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: descriptor("application/vnd.oci.image.config.v1+json", config),
      layers: [
        {
          ...descriptor("application/vnd.oci.image.layer.v1.tar+gzip", small),
          annotations: { "containerd.io/snapshot/nix-layer": "true" },
        },
        descriptor("application/vnd.oci.image.layer.v1.tar+gzip", big),
      ],
    }),
  );
  const blobs = new Map<string, Buffer>();
  for (const data of [config, small, big, manifest]) blobs.set(sha256(data), data);
  const rootDescriptor = descriptor("application/vnd.oci.image.manifest.v1+json", manifest);
  return {
    source: {
      rootDescriptor,
      // Streams in 64 KiB pieces, as an archive reader would hand them out.
      readBlob: (wanted) => {
        const data = blobs.get(wanted.digest);
        if (data === undefined) throw new Error(`no blob ${wanted.digest}`);
        const pieces: Buffer[] = [];
        for (let offset = 0; offset < data.byteLength; offset += 65536) {
          pieces.push(data.subarray(offset, offset + 65536));
        }
        return Readable.from(pieces);
      },
    },
    manifestDigest: rootDescriptor.digest,
    blobDigests: [sha256(config), sha256(small), sha256(big)],
    blobs,
  };
}

const fastRetry = { attempts: 3, baseDelay: 5, maxDelay: 50 };

function client(registry: TestRegistry, options: Partial<RegistryClientOptions> = {}) {
  return createRegistryClient({
    registry: registry.host,
    plainHttp: true,
    credentials: staticCredentials(
      registry.auth === "none"
        ? undefined
        : {
            kind: "basic",
            username: registry.username,
            password: registry.password,
            source: "test",
          },
    ),
    retry: fastRetry,
    ...options,
  });
}

describe.skipIf(missing.length > 0)(
  `push to docker-registry (missing: ${missing.join(", ") || "none"})`,
  () => {
    const registries = createRegistryPool();
    const start = registries.start;
    let scratch = "";
    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), "nix-snapshotter-push-"));
    });
    afterAll(async () => {
      await rm(scratch, { recursive: true, force: true });
    });
    afterEach(() => registries.stopAll());

    it("pushes without auth (chunked for a big layer); skopeo pulls identical digests; a second push skips every blob", async () => {
      const registry = await start();
      const image = makeImage();
      const registryClient = client(registry);
      const events: string[] = [];
      const result = await pushImage({
        client: registryClient,
        repository: "e2e/plain",
        tag: "v1",
        source: image.source,
        chunkSize: 1024 * 1024,
        onEvent: (event) => events.push(event.type),
      });
      expect(result.digest).toBe(image.manifestDigest);
      expect([...result.uploaded].sort()).toEqual([...image.blobDigests].sort());
      expect(result.skipped).toEqual([]);
      expect(events).toContain("manifest");
      await expect
        .poll(() => registry.requests().filter((r) => r.method === "PATCH").length)
        .toBe(4);

      const layout = join(scratch, "plain-oci");
      await execFileAsync("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${registry.host}/e2e/plain:v1`,
        `oci:${layout}`,
      ]);
      const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
        manifests: { digest: string }[];
      };
      expect(index.manifests.map((m) => m.digest)).toEqual([image.manifestDigest]);
      for (const digest of [...image.blobDigests, image.manifestDigest]) {
        const data = await readFile(join(layout, "blobs", "sha256", digest.slice(7)));
        expect(sha256(data)).toBe(digest);
      }

      registry.clearRequests();
      const again = await pushImage({
        client: registryClient,
        repository: "e2e/plain",
        tag: "v1",
        source: image.source,
      });
      expect(again.digest).toBe(image.manifestDigest);
      expect(again.uploaded).toEqual([]);
      expect([...again.skipped].sort()).toEqual([...image.blobDigests].sort());
      await expect
        .poll(() =>
          registry
            .requests()
            .map((r) => `${r.method} ${r.status}`)
            .sort(),
        )
        .toEqual(["HEAD 200", "HEAD 200", "HEAD 200", "PUT 201"]);
      registryClient.close();
    });

    it("pushes with htpasswd Basic auth and reports bad credentials clearly", async () => {
      const registry = await start({ auth: "basic" });
      const image = makeImage(1000);
      const result = await pushImage({
        client: client(registry),
        repository: "e2e/basic",
        tag: "latest",
        source: image.source,
      });
      expect(sha256(await skopeoRawManifest(registry, "e2e/basic:latest"))).toBe(result.digest);

      const bad = client(registry, {
        credentials: staticCredentials({
          kind: "basic",
          username: registry.username,
          password: "not-the-password",
          source: "test",
        }),
      });
      const error = await pushImage({
        client: bad,
        repository: "e2e/basic",
        tag: "latest",
        source: makeImage(10).source,
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("Unauthenticated");
      expect((error as RegistryError).message).toContain(`registry "${registry.host}"`);
      expect((error as RegistryError).message).toContain(`repository "e2e/basic"`);
      expect((error as RegistryError).message).toContain("401");

      const anonymous = client(registry, { credentials: staticCredentials(undefined) });
      await expect(
        pushImage({ client: anonymous, repository: "e2e/basic", source: makeImage(10).source }),
      ).rejects.toThrow(
        /requires Basic authentication for repository "e2e\/basic" and no credentials/,
      );
    });

    it("pushes with token auth using docker's config.json (auth and identitytoken)", async () => {
      const registry = await start({ auth: "token" });
      const configDirectory = join(scratch, "docker-token");
      await mkdir(configDirectory, { recursive: true });
      await writeFile(
        join(configDirectory, "config.json"),
        JSON.stringify({
          auths: {
            [`http://${registry.host}`]: {
              auth: Buffer.from(`${registry.username}:${registry.password}`).toString("base64"),
            },
          },
        }),
      );
      const image = makeImage(2000);
      const result = await pushImage({
        client: client(registry, {
          credentials: createDockerCredentialsProvider({ configDirectory }),
        }),
        repository: "e2e/token",
        tag: "t1",
        source: image.source,
      });
      // Read before skopeo asks the token server too. Concurrent requests share one token request.
      const tokenRequests = registry.tokenRequests();
      expect(tokenRequests, JSON.stringify(tokenRequests)).toHaveLength(1);
      expect(sha256(await skopeoRawManifest(registry, "e2e/token:t1"))).toBe(result.digest);
      expect(tokenRequests.every((r) => r.status === 200 && r.username === registry.username)).toBe(
        true,
      );
      expect(tokenRequests[0]!.scopes).toContain("repository:e2e/token:pull,push");

      // identitytoken: exchanged with an OAuth2 refresh_token grant.
      await writeFile(
        join(configDirectory, "config.json"),
        JSON.stringify({ auths: { [registry.host]: { identitytoken: registry.refreshToken } } }),
      );
      const viaIdentity = await pushImage({
        client: client(registry, {
          credentials: createDockerCredentialsProvider({ configDirectory }),
        }),
        repository: "e2e/token",
        tag: "t2",
        source: makeImage(3000).source,
      });
      expect(sha256(await skopeoRawManifest(registry, "e2e/token:t2"))).toBe(viaIdentity.digest);
      expect(
        registry.tokenRequests().some((r) => r.grantType === "refresh_token" && r.status === 200),
      ).toBe(true);

      // Wrong password: the token server refuses, the error names registry and repository.
      const bad = client(registry, {
        credentials: staticCredentials({
          kind: "basic",
          username: registry.username,
          password: "x",
          source: "test",
        }),
      });
      const error = await pushImage({
        client: bad,
        repository: "e2e/token",
        tag: "t3",
        source: makeImage(10).source,
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("Unauthenticated");
      expect((error as RegistryError).message).toMatch(
        new RegExp(
          `refused credentials from test for registry "${registry.host.replace(/\./g, "\\.")}" for repository "e2e/token"`,
        ),
      );
    });

    it("reports a token without push access as PermissionDenied (insufficient_scope)", async () => {
      const registry = await start({ auth: "token", anonymousPull: true });
      const anonymous = client(registry, { credentials: staticCredentials(undefined) });
      const error = await pushImage({
        client: anonymous,
        repository: "e2e/readonly",
        tag: "1",
        source: makeImage(10).source,
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("PermissionDenied");
      expect((error as RegistryError).message).toContain(
        `registry "${registry.host}" repository "e2e/readonly"`,
      );
      expect((error as RegistryError).message, (error as Error).message).toContain(
        "the token obtained with no credentials does not grant",
      );
      expect((error as RegistryError).message).toContain("insufficient_scope");
    });

    it("refuses an image whose blob does not match its digest before uploading anything", async () => {
      const registry = await start();
      const image = makeImage(5000);
      const layer = image.blobDigests[1]!;
      const tampered: ImageSource = {
        rootDescriptor: image.source.rootDescriptor,
        readBlob: (descriptor) => {
          const data = image.blobs.get(descriptor.digest)!;
          if (descriptor.digest !== layer) return data;
          const copy = Buffer.from(data);
          copy[copy.length - 1] = copy[copy.length - 1]! ^ 0xff;
          return copy;
        },
      };
      const error = await pushImage({
        client: client(registry),
        repository: "e2e/tampered",
        tag: "x",
        source: tampered,
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("DataLoss");
      expect((error as RegistryError).message).toContain(layer);
      // Only the existence checks reached the registry.
      await expect.poll(() => registry.requests().length).toBe(3);
      expect(registry.requests().every((r) => r.method === "HEAD")).toBe(true);
    });

    it("pushes an index: child manifests by digest, then the index under the tag", async () => {
      const registry = await start();
      const amd64 = makeImage(1000);
      const arm64 = makeImage(1200);
      const child = (image: TestImage, architecture: string) => ({
        ...image.source.rootDescriptor,
        platform: { architecture, os: "linux" },
      });
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: [child(amd64, "amd64"), child(arm64, "arm64")],
        }),
      );
      const blobs = new Map([...amd64.blobs, ...arm64.blobs, [sha256(index), index]]);
      const events: string[] = [];
      const result = await pushImage({
        client: client(registry),
        repository: "e2e/multi",
        tag: "both",
        source: {
          rootDescriptor: {
            mediaType: "application/vnd.oci.image.index.v1+json",
            digest: sha256(index),
            size: index.byteLength,
          },
          readBlob: (descriptor) => blobs.get(descriptor.digest)!,
        },
        onEvent: (event) => {
          if (event.type === "manifest") events.push(`${event.reference} ${event.digest}`);
        },
      });
      expect(result.digest).toBe(sha256(index));
      expect(result.uploaded).toHaveLength(6);
      expect(events).toEqual([
        `${amd64.manifestDigest} ${amd64.manifestDigest}`,
        `${arm64.manifestDigest} ${arm64.manifestDigest}`,
        `both ${sha256(index)}`,
      ]);
      expect(sha256(await skopeoRawManifest(registry, "e2e/multi:both"))).toBe(sha256(index));
      expect(sha256(await skopeoRawManifest(registry, `e2e/multi@${arm64.manifestDigest}`))).toBe(
        arm64.manifestDigest,
      );
    });

    it("mounts blobs from another repository instead of uploading them", async () => {
      const registry = await start();
      const image = makeImage(3000);
      const registryClient = client(registry);
      await pushImage({
        client: registryClient,
        repository: "e2e/source",
        tag: "1",
        source: image.source,
      });
      registry.clearRequests();
      const result = await pushImage({
        client: registryClient,
        repository: "e2e/mounted",
        tag: "1",
        source: image.source,
        mountFrom: "e2e/source",
      });
      expect([...result.mounted].sort()).toEqual([...image.blobDigests].sort());
      expect(result.uploaded).toEqual([]);
      await expect
        .poll(
          () => registry.requests().filter((r) => r.method === "POST" && r.status === 201).length,
        )
        .toBe(3);
      expect(
        registry.requests().some((r) => r.method === "PATCH" || r.uri.includes("digest=")),
      ).toBe(false);
      expect(sha256(await skopeoRawManifest(registry, "e2e/mounted:1"))).toBe(result.digest);
    });

    it("speaks HTTPS by default, trusting a given CA, and explains TLS mismatches", async () => {
      const registry = await start({ tls: true });
      expect(registry.url).toMatch(/^https:/);
      const image = makeImage(2000);
      const secure = client(registry, { plainHttp: false, ca: registry.caCertificate! });
      const result = await pushImage({
        client: secure,
        repository: "e2e/tls",
        tag: "1",
        source: image.source,
      });
      expect(sha256(await skopeoRawManifest(registry, "e2e/tls:1"))).toBe(result.digest);
      secure.close();

      const untrusted = client(registry, { plainHttp: false });
      const error = await untrusted.ping().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("Unavailable");
      expect((error as RegistryError).message).toContain("NODE_EXTRA_CA_CERTS");
      expect((error as RegistryError).message).not.toContain("gave up after");

      const plainToTls = client(registry, { plainHttp: true });
      const httpsError = await plainToTls.ping().catch((caught: unknown) => caught);
      expect((httpsError as RegistryError).message).toMatch(/the registry speaks HTTPS/);
      expect((httpsError as RegistryError).message).not.toContain("--plain-http");
      expect((httpsError as RegistryError).registrySpeaks).toBe("https");

      const plain = await start();
      const tlsToPlain = client(plain, { plainHttp: false });
      const httpError = await tlsToPlain.ping().catch((caught: unknown) => caught);
      expect((httpError as RegistryError).message).toMatch(/does not speak TLS/);
      expect((httpError as RegistryError).message).not.toContain("--plain-http");
      expect((httpError as RegistryError).registrySpeaks).toBe("http");
    });

    it("reports an unreachable registry clearly", async () => {
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as AddressInfo).port;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      const unreachable = createRegistryClient({
        registry: `127.0.0.1:${port}`,
        plainHttp: true,
        credentials: staticCredentials(undefined),
        retry: fastRetry,
      });
      const error = await pushImage({
        client: unreachable,
        repository: "e2e/nowhere",
        source: makeImage(10).source,
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("Unavailable");
      expect((error as RegistryError).message).toContain(`registry "127.0.0.1:${port}"`);
      expect((error as RegistryError).message).toContain("unreachable");
      expect((error as RegistryError).message).toContain("ECONNREFUSED");
      expect((error as RegistryError).message).toContain("after 3 attempts");
    });

    it("retries 503, 429 and connection resets (restarting an upload), not 4xx, through a faulty proxy", async () => {
      const registry = await start();
      const upstream = new URL(registry.url);
      // Faults per request number: the proxy answers these itself instead of forwarding.
      const faults = new Map<number, "503" | "429" | "reset" | "400">();
      const seen: string[] = [];
      let count = 0;
      // And a connection reset on the PATCH with this number (1-based), if set.
      let resetPatch: number | undefined;
      let patches = 0;
      const proxy: Server = createServer((request, response) => {
        const number = count++;
        if (request.method === "PATCH") patches++;
        const fault =
          request.method === "PATCH" && patches === resetPatch ? "reset" : faults.get(number);
        seen.push(`${request.method} ${fault ?? "forward"}`);
        if (fault === "reset") {
          request.socket.destroy();
          return;
        }
        if (fault !== undefined) {
          request.resume();
          response.writeHead(Number(fault), fault === "429" ? { "Retry-After": "0" } : {});
          response.end(
            JSON.stringify({ errors: [{ code: "INJECTED", message: `injected ${fault}` }] }),
          );
          return;
        }
        const forwarded = httpRequest(
          {
            host: upstream.hostname,
            port: upstream.port,
            method: request.method,
            path: request.url,
            headers: request.headers,
          },
          (answer) => {
            const headers = { ...answer.headers };
            if (typeof headers.location === "string") {
              headers.location = headers.location.replace(upstream.host, `127.0.0.1:${port}`);
            }
            response.writeHead(answer.statusCode ?? 502, headers);
            answer.pipe(response);
          },
        );
        request.pipe(forwarded);
      });
      await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
      const port = (proxy.address() as AddressInfo).port;
      try {
        const viaProxy = createRegistryClient({
          registry: `127.0.0.1:${port}`,
          plainHttp: true,
          credentials: staticCredentials(undefined),
          retry: { attempts: 4, baseDelay: 1, maxDelay: 20 },
        });
        const image = makeImage(4000);
        // Requests 0-2 are the three HEADs: fail each kind once.
        faults.set(0, "503");
        faults.set(1, "429");
        faults.set(2, "reset");
        const result = await pushImage({
          client: viaProxy,
          repository: "e2e/retry",
          tag: "r",
          source: image.source,
          concurrency: 1,
        });
        expect(result.digest).toBe(image.manifestDigest);
        expect(seen.slice(0, 3)).toEqual(["HEAD 503", "HEAD 429", "HEAD reset"]);
        expect(sha256(await skopeoRawManifest(registry, "e2e/retry:r"))).toBe(result.digest);

        // A 400 is final: one manifest PUT, no retry.
        seen.length = 0;
        faults.clear();
        count = 0;
        faults.set(3, "400");
        const error = await pushImage({
          client: viaProxy,
          repository: "e2e/retry",
          tag: "r",
          source: image.source,
          concurrency: 1,
        }).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(RegistryError);
        expect((error as RegistryError).code).toBe("InvalidArgument");
        expect((error as RegistryError).message).toContain("INJECTED: injected 400");
        expect(seen).toEqual(["HEAD forward", "HEAD forward", "HEAD forward", "PUT 400"]);

        // A reset in the middle of a chunked upload restarts that blob from its POST.
        seen.length = 0;
        faults.clear();
        resetPatch = 2;
        const chunked = makeImage();
        const again = await pushImage({
          client: viaProxy,
          repository: "e2e/retry-chunks",
          tag: "c",
          source: chunked.source,
          concurrency: 1,
          chunkSize: 1024 * 1024,
        });
        expect(again.digest).toBe(chunked.manifestDigest);
        const reset = seen.indexOf("PATCH reset");
        expect(reset).toBeGreaterThan(0);
        expect(seen.slice(reset - 2, reset + 3)).toEqual([
          "POST forward",
          "PATCH forward",
          "PATCH reset",
          "POST forward",
          "PATCH forward",
        ]);
        expect(sha256(await skopeoRawManifest(registry, "e2e/retry-chunks:c"))).toBe(again.digest);
        viaProxy.close();
      } finally {
        proxy.closeAllConnections();
        await new Promise<void>((resolve) => proxy.close(() => resolve()));
      }
    });
  },
);
