import { CodedError } from "@nix-snapshotter/errdefs";

/** A failure reported to the user as `nix2container: <message>` with exit status 1. */
export class CliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliError";
  }
}

export interface ToCliErrorOptions {
  /** Goes in front of the message (`archive "x.tar"`). */
  context?: string;
  /** CLI advice after the message (a flag to use); libraries never give it. */
  hint?: string;
}

/**
 * The one place the CLI turns library failures into what the user reads: a CliError as it is; a
 * coded error of any package (`CodedError.is`: image builder, OCI, registry, containerd, Nix
 * store) becomes a CliError with its message; anything else is returned unchanged (a bug: main
 * prints its stack).
 */
export function toCliError(error: unknown, options: ToCliErrorOptions = {}): unknown {
  if (error instanceof CliError) return error;
  if (!CodedError.is(error)) return error;
  const message =
    options.context === undefined ? error.message : `${options.context}: ${error.message}`;
  return new CliError(`${message}${options.hint ?? ""}`, { cause: error });
}
