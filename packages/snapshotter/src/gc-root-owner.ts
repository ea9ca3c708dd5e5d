import { createHash } from "node:crypto";
import { resolve } from "node:path";

/**
 * The prefix of the GC root owners of a snapshotter rooted at `root` (`<prefix><snapshot id>`):
 * `snapshot-` and 12 hex digits of the root's absolute path, so two roots never share owners.
 */
export function defaultGcRootOwnerPrefix(root: string): string {
  return `snapshot-${createHash("sha256").update(resolve(root)).digest("hex").slice(0, 12)}-`;
}
