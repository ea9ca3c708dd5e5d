import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/bench/pull.ts"],
  format: ["esm"],
  // tsup gives the declaration build only the entries as root files; `composite` would reject
  // every other file of src.
  dts: { compilerOptions: { composite: false } },
  clean: true,
  sourcemap: true,
  target: "node22",
  // The benchmark imports dev dependencies (the snapshotter, connect-node): keep them imports.
  external: [/^@nix-snapshotter\//, /^@connectrpc\//],
});
