import { OciError } from "./errors.js";

/**
 * Bounds on what reading an archive may cost. Each is checked before the work it bounds: the
 * archive's size from `fstat` before a byte is read, entry sizes from their tar headers before
 * their data is read, the decompressed total as the stream is inflated.
 */
export interface ArchiveLimits {
  /** Size of the archive file as stored (compressed or not). */
  maxArchiveBytes: number;
  /** Bytes of tar stream after decompression (headers, data and padding). */
  maxUncompressedBytes: number;
  /** Size of one entry's data, e.g. one layer blob. */
  maxEntryBytes: number;
  /** Size of a JSON document: `index.json`, `manifest.json`, `oci-layout`, an index, a manifest, a config; and of a pax or long-name header. */
  maxMetadataBytes: number;
  /** Number of tar entries. */
  maxEntries: number;
}

const mebibyte = 1024 * 1024;

/**
 * Defaults: 256 MiB for the archive, its decompressed stream and any one entry; 4 MiB for a
 * JSON document (containerd's own bound on a manifest it fetches is about 4 MiB); 65 536 entries.
 * Everything an archive holds is kept in memory while it is loaded, so the decompressed bound is
 * also the bound on the memory a load takes.
 */
export const defaultArchiveLimits: Readonly<ArchiveLimits> = Object.freeze({
  maxArchiveBytes: 256 * mebibyte,
  maxUncompressedBytes: 256 * mebibyte,
  maxEntryBytes: 256 * mebibyte,
  maxMetadataBytes: 4 * mebibyte,
  maxEntries: 65_536,
});

/** `1.5 GiB`, `256 MiB`, `512 B`: a size as a person reads it. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${text} ${units[unit]}`;
}

/** The error for a bound exceeded: names the bound and its value. */
export function limitExceeded(what: string, limit: keyof ArchiveLimits, value: number): OciError {
  const shown = limit === "maxEntries" ? String(value) : formatBytes(value);
  return new OciError("InvalidArgument", `${what} exceeds ${limit} (${shown})`);
}

/** The limits with `overrides` applied; every value must be a positive safe integer. */
export function resolveArchiveLimits(overrides: Partial<ArchiveLimits> = {}): ArchiveLimits {
  const limits = { ...defaultArchiveLimits };
  for (const [key, value] of Object.entries(overrides) as [keyof ArchiveLimits, number][]) {
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new OciError(
        "InvalidArgument",
        `archive limit ${key}: ${value} is not a positive integer`,
      );
    }
    limits[key] = value;
  }
  return limits;
}

/** Quotes untrusted text for an error message, cut to `max` characters. */
export function quoteTruncated(text: string, max = 128): string {
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, max))}... (${text.length} characters)`;
}
