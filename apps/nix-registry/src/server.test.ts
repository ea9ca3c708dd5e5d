import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode } from "@nix-snapshotter/errdefs";
import { sha256Digest } from "@nix-snapshotter/oci";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { defaultConfig, type RegistryConfig } from "./config.js";
import { NixError } from "./nix.js";
import { type RunningRegistry, startRegistry } from "./registry.js";
import { createFakeNix, type FakeNix, storePaths } from "./testing/fake-nix.js";

/** A Nix antiquotation that would read a secret if it were ever evaluated. */
const SHADOW = ["$", "{builtins.readFile /etc/shadow}"].join("");

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw HTTP request: the path is sent as given (fetch would normalise `..`). */
function send(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      {
        host: "127.0.0.1",
        port,
        path,
        method: options.method ?? "GET",
        headers: options.headers ?? {},
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
      },
    );
    request.on("error", reject);
    request.end();
  });
}

function errorOf(response: Response): { code: string; message: string } {
  return (JSON.parse(response.body.toString()) as { errors: { code: string; message: string }[] })
    .errors[0]!;
}

let dir: string;
let fake: FakeNix;
let registry: RunningRegistry;
let port: number;

async function start(overrides: Partial<RegistryConfig> = {}, closureInfo = true) {
  fake = createFakeNix({ closureInfo });
  registry = await startRegistry({
    config: {
      ...defaultConfig(),
      host: "127.0.0.1",
      port: 0,
      pkgsPath: "/unused",
      storagePath: join(dir, "storage"),
      gcRootsDir: join(dir, "gcroots"),
      platforms: ["amd64"],
      ...overrides,
    },
    logger: pino({ level: "silent" }),
    nix: fake.steps,
    fileSystem: fake.fileSystem,
  });
  port = registry.port;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "nix-registry-server-"));
});

afterEach(async () => {
  await registry?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the registry's routes", () => {
  beforeEach(() => start());

  it("answers the API version check", async () => {
    for (const method of ["GET", "HEAD"]) {
      const response = await send(port, "/v2/", { method });
      expect(response.status).toBe(200);
      expect(response.headers["docker-distribution-api-version"]).toBe("registry/2.0");
    }
  });

  it("serves an index by tag, its manifest and blobs by digest, with digests and lengths", async () => {
    const index = await send(port, "/v2/hello/busybox/manifests/latest");
    expect(index.status).toBe(200);
    expect(index.headers["content-type"]).toBe(OCI_INDEX);
    expect(index.headers["docker-content-digest"]).toBe(sha256Digest(index.body));
    expect(Number(index.headers["content-length"])).toBe(index.body.byteLength);
    const parsed = JSON.parse(index.body.toString()) as {
      manifests: { digest: string; mediaType: string; platform: unknown }[];
    };
    expect(parsed.manifests).toHaveLength(1);
    expect(parsed.manifests[0]!.platform).toEqual({ architecture: "amd64", os: "linux" });

    const manifest = await send(port, `/v2/hello/busybox/manifests/${parsed.manifests[0]!.digest}`);
    expect(manifest.status).toBe(200);
    expect(manifest.headers["content-type"]).toBe(OCI_MANIFEST);
    expect(sha256Digest(manifest.body)).toBe(parsed.manifests[0]!.digest);
    const body = JSON.parse(manifest.body.toString()) as {
      config: { digest: string };
      layers: { digest: string; annotations: Record<string, string> }[];
    };
    const annotations = body.layers[0]!.annotations;
    expect(annotations["containerd.io/snapshot/nix-closure"]).toBe(storePaths.closureInfo);
    expect(annotations["containerd.io/snapshot/nix-store-path.0"]).toBe(storePaths.busybox);
    expect(annotations["containerd.io/snapshot/nix-store-path.1"]).toBe(storePaths.hello);

    const config = await send(port, `/v2/hello/busybox/blobs/${body.config.digest}`);
    expect(config.status).toBe(200);
    expect(config.headers["docker-content-digest"]).toBe(body.config.digest);
    expect(sha256Digest(config.body)).toBe(body.config.digest);
    expect(JSON.parse(config.body.toString()).config.Env).toEqual([
      "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
    ]);
    const head = await send(port, `/v2/hello/busybox/blobs/${body.layers[0]!.digest}`, {
      method: "HEAD",
    });
    expect(head.status).toBe(200);
    expect(head.body.byteLength).toBe(0);
    expect(Number(head.headers["content-length"])).toBeGreaterThan(0);
    expect(fake.builds()).toBe(1);
  });

  it("serves the manifest itself to a client that does not take an index", async () => {
    const response = await send(port, "/v2/hello/manifests/latest", {
      headers: { accept: `${OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json` },
    });
    expect(response.status).toBe(200);
    expect(response.headers["content-type"]).toBe(OCI_MANIFEST);
    const only = await send(port, "/v2/hello/manifests/latest", {
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
    });
    expect(only.status).toBe(404);
    expect(errorOf(only).code).toBe("MANIFEST_UNKNOWN");
  });

  it("builds once, then serves from the cache", async () => {
    const first = await send(port, "/v2/hello/manifests/latest", { method: "HEAD" });
    const second = await send(port, "/v2/hello/manifests/latest");
    expect(first.status).toBe(200);
    expect(first.body.byteLength).toBe(0);
    expect(second.headers["docker-content-digest"]).toBe(first.headers["docker-content-digest"]);
    expect(fake.builds()).toBe(1);
    const metrics = (await send(port, "/metrics")).body.toString();
    expect(metrics).toContain("nix_registry_build_total 1");
    expect(metrics).toContain("nix_registry_cache_hit_total 1");
  });

  it("shares one build between concurrent requests for the same new image", async () => {
    let open: () => void = () => undefined;
    fake.hold = new Promise((resolve) => {
      open = resolve;
    });
    const requests = Array.from({ length: 5 }, () =>
      send(port, "/v2/busybox/hello/manifests/latest"),
    );
    while (fake.builds() === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    open();
    const responses = await Promise.all(requests);
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
    expect(
      new Set(responses.map((response) => response.headers["docker-content-digest"])).size,
    ).toBe(1);
    expect(fake.builds()).toBe(1);
  });

  it("names unknown packages and non-packages", async () => {
    const response = await send(port, "/v2/hello/nope/lib/manifests/latest");
    expect(response.status).toBe(404);
    expect(errorOf(response)).toEqual({
      code: "NAME_UNKNOWN",
      message: expect.stringMatching(/"nope" is not in the package set; "lib" is not a package/),
      detail: { missing: ["nope"], notPackages: ["lib"] },
    } as never);
    expect(fake.builds()).toBe(0);
    const tags = await send(port, "/v2/nope/tags/list");
    expect(tags.status).toBe(404);
    expect(errorOf(tags).code).toBe("NAME_UNKNOWN");
  });

  it("lists the served tag", async () => {
    const response = await send(port, "/v2/hello/tags/list");
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body.toString())).toEqual({ name: "hello", tags: ["latest"] });
  });

  it("pages tags/list with n and last, and refuses bad paging", async () => {
    const none = await send(port, "/v2/hello/tags/list?n=0");
    expect(JSON.parse(none.body.toString())).toEqual({ name: "hello", tags: [] });
    expect(none.headers.link).toBeUndefined();
    const after = await send(port, "/v2/hello/tags/list?last=latest");
    expect(JSON.parse(after.body.toString())).toEqual({ name: "hello", tags: [] });
    const before = await send(port, "/v2/hello/tags/list?n=5&last=a");
    expect(JSON.parse(before.body.toString())).toEqual({ name: "hello", tags: ["latest"] });
    for (const query of ["n=-1", "n=1e3", "n=99999999", "last=..%2Fx", `last=${"a".repeat(200)}`]) {
      const response = await send(port, `/v2/hello/tags/list?${query}`);
      expect([query, response.status, errorOf(response).code]).toEqual([
        query,
        400,
        "NAME_INVALID",
      ]);
    }
  });

  it("answers unknown tags, digests and blobs with the spec's codes", async () => {
    const tag = await send(port, "/v2/hello/manifests/v1.0");
    expect([tag.status, errorOf(tag).code]).toEqual([404, "MANIFEST_UNKNOWN"]);
    const digest = `sha256:${"0".repeat(64)}`;
    const manifest = await send(port, `/v2/hello/manifests/${digest}`);
    expect([manifest.status, errorOf(manifest).code]).toEqual([404, "MANIFEST_UNKNOWN"]);
    const blob = await send(port, `/v2/hello/blobs/${digest}`);
    expect([blob.status, errorOf(blob).code]).toEqual([404, "BLOB_UNKNOWN"]);
    const bad = await send(port, "/v2/hello/blobs/sha256:xyz");
    expect([bad.status, errorOf(bad).code]).toEqual([400, "DIGEST_INVALID"]);
    const route = await send(port, "/v3/");
    expect(route.status).toBe(404);
    // No binary cache configured: its files are not served.
    expect((await send(port, "/nix-cache-info")).status).toBe(404);
    expect(fake.builds()).toBe(0);
  });

  it("refuses every write method as UNSUPPORTED", async () => {
    for (const [method, path] of [
      ["PUT", "/v2/hello/manifests/latest"],
      ["POST", "/v2/hello/blobs/uploads/"],
      ["PATCH", "/v2/hello/blobs/uploads/x"],
      ["DELETE", `/v2/hello/manifests/sha256:${"0".repeat(64)}`],
    ] as const) {
      const response = await send(port, path, { method });
      expect(response.status).toBe(405);
      expect(response.headers.allow).toBe("GET, HEAD");
      expect(errorOf(response).code).toBe("UNSUPPORTED");
    }
    expect(fake.calls).toEqual([]);
  });

  it("refuses hostile names before any Nix step", async () => {
    const names = [
      "..",
      "../etc",
      "hello/../../etc",
      "%2e%2e/etc",
      "$%7Bbuiltins.readFile%20/etc/shadow%7D",
      SHADOW.replace(/ /g, "%20"),
      "a%22b",
      "a'b",
      "a".repeat(300),
      Array(500).fill("a").join("/"),
      Array(33).fill("a").join("/"),
    ];
    for (const name of names) {
      const response = await send(port, `/v2/${name}/manifests/latest`);
      expect(response.status, name).toBe(400);
      expect(errorOf(response).code, name).toBe("NAME_INVALID");
    }
    const long = await send(port, `/v2/${"a".repeat(10_000)}/manifests/latest`);
    expect([long.status, errorOf(long).code]).toEqual([414, "NAME_INVALID"]);
    expect(errorOf(long).message).toMatch(/longer than 2048/);
    const tags = await send(port, "/v2/a%24b/tags/list");
    expect([tags.status, errorOf(tags).code]).toEqual([400, "NAME_INVALID"]);
    expect(fake.calls).toEqual([]);
  });

  it("refuses an unserved platform with a clear error", async () => {
    const response = await send(port, "/v2/arm64/hello/manifests/latest");
    expect(response.status).toBe(404);
    expect(errorOf(response)).toMatchObject({
      code: "MANIFEST_UNKNOWN",
      message: expect.stringContaining('platform "arm64" is not served by this registry'),
    });
    expect(fake.calls).toEqual([]);
  });

  it("reports a Nix timeout as UNAVAILABLE and keeps no entry", async () => {
    fake.failWith = new NixError(
      ErrorCode.DeadlineExceeded,
      "nix-build killed: NIX_TIMEOUT passed",
    );
    const response = await send(port, "/v2/hello/manifests/latest");
    expect(response.status).toBe(503);
    expect(errorOf(response).message).toMatch(/did not finish within NIX_TIMEOUT/);
    expect(await readdir(join(dir, "storage", "images"))).toEqual([]);
    expect(await readdir(join(dir, "gcroots"))).toEqual([]);
    fake.failWith = undefined;
    expect((await send(port, "/v2/hello/manifests/latest")).status).toBe(200);
    expect(fake.builds()).toBe(2);
  });
});

describe("platforms", () => {
  interface Index {
    manifests: { digest: string; platform: { architecture: string; os: string } }[];
  }
  const indexOf = async (path: string) => {
    const response = await send(port, path, { headers: { accept: OCI_INDEX } });
    expect(response.status, response.body.toString()).toBe(200);
    return JSON.parse(response.body.toString()) as Index;
  };

  it("lists one manifest per platform served, built for each system", async () => {
    await start({ platforms: ["amd64", "arm64"] });
    const index = await indexOf("/v2/hello/manifests/latest");
    expect(index.manifests.map((entry) => entry.platform)).toEqual([
      { architecture: "amd64", os: "linux" },
      { architecture: "arm64", os: "linux" },
    ]);
    expect(fake.calls.filter((call) => call.step === "build").map((call) => call.system)).toEqual([
      "x86_64-linux",
      "aarch64-linux",
    ]);
    // Each manifest is served, with its own config's architecture.
    for (const entry of index.manifests) {
      const manifest = JSON.parse(
        (await send(port, `/v2/hello/manifests/${entry.digest}`)).body.toString(),
      ) as { config: { digest: string } };
      const config = JSON.parse(
        (await send(port, `/v2/hello/blobs/${manifest.config.digest}`)).body.toString(),
      ) as { architecture: string };
      expect(config.architecture).toBe(entry.platform.architecture);
    }
    // A client that takes no index gets the default (first) platform's manifest.
    const only = await send(port, "/v2/hello/manifests/latest", {
      headers: { accept: OCI_MANIFEST },
    });
    expect(only.headers["docker-content-digest"]).toBe(index.manifests[0]!.digest);
  });

  it("leaves out a platform Nix cannot build, and fails only when none can be built", async () => {
    await start({ platforms: ["amd64", "arm64"] });
    fake.failSystems.add("aarch64-linux");
    const index = await indexOf("/v2/hello/manifests/latest");
    expect(index.manifests.map((entry) => entry.platform.architecture)).toEqual(["amd64"]);
    // arm64 asked for by name: that platform alone, and its failure is the answer.
    const arm = await send(port, "/v2/arm64/hello/manifests/latest");
    expect(arm.status).toBe(500);
    expect(errorOf(arm).message).toContain("'aarch64-linux' with features {} is required");
    fake.failSystems.add("x86_64-linux");
    const none = await send(port, "/v2/busybox/manifests/latest");
    expect(none.status).toBe(500);
    expect(await readdir(join(dir, "gcroots"))).toHaveLength(1);
  });

  it("keeps a timeout fatal for the whole image", async () => {
    await start({ platforms: ["amd64", "arm64"] });
    fake.failWith = new NixError(
      ErrorCode.DeadlineExceeded,
      "nix-build killed: NIX_TIMEOUT passed",
    );
    const response = await send(port, "/v2/hello/manifests/latest");
    expect(response.status).toBe(503);
    expect(fake.builds()).toBe(1);
  });
});

describe("bounds", () => {
  it("limits the requests one client has in flight", async () => {
    await start({ maxRequestsPerClient: 2 });
    let open: () => void = () => undefined;
    fake.hold = new Promise((resolve) => {
      open = resolve;
    });
    const held = [
      send(port, "/v2/hello/manifests/latest"),
      send(port, "/v2/busybox/manifests/latest"),
    ];
    while (fake.builds() < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    const third = await send(port, "/v2/");
    expect(third.status).toBe(429);
    expect(errorOf(third).code).toBe("TOOMANYREQUESTS");
    open();
    expect((await Promise.all(held)).map((response) => response.status)).toEqual([200, 200]);
    expect((await send(port, "/v2/")).status).toBe(200);
  });

  it("evicts the least recently used image beyond max_images", async () => {
    await start({ maxImages: 2 });
    const digest = async (name: string) =>
      (await send(port, `/v2/${name}/manifests/latest`)).headers["docker-content-digest"] as string;
    const hello = await digest("hello");
    await digest("busybox");
    await digest("hello"); // hello used last: busybox goes first
    await digest("hello/busybox");
    expect(await readdir(join(dir, "storage", "images"))).toHaveLength(2);
    expect(await readdir(join(dir, "gcroots"))).toHaveLength(2);
    expect(fake.builds()).toBe(3);
    expect((await send(port, `/v2/hello/manifests/${hello}`)).status).toBe(200);
    await digest("busybox");
    expect(fake.builds()).toBe(4);
  });

  it("removes what a killed build left and keeps complete entries across a restart", async () => {
    await start();
    const first = await send(port, "/v2/hello/manifests/latest");
    await registry.close();
    // What a kill -9 mid-build leaves: a roots directory of no entry, a temp file, a stray blob.
    await mkdir(join(dir, "gcroots", ".building-x-1234"), { recursive: true });
    await writeFile(join(dir, "storage", "tmp", "half.tmp"), "half");
    await writeFile(join(dir, "storage", "blobs", "sha256", "f".repeat(64)), "stray");
    await start();
    expect(await readdir(join(dir, "gcroots"))).toHaveLength(1);
    expect(await readdir(join(dir, "storage", "tmp"))).toEqual([]);
    expect(await readdir(join(dir, "storage", "blobs", "sha256"))).not.toContain("f".repeat(64));
    const again = await send(port, "/v2/hello/manifests/latest");
    expect(again.headers["docker-content-digest"]).toBe(first.headers["docker-content-digest"]);
    expect(fake.builds()).toBe(0);
  });

  it("exports the closure and its closure info to the binary cache before serving", async () => {
    await start({ binaryCache: true, binaryCacheSecretKeyFile: "/unused/key.sec" });
    expect((await send(port, "/v2/hello/manifests/latest")).status).toBe(200);
    const exported = fake.calls.find((call) => call.step === "export");
    expect(exported?.names).toEqual([storePaths.busybox, storePaths.hello, storePaths.closureInfo]);
    expect((await send(port, `/${"0".repeat(32)}.narinfo`)).status).toBe(404);
  });

  it("removes an evicted image's narinfos and NARs from the binary cache, not shared ones", async () => {
    await start(
      { binaryCache: true, binaryCacheSecretKeyFile: "/unused/key.sec", maxImages: 1 },
      false,
    );
    const cache = join(dir, "storage", "binary-cache");
    const hash = (path: string) => path.split("/").at(-1)!.slice(0, 32);
    const nar = (letter: string) => `nar/${letter.repeat(52)}.nar.zst`;
    const writeEntry = async (path: string, letter: string) => {
      await writeFile(
        join(cache, `${hash(path)}.narinfo`),
        `StorePath: ${path}\nURL: ${nar(letter)}\n`,
      );
      await writeFile(join(cache, nar(letter)), "nar");
    };
    await mkdir(join(cache, "nar"), { recursive: true });
    expect((await send(port, "/v2/hello/manifests/latest")).status).toBe(200);
    // What `nix copy` would have written for hello's image: busybox, hello, the closure info.
    await writeEntry(storePaths.busybox, "b");
    await writeEntry(storePaths.hello, "h");
    await writeEntry(storePaths.closureInfo, "c");
    // busybox's image evicts hello's (max_images 1); busybox stays exported.
    expect((await send(port, "/v2/busybox/manifests/latest")).status).toBe(200);
    expect((await readdir(cache)).sort()).toEqual([`${hash(storePaths.busybox)}.narinfo`, "nar"]);
    expect(await readdir(join(cache, "nar"))).toEqual([nar("b").slice(4)]);
    expect((await send(port, `/${hash(storePaths.busybox)}.narinfo`)).status).toBe(200);
    expect((await send(port, `/${hash(storePaths.hello)}.narinfo`)).status).toBe(404);
  });

  it("uses only the per-path form when the set has no closureInfo", async () => {
    await start({}, false);
    const index = JSON.parse((await send(port, "/v2/hello/manifests/latest")).body.toString()) as {
      manifests: { digest: string }[];
    };
    const manifest = JSON.parse(
      (await send(port, `/v2/hello/manifests/${index.manifests[0]!.digest}`)).body.toString(),
    ) as { layers: { annotations: Record<string, string> }[] };
    const annotations = manifest.layers[0]!.annotations;
    expect(annotations["containerd.io/snapshot/nix-closure"]).toBeUndefined();
    expect(annotations["containerd.io/snapshot/nix-store-path.1"]).toBe(storePaths.hello);
    expect(fake.calls.map((call) => call.step)).toContain("closure");
  });
});
