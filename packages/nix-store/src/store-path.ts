import { NixStoreError } from "./errors.js";

/** The store directory used when none is configured. */
export const DEFAULT_STORE_DIR = "/nix/store";

/** Nix's base-32 alphabet: digits and lower-case letters without e, o, u and t. */
export const NIX_BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

/** Length of the hash part of a store path's base name. */
export const STORE_PATH_HASH_LENGTH = 32;

/** The longest name Nix accepts after `<hash>-`. */
export const STORE_PATH_MAX_NAME_LENGTH = 211;

const hashPattern = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;
const namePattern = /^[A-Za-z0-9+\-._?=]+$/;

/** A canonical, validated store path. */
export interface StorePath {
  /** The full path, e.g. `/nix/store/<hash>-hello-2.12`. */
  readonly path: string;
  /** The store directory, e.g. `/nix/store`. */
  readonly storeDir: string;
  /** The base name, `<hash>-<name>`. */
  readonly baseName: string;
  /** The 32 base-32 characters. */
  readonly hash: string;
  /** The name after the hash and the dash. */
  readonly name: string;
}

export interface StorePathOptions {
  /** Defaults to `/nix/store`. */
  storeDir?: string;
}

/** Why `storeDir` is not an absolute, canonical directory path, or undefined when it is one. */
function storeDirProblem(storeDir: string): string | undefined {
  if (typeof storeDir !== "string" || storeDir.length === 0) return "is empty";
  if (!storeDir.startsWith("/")) return "is not absolute";
  if (storeDir === "/") return "is the file system root";
  if (storeDir.endsWith("/")) return "ends with a slash";
  if (storeDir.includes("\0") || storeDir.includes("\n")) return "contains a control byte";
  for (const component of storeDir.slice(1).split("/")) {
    if (component === "" || component === "." || component === "..") return "is not canonical";
  }
  return undefined;
}

/**
 * Checks that `storeDir` is an absolute, canonical directory path (no `.` or `..` components,
 * no empty components, no trailing slash, not `/`). Returns it unchanged.
 */
export function validateStoreDir(storeDir: string): string {
  const problem = storeDirProblem(storeDir);
  if (problem !== undefined) {
    throw new NixStoreError(
      "InvalidArgument",
      `store directory ${JSON.stringify(storeDir)} ${problem}`,
    );
  }
  return storeDir;
}

/** True when `storeDir` is one `validateStoreDir` accepts. Never throws. */
export function isValidStoreDir(storeDir: string): boolean {
  return storeDirProblem(storeDir) === undefined;
}

/** Checks a store path name with the strictest rules of the Nix versions we support. */
export function checkStorePathName(name: string): string | undefined {
  if (name.length === 0) return "has an empty name";
  if (name.length > STORE_PATH_MAX_NAME_LENGTH) {
    return `has a name longer than ${STORE_PATH_MAX_NAME_LENGTH} characters`;
  }
  // Nix 2.8 accepts a leading dot; some later versions reject it and others reject "." and
  // ".."-like names. The strictest rule is the safe one.
  if (name.startsWith(".")) return "has a name that starts with a dot";
  if (!namePattern.test(name)) return "has a name with a character Nix does not allow";
  return undefined;
}

/**
 * Why `path` is not exactly `<storeDir>/<32 base-32 chars>-<name>` (nothing before, nothing
 * after), or undefined when it is. `storeDir` must be valid already.
 */
function storePathProblem(path: unknown, storeDir: string): string | undefined {
  if (typeof path !== "string") return "is not a string";
  if (path.length === 0) return "is empty";
  const prefix = `${storeDir}/`;
  if (!path.startsWith(prefix)) return `is not in the store directory ${storeDir}`;
  const baseName = path.slice(prefix.length);
  if (baseName.includes("/")) return "has components after the store path";
  if (baseName.length < STORE_PATH_HASH_LENGTH + 2) return "is too short";
  if (!hashPattern.test(baseName.slice(0, STORE_PATH_HASH_LENGTH))) {
    return "has a hash that is not 32 characters of Nix base-32";
  }
  if (baseName[STORE_PATH_HASH_LENGTH] !== "-") return "has no dash after the hash";
  return checkStorePathName(baseName.slice(STORE_PATH_HASH_LENGTH + 1));
}

/**
 * Parses and validates a store path: exactly `<storeDir>/<32 base-32 chars>-<name>`, nothing
 * before, nothing after. Throws `NixStoreError` with code `InvalidArgument` otherwise.
 */
export function parseStorePath(path: string, options: StorePathOptions = {}): StorePath {
  const storeDir = validateStoreDir(options.storeDir ?? DEFAULT_STORE_DIR);
  const problem = storePathProblem(path, storeDir);
  if (problem !== undefined) {
    throw new NixStoreError("InvalidArgument", `store path ${JSON.stringify(path)} ${problem}`, {
      failedPaths: typeof path === "string" ? [path] : [],
    });
  }
  const baseName = path.slice(storeDir.length + 1);
  const hash = baseName.slice(0, STORE_PATH_HASH_LENGTH);
  const name = baseName.slice(STORE_PATH_HASH_LENGTH + 1);
  return { path, storeDir, baseName, hash, name };
}

/**
 * True when `path` is a canonical store path in `storeDir` (the check of `parseStorePath`);
 * false also when the store directory is not valid. Never throws.
 */
export function isStorePath(path: unknown, options: StorePathOptions = {}): path is string {
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  return isValidStoreDir(storeDir) && storePathProblem(path, storeDir) === undefined;
}

/**
 * The store path that `path` lies in (itself or an ancestor), or undefined when `path` is not
 * inside the store. `path` must be absolute and normalised: a `.`, `..` or empty segment below
 * the store directory gives undefined.
 */
export function storePathOf(path: string, options: StorePathOptions = {}): string | undefined {
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  if (!isValidStoreDir(storeDir) || !path.startsWith(`${storeDir}/`)) return undefined;
  const segments = path.slice(storeDir.length + 1).split("/");
  if (segments.some((segment) => segment === "" || segment === "." || segment === "..")) {
    return undefined;
  }
  const candidate = `${storeDir}/${segments[0]}`;
  return isStorePath(candidate, options) ? candidate : undefined;
}

/**
 * Validates every path of a list, rejecting the whole list at the first bad one; returns the
 * paths without duplicates, in first-seen order.
 */
export function parseStorePaths(
  paths: Iterable<string>,
  options: StorePathOptions = {},
): StorePath[] {
  if (paths === null || typeof paths !== "object" || !(Symbol.iterator in paths)) {
    throw new NixStoreError("InvalidArgument", "store paths must be a list of strings");
  }
  const seen = new Set<string>();
  const parsed: StorePath[] = [];
  for (const path of paths) {
    if (seen.has(path)) continue;
    seen.add(path);
    parsed.push(parseStorePath(path, options));
  }
  return parsed;
}
