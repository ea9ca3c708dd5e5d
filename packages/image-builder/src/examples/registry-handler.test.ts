import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sha256Digest } from "@nix-snapshotter/oci";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryFileSystem } from "../file-system.js";
import { createImageHandler } from "./registry-handler.js";

const here = dirname(fileURLToPath(import.meta.url));
const hello = "/nix/store/s66mzxpvicwk07gjbjfw9izjfa797vsw-hello-2.12.1";
const fileSystem = createMemoryFileSystem({ [`${hello}/bin/hello`]: { type: "file" } });

let server: Server;
let base: string;

beforeAll(async () => {
  const handler = createImageHandler({
    async resolve(name, tag) {
      if (name === "hello" && tag === "latest") {
        return {
          closure: [hello],
          copyToRoot: [hello],
          config: { Entrypoint: ["/bin/hello"] },
          fileSystem,
        };
      }
      if (name === "hostile") return { closure: ["/etc"], fileSystem };
      return undefined;
    },
  });
  server = createServer((request, response) => void handler(request, response));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe("README example: a registry request handler", () => {
  it("is the code the README shows", async () => {
    const readme = await readFile(join(here, "..", "..", "README.md"), "utf8");
    const source = await readFile(join(here, "registry-handler.ts"), "utf8");
    const shown = source.replace('from "../index.js"', 'from "@nix-snapshotter/image-builder"');
    // Compared without white space and commas: the formatter may wrap the README's copy.
    const normalize = (text: string) => text.replace(/[\s,]+/g, "");
    expect(normalize(readme)).toContain(normalize(shown));
  });

  it("serves a manifest built on demand and its blobs, by digest", async () => {
    const response = await fetch(`${base}/v2/hello/manifests/latest`);
    expect(response.status).toBe(200);
    const body = Buffer.from(await response.arrayBuffer());
    expect(response.headers.get("content-type")).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(response.headers.get("docker-content-digest")).toBe(sha256Digest(body));
    const manifest = JSON.parse(body.toString()) as {
      config: { digest: string };
      layers: Array<{ digest: string; annotations: Record<string, string> }>;
    };
    expect(manifest.layers[0]?.annotations["containerd.io/snapshot/nix-store-path.0"]).toBe(hello);
    for (const digest of [manifest.config.digest, manifest.layers[0]!.digest]) {
      const blob = Buffer.from(
        await (await fetch(`${base}/v2/hello/blobs/${digest}`)).arrayBuffer(),
      );
      expect(sha256Digest(blob)).toBe(digest);
    }
    const byDigest = await fetch(`${base}/v2/hello/manifests/${sha256Digest(body)}`, {
      method: "HEAD",
    });
    expect(byDigest.status).toBe(200);
    expect(byDigest.headers.get("content-length")).toBe(String(body.byteLength));
  });

  it("answers 404 for unknown images and blobs, 400 for invalid closures", async () => {
    expect((await fetch(`${base}/v2/other/manifests/latest`)).status).toBe(404);
    expect((await fetch(`${base}/v2/hello/blobs/sha256:${"0".repeat(64)}`)).status).toBe(404);
    const hostile = await fetch(`${base}/v2/hostile/manifests/latest`);
    expect(hostile.status).toBe(400);
    expect(await hostile.text()).toContain("is not a canonical store path");
  });
});
