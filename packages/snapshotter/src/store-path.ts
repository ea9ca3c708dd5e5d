/** Characters of Nix's base-32 alphabet (no e, o, t, u). */
const hashPattern = "[0-9a-df-np-sv-z]{32}";
/** Nix store path names: these characters, not starting with a dot, at most 211 long. */
const namePattern = "[A-Za-z0-9+\\-_?=][A-Za-z0-9+\\-._?=]{0,210}";

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const cache = new Map<string, RegExp>();

function storePathRegExp(storeDir: string): RegExp {
  let regExp = cache.get(storeDir);
  if (regExp === undefined) {
    regExp = new RegExp(`^${escapeRegExp(storeDir)}/${hashPattern}-${namePattern}$`);
    cache.set(storeDir, regExp);
  }
  return regExp;
}

/**
 * True when `path` is a canonical store path directly under `storeDir`:
 * `<storeDir>/<32 nix-base32 chars>-<name>`, no `..`, no trailing or doubled slash, nothing
 * below the top-level entry.
 */
export function isCanonicalStorePath(path: string, storeDir: string): boolean {
  return storePathRegExp(storeDir).test(path);
}

/** True when storeDir itself is an absolute, normalised directory path such as `/nix/store`. */
export function isValidStoreDir(storeDir: string): boolean {
  return (
    storeDir.startsWith("/") &&
    storeDir.length > 1 &&
    !storeDir.endsWith("/") &&
    !storeDir.includes("//") &&
    !storeDir.split("/").some((part) => part === "." || part === "..")
  );
}
