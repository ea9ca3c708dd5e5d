import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.base.js";

export default defineConfig({
  ...libraryOptions,
  entry: {
    index: "src/index.ts",
    "testing/index": "src/testing/index.ts",
    // The benchmark (`pnpm bench`): built beside the library, left out of the published files.
    "bench/build-image": "src/bench/build-image.ts",
  },
  dts: {
    ...libraryOptions.dts,
    entry: { index: "src/index.ts", "testing/index": "src/testing/index.ts" },
  },
});
