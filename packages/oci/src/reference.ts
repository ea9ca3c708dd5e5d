import { DEFAULT_STORE_DIR, isStorePath } from "@nix-snapshotter/nix-store";
import { quoteTruncated } from "./archive-limits.js";
import { type Digest, parseDigest } from "./digest.js";
import { invalidArgument } from "./errors.js";

/** Prefix of references resolved through Nix: `nix:0/nix/store/<hash>-<name>.tar`. */
export const nixReferencePrefix = "nix:0";
export const defaultDomain = "docker.io";
export const officialRepositoryPrefix = "library/";
export const defaultTag = "latest";

/** A parsed registry reference, normalised (`busybox` -> `docker.io/library/busybox`). */
export interface RegistryReference {
  kind: "registry";
  domain: string;
  /** Repository path inside the registry, e.g. `library/busybox`. */
  path: string;
  tag?: string;
  digest?: Digest;
}

/** A `nix:0` reference: a store path holding an image archive. */
export interface NixReference {
  kind: "nix";
  storePath: string;
  tag?: string;
  digest?: Digest;
}

export type ImageReference = RegistryReference | NixReference;

export interface ParseReferenceOptions {
  /** Store directory for `nix:0` references (default `/nix/store`). */
  storeDir?: string;
}

const alphanumeric = "[a-z0-9]+";
const separator = "(?:[._]|__|[-]+)";
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const pathComponentPattern = new RegExp(`^${pathComponent}$`);
const domainComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainPattern = new RegExp(
  `^(?:${domainComponent}(?:\\.${domainComponent})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const tagPattern = /^[\w][\w.-]{0,127}$/;
const maxNameLength = 255;

function splitDigest(input: string, reference: string): [string, Digest | undefined] {
  const at = input.indexOf("@");
  if (at < 0) return [input, undefined];
  try {
    return [input.slice(0, at), parseDigest(input.slice(at + 1))];
  } catch (error) {
    throw invalidArgument(`reference ${quoteTruncated(reference)}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function splitTag(input: string, reference: string): [string, string | undefined] {
  const colon = input.lastIndexOf(":");
  if (colon < 0 || colon < input.lastIndexOf("/")) return [input, undefined];
  const tag = input.slice(colon + 1);
  if (!tagPattern.test(tag)) {
    throw invalidArgument(
      `reference ${quoteTruncated(reference)}: invalid tag ${quoteTruncated(tag)} (1-128 characters of [A-Za-z0-9_.-], not starting with . or -)`,
    );
  }
  return [input.slice(0, colon), tag];
}

function parseNixReference(reference: string, storeDir: string): NixReference {
  const [withoutDigest, digest] = splitDigest(
    reference.slice(nixReferencePrefix.length),
    reference,
  );
  const [storePath, tag] = splitTag(withoutDigest, reference);
  if (!isStorePath(storePath, { storeDir })) {
    throw invalidArgument(
      `reference ${quoteTruncated(reference)}: ${quoteTruncated(storePath)} is not a canonical store path (${storeDir}/<32 nix-base32 characters>-<name>)`,
    );
  }
  const result: NixReference = { kind: "nix", storePath };
  if (tag !== undefined) result.tag = tag;
  if (digest !== undefined) result.digest = digest;
  return result;
}

/**
 * Parses and normalises an image reference per the distribution reference grammar: a missing
 * domain becomes `docker.io`, a one-component name on docker.io gets `library/`,
 * `index.docker.io` becomes `docker.io`. No default tag is added (see withDefaultTag).
 * `nix:0/<store path>[:tag][@digest]` is accepted only for a canonical store path.
 */
export function parseReference(
  reference: string,
  options: ParseReferenceOptions = {},
): ImageReference {
  if (reference === "") throw invalidArgument("reference is empty");
  if (reference.startsWith(`${nixReferencePrefix}/`)) {
    return parseNixReference(reference, options.storeDir ?? DEFAULT_STORE_DIR);
  }
  if (reference !== reference.trim() || /\s/.test(reference)) {
    throw invalidArgument(`reference ${quoteTruncated(reference)}: contains white space`);
  }
  const [withoutDigest, digest] = splitDigest(reference, reference);
  const [name, tag] = splitTag(withoutDigest, reference);
  if (name.length > maxNameLength) {
    throw invalidArgument(
      `reference ${quoteTruncated(reference)}: name longer than ${maxNameLength} characters`,
    );
  }
  let domain = defaultDomain;
  let path = name;
  const slash = name.indexOf("/");
  if (slash >= 0) {
    const first = name.slice(0, slash);
    if (
      first.includes(".") ||
      first.includes(":") ||
      first === "localhost" ||
      first !== first.toLowerCase()
    ) {
      domain = first;
      path = name.slice(slash + 1);
    }
  }
  if (!domainPattern.test(domain)) {
    throw invalidArgument(
      `reference ${quoteTruncated(reference)}: invalid registry host ${quoteTruncated(domain)}`,
    );
  }
  if (domain === "index.docker.io") domain = defaultDomain;
  const components = path.split("/");
  for (const component of components) {
    if (!pathComponentPattern.test(component)) {
      if (
        component.toLowerCase() !== component &&
        pathComponentPattern.test(component.toLowerCase())
      ) {
        throw invalidArgument(
          `reference ${quoteTruncated(reference)}: repository name must be lowercase`,
        );
      }
      throw invalidArgument(
        `reference ${quoteTruncated(reference)}: invalid repository name component ${quoteTruncated(component)}`,
      );
    }
  }
  if (domain === defaultDomain && components.length === 1)
    path = `${officialRepositoryPrefix}${path}`;
  const result: RegistryReference = { kind: "registry", domain, path };
  if (tag !== undefined) result.tag = tag;
  if (digest !== undefined) result.digest = digest;
  return result;
}

/** Adds the `latest` tag when the reference has neither tag nor digest. */
export function withDefaultTag<T extends ImageReference>(reference: T): T {
  if (reference.tag !== undefined || reference.digest !== undefined) return reference;
  return { ...reference, tag: defaultTag };
}

/** The repository name: `docker.io/library/busybox`, or `nix:0/nix/store/...` for nix references. */
export function referenceName(reference: ImageReference): string {
  return reference.kind === "nix"
    ? `${nixReferencePrefix}${reference.storePath}`
    : `${reference.domain}/${reference.path}`;
}

function suffix(reference: ImageReference): string {
  return (
    (reference.tag === undefined ? "" : `:${reference.tag}`) +
    (reference.digest === undefined ? "" : `@${reference.digest}`)
  );
}

/** The fully qualified string form: `docker.io/library/busybox:latest`. */
export function formatReference(reference: ImageReference): string {
  return referenceName(reference) + suffix(reference);
}

/** The familiar string form (`busybox:latest`, `user/app`), as `docker` prints it. */
export function familiarReference(reference: ImageReference): string {
  if (reference.kind === "nix") return formatReference(reference);
  let name = `${reference.domain}/${reference.path}`;
  if (reference.domain === defaultDomain) {
    const rest = reference.path.slice(officialRepositoryPrefix.length);
    name =
      reference.path.startsWith(officialRepositoryPrefix) && !rest.includes("/")
        ? rest
        : reference.path;
  }
  return name + suffix(reference);
}

/** Parses, adds the default tag and formats: `busybox` -> `docker.io/library/busybox:latest`. */
export function normalizeReference(reference: string, options: ParseReferenceOptions = {}): string {
  return formatReference(withDefaultTag(parseReference(reference, options)));
}
