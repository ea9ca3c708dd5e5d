// The generated definitions live under subpath exports, one per proto package
// (`@nix-snapshotter/api/snapshots/v1`, ...). The root export holds helpers shared by them.
export { packAny } from "./any.js";
