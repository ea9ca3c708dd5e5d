// containerd.services.diff.v1: the Diff service (apply and compute layers).
export * from "./gen/containerd/services/diff/v1/diff_pb.js";
