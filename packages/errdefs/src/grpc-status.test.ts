import { describe, expect, it } from "vitest";
import { ErrorCode, errorCodes, isErrorCode } from "./error-code.js";
import { codeFromGrpcStatus, codeToGrpcStatus, grpcStatusByCode } from "./grpc-status.js";

describe("code set and gRPC status tables", () => {
  it("has gRPC's sixteen error codes, named as connect-es names them", () => {
    expect(errorCodes).toEqual([
      "Canceled",
      "Unknown",
      "InvalidArgument",
      "DeadlineExceeded",
      "NotFound",
      "AlreadyExists",
      "PermissionDenied",
      "ResourceExhausted",
      "FailedPrecondition",
      "Aborted",
      "OutOfRange",
      "Unimplemented",
      "Internal",
      "Unavailable",
      "DataLoss",
      "Unauthenticated",
    ]);
    for (const code of errorCodes) expect(ErrorCode[code]).toBe(code);
    expect(isErrorCode("NotFound")).toBe(true);
    expect(isErrorCode("Cancelled")).toBe(false);
    expect(isErrorCode("toString")).toBe(false);
    expect(isErrorCode(5)).toBe(false);
  });

  it("maps every code to its gRPC number and back", () => {
    errorCodes.forEach((code, index) => {
      expect(codeToGrpcStatus(code)).toBe(index + 1);
      expect(grpcStatusByCode[code]).toBe(index + 1);
      expect(codeFromGrpcStatus(codeToGrpcStatus(code))).toBe(code);
    });
    expect(codeFromGrpcStatus(0)).toBe("Unknown");
    expect(codeFromGrpcStatus(17)).toBe("Unknown");
    expect(codeFromGrpcStatus(-1)).toBe("Unknown");
  });
});
