import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { ProtoSource } from "./proto-compare.js";

/** Reads every `.proto` file under a directory, sorted by path (relative to the directory). */
export function readProtoTree(directory: string): ProtoSource[] {
  const sources: ProtoSource[] = [];
  const visit = (current: string): void => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) {
        visit(path);
      } else if (entry.isFile() && entry.name.endsWith(".proto")) {
        sources.push({ path: relative(directory, path), text: readFileSync(path, "utf8") });
      }
    }
  };
  visit(directory);
  return sources.sort((left, right) => left.path.localeCompare(right.path));
}
