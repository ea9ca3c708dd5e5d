import { readFileSync } from "node:fs";

/**
 * The daemon's version: `version` of the app's package.json, which ships beside `dist/` (in the
 * workspace and in the Nix package alike) and is the version the Nix package carries.
 */
export function daemonVersion(
  packageJson: URL = new URL("../package.json", import.meta.url),
): string {
  const text = readFileSync(packageJson, "utf8");
  if (text.length > 1024 * 1024) throw new Error(`${packageJson.pathname}: larger than 1 MiB`);
  const version = (JSON.parse(text) as { version?: unknown }).version;
  if (
    typeof version !== "string" ||
    !/^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$/.test(version)
  ) {
    throw new Error(`${packageJson.pathname}: no valid "version"`);
  }
  return version;
}
