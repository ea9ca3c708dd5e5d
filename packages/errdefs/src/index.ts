export type {
  CodedErrorClass,
  CodedErrorConstructor,
  CodedErrorOptions,
} from "./coded-error.js";
export { CodedError, errorCodeOf, isNoSpace, messageOf } from "./coded-error.js";
export { ErrorCode, errorCodes, isErrorCode } from "./error-code.js";
export { codeFromGrpcStatus, codeToGrpcStatus, grpcStatusByCode } from "./grpc-status.js";
