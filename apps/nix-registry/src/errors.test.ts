import { CodedError, ErrorCode, errorCodes } from "@nix-snapshotter/errdefs";
import { describe, expect, it } from "vitest";
import { RegistryError, type RegistrySubject, toDistributionError } from "./errors.js";
import { NameError } from "./names.js";
import { NixError } from "./nix.js";

const answer = (code: ErrorCode, subject?: RegistrySubject) => {
  const { status, code: distributionCode } = toDistributionError(
    new RegistryError(code, "message", subject === undefined ? {} : { subject }),
  );
  return [status, distributionCode];
};

describe("toDistributionError (the HTTP edge)", () => {
  it("gives each code and subject the distribution spec's code and status", () => {
    expect(answer(ErrorCode.InvalidArgument, "name")).toEqual([400, "NAME_INVALID"]);
    expect(answer(ErrorCode.InvalidArgument, "digest")).toEqual([400, "DIGEST_INVALID"]);
    expect(answer(ErrorCode.InvalidArgument, "url")).toEqual([414, "NAME_INVALID"]);
    expect(answer(ErrorCode.NotFound, "name")).toEqual([404, "NAME_UNKNOWN"]);
    expect(answer(ErrorCode.NotFound, "manifest")).toEqual([404, "MANIFEST_UNKNOWN"]);
    expect(answer(ErrorCode.NotFound, "blob")).toEqual([404, "BLOB_UNKNOWN"]);
    expect(answer(ErrorCode.NotFound, "endpoint")).toEqual([404, "UNSUPPORTED"]);
    expect(answer(ErrorCode.Unimplemented, "method")).toEqual([405, "UNSUPPORTED"]);
    expect(answer(ErrorCode.ResourceExhausted, "client")).toEqual([429, "TOOMANYREQUESTS"]);
    expect(answer(ErrorCode.ResourceExhausted)).toEqual([500, "UNKNOWN"]);
    expect(answer(ErrorCode.DeadlineExceeded)).toEqual([503, "UNAVAILABLE"]);
    expect(answer(ErrorCode.Unavailable)).toEqual([503, "UNAVAILABLE"]);
    expect(answer(ErrorCode.Internal)).toEqual([500, "UNKNOWN"]);
  });

  it("answers every workspace code with a status and a spec code", () => {
    for (const code of errorCodes) {
      const result = toDistributionError(new CodedError(code, "x"));
      expect(result.status, code).toBeGreaterThanOrEqual(400);
      expect(result.code, code).toMatch(/^[A-Z_]+$/);
    }
  });

  it("sets the headers the spec asks of a refusal", () => {
    expect(toDistributionError(new RegistryError(ErrorCode.Unimplemented, "m")).headers).toEqual({
      allow: "GET, HEAD",
      connection: "close",
    });
    expect(
      toDistributionError(
        new RegistryError(ErrorCode.ResourceExhausted, "m", { subject: "client" }),
      ).headers,
    ).toEqual({ "retry-after": "1" });
  });

  it("keeps the message and detail, and takes any thrown value", () => {
    const error = new RegistryError(ErrorCode.NotFound, "unknown packages: x", {
      subject: "name",
      detail: { missing: ["x"] },
    });
    expect(toDistributionError(error)).toMatchObject({
      message: "unknown packages: x",
      detail: { missing: ["x"] },
    });
    expect(toDistributionError(new Error("boom"))).toMatchObject({
      status: 500,
      code: "UNKNOWN",
      message: "boom",
    });
    expect(toDistributionError(new NameError("bad name"))).toMatchObject({
      status: 400,
      code: "NAME_INVALID",
    });
    const timeout = new NixError(ErrorCode.DeadlineExceeded, "nix-build killed");
    expect(toDistributionError(timeout).status).toBe(503);
    expect(CodedError.is(timeout)).toBe(true);
    expect(RegistryError.is(new NameError("n"))).toBe(true);
  });
});
