import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.base.js";

// One entry per proto package: message names collide across packages (`Info` exists in
// snapshots and content), so each is its own subpath export.
export default defineConfig({
  ...libraryOptions,
  entry: {
    index: "src/index.ts",
    types: "src/types.ts",
    "snapshots-v1": "src/snapshots-v1.ts",
    "content-v1": "src/content-v1.ts",
    "images-v1": "src/images-v1.ts",
    "leases-v1": "src/leases-v1.ts",
    "diff-v1": "src/diff-v1.ts",
    "namespaces-v1": "src/namespaces-v1.ts",
    "version-v1": "src/version-v1.ts",
    "streaming-v1": "src/streaming-v1.ts",
    "transfer-v1": "src/transfer-v1.ts",
    "health-v1": "src/health-v1.ts",
    "cri-v1": "src/cri-v1.ts",
  },
});
