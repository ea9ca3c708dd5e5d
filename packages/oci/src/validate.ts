import { parseDigest } from "./digest.js";
import { invalidArgument } from "./errors.js";
import type {
  ContainerConfig,
  Descriptor,
  DockerManifestEntry,
  History,
  ImageConfig,
  ImageLayout,
  Index,
  Manifest,
  Platform,
} from "./types.js";

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function object(value: unknown, where: string): JsonObject {
  if (!isObject(value)) throw invalidArgument(`${where}: expected a JSON object`);
  return value;
}

function string(value: unknown, where: string): string {
  if (typeof value !== "string") throw invalidArgument(`${where}: expected a string`);
  return value;
}

function nonEmptyString(value: unknown, where: string): string {
  const result = string(value, where);
  if (result === "") throw invalidArgument(`${where}: must not be empty`);
  return result;
}

function stringArray(value: unknown, where: string): string[] {
  if (!Array.isArray(value)) throw invalidArgument(`${where}: expected an array of strings`);
  return value.map((item, index) => string(item, `${where}[${index}]`));
}

/** Sets an own property, also for keys like `__proto__` that plain assignment would not create. */
function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function stringMap(value: unknown, where: string): Record<string, string> {
  const input = object(value, where);
  const result: Record<string, string> = {};
  for (const key of Object.keys(input)) {
    const item = input[key];
    if (typeof item !== "string") string(item, `${where}.${key}`);
    // Plain assignment makes the same own property for every key but `__proto__` (a setter).
    if (key === "__proto__") setOwn(result, key, item as string);
    else result[key] = item as string;
  }
  return result;
}

function emptyObjectMap(value: unknown, where: string): Record<string, Record<string, never>> {
  const input = object(value, where);
  const result: Record<string, Record<string, never>> = {};
  for (const [key, item] of Object.entries(input)) {
    // Docker and Go accept any object (or null) as the value; only the key carries meaning.
    if (item !== null) object(item, `${where}.${key}`);
    setOwn(result, key, {});
  }
  return result;
}

function size(value: unknown, where: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw invalidArgument(`${where}: expected a non-negative integer`);
  }
  return value;
}

function schemaVersion(value: unknown, where: string): 2 {
  if (value !== 2) throw invalidArgument(`${where}.schemaVersion: expected 2`);
  return 2;
}

/** Parses JSON text, naming `what` in the error. */
export function parseJson(text: string | Uint8Array, what: string): unknown {
  // A view of the bytes, not a copy (a manifest with per-path annotations is over a megabyte).
  const source =
    typeof text === "string"
      ? text
      : Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString("utf8");
  try {
    return JSON.parse(source);
  } catch (error) {
    throw invalidArgument(`${what}: malformed JSON (${(error as Error).message})`, {
      cause: error,
    });
  }
}

export function validatePlatform(value: unknown, where = "platform"): Platform {
  const input = object(value, where);
  const result: Platform = {
    ...input,
    architecture: nonEmptyString(input.architecture, `${where}.architecture`),
    os: nonEmptyString(input.os, `${where}.os`),
  };
  if (input["os.version"] !== undefined)
    result["os.version"] = string(input["os.version"], `${where}.os.version`);
  if (input["os.features"] !== undefined)
    result["os.features"] = stringArray(input["os.features"], `${where}.os.features`);
  if (input.variant !== undefined) result.variant = string(input.variant, `${where}.variant`);
  if (input.features !== undefined)
    result.features = stringArray(input.features, `${where}.features`);
  return result;
}

export function validateDescriptor(value: unknown, where = "descriptor"): Descriptor {
  const input = object(value, where);
  let digest: Descriptor["digest"];
  try {
    digest = parseDigest(string(input.digest, `${where}.digest`));
  } catch (error) {
    throw invalidArgument(`${where}.digest: ${(error as Error).message}`, { cause: error });
  }
  const result: Descriptor = {
    ...input,
    mediaType: nonEmptyString(input.mediaType, `${where}.mediaType`),
    digest,
    size: size(input.size, `${where}.size`),
  };
  if (input.urls !== undefined) result.urls = stringArray(input.urls, `${where}.urls`);
  if (input.annotations !== undefined)
    result.annotations = stringMap(input.annotations, `${where}.annotations`);
  if (input.data !== undefined) result.data = string(input.data, `${where}.data`);
  if (input.artifactType !== undefined)
    result.artifactType = string(input.artifactType, `${where}.artifactType`);
  if (input.platform !== undefined)
    result.platform = validatePlatform(input.platform, `${where}.platform`);
  return result;
}

function descriptorArray(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw invalidArgument(`${where}: expected an array of descriptors`);
  return value.map((item, index) => validateDescriptor(item, `${where}[${index}]`));
}

/** The optional fields that a manifest and an index both have. */
type EnvelopeFields = Pick<
  Manifest & Index,
  "mediaType" | "artifactType" | "subject" | "annotations"
>;

function envelopeFields(input: JsonObject, where: string): EnvelopeFields {
  const result: EnvelopeFields = {};
  if (input.mediaType !== undefined)
    result.mediaType = string(input.mediaType, `${where}.mediaType`);
  if (input.artifactType !== undefined)
    result.artifactType = string(input.artifactType, `${where}.artifactType`);
  if (input.subject !== undefined)
    result.subject = validateDescriptor(input.subject, `${where}.subject`);
  if (input.annotations !== undefined)
    result.annotations = stringMap(input.annotations, `${where}.annotations`);
  return result;
}

export function validateManifest(value: unknown, where = "manifest"): Manifest {
  const input = object(value, where);
  return {
    ...input,
    schemaVersion: schemaVersion(input.schemaVersion, where),
    config: validateDescriptor(input.config, `${where}.config`),
    layers: descriptorArray(input.layers ?? [], `${where}.layers`),
    ...envelopeFields(input, where),
  };
}

export function validateIndex(value: unknown, where = "index"): Index {
  const input = object(value, where);
  return {
    ...input,
    schemaVersion: schemaVersion(input.schemaVersion, where),
    manifests: descriptorArray(input.manifests ?? [], `${where}.manifests`),
    ...envelopeFields(input, where),
  };
}

/** The container-config field names in OCI spelling (Go's `ocispec.ImageConfig` JSON tags). */
export const containerConfigKeys = [
  "User",
  "ExposedPorts",
  "Env",
  "Entrypoint",
  "Cmd",
  "Volumes",
  "WorkingDir",
  "Labels",
  "StopSignal",
  "ArgsEscaped",
] as const;

const keysByFoldedName = new Map<string, (typeof containerConfigKeys)[number]>(
  containerConfigKeys.map((key) => [key.toLowerCase(), key]),
);

export interface ContainerConfigResult {
  config: ContainerConfig;
  /** Keys that matched no field; Go's encoding/json ignores them, and so does this function. */
  ignoredKeys: string[];
}

/**
 * Validates a container config, matching keys case-insensitively as Go's encoding/json does
 * (`entrypoint`, `Entrypoint` and `ENTRYPOINT` all set `Entrypoint`; the last one wins), and
 * returns it in OCI spelling. A JSON `null` value leaves the field unset.
 */
export function validateContainerConfig(value: unknown, where = "config"): ContainerConfigResult {
  const input = object(value, where);
  const config: ContainerConfig = {};
  const ignoredKeys: string[] = [];
  for (const [rawKey, item] of Object.entries(input)) {
    const key = keysByFoldedName.get(rawKey.toLowerCase());
    if (key === undefined) {
      ignoredKeys.push(rawKey);
      continue;
    }
    const at = `${where}.${rawKey}`;
    if (item === null) {
      delete config[key];
      continue;
    }
    switch (key) {
      case "User":
      case "WorkingDir":
      case "StopSignal":
        config[key] = string(item, at);
        break;
      case "Env":
        config.Env = stringArray(item, at).map((entry, index) => {
          if (entry === "" || entry.startsWith("="))
            throw invalidArgument(`${at}[${index}]: expected NAME=value, got "${entry}"`);
          return entry;
        });
        break;
      case "Entrypoint":
      case "Cmd":
        config[key] = stringArray(item, at);
        break;
      case "ExposedPorts":
      case "Volumes":
        config[key] = emptyObjectMap(item, at);
        break;
      case "Labels":
        config.Labels = stringMap(item, at);
        break;
      case "ArgsEscaped":
        if (typeof item !== "boolean") throw invalidArgument(`${at}: expected a boolean`);
        config.ArgsEscaped = item;
        break;
    }
  }
  return { config, ignoredKeys };
}

function validateHistory(value: unknown, where: string): History {
  const input = object(value, where);
  const result: History = { ...input };
  for (const key of ["created", "created_by", "author", "comment"] as const) {
    if (input[key] !== undefined) result[key] = string(input[key], `${where}.${key}`);
  }
  if (input.empty_layer !== undefined) {
    if (typeof input.empty_layer !== "boolean")
      throw invalidArgument(`${where}.empty_layer: expected a boolean`);
    result.empty_layer = input.empty_layer;
  }
  return result;
}

/**
 * Validates an image configuration. Its `config` member is read case-insensitively (see
 * validateContainerConfig); unknown top-level members are kept.
 */
export function validateImageConfig(value: unknown, where = "image config"): ImageConfig {
  const input = object(value, where);
  const rootfs = object(input.rootfs, `${where}.rootfs`);
  if (rootfs.type !== "layers") throw invalidArgument(`${where}.rootfs.type: expected "layers"`);
  const diffIds = stringArray(rootfs.diff_ids ?? [], `${where}.rootfs.diff_ids`).map(
    (item, index) => {
      try {
        return parseDigest(item);
      } catch (error) {
        throw invalidArgument(`${where}.rootfs.diff_ids[${index}]: ${(error as Error).message}`);
      }
    },
  );
  const result: ImageConfig = {
    ...input,
    architecture: nonEmptyString(input.architecture, `${where}.architecture`),
    os: nonEmptyString(input.os, `${where}.os`),
    rootfs: { type: "layers", diff_ids: diffIds },
  };
  if (input.created !== undefined) result.created = string(input.created, `${where}.created`);
  if (input.author !== undefined) result.author = string(input.author, `${where}.author`);
  if (input.variant !== undefined) result.variant = string(input.variant, `${where}.variant`);
  if (input["os.version"] !== undefined)
    result["os.version"] = string(input["os.version"], `${where}.os.version`);
  if (input["os.features"] !== undefined)
    result["os.features"] = stringArray(input["os.features"], `${where}.os.features`);
  if (input.config !== undefined && input.config !== null) {
    result.config = validateContainerConfig(input.config, `${where}.config`).config;
  } else {
    delete result.config;
  }
  if (input.history !== undefined && input.history !== null) {
    if (!Array.isArray(input.history)) throw invalidArgument(`${where}.history: expected an array`);
    result.history = input.history.map((item, index) =>
      validateHistory(item, `${where}.history[${index}]`),
    );
  } else {
    delete result.history;
  }
  return result;
}

export function validateImageLayout(value: unknown, where = "oci-layout"): ImageLayout {
  const input = object(value, where);
  const version = nonEmptyString(input.imageLayoutVersion, `${where}.imageLayoutVersion`);
  if (version !== "1.0.0")
    throw invalidArgument(`${where}: unsupported imageLayoutVersion "${version}"`);
  return { imageLayoutVersion: version };
}

export function validateDockerManifest(
  value: unknown,
  where = "manifest.json",
): DockerManifestEntry[] {
  if (!Array.isArray(value)) throw invalidArgument(`${where}: expected an array`);
  return value.map((item, index) => {
    const at = `${where}[${index}]`;
    const input = object(item, at);
    const entry: DockerManifestEntry = {
      Config: nonEmptyString(input.Config, `${at}.Config`),
      RepoTags:
        input.RepoTags === null || input.RepoTags === undefined
          ? null
          : stringArray(input.RepoTags, `${at}.RepoTags`),
      Layers: stringArray(input.Layers ?? [], `${at}.Layers`),
    };
    if (input.LayerSources !== undefined && input.LayerSources !== null) {
      const sources = object(input.LayerSources, `${at}.LayerSources`);
      entry.LayerSources = {};
      for (const [key, source] of Object.entries(sources))
        entry.LayerSources[key] = validateDescriptor(source, `${at}.LayerSources.${key}`);
    }
    return entry;
  });
}
