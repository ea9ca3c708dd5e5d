import { readFileSync } from "node:fs";

/**
 * Whether a `/proc/<pid>/uid_map` describes a user namespace other than the initial one. The
 * initial namespace maps every id to itself in one line, `0 0 4294967295`; rootlesskit's (and any
 * other) namespace maps a smaller range.
 */
export function isChildUserNamespace(uidMap: string): boolean {
  const lines = uidMap
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length === 3);
  if (lines.length !== 1) return lines.length > 1;
  const [inside, outside, count] = lines[0] as [string, string, string];
  return !(inside === "0" && outside === "0" && count === "4294967295");
}

/**
 * Whether this process runs in a child user namespace (uid 0 there is not the host's root:
 * overlay needs `userxattr`). False when `/proc` cannot be read.
 */
export function inChildUserNamespace(): boolean {
  try {
    return isChildUserNamespace(readFileSync("/proc/self/uid_map", "utf8"));
  } catch {
    return false;
  }
}
