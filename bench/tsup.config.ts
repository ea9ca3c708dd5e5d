import { defineConfig } from "tsup";

export default defineConfig({
  entry: {
    "run-all": "src/run-all.ts",
    "demo-closures": "src/demo-closures.ts",
    "memory-return": "src/memory-return.ts",
    realise: "src/realise.ts",
    "build-image": "src/build-image.ts",
    mounts: "src/mounts.ts",
    pull: "src/pull.ts",
    "proxy-cycles": "src/proxy-cycles-cli.ts",
    "start-annotation-forms": "src/start-annotation-forms-cli.ts",
    "registry-latency": "src/registry-latency.ts",
    "snapshotter-cycles": "src/snapshotter-cycles.ts",
  },
  format: ["esm"],
  dts: false,
  clean: true,
  sourcemap: true,
  target: "node22",
});
