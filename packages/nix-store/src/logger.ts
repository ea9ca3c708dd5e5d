/**
 * The one logger contract of this workspace's packages: the part of pino's `Logger` they call
 * (pass a pino logger, or a child of one). Every package takes this type; none creates a logger.
 * Log calls put the merge object first and the message second, and an error under `err`, so that
 * pino's error serializer records its type, message, stack and cause.
 */
export interface Logger {
  debug(object: Record<string, unknown>, message?: string): void;
  info(object: Record<string, unknown>, message?: string): void;
  warn(object: Record<string, unknown>, message?: string): void;
  error(object: Record<string, unknown>, message?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

const noop = (): void => {};

/** A logger that drops everything (the default where no logger is given). */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
