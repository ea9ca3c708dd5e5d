import { defineConfig } from "tsup";

export default defineConfig({
  entry: {
    index: "src/index.ts",
    "testing/index": "src/testing/index.ts",
    // The benchmark (`pnpm bench`): built beside the library, left out of the published files.
    "bench/build-image": "src/bench/build-image.ts",
  },
  format: ["esm"],
  dts: {
    entry: { index: "src/index.ts", "testing/index": "src/testing/index.ts" },
    // tsup gives the declaration build only the entries as root files; `composite` (from the
    // base tsconfig) would then reject every other file of src.
    compilerOptions: { composite: false },
  },
  clean: true,
  sourcemap: true,
  target: "node22",
});
