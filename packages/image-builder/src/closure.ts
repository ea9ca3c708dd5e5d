import { posix } from "node:path";
import { DEFAULT_STORE_DIR, isStorePath } from "@nix-snapshotter/nix-store";
import { asBuildError, ImageBuildError } from "./build-error.js";
import { createNodeFileSystem, type StoreFileSystem } from "./file-system.js";

/** A closure read from a closure-info store path (Nix's `closureInfo`). */
export interface ClosureInfo {
  /** The closure-info store path; its `store-paths` file lists the closure. */
  closureInfo: string;
  storePaths: string[];
}

/** A closure: a list of store paths, or one that came from a closure-info store path. */
export type Closure = readonly string[] | ClosureInfo;

export interface ReadClosureOptions {
  fileSystem?: StoreFileSystem;
  storeDir?: string;
}

/**
 * Parses a newline-separated list of store paths (the format of `store-paths`); blank lines
 * are skipped. Every line must be a canonical store path.
 */
export function parseStorePathList(
  text: string,
  source: string,
  storeDir = DEFAULT_STORE_DIR,
): string[] {
  const result: string[] = [];
  text.split("\n").forEach((rawLine, index) => {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === "") return;
    if (!isStorePath(line, { storeDir })) {
      throw new ImageBuildError(
        "InvalidArgument",
        `${source}:${index + 1}: "${line}" is not a canonical store path (${storeDir}/<hash>-<name>)`,
      );
    }
    result.push(line);
  });
  return result;
}

/**
 * Reads a closure from `path`: a closure-info store path (its `store-paths` file is read), the
 * `store-paths` file of one, or any file listing store paths one per line. The first two give a
 * `ClosureInfo` (and so the closure annotation form); a plain list gives only the paths.
 */
export async function readClosure(
  path: string,
  options: ReadClosureOptions = {},
): Promise<Closure> {
  const fileSystem = options.fileSystem ?? createNodeFileSystem();
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  let listPath = path;
  let closureInfo: string | undefined;
  try {
    if (isStorePath(path, { storeDir }) && (await fileSystem.stat(path)) === "directory") {
      closureInfo = path;
      listPath = posix.join(path, "store-paths");
    } else if (
      posix.basename(path) === "store-paths" &&
      isStorePath(posix.dirname(path), { storeDir })
    ) {
      closureInfo = posix.dirname(path);
    }
    const text = Buffer.from(await fileSystem.readFile(listPath)).toString("utf8");
    const storePaths = parseStorePathList(text, listPath, storeDir);
    return closureInfo === undefined ? storePaths : { closureInfo, storePaths };
  } catch (error) {
    throw asBuildError(error, `closure "${path}"`);
  }
}

/** The store paths of a closure. */
export function closureStorePaths(closure: Closure): readonly string[] {
  return "closureInfo" in closure
    ? (closure as ClosureInfo).storePaths
    : (closure as readonly string[]);
}
