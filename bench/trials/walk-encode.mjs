// One Walk (containerd's List) through the Snapshots service over a store like the start bench's:
// three committed nix layers with 5,001 labels each and ten plain snapshots. Times the service's
// part (Infos to messages, batching by size) plus protobuf-es's encoding of each response, as
// connect does before writing it. In process, no socket. `node bench/trials/walk-encode.mjs [walks]`
// after `pnpm run build`.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

// The snapshotter package's own dependencies (the bench package does not depend on protobuf-es).
const from = (path) => import(new URL(`../../packages/snapshotter/${path}`, import.meta.url).href);
const { create, toBinary } = await from("node_modules/@bufbuild/protobuf/dist/esm/index.js");
const { ListSnapshotsRequestSchema, ListSnapshotsResponseSchema } = await from(
  "node_modules/@nix-snapshotter/api/dist/snapshots-v1.js",
);
const { createSnapshotsService, createSnapshotter } = await from("dist/index.js");

const walks = Number(process.argv[2] ?? 50);
const root = await mkdtemp(join(tmpdir(), "walk-encode-"));
const snapshotter = await createSnapshotter({ root, mountMode: "none" });
try {
  let parent = "";
  for (let layer = 0; layer < 3; layer++) {
    const labels = { "containerd.io/snapshot.ref": `sha256:${"a".repeat(63)}${layer}` };
    for (let i = 0; i < 5001; i++) {
      labels[`containerd.io/snapshot/nix-store-path.${i}`] =
        `/nix/store/${String(i).padStart(32, "0")}-package-${layer}-${i}`;
    }
    await snapshotter.prepare(`extract-${layer}`, parent, { labels });
    await snapshotter.commit(`layer-${layer}`, `extract-${layer}`, { labels });
    parent = `layer-${layer}`;
  }
  for (let i = 0; i < 10; i++) {
    await snapshotter.prepare(`plain-${i}`, "", { labels: { "containerd.io/gc.root": "x" } });
  }
  const service = createSnapshotsService(snapshotter);
  const request = create(ListSnapshotsRequestSchema, {});
  // As a gRPC call arrives (binary), and as a direct call without headers.
  const grpc = {
    signal: new AbortController().signal,
    requestHeader: new Headers({ "content-type": "application/grpc" }),
  };
  const direct = { signal: new AbortController().signal };
  async function walk(context) {
    let bytes = 0;
    for await (const response of service.list(request, context)) {
      bytes += toBinary(ListSnapshotsResponseSchema, response).byteLength;
    }
    return bytes;
  }
  for (const [name, context] of [
    ["gRPC", grpc],
    ["direct", direct],
  ]) {
    const bytes = await walk(context);
    for (let round = 0; round < 3; round++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < walks; i++) await walk(context);
      const ms = Number(process.hrtime.bigint() - start) / 1e6 / walks;
      console.log(`${name} round ${round + 1}: ${ms.toFixed(2)} ms per Walk (${bytes} bytes)`);
    }
  }
} finally {
  await snapshotter.close();
  await rm(root, { recursive: true, force: true });
}
