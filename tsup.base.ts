import type { Options } from "tsup";

// Build options shared by every package and app; each tsup.config.ts spreads one of these and
// adds its own entries and special options.
const commonOptions = {
  format: ["esm"],
  clean: true,
  sourcemap: true,
  target: "node22",
  // esbuild drops the `node:` prefix of builtins by default; `sqlite` exists only as
  // `node:sqlite`, and keeping the prefix is harmless for every other builtin.
  removeNodeProtocol: false,
} satisfies Options;

// Libraries: ESM and declarations. tsup gives the declaration build only the entries as root
// files; `composite` (from the base tsconfig, for project references) would reject every other
// file of src.
export const libraryOptions = {
  ...commonOptions,
  dts: { compilerOptions: { composite: false } },
} satisfies Options;

// Apps: one executable ESM file, no declarations.
export const appOptions = {
  ...commonOptions,
  dts: false,
  banner: { js: "#!/usr/bin/env node" },
} satisfies Options;
