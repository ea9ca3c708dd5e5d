import { defineConfig } from "tsup";
import { appOptions, libraryOptions } from "../../tsup.base.js";

export default defineConfig({
  ...appOptions,
  entry: { main: "src/main.ts", "testing/index": "src/testing/index.ts" },
  // Declarations only for the test harness (`nix-registry/testing`, used by bench/).
  dts: { ...libraryOptions.dts, entry: { "testing/index": "src/testing/index.ts" } },
});
