import { readFile } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { defaultMountMode, type NixMountMode, nixMountModes } from "@nix-snapshotter/snapshotter";
import { parse, TomlError } from "smol-toml";

/**
 * How store paths of nix layers reach containers: one of the snapshotter's `nixMountModes`
 * (see docs/configuration.md).
 */
export type MountMode = NixMountMode;

export interface ImageServiceConfig {
  /** Serve the CRI ImageService on the daemon's socket (`nix:0/...` references). */
  enable: boolean;
  /** containerd's socket, used by the image service. */
  containerdAddress: string;
}

/** The daemon's configuration, after defaults, the file and the flags are merged. */
export interface DaemonConfig {
  /** Unix socket of the gRPC server. */
  address: string;
  /** Directory of persistent state (metadata.db, snapshots/). */
  root: string;
  /** Executable run as `<exe> <outLink> <storePath>` instead of Nix's own realisation; `""` = none. */
  externalBuilder: string;
  imageService: ImageServiceConfig;
  mountMode: MountMode;
  /** The Nix store directory. */
  storeDir: string;
  /** Where the snapshotter's GC roots live; `""` = the nix-store package's default. */
  gcRootsDir: string;
  /** Mount with fuse-overlayfs instead of the kernel's overlay. */
  fuseOverlayfs: boolean;
  /** `host:port` or an absolute unix socket path for Prometheus metrics; `""` = off. */
  metricsAddress: string;
  /**
   * Longest a realise of Nix store paths may take (a nix layer's Prepare, a `nix:0` pull's
   * archive), in milliseconds; 0 = no limit beyond the caller's own deadline.
   */
  realiseTimeoutMs: number;
}

/** A partial configuration: what one source (file or flags) sets. */
export type ConfigLayer = Partial<Omit<DaemonConfig, "imageService">> & {
  imageService?: Partial<ImageServiceConfig>;
};

export const defaultConfigPath = "/etc/nix-snapshotter/config.toml";

/** The Go daemon's defaults (pkg/config), plus ours. */
export function defaultConfig(): DaemonConfig {
  return {
    address: "/run/nix-snapshotter/nix-snapshotter.sock",
    root: "/var/lib/containerd/io.containerd.snapshotter.v1.nix",
    externalBuilder: "",
    imageService: { enable: true, containerdAddress: "/run/containerd/containerd.sock" },
    mountMode: defaultMountMode,
    storeDir: "/nix/store",
    gcRootsDir: "",
    fuseOverlayfs: false,
    metricsAddress: "",
    realiseTimeoutMs: 0,
  };
}

/** A configuration error; the message names the file (if any) and the key. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type Parser = (value: unknown, key: string) => unknown;

function describe(value: unknown): string {
  if (value instanceof Date) return "a date";
  if (Array.isArray(value)) return "an array";
  if (value !== null && typeof value === "object") return "a table";
  return `${typeof value} ${JSON.stringify(value)}`;
}

const string: Parser = (value, key) => {
  if (typeof value !== "string") {
    throw new ConfigError(`"${key}" must be a string, got ${describe(value)}`);
  }
  return value;
};

const boolean: Parser = (value, key) => {
  if (typeof value !== "boolean") {
    throw new ConfigError(`"${key}" must be true or false, got ${describe(value)}`);
  }
  return value;
};

const absolutePath =
  (options: { allowEmpty?: boolean } = {}): Parser =>
  (value, key) => {
    const text = string(value, key) as string;
    if (text === "" && options.allowEmpty) return text;
    if (text === "" || !isAbsolute(text) || text.includes("\0")) {
      throw new ConfigError(`"${key}" must be an absolute path, got ${JSON.stringify(text)}`);
    }
    return text.length > 1 ? text.replace(/\/+$/, "") : text;
  };

/** An absolute path, or a bare command name looked up on PATH; `""` = none. */
const executable: Parser = (value, key) => {
  const text = string(value, key) as string;
  if (text === "" || (text.startsWith("/") && !text.includes("\0"))) return text;
  if (/^[A-Za-z0-9._+-]+$/.test(text)) return text;
  throw new ConfigError(
    `"${key}" must be an absolute path or a command name, got ${JSON.stringify(text)}`,
  );
};

/** `"a"`, `"a" or "b"`, `"a", "b" or "c"`. */
function alternatives(names: readonly string[]): string {
  const quoted = names.map((name) => JSON.stringify(name));
  return quoted.length <= 1
    ? quoted.join("")
    : `${quoted.slice(0, -1).join(", ")} or ${quoted[quoted.length - 1]}`;
}

const mountModeNames: readonly string[] = nixMountModes.map((mode) => mode.name);

const mountMode: Parser = (value, key) => {
  const text = string(value, key) as string;
  if (!mountModeNames.includes(text)) {
    throw new ConfigError(
      `"${key}" must be ${alternatives(mountModeNames)}, got ${JSON.stringify(text)}`,
    );
  }
  return text;
};

const containerdAddress: Parser = (value, key) => {
  const text = string(value, key) as string;
  const path = text.startsWith("unix://") ? text.slice("unix://".length) : text;
  if (!isAbsolute(path)) {
    throw new ConfigError(
      `"${key}" must be an absolute socket path (optionally unix://), got ${JSON.stringify(text)}`,
    );
  }
  return path;
};

/** `host:port`, `[v6]:port` or an absolute unix socket path; `""` turns metrics off. */
export function parseMetricsAddress(
  text: string,
  key = "metrics_address",
): { path: string } | { host: string; port: number } | undefined {
  if (text === "") return undefined;
  if (text.startsWith("/")) return { path: text };
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port > 65_535) {
    throw new ConfigError(
      `"${key}" must be host:port or an absolute socket path, got ${JSON.stringify(text)}`,
    );
  }
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}

const metricsAddress: Parser = (value, key) => {
  const text = string(value, key) as string;
  parseMetricsAddress(text, key);
  return text;
};

/** Milliseconds per unit of a duration. */
const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The longest duration accepted: Node's timers hold at most 2^31 - 1 ms (about 24.8 days); a
 * longer one would fire after 1 ms.
 */
export const maxDurationMs = 2 ** 31 - 1;

/**
 * A duration as Go writes it (`"90s"`, `"10m"`, `"1h30m"`, `"1.5s"`, `"250ms"`), units `h`, `m`,
 * `s`, `ms`; `"0"` (or any zero) = none. Returns whole milliseconds (rounded up).
 */
export function parseDuration(text: string, key: string): number {
  const fail = (why: string): never => {
    const shown = text.length > 40 ? `${text.slice(0, 40)}...` : text;
    throw new ConfigError(`"${key}" ${why}, got ${JSON.stringify(shown)}`);
  };
  if (text === "0") return 0;
  if (text.length > 64 || !/^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$/.test(text)) {
    fail('must be a duration such as "30s", "10m" or "1h30m" ("0" = none)');
  }
  let total = 0;
  for (const match of text.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    total += Number(match[1]) * (durationUnits[match[2]!] ?? Number.NaN);
  }
  const milliseconds = Math.ceil(total);
  if (!Number.isFinite(milliseconds) || milliseconds > maxDurationMs) {
    fail(`must be at most ${maxDurationMs} ms (about 24 days)`);
  }
  return milliseconds;
}

const duration: Parser = (value, key) => parseDuration(string(value, key) as string, key);

/** TOML key -> [field of ConfigLayer, parser]. */
const topLevel: Record<string, [keyof ConfigLayer, Parser]> = {
  address: ["address", absolutePath()],
  root: ["root", absolutePath()],
  external_builder: ["externalBuilder", executable],
  mount_mode: ["mountMode", mountMode],
  store_dir: ["storeDir", absolutePath()],
  gc_roots_dir: ["gcRootsDir", absolutePath({ allowEmpty: true })],
  fuse_overlayfs: ["fuseOverlayfs", boolean],
  metrics_address: ["metricsAddress", metricsAddress],
  realise_timeout: ["realiseTimeoutMs", duration],
};

const imageServiceKeys: Record<string, [keyof ImageServiceConfig, Parser]> = {
  enable: ["enable", boolean],
  containerd_address: ["containerdAddress", containerdAddress],
};

/**
 * Validates a parsed TOML document: every key known, every value of the right type. `false` and
 * `""` are values like any other (unlike the Go daemon, whose merge ignored them).
 */
export function configFromToml(document: Record<string, unknown>): ConfigLayer {
  const layer: ConfigLayer = {};
  for (const [key, value] of Object.entries(document)) {
    if (key === "image_service") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new ConfigError(`"image_service" must be a table, got ${describe(value)}`);
      }
      const imageService: Partial<ImageServiceConfig> = {};
      for (const [innerKey, innerValue] of Object.entries(value as Record<string, unknown>)) {
        const entry = imageServiceKeys[innerKey];
        if (!entry) throw new ConfigError(`unknown key "image_service.${innerKey}"`);
        const [field, parser] = entry;
        (imageService as Record<string, unknown>)[field] = parser(
          innerValue,
          `image_service.${innerKey}`,
        );
      }
      layer.imageService = imageService;
      continue;
    }
    const entry = topLevel[key];
    if (!entry) throw new ConfigError(`unknown key "${key}"`);
    const [field, parser] = entry;
    (layer as Record<string, unknown>)[field] = parser(value, key);
  }
  return layer;
}

/** Parses TOML text; errors carry `path` and the line. */
export function parseConfig(text: string, path: string): ConfigLayer {
  let document: Record<string, unknown>;
  try {
    document = parse(text) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof TomlError) {
      throw new ConfigError(
        `config ${path}: invalid TOML at line ${error.line}, column ${error.column}: ${error.message.split("\n")[0]}`,
        { cause: error },
      );
    }
    throw error;
  }
  try {
    return configFromToml(document);
  } catch (error) {
    if (error instanceof ConfigError) {
      throw new ConfigError(`config ${path}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * Reads the config file. A missing file is an empty layer (as the Go daemon); any other read
 * error, invalid TOML, unknown key or bad value is a ConfigError naming the file and key.
 */
export async function loadConfigFile(path: string): Promise<ConfigLayer> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new ConfigError(`config ${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseConfig(text, path);
}

/** Validates a flag value with the same rules as the file key it overrides. */
export function flagLayer(flags: { address?: string; root?: string }): ConfigLayer {
  const layer: ConfigLayer = {};
  try {
    if (flags.address !== undefined)
      layer.address = absolutePath()(flags.address, "--address") as string;
    if (flags.root !== undefined) layer.root = absolutePath()(flags.root, "--root") as string;
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`flag ${error.message}`);
    throw error;
  }
  return layer;
}

/** defaults < file < flags; later layers win key by key, `false` and `""` included. */
export function mergeConfig(base: DaemonConfig, ...layers: ConfigLayer[]): DaemonConfig {
  const result: DaemonConfig = { ...base, imageService: { ...base.imageService } };
  for (const layer of layers) {
    const { imageService, ...rest } = layer;
    for (const [key, value] of Object.entries(rest)) {
      if (value !== undefined) (result as unknown as Record<string, unknown>)[key] = value;
    }
    if (imageService) {
      for (const [key, value] of Object.entries(imageService)) {
        if (value !== undefined)
          (result.imageService as unknown as Record<string, unknown>)[key] = value;
      }
    }
  }
  return result;
}
