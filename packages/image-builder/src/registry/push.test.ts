import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createRegistryClient } from "./client.js";
import { staticCredentials } from "./credentials.js";
import { RegistryError } from "./errors.js";
import type { HttpRequest, HttpTransport } from "./http.js";
import { createMemoryImageSource, type ImageDescriptor, pushImage } from "./push.js";

function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function blob(mediaType: string, data: Buffer): ImageDescriptor {
  return { mediaType, digest: sha256(data), size: data.byteLength };
}

/** A transport that must never be called: hostile images fail before any request. */
function silentTransport() {
  const sent: HttpRequest[] = [];
  const transport: HttpTransport = async (request) => {
    sent.push(request);
    return { status: 500, headers: {}, body: Readable.from([]) };
  };
  return { transport, sent };
}

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";

async function expectRefused(
  root: ImageDescriptor,
  blobs: Buffer[],
  pattern: RegExp,
  options: { repository?: string; tag?: string } = {},
) {
  const { transport, sent } = silentTransport();
  const client = createRegistryClient({
    registry: "reg.example",
    transport,
    credentials: staticCredentials(undefined),
    retry: { attempts: 1 },
  });
  const error = await pushImage({
    client,
    repository: options.repository ?? "app",
    ...(options.tag === undefined ? {} : { tag: options.tag }),
    source: createMemoryImageSource(root, blobs),
  }).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(RegistryError);
  expect((error as Error).message).toMatch(pattern);
  expect(sent).toEqual([]);
}

const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux" }));
const configDescriptor = blob("application/vnd.oci.image.config.v1+json", config);

function manifestWith(layers: unknown[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST,
      config: configDescriptor,
      layers,
      ...extra,
    }),
  );
}

describe("pushImage refuses hostile images before any request", () => {
  it("rejects bad repository names and tags", async () => {
    const manifest = manifestWith([]);
    for (const repository of ["App", "a//b", "../x", "a/", "-a", ""]) {
      await expectRefused(blob(MANIFEST, manifest), [manifest, config], /repository name/, {
        repository,
      });
    }
    for (const tag of ["bad tag", ".x", "-x", "a".repeat(129), "a/b"]) {
      await expectRefused(blob(MANIFEST, manifest), [manifest, config], /tag .* is not valid/, {
        tag,
      });
    }
  });

  it("rejects a root that is not a manifest or index, or whose bytes do not match", async () => {
    await expectRefused(
      blob("application/octet-stream", config),
      [config],
      /not an image manifest/,
    );
    const manifest = manifestWith([]);
    const lying = { ...blob(MANIFEST, manifest), size: manifest.byteLength + 1 };
    await expectRefused(lying, [manifest, config], /descriptor says/);
    const other = manifestWith([], { annotations: { a: "b" } });
    const mismatched = { ...blob(MANIFEST, other), digest: sha256(manifest) };
    await expectRefused(
      mismatched,
      [manifest, other, config],
      /descriptor says|content with digest/,
    );
  });

  it("rejects malformed descriptors inside the manifest", async () => {
    const layer = Buffer.from("layer");
    for (const [bad, pattern] of [
      [{ mediaType: "x", digest: "sha256:abc", size: 5 }, /digest "sha256:abc"/],
      [{ mediaType: "x", digest: `SHA256:${"a".repeat(64)}`, size: 5 }, /not sha256/],
      [{ mediaType: "x", digest: sha256(layer), size: -1 }, /invalid size -1/],
      [{ mediaType: "x", digest: sha256(layer), size: 1.5 }, /invalid size 1.5/],
      [{ digest: sha256(layer), size: 5 }, /no mediaType/],
      ["not an object", /is not a descriptor/],
    ] as const) {
      const manifest = manifestWith([bad]);
      await expectRefused(blob(MANIFEST, manifest), [manifest, config, layer], pattern);
    }
  });

  it("rejects a manifest that says another media type, and JSON that is not a manifest", async () => {
    const manifest = manifestWith([], { mediaType: INDEX });
    await expectRefused(blob(MANIFEST, manifest), [manifest, config], /says media type/);
    const notJson = Buffer.from("{not json");
    await expectRefused(blob(MANIFEST, notJson), [notJson], /not valid JSON/);
    const noLayers = Buffer.from(JSON.stringify({ schemaVersion: 2, config: configDescriptor }));
    await expectRefused(blob(MANIFEST, noLayers), [noLayers, config], /no layers array/);
  });

  it("rejects indexes nested too deep", async () => {
    const manifest = manifestWith([]);
    let child = blob(MANIFEST, manifest);
    const blobs = [manifest, config];
    for (let depth = 0; depth < 6; depth++) {
      const index = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: [child] }),
      );
      blobs.push(index);
      child = blob(INDEX, index);
    }
    await expectRefused(child, blobs, /nested more than 4 deep/);
  });
});
