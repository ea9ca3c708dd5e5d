import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.base.js";

export default defineConfig({
  ...appOptions,
  entry: { main: "src/main.ts", "bench/latency": "src/bench/latency.ts" },
});
