import { basename } from "node:path";
import {
  defaultTag,
  nixReferencePrefix,
  OciError,
  parseReference,
  quoteTruncated,
} from "@nix-snapshotter/oci";
import { ImageServiceError } from "./errors.js";

/** A validated `nix:0` image reference. */
export interface NixImageReference {
  /** The store path holding the image archive. */
  storePath: string;
  /** The image name containerd and its CRI know it by: `nix:0<storePath>:latest`. */
  name: string;
  /** GC root owner of the archive while the image exists: `cri-image-<hash>`. */
  rootOwner: string;
}

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** True when the reference is meant for Nix (`nix:0/...`), valid or not. */
export function isNixReference(reference: string): boolean {
  return reference.startsWith(`${nixReferencePrefix}/`) || reference === nixReferencePrefix;
}

/**
 * Validates a `nix:0` reference without touching Nix or containerd: a canonical store path
 * under `storeDir`, no tag or `latest`, no digest, and a name containerd's CRI can parse
 * (lower-case path components of the distribution grammar). Anything else: `InvalidArgument`.
 */
export function parseNixImageReference(reference: string, storeDir: string): NixImageReference {
  let parsed: ReturnType<typeof parseReference>;
  try {
    parsed = parseReference(reference, { storeDir });
  } catch (error) {
    throw new ImageServiceError(
      "InvalidArgument",
      error instanceof OciError
        ? error.message
        : `reference ${quoteTruncated(reference)}: ${String(error)}`,
      { cause: error },
    );
  }
  if (parsed.kind !== "nix") {
    throw new ImageServiceError(
      "InvalidArgument",
      `reference ${quoteTruncated(reference)}: not a nix:0 reference`,
    );
  }
  if (parsed.digest !== undefined) {
    throw new ImageServiceError(
      "InvalidArgument",
      `reference ${quoteTruncated(reference)}: nix:0 references take no digest (the store path is the content address)`,
    );
  }
  if (parsed.tag !== undefined && parsed.tag !== defaultTag) {
    throw new ImageServiceError(
      "InvalidArgument",
      `reference ${quoteTruncated(reference)}: nix:0 references take no tag but "${defaultTag}"`,
    );
  }
  for (const component of parsed.storePath.slice(1).split("/")) {
    if (!pathComponent.test(component)) {
      throw new ImageServiceError(
        "InvalidArgument",
        `reference ${quoteTruncated(reference)}: ${quoteTruncated(component)} is not a lower-case image name component (containerd's CRI could not resolve it)`,
      );
    }
  }
  const hash = basename(parsed.storePath).slice(0, 32);
  return {
    storePath: parsed.storePath,
    name: `${nixReferencePrefix}${parsed.storePath}:${defaultTag}`,
    rootOwner: `cri-image-${hash}`,
  };
}
