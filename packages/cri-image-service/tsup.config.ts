import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.base.js";

export default defineConfig({
  ...libraryOptions,
  entry: ["src/index.ts", "src/bench/pull.ts"],
  // The benchmark imports dev dependencies (the snapshotter, connect-node): keep them imports.
  external: [/^@nix-snapshotter\//, /^@connectrpc\//],
});
