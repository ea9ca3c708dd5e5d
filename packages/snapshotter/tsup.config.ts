import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/testing/index.ts", "src/bench/mounts.ts"],
  format: ["esm"],
  // tsup gives the declaration build only the entries as root files; `composite` would
  // then reject every other file of src.
  dts: { compilerOptions: { composite: false } },
  clean: true,
  sourcemap: true,
  target: "node22",
  // The conformance suite runs inside the caller's vitest.
  external: ["vitest"],
  // esbuild drops the `node:` prefix of builtins; `sqlite` exists only as `node:sqlite`.
  removeNodeProtocol: false,
});
