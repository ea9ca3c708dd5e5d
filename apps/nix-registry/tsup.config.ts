import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.base.js";

export default defineConfig({ ...appOptions, entry: ["src/main.ts"] });
