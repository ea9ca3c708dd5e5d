import { readFile } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { CodedError, ErrorCode } from "@nix-snapshotter/errdefs";
import { hostPlatform } from "@nix-snapshotter/image-builder";
import { parse, TomlError } from "smol-toml";
import type { AnnotationSetting } from "./image-service.js";
import { platforms } from "./names.js";

/** The registry's configuration after defaults, the file, the environment and flags. */
export interface RegistryConfig {
  /** Address to listen on (`0.0.0.0`, `127.0.0.1`, `::`). */
  host: string;
  port: number;
  /** The package set: a local file or directory (PKGS_PATH, NIXERY_PKGS_PATH). */
  pkgsPath: string;
  /** Or a git repository URL (PKGS_REPO, NIXERY_PKGS_REPO): tags name its branches, git tags, commits. */
  pkgsRepo: string;
  /** The branch `latest` names in a git package set; `""` = the repository's HEAD. */
  defaultBranch: string;
  /** Seconds the Nix steps of one image may take (NIX_TIMEOUT). */
  nixTimeout: number;
  /** Only `filesystem` (STORAGE_BACKEND). */
  storageBackend: "filesystem";
  /** Where manifests and blobs are stored (STORAGE_PATH). */
  storagePath: string;
  /** GC roots of the served images' closures; must be below /nix/var/nix/gcroots. */
  gcRootsDir: string;
  /** Directory of the Nix programs; `""` = PATH. */
  nixBin: string;
  storeDir: string;
  /** Platforms served (`amd64`, `arm64`); names starting with `arm64/` need `arm64` here. */
  platforms: string[];
  /** `both`: closure and per-path annotations (when the set has closureInfo); `per-path`. */
  annotationForm: AnnotationSetting;
  maxImages: number;
  maxConcurrentBuilds: number;
  /** Fixed package-set revision for the cache key; `""` = computed by Nix from the source. */
  revision: string;
  /** Seconds a computed revision is reused. */
  revisionTtl: number;
  maxComponents: number;
  maxComponentLength: number;
  maxUrlLength: number;
  maxRequestsPerClient: number;
  maxHeaderBytes: number;
  metrics: boolean;
  /** Export each image's closure to `<storage_path>/binary-cache` and serve it over HTTP. */
  binaryCache: boolean;
  /** Secret key file (`nix-store --generate-binary-cache-key`) that signs the narinfos. */
  binaryCacheSecretKeyFile: string;
}

export type ConfigLayer = Partial<RegistryConfig>;

export const defaultConfigPath = "/etc/nix-registry/config.toml";
export const GC_ROOTS_PARENT = "/nix/var/nix/gcroots/";

/** A configuration value refused (InvalidArgument, naming the key or file). */
export class ConfigError extends CodedError {
  static override readonly marker: symbol = Symbol.for("nix-registry.ConfigError");

  constructor(message: string) {
    super(ErrorCode.InvalidArgument, message);
    this.name = "ConfigError";
  }
}

export function defaultConfig(): RegistryConfig {
  const host = hostPlatform().architecture;
  return {
    host: "0.0.0.0",
    port: 8080,
    pkgsPath: "",
    pkgsRepo: "",
    defaultBranch: "",
    nixTimeout: 60,
    storageBackend: "filesystem",
    storagePath: "/var/lib/nix-registry",
    gcRootsDir: "/nix/var/nix/gcroots/nix-registry",
    nixBin: "",
    storeDir: "/nix/store",
    platforms: host in platforms ? [host] : [],
    annotationForm: "both",
    maxImages: 256,
    maxConcurrentBuilds: 2,
    revision: "",
    revisionTtl: 60,
    maxComponents: 32,
    maxComponentLength: 100,
    maxUrlLength: 2048,
    maxRequestsPerClient: 16,
    maxHeaderBytes: 16 * 1024,
    metrics: true,
    binaryCache: false,
    binaryCacheSecretKeyFile: "",
  };
}

type Parser = (value: unknown, key: string) => unknown;

const string: Parser = (value, key) => {
  if (typeof value !== "string") throw new ConfigError(`"${key}" must be a string`);
  return value;
};
const absolutePath: Parser = (value, key) => {
  const text = string(value, key) as string;
  if (!isAbsolute(text) || text.includes("\0")) {
    throw new ConfigError(`"${key}" must be an absolute path, got ${JSON.stringify(text)}`);
  }
  return text.length > 1 ? text.replace(/\/+$/, "") : text;
};
const optionalPath: Parser = (value, key) => (value === "" ? "" : absolutePath(value, key));
const integer =
  (min: number, max: number): Parser =>
  (value, key) => {
    const number = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
    if (typeof number !== "number" || !Number.isInteger(number) || number < min || number > max) {
      throw new ConfigError(
        `"${key}" must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`,
      );
    }
    return number;
  };
const boolean: Parser = (value, key) => {
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  if (typeof value !== "boolean") throw new ConfigError(`"${key}" must be true or false`);
  return value;
};
const oneOf =
  (...choices: string[]): Parser =>
  (value, key) => {
    const text = string(value, key) as string;
    if (!choices.includes(text)) {
      throw new ConfigError(
        `"${key}" must be one of ${choices.map((c) => `"${c}"`).join(", ")}, got ${JSON.stringify(text)}`,
      );
    }
    return text;
  };
const platformList: Parser = (value, key) => {
  const items = typeof value === "string" ? value.split(",").map((item) => item.trim()) : value;
  if (!Array.isArray(items) || items.length === 0) {
    throw new ConfigError(`"${key}" must be a non-empty list of platforms`);
  }
  for (const item of items) {
    if (typeof item !== "string" || !(item in platforms)) {
      throw new ConfigError(
        `"${key}": unknown platform ${JSON.stringify(item)} (known: ${Object.keys(platforms).join(", ")})`,
      );
    }
  }
  return [...new Set(items as string[])];
};
const gcRootsDir: Parser = (value, key) => {
  const text = absolutePath(value, key) as string;
  if (!text.startsWith(GC_ROOTS_PARENT)) {
    throw new ConfigError(`"${key}" must be below ${GC_ROOTS_PARENT} (its links are Nix GC roots)`);
  }
  return text;
};

/** A git URL Nix's fetchGit takes (`https://`, `ssh://`, `git+...`, `file://`, or an absolute path). */
const gitUrl: Parser = (value, key) => {
  const text = string(value, key) as string;
  if (!/^(?:(?:git\+)?(?:https?|ssh|file|git):\/\/|\/)[^\s\0]+$/.test(text)) {
    throw new ConfigError(
      `"${key}" must be a git URL (https://, ssh://, file://) or an absolute path, got ${JSON.stringify(text)}`,
    );
  }
  return text;
};

/**
 * A git branch name: the tag grammar plus `/` between components, at most 255 characters, none
 * of what git refuses (`..`, `//`, a `.lock` or `/` end, a component starting with `.`).
 */
const branch: Parser = (value, key) => {
  const text = string(value, key) as string;
  if (text === "") return text;
  if (
    !/^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}$/.test(text) ||
    text.includes("..") ||
    text.includes("//") ||
    text.includes("/.") ||
    text.endsWith("/") ||
    text.endsWith(".lock")
  ) {
    throw new ConfigError(`"${key}" must be a git branch name, got ${JSON.stringify(text)}`);
  }
  return text;
};

/** TOML key -> [field, parser, environment variables (first set wins)]. */
const keys: Record<string, [keyof RegistryConfig, Parser, string[]]> = {
  host: ["host", string, ["HOST"]],
  port: ["port", integer(0, 65_535), ["PORT"]],
  pkgs_path: ["pkgsPath", absolutePath, ["PKGS_PATH", "NIXERY_PKGS_PATH"]],
  pkgs_repo: ["pkgsRepo", gitUrl, ["PKGS_REPO", "NIXERY_PKGS_REPO"]],
  default_branch: ["defaultBranch", branch, ["NIX_REGISTRY_DEFAULT_BRANCH"]],
  nix_timeout: ["nixTimeout", integer(1, 86_400), ["NIX_TIMEOUT"]],
  storage_backend: ["storageBackend", oneOf("filesystem"), ["STORAGE_BACKEND"]],
  storage_path: ["storagePath", absolutePath, ["STORAGE_PATH"]],
  gc_roots_dir: ["gcRootsDir", gcRootsDir, ["NIX_REGISTRY_GC_ROOTS_DIR"]],
  nix_bin: ["nixBin", optionalPath, ["NIX_REGISTRY_NIX_BIN"]],
  store_dir: ["storeDir", absolutePath, []],
  platforms: ["platforms", platformList, ["NIX_REGISTRY_PLATFORMS"]],
  annotation_form: ["annotationForm", oneOf("both", "per-path"), []],
  max_images: ["maxImages", integer(1, 1_000_000), ["NIX_REGISTRY_MAX_IMAGES"]],
  max_concurrent_builds: ["maxConcurrentBuilds", integer(1, 64), []],
  revision: ["revision", string, ["NIX_REGISTRY_REVISION"]],
  revision_ttl: ["revisionTtl", integer(0, 86_400), []],
  max_components: ["maxComponents", integer(1, 256), []],
  max_component_length: ["maxComponentLength", integer(1, 255), []],
  max_url_length: ["maxUrlLength", integer(64, 65_536), []],
  max_requests_per_client: ["maxRequestsPerClient", integer(1, 10_000), []],
  max_header_bytes: ["maxHeaderBytes", integer(1024, 1024 * 1024), []],
  metrics: ["metrics", boolean, []],
  binary_cache: ["binaryCache", boolean, ["NIX_REGISTRY_BINARY_CACHE"]],
  binary_cache_secret_key_file: [
    "binaryCacheSecretKeyFile",
    absolutePath,
    ["NIX_REGISTRY_BINARY_CACHE_SECRET_KEY_FILE"],
  ],
};

/** The layer of a parsed TOML document; unknown keys are errors. */
export function fileLayer(document: Record<string, unknown>, source = "config"): ConfigLayer {
  const layer: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(document)) {
    const entry = keys[key];
    if (entry === undefined) throw new ConfigError(`${source}: unknown key "${key}"`);
    try {
      layer[entry[0]] = entry[1](value, key);
    } catch (error) {
      throw new ConfigError(`${source}: ${(error as Error).message}`);
    }
  }
  return layer as ConfigLayer;
}

/** The config file's layer; a missing file at the default path is an empty layer. */
export async function loadConfigFile(path: string, required: boolean): Promise<ConfigLayer> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT" && !required) return {};
    throw new ConfigError(`cannot read ${path}: ${(error as Error).message}`);
  }
  if (text.length > 1024 * 1024) throw new ConfigError(`${path}: larger than 1 MiB`);
  try {
    return fileLayer(parse(text) as Record<string, unknown>, path);
  } catch (error) {
    if (error instanceof TomlError) throw new ConfigError(`${path}: ${error.message}`);
    throw error;
  }
}

/** The environment's layer (Nixery's variable names, plus NIX_REGISTRY_*). */
export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const layer: Record<string, unknown> = {};
  for (const [key, [field, parser, names]] of Object.entries(keys)) {
    const name = names.find((candidate) => env[candidate] !== undefined && env[candidate] !== "");
    if (name === undefined) continue;
    try {
      layer[field] = parser(env[name], key);
    } catch (error) {
      throw new ConfigError(`environment variable ${name}: ${(error as Error).message}`);
    }
  }
  return layer as ConfigLayer;
}

/** Later layers win; the result must name a package set. */
export function mergeConfig(base: RegistryConfig, ...layers: ConfigLayer[]): RegistryConfig {
  const config = Object.assign({}, base, ...layers) as RegistryConfig;
  if (config.pkgsPath === "" && config.pkgsRepo === "") {
    throw new ConfigError(
      "no package set: set pkgs_path, PKGS_PATH (or NIXERY_PKGS_PATH) or --pkgs-path, or pkgs_repo, PKGS_REPO (or NIXERY_PKGS_REPO)",
    );
  }
  if (config.pkgsPath !== "" && config.pkgsRepo !== "") {
    throw new ConfigError("pkgs_path and pkgs_repo are both set: choose one package set");
  }
  if (config.binaryCache && config.binaryCacheSecretKeyFile === "") {
    throw new ConfigError(
      "binary_cache needs binary_cache_secret_key_file (nix-store --generate-binary-cache-key)",
    );
  }
  if (config.platforms.length === 0) {
    throw new ConfigError(`no platform to serve: set "platforms" (e.g. ["amd64"])`);
  }
  return config;
}

/** Flag values parsed like the file's. */
export function flagLayer(flags: Record<string, string | undefined>): ConfigLayer {
  const document: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(flags)) {
    if (value !== undefined) document[key] = value;
  }
  return fileLayer(document, "flags");
}
