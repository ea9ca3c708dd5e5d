import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.base.js";

export default defineConfig({
  ...libraryOptions,
  entry: ["src/index.ts", "src/testing/index.ts", "src/stress/kill-stress.ts"],
  // The conformance suite runs inside the caller's vitest.
  external: ["vitest"],
});
