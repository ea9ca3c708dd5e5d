/** Error codes of the OCI distribution spec (and Docker's registry) that this registry answers. */
export type DistributionErrorCode =
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "MANIFEST_UNKNOWN"
  | "BLOB_UNKNOWN"
  | "DIGEST_INVALID"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS"
  | "UNAVAILABLE"
  | "UNKNOWN";

export const statusOf: Record<DistributionErrorCode, number> = {
  NAME_INVALID: 400,
  DIGEST_INVALID: 400,
  NAME_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  BLOB_UNKNOWN: 404,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
};

/** An error answered to the client as `{"errors":[{code,message,detail}]}`. */
export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(
    readonly code: DistributionErrorCode,
    message: string,
    readonly detail?: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  get status(): number {
    return statusOf[this.code];
  }
}
