import { describe, expect, it, vi } from "vitest";
import { CodedError, errorCodeOf, isNoSpace } from "./coded-error.js";
import { ErrorCode } from "./error-code.js";

class PackageError extends CodedError {
  static override readonly marker = Symbol.for("@nix-snapshotter/errdefs.test.PackageError");
  override readonly name = "PackageError";
  readonly extra: string;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; extra?: string } = {}) {
    super(code, message, options);
    this.extra = options.extra ?? "";
  }
}

class OtherError extends CodedError {
  static override readonly marker = Symbol.for("@nix-snapshotter/errdefs.test.OtherError");
}

/** A subclass without a marker of its own: recognised as its parent. */
class PlainSubclass extends PackageError {}

describe("CodedError", () => {
  it("keeps code, message, name and cause; cause is absent when none was given", () => {
    const cause = new Error("root");
    const error = new PackageError(ErrorCode.NotFound, 'snapshot "a" does not exist', {
      cause,
      extra: "x",
    });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe("NotFound");
    expect(error.message).toBe('snapshot "a" does not exist');
    expect(error.name).toBe("PackageError");
    expect(error.cause).toBe(cause);
    expect(error.extra).toBe("x");
    expect("cause" in new CodedError(ErrorCode.Internal, "m")).toBe(false);
    expect(new CodedError(ErrorCode.Internal, "m").name).toBe("CodedError");
  });

  it("is() tells classes and codes apart", () => {
    const error = new PackageError(ErrorCode.NotFound, "m");
    expect(CodedError.is(error)).toBe(true);
    expect(PackageError.is(error)).toBe(true);
    expect(PackageError.is(error, ErrorCode.NotFound)).toBe(true);
    expect(PackageError.is(error, ErrorCode.AlreadyExists, ErrorCode.NotFound)).toBe(true);
    expect(PackageError.is(error, ErrorCode.AlreadyExists)).toBe(false);
    expect(OtherError.is(error)).toBe(false);
    expect(PackageError.is(new OtherError(ErrorCode.NotFound, "m"))).toBe(false);
    expect(PackageError.is(new CodedError(ErrorCode.NotFound, "m"))).toBe(false);
    expect(PackageError.is(new PlainSubclass(ErrorCode.NotFound, "m"))).toBe(true);
    for (const value of [undefined, null, "NotFound", 5, new Error("m"), { code: "NotFound" }]) {
      expect(CodedError.is(value)).toBe(false);
    }
  });

  it("is() recognises errors made by another copy of the package", async () => {
    vi.resetModules();
    const copy = (await import("./coded-error.js")) as typeof import("./coded-error.js");
    expect(copy.CodedError).not.toBe(CodedError);
    class CopiedPackageError extends copy.CodedError {
      static override readonly marker = Symbol.for("@nix-snapshotter/errdefs.test.PackageError");
    }
    const foreign = new CopiedPackageError(ErrorCode.Unavailable, "from the other copy");
    expect(foreign).not.toBeInstanceOf(CodedError);
    expect(CodedError.is(foreign, ErrorCode.Unavailable)).toBe(true);
    expect(PackageError.is(foreign)).toBe(true);
    expect(OtherError.is(foreign)).toBe(false);
    expect(copy.CodedError.is(new PackageError(ErrorCode.NotFound, "m"))).toBe(true);
    // from() keeps it as it is, and the code survives into a wrapping class.
    expect(CodedError.from(foreign)).toBe(foreign);
    const wrapped = OtherError.from(foreign, "context");
    expect(wrapped.code).toBe("Unavailable");
    expect(wrapped.message).toBe("context: from the other copy");
    expect(errorCodeOf(foreign)).toBe("Unavailable");
  });

  it("from() returns instances of the class unchanged and wraps everything else", () => {
    const own = new PackageError(ErrorCode.NotFound, "m");
    expect(PackageError.from(own, "ignored")).toBe(own);
    const foreign = new OtherError(ErrorCode.FailedPrecondition, "not active");
    const kept = PackageError.from(foreign, 'snapshot "k"');
    expect(kept).toBeInstanceOf(PackageError);
    expect(kept.code).toBe("FailedPrecondition");
    expect(kept.message).toBe('snapshot "k": not active');
    expect(kept.cause).toBe(foreign);
    const plain = new Error("boom");
    const internal = PackageError.from(plain);
    expect(internal.code).toBe("Internal");
    expect(internal.message).toBe("boom");
    expect(internal.cause).toBe(plain);
    expect(CodedError.from("a string").message).toBe("a string");
    expect(CodedError.from(undefined, "context").message).toBe("context: undefined");
  });

  it("from() maps a full disk or quota to ResourceExhausted", () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), {
      code: "ENOSPC",
    });
    const edquot = Object.assign(new Error("EDQUOT: disk quota exceeded"), { code: "EDQUOT" });
    const sqlite = Object.assign(new Error("database or disk is full"), { errcode: 13 });
    const extended = Object.assign(new Error("database or disk is full"), { errcode: 13 | 256 });
    for (const error of [enospc, edquot, sqlite, extended]) {
      expect(isNoSpace(error)).toBe(true);
      expect(CodedError.from(error, "writing").code).toBe("ResourceExhausted");
    }
    expect(isNoSpace(Object.assign(new Error("busy"), { errcode: 5 }))).toBe(false);
    expect(isNoSpace(Object.assign(new Error("gone"), { code: "ENOENT" }))).toBe(false);
    expect(isNoSpace(null)).toBe(false);
  });

  it("from() maps abort reasons: a timeout is DeadlineExceeded, a cancel Canceled", async () => {
    const cancelled = new AbortController();
    cancelled.abort();
    expect(CodedError.from(cancelled.signal.reason).code).toBe("Canceled");
    const timedOut = AbortSignal.timeout(1);
    await new Promise((resolve) => timedOut.addEventListener("abort", resolve, { once: true }));
    expect(timedOut.reason.name).toBe("TimeoutError");
    const deadline = CodedError.from(timedOut.reason, "realise");
    expect(deadline.code).toBe("DeadlineExceeded");
    expect(deadline.message).toMatch(/^realise: /);
    // Node's own AbortError (fs, child_process, timers/promises with a signal).
    const { setTimeout: sleep } = await import("node:timers/promises");
    const controller = new AbortController();
    const sleeping = sleep(60_000, undefined, { signal: controller.signal }).catch(
      (error: unknown) => error,
    );
    controller.abort();
    const nodeAbort = await sleeping;
    expect((nodeAbort as Error).name).toBe("AbortError");
    expect(errorCodeOf(nodeAbort)).toBe("Canceled");
  });
});
