import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.base.js";

export default defineConfig({ ...libraryOptions, entry: ["src/index.ts", "src/testing/index.ts"] });
