import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/main.ts"],
  format: ["esm"],
  dts: false,
  clean: true,
  sourcemap: true,
  target: "node22",
  removeNodeProtocol: false,
  banner: { js: "#!/usr/bin/env node" },
});
