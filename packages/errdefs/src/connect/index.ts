export { fromConnectError, toConnectError } from "./connect-error.js";
