import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CodedError } from "../coded-error.js";
import { type ErrorCode, errorCodes } from "../error-code.js";
import { fromConnectError, toConnectError } from "./connect-error.js";

class PackageError extends CodedError {
  static override readonly marker = Symbol.for("@nix-snapshotter/errdefs.test.ConnectPackage");
}

describe("connect-es conversion", () => {
  it("maps each code to connect-es's Code of the same name and back", () => {
    for (const code of errorCodes) {
      const error = new PackageError(code, `failed with ${code}`);
      const connectError = toConnectError(error);
      expect(connectError.code).toBe(Code[code as keyof typeof Code]);
      expect(connectError.rawMessage).toBe(`failed with ${code}`);
      expect(connectError.cause).toBe(error);
      const back = fromConnectError(connectError);
      expect(back.code).toBe(code);
      expect(back.message).toBe(`failed with ${code}`);
      expect(back.cause).toBe(connectError);
    }
    // Every connect-es code (but OK, which is no error) has a name in the set.
    const connectCodes = Object.values(Code).filter((value) => typeof value === "number");
    expect(connectCodes).toHaveLength(errorCodes.length);
    for (const number of connectCodes) {
      const back = fromConnectError(new ConnectError("m", number as Code));
      expect(back.code).toBe(Code[number as Code] as ErrorCode);
    }
  });

  it("puts a prefix in front and passes ConnectErrors and coded errors through", () => {
    const error = new PackageError("NotFound", 'image "x" not found');
    expect(toConnectError(error, "PullImage").rawMessage).toBe('PullImage: image "x" not found');
    const connectError = new ConnectError("as is", Code.Aborted);
    expect(toConnectError(connectError, "ignored")).toBe(connectError);
    expect(fromConnectError(error)).toBe(error);
  });

  it("gives anything else the code from() gives it", () => {
    expect(toConnectError(new Error("boom")).code).toBe(Code.Internal);
    expect(toConnectError("text").rawMessage).toBe("text");
    const enospc = Object.assign(new Error("no space"), { code: "ENOSPC" });
    expect(toConnectError(enospc).code).toBe(Code.ResourceExhausted);
    const controller = new AbortController();
    controller.abort();
    expect(toConnectError(controller.signal.reason).code).toBe(Code.Canceled);
    expect(toConnectError(new DOMException("late", "TimeoutError")).code).toBe(
      Code.DeadlineExceeded,
    );
    // A client's own abort (connect-es turns it into Canceled).
    expect(fromConnectError(controller.signal.reason).code).toBe("Canceled");
    expect(fromConnectError(new Error("odd")).code).toBe("Unknown");
  });
});
