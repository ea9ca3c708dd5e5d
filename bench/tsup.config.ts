import { defineConfig } from "tsup";

export default defineConfig({
  entry: {
    "run-all": "src/run-all.ts",
    "demo-closures": "src/demo-closures.ts",
    "memory-return": "src/memory-return.ts",
  },
  format: ["esm"],
  dts: false,
  clean: true,
  sourcemap: true,
  target: "node22",
});
