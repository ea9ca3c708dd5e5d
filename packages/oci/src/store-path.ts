/** The default Nix store directory. */
export const defaultStoreDir = "/nix/store";

/** The nix-base32 alphabet (no e, o, u, t). */
export const nixBase32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

const hashPattern = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;
const namePattern = /^[A-Za-z0-9+\-._?=]+$/;

/**
 * True when `path` is exactly a canonical store path: `<storeDir>/<32 nix-base32 chars>-<name>`,
 * with a name of at most 211 characters from Nix's name alphabet that does not start with a dot.
 * No trailing slash, no sub path, no `..`. (A small copy of the nix-store package's check: this
 * package imports no other package of ours.)
 */
export function isCanonicalStorePath(path: string, storeDir: string = defaultStoreDir): boolean {
  const prefix = `${storeDir.replace(/\/+$/, "")}/`;
  if (!storeDir.startsWith("/") || !path.startsWith(prefix)) return false;
  const base = path.slice(prefix.length);
  if (base.length < 34 || base[32] !== "-") return false;
  const hash = base.slice(0, 32);
  const name = base.slice(33);
  return (
    hashPattern.test(hash) && name.length <= 211 && namePattern.test(name) && !name.startsWith(".")
  );
}

/**
 * The store path that `path` lies in (itself or an ancestor), or undefined when `path` is not
 * inside the store. `path` must be absolute and normalised (no `.`/`..` segments, no `//`).
 */
export function storePathOf(path: string, storeDir: string = defaultStoreDir): string | undefined {
  const prefix = `${storeDir.replace(/\/+$/, "")}/`;
  if (!path.startsWith(prefix)) return undefined;
  const segments = path.slice(prefix.length).split("/");
  if (segments.some((segment) => segment === "" || segment === "." || segment === "..")) {
    return undefined;
  }
  const candidate = prefix + segments[0];
  return isCanonicalStorePath(candidate, storeDir) ? candidate : undefined;
}
