import { ErrorCode } from "@nix-snapshotter/errdefs";
import { RegistryError } from "./errors.js";

/**
 * Image names as Nixery has them: `[arm64/]<package>[/<package>...]`, each package a top-level
 * attribute of the package set. Everything here runs before Nix sees anything: a name that does
 * not pass is refused with `NAME_INVALID` and nothing is evaluated.
 */

/** A platform the registry can build images for. */
export interface Platform {
  /** OCI (Go) architecture: `amd64`, `arm64`. */
  architecture: string;
  os: "linux";
  /** Nix's system double: `x86_64-linux`, `aarch64-linux`. */
  system: string;
}

export const platforms: Record<string, Platform> = {
  amd64: { architecture: "amd64", os: "linux", system: "x86_64-linux" },
  arm64: { architecture: "arm64", os: "linux", system: "aarch64-linux" },
};

/** The meta-package `shell` (a shell and its usual companions, those the set has). */
export const SHELL_META_PACKAGE = "shell";

export interface NameLimits {
  /** Most packages in one name (the `arm64` component not counted). */
  maxComponents: number;
  /** Longest package name, in characters. */
  maxComponentLength: number;
}

export const defaultNameLimits: NameLimits = { maxComponents: 32, maxComponentLength: 100 };

/** Longest repository name accepted at all (the distribution spec's practical limit). */
export const MAX_NAME_LENGTH = 255;

/**
 * A component must be a Nix identifier (`[a-zA-Z_][a-zA-Z0-9_'-]*`) and a repository path
 * component of the distribution spec (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`): it starts with a
 * letter and the quote of Nix's grammar and the dot of the spec's are both refused, and so is an
 * upper-case letter (clients never send one in a reference).
 */
const componentPattern = /^[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*$/;
const identifierStart = /^[a-z]/;

/** A name refused before Nix: InvalidArgument about the `name` (NAME_INVALID at the HTTP edge). */
export class NameError extends RegistryError {
  static override readonly marker: symbol = Symbol.for("nix-registry.NameError");

  constructor(message: string) {
    super(ErrorCode.InvalidArgument, message, { subject: "name" });
    this.name = "NameError";
  }
}

/** A parsed, validated image name. */
export interface ImageName {
  /** The name as requested (`arm64/hello/busybox`). */
  repository: string;
  /** The requested platform key (`amd64` by default, `arm64` when the name starts with it). */
  platform: string;
  /** Whether the name chose the platform (`arm64/...`); otherwise the index offers every platform served. */
  platformExplicit: boolean;
  /** Package attribute names, in request order, duplicates removed (`shell` kept as is). */
  packages: string[];
}

/** Quotes untrusted text for an error message, cut to a readable length. */
export function quote(text: string, max = 64): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return JSON.stringify(cut);
}

/**
 * Parses a repository name into a platform and packages, or throws a {@link NameError} that says
 * what is wrong. `defaultPlatform` is the platform of names without an `arm64` component.
 */
export function parseImageName(
  repository: string,
  defaultPlatform: string,
  limits: NameLimits = defaultNameLimits,
): ImageName {
  if (repository.length > MAX_NAME_LENGTH) {
    throw new NameError(
      `repository name of ${repository.length} characters is longer than ${MAX_NAME_LENGTH}`,
    );
  }
  const components = repository.split("/");
  let platform = defaultPlatform;
  let platformExplicit = false;
  if (components.length > 1 && components[0] === "arm64") {
    platform = "arm64";
    platformExplicit = true;
    components.shift();
  }
  if (components.length > limits.maxComponents) {
    throw new NameError(
      `${components.length} packages in one name; at most ${limits.maxComponents} are allowed`,
    );
  }
  const packages: string[] = [];
  for (const component of components) {
    if (component.length === 0) {
      throw new NameError(`repository name ${quote(repository)} has an empty path component`);
    }
    if (component.length > limits.maxComponentLength) {
      throw new NameError(
        `package name ${quote(component)} is ${component.length} characters long; at most ${limits.maxComponentLength} are allowed`,
      );
    }
    if (!componentPattern.test(component) || !identifierStart.test(component)) {
      throw new NameError(
        `package name ${quote(component)} is not a top-level attribute name (lower-case letters, digits, "_" and "-", starting with a letter)`,
      );
    }
    if (!packages.includes(component)) packages.push(component);
  }
  return { repository, platform, platformExplicit, packages };
}
